"""Decoupled KD (Zhao et al., CVPR 2022) with optional logit standardization (notes §3)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _checks
from ._kd import prepare_pair
from ._numpy import as_labels, as_mask, kl_rows, log_softmax, reduce_rows


def _binary_and_rest(z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From temperature-scaled logits ``z`` (B, C) return

    * ``(B, 2)`` log-probabilities of [target, sum of the others] of the full softmax,
    * ``(B, C-1)`` log-softmax over the non-target classes only (exact exclusion).
    """
    b, c = z.shape
    rows = np.arange(b)
    keep = np.ones((b, c), dtype=bool)
    keep[rows, labels] = False
    rest = z[keep].reshape(b, c - 1)
    log_all = log_softmax(z)
    m = np.max(rest, axis=1, keepdims=True)
    lse_rest = (m + np.log(np.sum(np.exp(rest - m), axis=1, keepdims=True)))[:, 0]
    m_all = np.max(z, axis=1)
    lse_all = m_all + np.log(np.sum(np.exp(z - m_all[:, None]), axis=1))
    log_binary = np.stack([log_all[rows, labels], lse_rest - lse_all], axis=1)
    return log_binary, log_softmax(rest)


def dkd_parts(s: np.ndarray, t: np.ndarray, labels: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-position ``(TCKD, NCKD)``, each already scaled by ``tau^2``, for prepared logits
    ``(..., C)`` and labels of the leading shape."""
    lead, c = s.shape[:-1], s.shape[-1]
    s, t, labels = s.reshape(-1, c), t.reshape(-1, c), labels.reshape(-1)
    bs, rest_s = _binary_and_rest(s / tau, labels)
    bt, rest_t = _binary_and_rest(t / tau, labels)
    scale = tau * tau
    return (scale * kl_rows(bt, bs)).reshape(lead), (scale * kl_rows(rest_t, rest_s)).reshape(lead)


def dkd_loss(
    student_logits: Any,
    teacher_logits: Any,
    labels: Any,
    *,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 2.0,
    standardize: bool = True,
    ddof: int = 1,
    eps: float = 1e-7,
    reduction: str = "mean",
    mask: Any = None,
) -> np.ndarray | float:
    r"""Decoupled knowledge distillation, with logit standardization by default.

    With :math:`p = \mathrm{softmax}(\tilde s/\tau)`, :math:`\hat p = \mathrm{softmax}(\tilde t/\tau)`
    (the full :math:`C`-way softmax) and :math:`g` the target class of a sample:

    .. math::

        b = \Big[p_g,\ \sum_{k \ne g} p_k\Big], \qquad
        \mathrm{TCKD} = \tau^2\, \mathrm{KL}(\hat b \,\|\, b), \qquad
        \mathrm{NCKD} = \tau^2\, \mathrm{KL}\big(\mathrm{softmax}(\tilde t_{\setminus g}/\tau)
            \,\|\, \mathrm{softmax}(\tilde s_{\setminus g}/\tau)\big)

    .. math::

        \mathcal{L}_{DKD} = \alpha\,\mathrm{TCKD} + \beta\,\mathrm{NCKD}

    per position (a row of ``(B, C)`` logits, or a token of ``(B, T, C)`` logits with labels
    ``(B, T)``), averaged over the positions where ``mask`` is True (all without a mask:
    :math:`\frac{1}{|M|}\sum_{i \in M}`, as in :func:`kd_loss`; 0.0 when no position
    counts) for ``reduction="mean"``. The non-target distribution
    excludes the target class exactly (the published code subtracts 1000 from it,
    which agrees to about 1e-9 while the scaled logits stay far below 300 in
    magnitude). "Others" is the sum of the other probabilities, computed in the log
    domain, so confident raw logits give finite values where the published code
    gives ``-inf``/``NaN``. With the published LS settings the caller multiplies
    ``alpha`` and ``beta`` by the KD weight (e.g. ``alpha=9, beta=72``) and applies
    the warm-up factor :math:`\min(\text{epoch}/\text{warmup}, 1)`.

    Args:
        student_logits: ``(..., C)`` floating-point array with at least 2 dimensions
            (``(B, C)``, or token-level ``(B, T, C)``).
        teacher_logits: floating-point array of the same shape.
        labels: integer class indices in ``[0, C)`` of the leading shape (``(B,)``, ``(B, T)``).
        alpha: weight of TCKD.
        beta: weight of NCKD.
        temperature: base temperature :math:`\tau > 0`.
        standardize, ddof, eps: see :func:`kd_loss`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-position losses, 0 where masked out).
        mask: ``None`` or a boolean array of the leading shape; see :func:`kd_loss`. Labels
            at masked-out positions must still be valid class indices.

    Returns:
        A float, or an array of the leading shape for ``reduction="none"``.

    Example:
        >>> import numpy as np
        >>> from logit_standardization import dkd_loss
        >>> s = np.array([[3.0, 1.0, 0.0]]); t = np.array([[5.0, 0.0, 1.0]])
        >>> round(dkd_loss(s, t, np.array([0])), 6)
        1.063133

    Reference:
        Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022; Sun et al., CVPR 2024.
    """
    fn = "dkd_loss"
    h = _checks.check_hyper(fn, alpha=alpha, beta=beta, temperature=temperature, reduction=reduction)
    s, t = prepare_pair(fn, student_logits, teacher_logits, standardize=standardize, ddof=ddof, eps=eps,
                        ndim=_checks.TOKENS)
    y = as_labels(fn, "labels", labels, s.shape[:-1], s.shape[-1])
    m = as_mask(fn, "mask", mask, s.shape[:-1])
    tckd, nckd = dkd_parts(s, t, y, h["temperature"])
    return reduce_rows(h["alpha"] * tckd + h["beta"] * nckd, h["reduction"], m)


def dkd_warmup(epoch: float, *, warmup_epochs: int = 20) -> float:
    r"""DKD's loss warm-up factor for a (1-based) epoch: :math:`\min(e / W, 1)`.

    The published trainer multiplies the whole DKD loss by this factor, so the distillation
    term ramps up linearly over the first ``warmup_epochs`` epochs (20 on CIFAR-100: 0.05,
    0.10, ..., 1.0 from epoch 20 on; 1 on ImageNet, which is no warm-up from epoch 1).
    Fractional epochs (a per-step warm-up) are allowed; an epoch below 0 is refused.

    Args:
        epoch: the epoch :math:`e \ge 0` (1-based in the published schedule).
        warmup_epochs: :math:`W`, an int >= 1.

    Returns:
        A float in :math:`[0, 1]`.

    Example:
        >>> from logit_standardization import dkd_warmup
        >>> dkd_warmup(1), dkd_warmup(10), dkd_warmup(400)
        (0.05, 0.5, 1.0)
    """
    h = _checks.check_hyper("dkd_warmup", epoch=epoch, warmup_epochs=warmup_epochs)
    return min(h["epoch"] / h["warmup_epochs"], 1.0)
