"""Curriculum temperature for KD (Li et al., AAAI 2023): temperature map and λ schedule (notes §5)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _checks


def ctkd_temperature(raw: Any, *, t_start: float = 1.0, t_end: float = 20.0) -> Any:
    r"""Map CTKD's learnable raw parameter to a temperature.

    .. math::

        T = t_\mathrm{start} + t_\mathrm{end}\,\sigma(g), \qquad \sigma(g) = \frac{1}{1 + e^{-g}}

    so :math:`T \in (t_\mathrm{start}, t_\mathrm{start} + t_\mathrm{end})`;
    the published initialisation :math:`g = 1` gives :math:`T \approx 15.62`. The CTKD
    loss is :func:`kd_loss` at this temperature (with standardization for CTKD+LS).
    The raw parameter is trained through a gradient-reversal layer whose factor
    follows :func:`ctkd_lambda`.

    Args:
        raw: finite real scalar or array :math:`g`.
        t_start: lower end of the temperature range (>= 0, so every temperature is positive).
        t_end: width of the temperature range (> 0).

    Returns:
        A float for a scalar ``raw``, else a float64 array of the same shape.

    Example:
        >>> from logit_standardization import ctkd_temperature
        >>> round(ctkd_temperature(1.0), 4)
        15.6212
    """
    fn = "ctkd_temperature"
    h = _checks.check_hyper(fn, t_start=t_start, t_end=t_end)
    t0, width = h["t_start"], h["t_end"]
    g = np.asarray(raw)
    _checks.check_real_kind(fn, "raw", g.dtype.kind)
    g = g.astype(np.float64)
    _checks.check_finite(fn, "raw", np.isfinite(g).all())
    # sigmoid written so that neither branch overflows
    sig = np.where(g >= 0, 1.0 / (1.0 + np.exp(-np.abs(g))), np.exp(-np.abs(g)) / (1.0 + np.exp(-np.abs(g))))
    out = t0 + width * sig
    return float(out) if out.ndim == 0 else out


def ctkd_lambda(
    epoch: float,
    *,
    loops: int = 10,
    max_value: float = 0.0,
    min_value: float = -1.0,
    schedule: str = "cosine",
) -> float:
    r"""Gradient-reversal factor :math:`\lambda` of CTKD for a (1-based) epoch.

    ``schedule="cosine"`` (the published default), with :math:`e` clipped to at most :math:`N`:

    .. math::

        \lambda(e) = \frac{\cos(\pi e / N) + 1}{2}\,(\lambda_{max} - \lambda_{min}) + \lambda_{min}

    ``schedule="linear"``, with :math:`e` clipped to at most :math:`N-1` (as published,
    :math:`\lambda_{max}` is not added):

    .. math::

        \lambda(e) = -e\,\frac{\lambda_{max} - \lambda_{min}}{N}

    With the defaults :math:`\lambda` goes from 0 to -1 over :math:`N` = ``loops`` epochs
    (10 on CIFAR-100, 5 on ImageNet). The backward pass of the temperature multiplies
    the incoming gradient by :math:`\lambda`, so a negative :math:`\lambda` makes the
    temperature *ascend* the distillation loss.

    Args:
        epoch: the epoch number, >= 0 (1-based in the published schedules).
        loops: :math:`N`, the number of epochs over which :math:`\lambda` decays (>= 1).
        max_value: :math:`\lambda_{max}`.
        min_value: :math:`\lambda_{min}`.
        schedule: ``"cosine"`` or ``"linear"``.

    Example:
        >>> from logit_standardization import ctkd_lambda
        >>> round(ctkd_lambda(1), 5), ctkd_lambda(10), ctkd_lambda(50)
        (-0.02447, -1.0, -1.0)
    """
    h = _checks.check_hyper("ctkd_lambda", epoch=epoch, loops=loops, max_value=max_value, min_value=min_value,
                            schedule=schedule)
    e, loops, hi, lo, schedule = h["epoch"], h["loops"], h["max_value"], h["min_value"], h["schedule"]
    if schedule == "cosine":
        e = min(e, float(loops))
        return (math.cos(e * math.pi / loops) + 1.0) * 0.5 * (hi - lo) + lo
    e = min(e, float(loops - 1))
    return e * (-(hi - lo) / loops)
