"""The Z-score pre-process of logit standardization."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import _checks
from ._numpy import as_logits


def zscore(logits: Any, *, temperature: float = 1.0, ddof: int = 1, eps: float = 1e-7, axis: int = -1) -> np.ndarray:
    r"""Standardize logits to zero mean and (near) unit deviation, divided by a base temperature.

    .. math::

        \mathcal{Z}(x; \tau)_k = \frac{x_k - \bar{x}}{(\varepsilon + s(x))\,\tau},
        \qquad \bar{x} = \frac{1}{C}\sum_{j=1}^{C} x_j,
        \qquad s(x) = \sqrt{\frac{1}{C - \mathrm{ddof}}\sum_{j=1}^{C} (x_j - \bar{x})^2}

    With the defaults ``ddof=1, eps=1e-7`` this is exactly what the published code
    computes (Bessel-corrected ``torch.std`` and ``eps`` added to the deviation);
    ``ddof=0, eps=0`` is the formula written in the paper. Each row (each slice along
    ``axis``) gets its own mean and deviation. A row whose deviation is zero
    (a constant row) maps to zeros, also when ``eps=0``.

    The statistics are computed on the row scaled by a power of two (see
    :func:`logit_standardization._zscore.rescale`, with ``eps`` scaled alike): the same
    bits as the formula above for ordinary inputs, and no overflow for any finite input
    (logits near the largest float give the right Z-score, not zeros or NaN).

    Consequences used throughout the library: the output has mean 0, population
    standard deviation :math:`\sqrt{(C-1)/C}/\tau` under ``ddof=1`` (:math:`1/\tau`
    under ``ddof=0``), keeps the order of the entries, and is bounded by
    :math:`(C-1)/(\sqrt{C}\,\tau)` (:math:`\sqrt{C-1}/\tau` under ``ddof=0``),
    up to the factor :math:`s/(s+\varepsilon)`.

    Args:
        logits: floating-point array of any shape with at least 2 entries along ``axis``.
        temperature: base temperature :math:`\tau > 0`.
        ddof: delta degrees of freedom of the deviation (1: published code, 0: paper).
        eps: non-negative constant added to the deviation.
        axis: the class axis.

    Returns:
        float64 array of the same shape.

    Raises:
        TypeError: non-floating logits or wrongly typed hyperparameters.
        ValueError: non-finite logits, fewer than 2 classes, ``ddof`` not smaller
            than the class count, non-positive temperature, negative ``eps``.

    Example:
        >>> import numpy as np
        >>> from logit_standardization import zscore
        >>> z = zscore(np.array([[1.0, 2.0, 3.0]]))
        >>> np.round(z, 6)
        array([[-1.,  0.,  1.]])
        >>> np.round(zscore(np.array([[1.0, 2.0, 3.0]]) * 50 + 7, temperature=2.0), 6)
        array([[-0.5,  0. ,  0.5]])

    Reference:
        Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024, Sec. 3.
    """
    x = as_logits("zscore", "logits", logits, ndim=None)
    ax = _checks.check_axis_classes("zscore", "logits", x.shape, axis)
    return _zscore(x, temperature=temperature, ddof=ddof, eps=eps, axis=ax, fn="zscore")


def _zscore(x: np.ndarray, *, temperature: float, ddof: int, eps: float, axis: int = -1, fn: str) -> np.ndarray:
    """Checked hyperparameters, unchecked float64 array."""
    h = _checks.check_hyper(fn, temperature=temperature, eps=eps)
    ddof = _checks.check_ddof(fn, ddof, x.shape[axis])
    x, eps_scaled = rescale(x, h["eps"], axis=axis)
    return standardize_scaled(x, eps_scaled, ddof=ddof, temperature=h["temperature"], axis=axis)


def rescale(x: np.ndarray, eps: float, *, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    r"""Scale each row by a power of two so that its largest magnitude lies in :math:`[1/2, 1)`.

    Returns ``(x * 2**-k, eps * 2**-k)`` with :math:`k` the binary exponent of
    :math:`\max_j |x_j|` (``numpy.frexp``; 0 for an all-zero row; at least the smallest normal
    exponent, so that :math:`2^{-k}` stays finite for subnormal rows). Multiplying by a power of
    two is exact, and every step of the Z-score (mean, centring, sum of squares, square root,
    ``eps`` plus deviation, division) commutes with it exactly, so the result carries the same
    bits as the unscaled formula wherever that one neither overflows nor underflows, and is
    correct where it would have: the sum of squares of a scaled row is at most :math:`4C`.
    """
    _, k = np.frexp(np.max(np.abs(x), axis=axis, keepdims=True))
    k = np.maximum(k, np.finfo(x.dtype).minexp)
    with np.errstate(over="ignore"):  # a huge eps on a tiny row: inf, and the Z-score is 0 as it should be
        return np.ldexp(x, -k), np.ldexp(np.full(k.shape, eps), -k)


def standardize_scaled(x: np.ndarray, eps: Any, *, ddof: int, temperature: float, axis: int = -1) -> np.ndarray:
    """The Z-score of rows already passed through :func:`rescale` (``eps`` scaled alike)."""
    c = x.shape[axis]
    centred = x - np.mean(x, axis=axis, keepdims=True)
    std = np.sqrt(np.sum(centred * centred, axis=axis, keepdims=True) / (c - ddof))
    denom = (eps + std) * temperature
    safe = np.where(denom > 0, denom, 1.0)
    return np.where(denom > 0, centred / safe, 0.0)


def standardized(loss_fn: Callable[..., Any], *, ddof: int = 1, eps: float = 1e-7) -> Callable[..., Any]:
    r"""Put logit standardization in front of any logit-based loss (the paper's plug-in pre-process).

    Returns a function with the same signature as ``loss_fn`` whose first two
    positional arguments (student and teacher logits, shape ``(batch, classes)`` or
    token-level ``(..., classes)``, standardized along the last axis) are replaced by their
    :func:`zscore` (each with its own statistics) before ``loss_fn`` sees them; every other
    argument (labels, a ``mask=`` keyword) reaches ``loss_fn`` unchanged. Temperature
    scaling stays the job of ``loss_fn``.

    Args:
        loss_fn: ``loss_fn(student_logits, teacher_logits, *args, **kwargs)``.
        ddof: see :func:`zscore`.
        eps: see :func:`zscore`.

    Example:
        >>> import numpy as np
        >>> from logit_standardization import standardized
        >>> def l2(s, t):
        ...     return float(np.mean((s - t) ** 2))
        >>> s = np.array([[0.0, 1.0, 2.0]]); t = 10 * s + 3
        >>> l2(s, t) > 0, round(standardized(l2)(s, t), 12)
        (True, 0.0)
    """

    def wrapped(student_logits: Any, teacher_logits: Any, *args: Any, **kwargs: Any) -> Any:
        s = zscore(student_logits, ddof=ddof, eps=eps)
        t = zscore(teacher_logits, ddof=ddof, eps=eps)
        return loss_fn(s, t, *args, **kwargs)

    wrapped.__name__ = f"standardized_{getattr(loss_fn, '__name__', 'loss')}"
    wrapped.__doc__ = f"{wrapped.__name__}: logit standardization followed by {getattr(loss_fn, '__name__', 'loss')}."
    wrapped.__wrapped__ = loss_fn  # type: ignore[attr-defined]
    return wrapped
