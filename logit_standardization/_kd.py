"""KD (Hinton et al.) with optional logit standardization (notes §2)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _checks
from ._numpy import as_logits, kl_rows, log_softmax, reduce_rows
from ._zscore import _zscore


def prepare_pair(
    fn: str, student_logits: Any, teacher_logits: Any, *, standardize: bool, ddof: int, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a student/teacher pair and standardize both when asked (each with its own statistics)."""
    s = as_logits(fn, "student_logits", student_logits)
    t = as_logits(fn, "teacher_logits", teacher_logits)
    _checks.check_same_shape(fn, "teacher_logits", t.shape, "student_logits", s.shape)
    h = _checks.check_hyper(fn, standardize=standardize, eps=eps)
    ddof = _checks.check_ddof(fn, ddof, s.shape[-1])
    if h["standardize"]:
        s = _zscore(s, temperature=1.0, ddof=ddof, eps=h["eps"], fn=fn)
        t = _zscore(t, temperature=1.0, ddof=ddof, eps=h["eps"], fn=fn)
    return s, t


def kd_rows(s: np.ndarray, t: np.ndarray, tau: float) -> np.ndarray:
    """Per-sample ``tau^2 * KL(softmax(t/tau) || softmax(s/tau))`` of prepared logits."""
    return tau * tau * kl_rows(log_softmax(t / tau), log_softmax(s / tau))


def kd_loss(
    student_logits: Any,
    teacher_logits: Any,
    *,
    temperature: float = 2.0,
    standardize: bool = True,
    ddof: int = 1,
    eps: float = 1e-7,
    reduction: str = "mean",
) -> np.ndarray | float:
    r"""Knowledge-distillation loss, with logit standardization by default.

    .. math::

        \mathcal{L}_{KD} = \tau^2 \, \frac{1}{B}\sum_{i=1}^{B}\sum_{k=1}^{C}
            p_{ik} \left(\log p_{ik} - \log q_{ik}\right),
        \qquad p_i = \mathrm{softmax}(\tilde t_i / \tau),\;
        q_i = \mathrm{softmax}(\tilde s_i / \tau)

    where :math:`\tilde s = \mathcal{Z}(s)`, :math:`\tilde t = \mathcal{Z}(t)`
    (see :func:`zscore`, with ``temperature=1``) when ``standardize`` is true and the
    raw logits otherwise. The scale :math:`\tau^2` is the base temperature squared,
    as in the published code; a weight such as the reference's ``kd_weight=9`` is
    applied by the caller. Terms with :math:`p_{ik} = 0` contribute 0.

    Args:
        student_logits: ``(B, C)`` floating-point array.
        teacher_logits: ``(B, C)`` floating-point array.
        temperature: base temperature :math:`\tau > 0`.
        standardize: apply the Z-score pre-process to both inputs.
        ddof: deviation convention of :func:`zscore` (1: published code).
        eps: constant added to the deviation in :func:`zscore`.
        reduction: ``"mean"`` (batch mean of per-sample sums, PyTorch's
            ``batchmean``), ``"sum"`` or ``"none"`` (the ``(B,)`` per-sample losses).

    Returns:
        A float for ``"mean"``/``"sum"``, a float64 ``(B,)`` array for ``"none"``.

    Example:
        >>> import numpy as np
        >>> from logit_standardization import kd_loss
        >>> t = np.array([[2.0, 0.0, -2.0]])
        >>> round(kd_loss(t * 0.1 + 5.0, t), 12)   # same shape, other scale: no loss
        0.0
        >>> round(kd_loss(t * 0.1 + 5.0, t, standardize=False), 6)
        0.848105

    Reference:
        Hinton et al., 2015; Sun et al., CVPR 2024, Algorithm 1.
    """
    fn = "kd_loss"
    h = _checks.check_hyper(fn, temperature=temperature, reduction=reduction)
    s, t = prepare_pair(fn, student_logits, teacher_logits, standardize=standardize, ddof=ddof, eps=eps)
    return reduce_rows(kd_rows(s, t, h["temperature"]), h["reduction"])
