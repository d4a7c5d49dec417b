r"""Offline teacher logits stored as top-k: :func:`compress_teacher_logits` and :func:`topk_kd_loss`.

Storing a language-model teacher's logits for offline distillation costs ``V`` numbers per token
(128256 float16 values: 250 KiB per token). :func:`compress_teacher_logits` keeps, per token, the
``k`` largest logits and their indices, plus the mean and the standard deviation of the FULL
vocabulary's logits (the statistics of the Z-score, computed with the library's overflow-free
rescaling): ``k * (4 + itemsize) + 8`` bytes per token.

With standardization the stored values give the teacher's standardized top-k logits exactly:

.. math::

    z_j = \frac{x_j - \mu}{(\varepsilon + \sigma)\,\tau}, \qquad j \in \mathrm{top}_k .

The rest of the vocabulary is unknown entry by entry, but two of its numbers are exact: how many
entries it has (``V - k``) and their sum (a Z-score row sums to 0, so the rest sums to
:math:`-\sum_{\mathrm{top}_k} z_j`; without standardization :math:`V\mu/\tau - \sum z_j`), hence
their mean :math:`\bar z_r`. :func:`topk_kd_loss` offers two treatments (``rest=``):

* ``"uniform"`` (the default): **the teacher's rest is taken as** ``V - k`` **entries all equal to**
  :math:`\bar z_r`. The teacher's normaliser becomes
  :math:`L = \mathrm{lse}(z_{\mathrm{top}_k}, \bar z_r + \log(V-k))`, so
  :math:`p_j = e^{z_j - L}` on the top-k and each remaining entry gets
  :math:`e^{\bar z_r - L}`; the divergence is taken against the student's full log-softmax
  :math:`\log q` over all ``V`` entries (the rest's part needs only :math:`\sum_{\mathrm{rest}}\log q_i`,
  the full row's sum minus the top-k's). By Jensen's inequality the rest's mass is
  underestimated (the true :math:`\sum_{\mathrm{rest}} e^{z_i} \ge (V-k)e^{\bar z_r}`); the loss is
  exact when the non-top-k logits are equal.
* ``"renormalize"``: the teacher distribution is the softmax of :math:`z` over the top-k entries only
  (renormalised to sum to 1): :math:`\ell = \tau^2 \sum_{\mathrm{top}_k} \hat p_j (\log \hat p_j - \log q_j)`.
  The usual sparse-logit choice; with standardization it is poor, since the standardized teacher
  distribution is flat (at :math:`\tau = 2` the top-20 of a 256-entry vocabulary carry about a quarter
  of the mass), and the renormalisation moves all of the student's mass onto the top-k set.

With ``k`` equal to the vocabulary size both are exactly :func:`~logit_standardization.torch.kd_loss`.
The measured error against the full loss on a trained model's logits is in the Language models
guide ("Offline teacher logits (top-k)").
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as nnf

from .. import _checks
from . import _fused
from .functional import _all_finite, _logits, _tensor, _token_labels, _zscore_rows

__all__ = ["TopKTeacher", "compress_teacher_logits", "topk_kd_loss"]


class TopKTeacher(NamedTuple):
    """A teacher's logits compressed to the top-k entries per token (:func:`compress_teacher_logits`).

    Fields (leading shape ``(...)``: ``(N,)`` tokens or ``(B, T)``): ``indices`` ``(..., k)`` int32
    vocabulary ids of the ``k`` largest logits (largest first); ``logits`` ``(..., k)`` the raw
    logits at those ids, in the input dtype; ``mean`` and ``std`` ``(...)`` the mean and standard
    deviation (``ddof`` as given to :func:`compress_teacher_logits`) of each token's full-vocabulary
    logits, float32 (float64 for float64 logits); ``vocab_size``: the vocabulary size ``V``.
    A NamedTuple of tensors: ``torch.save`` it, or slice each field along the tokens.
    """

    indices: torch.Tensor
    logits: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    vocab_size: int


def _statistics(x: torch.Tensor, ddof: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and deviation along the last axis, computed on the row scaled by a power of two (as the
    Z-score is: :func:`~logit_standardization.torch._fused.row_power`) and scaled back exactly."""
    power = _fused.row_power(x)
    scaled = x * power
    mean = scaled.mean(dim=-1, keepdim=True)
    std = torch.linalg.vector_norm(scaled - mean, dim=-1, keepdim=True) * (x.shape[-1] - ddof) ** -0.5
    return (mean / power).squeeze(-1), (std / power).squeeze(-1)


def compress_teacher_logits(logits: Any, k: int, *, ddof: int = 1, eps: float = 1e-7) -> TopKTeacher:
    r"""The top-k logits and indices of each token, with the full vocabulary's mean and deviation.

    Args:
        logits: ``(..., V)`` teacher logits with at least 2 dimensions (``(N, V)`` or ``(B, T, V)``),
            finite.
        k: entries kept per token, ``1 <= k <= V``.
        ddof: the deviation's delta degrees of freedom; use the same value in :func:`topk_kd_loss`.
        eps: checked as in :func:`topk_kd_loss` (not stored: the Z-score's ``eps`` is applied by the
            loss).

    Returns:
        :class:`TopKTeacher`: int32 ``indices`` and the raw ``logits`` (input dtype) of the ``k``
        largest logits (``torch.topk``, largest first), and ``mean``/``std`` over all ``V`` entries in
        float32 (float64 for float64 logits), computed on rows scaled by a power of two: finite and
        correct for logits up to half the dtype's largest value (float32: ~1.7e38).

    Example:
        >>> import torch
        >>> from logit_standardization.torch import compress_teacher_logits
        >>> t = compress_teacher_logits(torch.tensor([[3.0, 1.0, 2.0, 0.0]]), 2)
        >>> t.indices.tolist(), t.logits.tolist(), t.mean.tolist(), round(float(t.std), 4)
        ([[0, 2]], [[3.0, 2.0]], [1.5], 1.291)
    """
    fn = "compress_teacher_logits"
    _checks.check_hyper(fn, eps=eps)
    x = _logits(fn, "logits", logits, ndim=_checks.TOKENS)
    vocab = x.shape[-1]
    ddof = _checks.check_ddof(fn, ddof, vocab)
    k = _checks.check_hyper(fn, k=k)["k"]
    if k > vocab:
        _checks.fail(fn, "k", f"at most the vocabulary size ({vocab})", repr(k))
    x = x.detach()
    cdt = _fused.compute_dtype(x.dtype)
    with _fused.full_precision(x.device):
        values, indices = torch.topk(x, k, dim=-1)
        mean, std = _statistics(x.to(cdt), ddof)
    return TopKTeacher(indices.to(torch.int32), values, mean, std, vocab)


def _teacher(fn: str, teacher: Any, lead: tuple, vocab: int) -> TopKTeacher:
    if not isinstance(teacher, TopKTeacher):
        _checks.fail(fn, "teacher", "a TopKTeacher (from compress_teacher_logits)", type(teacher).__name__, TypeError)
    idx, shape, kind = _tensor(teacher.indices)
    if kind not in ("i", "u") or idx is None:
        _checks.fail(fn, "teacher", "a TopKTeacher with integer indices", f"dtype kind {_checks.kind_name(kind)}",
                     TypeError)
    for name in ("logits", "mean", "std"):
        t, _, kind = _tensor(getattr(teacher, name))
        if kind != "f" or t is None:
            _checks.fail(fn, "teacher", f"a TopKTeacher with floating-point {name}",
                         f"dtype kind {_checks.kind_name(kind)}", TypeError)
        if not _all_finite(t):
            _checks.fail(fn, "teacher", f"a TopKTeacher with finite {name}", "NaN or Inf")
    k = shape[-1] if shape else 0
    if tuple(shape) != (*lead, k) or k < 1 or tuple(teacher.logits.shape) != tuple(shape):
        _checks.fail(fn, "teacher", f"top-k indices and logits of shape {(*lead, 'k')} (the tokens of "
                     "'student_logits')", f"indices {tuple(shape)}, logits {tuple(teacher.logits.shape)}")
    if tuple(teacher.mean.shape) != lead or tuple(teacher.std.shape) != lead:
        _checks.fail(fn, "teacher", f"mean and std of shape {lead}",
                     f"mean {tuple(teacher.mean.shape)}, std {tuple(teacher.std.shape)}")
    if teacher.vocab_size != vocab:
        _checks.fail(fn, "teacher", f"compressed from a vocabulary of {vocab} entries (that of 'student_logits')",
                     f"vocab_size {teacher.vocab_size}")
    if idx.numel():
        lo, hi = (int(v) for v in torch.stack(torch.aminmax(idx)).tolist())
        if lo < 0 or hi >= vocab:
            _checks.fail(fn, "teacher", f"indices in [0, {vocab})", f"index {lo if lo < 0 else hi}")
    return teacher


def _standardized_topk(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, eps: float, tau: float):
    """``(x - mean) / ((eps + std) * tau)`` on values scaled by one power of two per token (exact), so
    that nothing overflows; 0 where the denominator is 0 (a constant row with ``eps = 0``)."""
    big = torch.maximum(x.abs().amax(dim=-1, keepdim=True), torch.maximum(mean.abs(), std))
    power = _fused.row_power(big)
    denom = (std * power + eps * power) * tau
    positive = denom > 0
    return torch.where(positive, (x * power - mean * power) / torch.where(positive, denom, 1.0), 0.0)


def topk_kd_loss(
    student_logits: Any,
    teacher: TopKTeacher,
    labels: Any = None,
    *,
    temperature: float = 2.0,
    standardize: bool = True,
    ddof: int = 1,
    eps: float = 1e-7,
    ce_weight: float = 0.0,
    kd_weight: float = 1.0,
    ignore_index: int = -100,
    rest: str = "uniform",
    reduction: str = "mean",
) -> torch.Tensor:
    r"""``ce_weight * CE + kd_weight * KD`` against a teacher stored as top-k (:class:`TopKTeacher`).

    The KD term is :math:`\tau^2\,\mathrm{KL}(p \,\|\, q)` with the student's full-vocabulary
    :math:`q = \mathrm{softmax}(Z(s)/\tau)` and the teacher's :math:`p` rebuilt from the top-k: the
    top-k Z-scores are exact (from the stored mean and deviation), the rest of the vocabulary is
    approximated as ``rest`` says (module docstring): ``"uniform"``, the ``V - k`` remaining entries
    at their exact mean; ``"renormalize"``, dropped (the top-k softmax renormalised). With
    ``k = V`` the result equals :func:`~logit_standardization.torch.kd_loss` up to rounding.

    Args:
        student_logits: ``(..., V)`` student logits (``(N, V)`` or ``(B, T, V)``; gets a gradient).
        teacher: :class:`TopKTeacher` of the same leading shape and vocabulary size.
        labels: token ids of the leading shape, or ``ignore_index``; needed when ``ce_weight > 0``;
            without labels every token counts.
        temperature, standardize, ddof, eps: as in :func:`~logit_standardization.torch.kd_loss`
            (``ddof``: the student's; the teacher's deviation was computed with the ``ddof`` given to
            :func:`compress_teacher_logits`).
        ce_weight, kd_weight: the weights of the two terms (>= 0).
        ignore_index: label of tokens that do not count.
        rest: ``"uniform"`` or ``"renormalize"``: the treatment of the non-top-k entries.
        reduction: ``"mean"`` (over the kept tokens; 0 when none is kept), ``"sum"`` or ``"none"``
            (per-token values of the leading shape, 0 at ignored tokens).

    Returns:
        0-d tensor (the leading shape for ``"none"``) in the compute dtype (float32 for half precision).

    Example:
        >>> import torch
        >>> from logit_standardization.torch import compress_teacher_logits, kd_loss, topk_kd_loss
        >>> g = torch.Generator().manual_seed(0)
        >>> s, t = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)
        >>> full = compress_teacher_logits(t, 10)                 # k = V: the full loss
        >>> bool(torch.isclose(topk_kd_loss(s, full), kd_loss(s, t)))
        True
        >>> float(topk_kd_loss(s, compress_teacher_logits(t, 3))) > 0
        True
    """
    fn = "topk_kd_loss"
    h = _checks.check_hyper(fn, temperature=temperature, standardize=standardize, eps=eps, ce_weight=ce_weight,
                            kd_weight=kd_weight, ignore_index=ignore_index, reduction=reduction, rest=rest)
    s = _logits(fn, "student_logits", student_logits, ndim=_checks.TOKENS)
    lead, vocab = tuple(s.shape[:-1]), s.shape[-1]
    ddof = _checks.check_ddof(fn, ddof, vocab)
    teacher = _teacher(fn, teacher, lead, vocab)
    tau, std_on, eps = h["temperature"], h["standardize"], h["eps"]
    y = _token_labels(fn, labels, lead, vocab, ignore_index=h["ignore_index"], ce_weight=h["ce_weight"],
                      device=s.device, of="student_logits")
    n_tok = math.prod(lead)
    cdt = _fused.compute_dtype(s.dtype, teacher.logits.dtype)
    dev = s.device
    with _fused.full_precision(dev):
        s2 = _fused.upcast(s, cdt).reshape(n_tok, vocab)
        idx = teacher.indices.to(device=dev, dtype=torch.int64).reshape(n_tok, -1)
        x = teacher.logits.detach().to(device=dev, dtype=cdt).reshape(n_tok, -1)
        mean = teacher.mean.detach().to(device=dev, dtype=cdt).reshape(n_tok, 1)
        if std_on:
            dev_t = teacher.std.detach().to(device=dev, dtype=cdt).reshape(n_tok, 1)
            zt = _standardized_topk(x, mean, dev_t, eps, tau)
            zs = _zscore_rows(s2, ddof, eps) / tau
        else:
            zt, zs = x / tau, s2 / tau
        log_q_all = torch.log_softmax(zs, dim=-1)
        log_q = log_q_all.gather(1, idx)
        rest_n = vocab - idx.shape[1]
        if h["rest"] == "renormalize" or rest_n == 0:
            log_p = torch.log_softmax(zt, dim=-1)
            tail = 0.0
        else:
            # the rest of the teacher's row: rest_n entries at their mean (exact from the statistics)
            if std_on:
                total = zt.new_zeros((n_tok, 1))  # a Z-score row sums to 0
            else:
                total = mean * (vocab / tau)
            rest_mean = (total - zt.sum(dim=-1, keepdim=True)) / rest_n
            rest_log = rest_mean + math.log(rest_n)
            lse = torch.logsumexp(torch.cat([zt, rest_log], dim=-1), dim=-1, keepdim=True)
            log_p = zt - lse
            rest_p = (rest_log - lse).exp()
            rest_log_q = log_q_all.sum(dim=-1, keepdim=True) - log_q.sum(dim=-1, keepdim=True)
            tail = (rest_p * (rest_mean - lse) - rest_p / rest_n * rest_log_q).squeeze(-1)
        p = log_p.exp()
        kd_rows = ((p * torch.where(p > 0, log_p - log_q, 0.0)).sum(dim=-1) + tail) * (tau * tau)
        rows = kd_rows * h["kd_weight"]
        valid = None
        if y is not None:
            valid = y != h["ignore_index"]
            if h["ce_weight"] > 0:
                ce = nnf.cross_entropy(s2, y.masked_fill(~valid, 0), reduction="none")
                rows = rows + h["ce_weight"] * ce
            rows = torch.where(valid, rows, rows.new_zeros(()))
        if h["reduction"] == "none":
            return rows.reshape(lead)
        if h["reduction"] == "sum":
            return rows.sum()
        count = n_tok if valid is None else valid.sum()
        return rows.sum() / (count.clamp_min(1).to(rows.dtype) if valid is not None else max(count, 1))
