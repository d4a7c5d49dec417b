"""Multi-level logit distillation (Jin et al., CVPR 2023) with optional standardization (notes §4)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _checks
from ._kd import kd_rows, prepare_pair
from ._numpy import as_logits, softmax

DEFAULT_TEMPERATURES = (2.0, 3.0, 5.0, 2.0, 6.0)


def confidence_masks(teacher_weak: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MLKD's confidence masks from the weak-view teacher logits (T = 1, never standardized).

    Returns ``(sample_mask (B,), class_mask (C,))`` as float arrays: a sample is kept when its
    top probability is at or below the batch median (``numpy.percentile(., 50)``, linear
    interpolation), a class when its summed probability is at or below the class median.
    """
    p = softmax(teacher_weak)
    conf = np.max(p, axis=1)
    cconf = np.sum(p, axis=0)
    sample_mask = (conf <= np.percentile(conf, 50)).astype(np.float64)
    class_mask = (cconf <= np.percentile(cconf, 50)).astype(np.float64)
    return sample_mask, class_mask


def _gram_diff_sq(s: np.ndarray, t: np.ndarray, tau: float, *, classes: bool) -> np.ndarray:
    """Squared difference of teacher/student correlation matrices of ``softmax(z / tau)``.

    ``classes=True``: the (C, C) class correlation ``P^T P``; else the (B, B) batch one ``P P^T``.
    """
    ps, pt = softmax(s / tau), softmax(t / tau)
    if classes:
        gs, gt = ps.T @ ps, pt.T @ pt
    else:
        gs, gt = ps @ ps.T, pt @ pt.T
    return (gt - gs) ** 2


def mlkd_terms(
    student_weak: Any,
    student_strong: Any,
    teacher_weak: Any,
    teacher_strong: Any,
    *,
    temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES,
    kd_weight: float = 9.0,
    standardize: bool = True,
    variant: str = "reference",
    ddof: int = 1,
    eps: float = 1e-7,
) -> dict[str, float]:
    r"""The three distillation terms of MLKD: instance (``"kd"``), class (``"cc"``), batch (``"bc"``).

    Inputs are the logits of a weakly and a strongly augmented view of the same
    ``B`` images, for student and teacher. With :math:`w` = ``kd_weight``,
    :math:`\mathcal T` = ``temperatures``, :math:`\mathrm{KD}_T` = :func:`kd_loss`
    at temperature :math:`T` (standardized when ``standardize``), and, for
    :math:`P = \mathrm{softmax}(z/T)` (never standardized, no :math:`T^2`):

    .. math::

        \mathrm{CC}_T = \tfrac{1}{C}\,\lVert P_t^\top P_t - P_s^\top P_s \rVert_F^2, \qquad
        \mathrm{BC}_T = \tfrac{1}{B}\,\lVert P_t P_t^\top - P_s P_s^\top \rVert_F^2

    The masks come from the weak teacher at :math:`T=1`: a sample counts when its top
    probability is at most the batch median, a class when its summed probability is at
    most the class median (see :func:`confidence_masks`).

    ``variant="reference"`` reproduces the published code, quirks included: the masks
    multiply already-reduced scalars, so they act through their means :math:`\bar m`,
    :math:`\bar c`; the strong-view KD terms at positions 4 and 5 of
    :math:`\mathcal T` use the *weak* logits; strong-view CC and BC are left out:

    .. math::

        \mathrm{kd} = w\,\bar m \sum_{T\in\mathcal T} \mathrm{KD}_T(s_w, t_w)
            + w \sum_{j \le 3} \mathrm{KD}_{T_j}(s_s, t_s) + w \sum_{j > 3} \mathrm{KD}_{T_j}(s_w, t_w),
        \quad
        \mathrm{cc} = w\,\bar c \sum_T \mathrm{CC}_T(s_w, t_w), \quad
        \mathrm{bc} = w\,\bar m \sum_T \mathrm{BC}_T(s_w, t_w)

    ``variant="corrected"`` does what the MLKD paper describes: the weak-view KD is the
    batch mean of per-sample losses times the sample mask, CC and BC sum the squared
    correlation differences with each column weighted by its class (sample) mask, every
    strong-view term uses the strong logits, and strong-view CC and BC (same masks) are
    added. Where the masks are all ones and the two views coincide, the corrected
    ``kd`` equals the reference ``kd``.

    MLKD stays 2-D: the class and batch correlation terms are statistics of a batch of
    samples, without a token-level meaning, so token-level ``(B, T, C)`` logits and position
    masks (which :func:`kd_loss` and :func:`dkd_loss` accept) are refused here.

    Args:
        student_weak, student_strong, teacher_weak, teacher_strong: ``(B, C)`` logits (2-D only).
        temperatures: the temperatures :math:`\mathcal T` (the published code uses
            ``(T0, 3, 5, 2, 6)`` with ``T0`` the base temperature, 2 under LS).
        kd_weight: :math:`w`, multiplied into every term.
        standardize: apply the Z-score pre-process inside the KD terms only.
        variant: ``"reference"`` or ``"corrected"``.
        ddof, eps: see :func:`zscore`.

    Returns:
        ``{"kd": float, "cc": float, "bc": float}``.

    Example:
        >>> import numpy as np
        >>> from logit_standardization import mlkd_terms
        >>> rng = np.random.default_rng(0)
        >>> sw, ss, tw, ts = (rng.normal(size=(4, 5)) for _ in range(4))
        >>> sorted(mlkd_terms(sw, ss, tw, ts))
        ['bc', 'cc', 'kd']

    Reference:
        Jin et al., "Multi-Level Logit Distillation", CVPR 2023; Sun et al., CVPR 2024.
    """
    return _mlkd_terms(
        "mlkd_terms", student_weak, student_strong, teacher_weak, teacher_strong,
        temperatures=temperatures, kd_weight=kd_weight, standardize=standardize,
        variant=variant, ddof=ddof, eps=eps,
    )


def _mlkd_terms(
    fn: str,
    student_weak: Any,
    student_strong: Any,
    teacher_weak: Any,
    teacher_strong: Any,
    *,
    temperatures: Any,
    kd_weight: float,
    standardize: bool,
    variant: str,
    ddof: int,
    eps: float,
) -> dict[str, float]:
    h = _checks.check_hyper(fn, variant=variant, temperatures=temperatures, kd_weight=kd_weight)
    variant, temps, w = h["variant"], h["temperatures"], h["kd_weight"]
    sw, tw = prepare_pair(fn, student_weak, teacher_weak, standardize=False, ddof=ddof, eps=eps)
    ss = as_logits(fn, "student_strong", student_strong)
    ts = as_logits(fn, "teacher_strong", teacher_strong)
    _checks.check_same_shape(fn, "student_strong", ss.shape, "student_weak", sw.shape)
    _checks.check_same_shape(fn, "teacher_strong", ts.shape, "student_weak", sw.shape)
    if _checks.check_hyper(fn, standardize=standardize)["standardize"]:
        zw = prepare_pair(fn, sw, tw, standardize=True, ddof=ddof, eps=eps)
        zs = prepare_pair(fn, ss, ts, standardize=True, ddof=ddof, eps=eps)
    else:
        zw, zs = (sw, tw), (ss, ts)
    mask, cmask = confidence_masks(tw)
    b, c = sw.shape

    kd = cc = bc = 0.0
    if variant == "reference":
        m_bar, c_bar = float(np.mean(mask)), float(np.mean(cmask))
        for j, tau in enumerate(temps):
            kd += m_bar * float(np.mean(kd_rows(*zw, tau)))
            strong = zs if j < 3 else zw  # inherited bug: positions 4 and 5 use the weak view
            kd += float(np.mean(kd_rows(*strong, tau)))
            cc += c_bar * float(np.sum(_gram_diff_sq(sw, tw, tau, classes=True))) / c
            bc += m_bar * float(np.sum(_gram_diff_sq(sw, tw, tau, classes=False))) / b
    else:
        for tau in temps:
            kd += float(np.mean(mask * kd_rows(*zw, tau))) + float(np.mean(kd_rows(*zs, tau)))
            for s_, t_ in ((sw, tw), (ss, ts)):
                cc += float(np.sum(_gram_diff_sq(s_, t_, tau, classes=True) * cmask)) / c
                bc += float(np.sum(_gram_diff_sq(s_, t_, tau, classes=False) * mask)) / b
    return {"kd": w * kd, "cc": w * cc, "bc": w * bc}


def mlkd_loss(
    student_weak: Any,
    student_strong: Any,
    teacher_weak: Any,
    teacher_strong: Any,
    *,
    temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES,
    kd_weight: float = 9.0,
    standardize: bool = True,
    variant: str = "reference",
    ddof: int = 1,
    eps: float = 1e-7,
) -> float:
    r"""Sum of :func:`mlkd_terms`: :math:`\mathrm{kd} + \mathrm{cc} + \mathrm{bc}`.

    Cross-entropy on the two views (``w_ce * (CE(s_w, y) + CE(s_s, y))``) is not
    included; training code adds it.

    Example:
        >>> import numpy as np
        >>> from logit_standardization import mlkd_loss, mlkd_terms
        >>> rng = np.random.default_rng(0)
        >>> args = [rng.normal(size=(4, 5)) for _ in range(4)]
        >>> bool(np.isclose(mlkd_loss(*args), sum(mlkd_terms(*args).values())))
        True
    """
    terms = _mlkd_terms(
        "mlkd_loss",
        student_weak,
        student_strong,
        teacher_weak,
        teacher_strong,
        temperatures=temperatures,
        kd_weight=kd_weight,
        standardize=standardize,
        variant=variant,
        ddof=ddof,
        eps=eps,
    )
    return terms["kd"] + terms["cc"] + terms["bc"]
