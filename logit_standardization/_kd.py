"""KD (Hinton et al.) with optional logit standardization (notes §2)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _checks
from ._numpy import as_logits, as_mask, kl_rows, log_softmax, reduce_rows
from ._zscore import _zscore


def prepare_pair(
    fn: str, student_logits: Any, teacher_logits: Any, *, standardize: bool, ddof: int, eps: float,
    ndim: int | str = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a student/teacher pair and standardize both when asked (each with its own statistics).

    ``ndim``: 2 for ``(batch, classes)`` logits, ``_checks.TOKENS`` for ``(..., classes)``.
    """
    s = as_logits(fn, "student_logits", student_logits, ndim=ndim)
    t = as_logits(fn, "teacher_logits", teacher_logits, ndim=ndim)
    _checks.check_same_shape(fn, "teacher_logits", t.shape, "student_logits", s.shape)
    h = _checks.check_hyper(fn, standardize=standardize, eps=eps)
    ddof = _checks.check_ddof(fn, ddof, s.shape[-1])
    if h["standardize"]:
        s = _zscore(s, temperature=1.0, ddof=ddof, eps=h["eps"], fn=fn)
        t = _zscore(t, temperature=1.0, ddof=ddof, eps=h["eps"], fn=fn)
    return s, t


def kd_rows(s: np.ndarray, t: np.ndarray, tau: float) -> np.ndarray:
    """Per-position ``tau^2 * KL(softmax(t/tau) || softmax(s/tau))`` of prepared logits ``(..., C)``."""
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
    mask: Any = None,
) -> np.ndarray | float:
    r"""Knowledge-distillation loss, with logit standardization by default.

    .. math::

        \mathcal{L}_{KD} = \tau^2 \, \frac{1}{|M|}\sum_{i \in M}\sum_{k=1}^{C}
            p_{ik} \left(\log p_{ik} - \log q_{ik}\right),
        \qquad p_i = \mathrm{softmax}(\tilde t_i / \tau),\;
        q_i = \mathrm{softmax}(\tilde s_i / \tau)

    where :math:`\tilde s = \mathcal{Z}(s)`, :math:`\tilde t = \mathcal{Z}(t)`
    (see :func:`zscore`, with ``temperature=1``) when ``standardize`` is true and the
    raw logits otherwise. The scale :math:`\tau^2` is the base temperature squared,
    as in the published code; a weight such as the reference's ``kd_weight=9`` is
    applied by the caller. Terms with :math:`p_{ik} = 0` contribute 0.

    The index :math:`i` runs over the *positions*: the rows of ``(B, C)`` logits, or every
    leading index of token-level logits ``(..., C)`` (``(B, T, C)`` for a language model,
    the softmax over the last axis). :math:`M` is the set of positions where ``mask`` is
    True (all positions without a mask): masked-out positions (padding, prompt tokens)
    contribute nothing. A mask with no True entry gives 0.0 for ``"mean"`` (not NaN).

    Args:
        student_logits: ``(..., C)`` floating-point array with at least 2 dimensions
            (``(B, C)`` or token-level ``(B, T, C)``, ...).
        teacher_logits: floating-point array of the same shape.
        temperature: base temperature :math:`\tau > 0`.
        standardize: apply the Z-score pre-process to both inputs.
        ddof: deviation convention of :func:`zscore` (1: published code).
        eps: constant added to the deviation in :func:`zscore`.
        reduction: ``"mean"`` (mean over the counted positions of per-position sums; with
            ``(B, C)`` logits and no mask the batch mean, PyTorch's ``batchmean``), ``"sum"``
            or ``"none"`` (the per-position losses, of the leading shape, 0 where masked out).
        mask: ``None`` or a boolean array of the leading shape (``(B,)``, ``(B, T)``, ...);
            True where a position counts. Every logit is still checked to be finite.

    Returns:
        A float for ``"mean"``/``"sum"``, a float64 array of the leading shape for ``"none"``.

    Example:
        >>> import numpy as np
        >>> from logit_standardization import kd_loss
        >>> t = np.array([[2.0, 0.0, -2.0]])
        >>> round(kd_loss(t * 0.1 + 5.0, t), 12)   # same shape, other scale: no loss
        0.0
        >>> round(kd_loss(t * 0.1 + 5.0, t, standardize=False), 6)
        0.848105
        >>> s, t = np.zeros((2, 3, 4)), np.arange(24.0).reshape(2, 3, 4) % 5
        >>> keep = np.array([[True, True, False], [True, False, False]])
        >>> kd_loss(s, t, mask=keep, reduction="none").shape
        (2, 3)
        >>> kd_loss(s, t, mask=np.zeros((2, 3), dtype=bool))   # nothing counts
        0.0

    Reference:
        Hinton et al., 2015; Sun et al., CVPR 2024, Algorithm 1.
    """
    fn = "kd_loss"
    h = _checks.check_hyper(fn, temperature=temperature, reduction=reduction)
    s, t = prepare_pair(fn, student_logits, teacher_logits, standardize=standardize, ddof=ddof, eps=eps,
                        ndim=_checks.TOKENS)
    m = as_mask(fn, "mask", mask, s.shape[:-1])
    return reduce_rows(kd_rows(s, t, h["temperature"]), h["reduction"], m)
