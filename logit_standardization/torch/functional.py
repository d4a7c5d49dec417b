"""The functions of the NumPy core for PyTorch tensors: same names, arguments and defaults.

Each function is the core's formula translated operation by operation into ``torch``
operations (differentiable by autograd); where a fused autograd Function of
:mod:`logit_standardization.torch._fused` computes the same thing with less memory and time
(the Z-score, the KD divergence, MLKD's batched temperatures), the public function calls it
instead. Both paths are tested against each other and against the core.

One keyword more than the core on every function taking logits: ``check_finite``.
Everything follows the inputs' device; nothing here moves data to another device.

Numerics:

* Compute dtype: float32 for float16/bfloat16 inputs (also under ``torch.autocast``, which is
  switched off inside these functions), the input dtype for float32/float64 (the wider one if
  student and teacher differ). Statistics, softmaxes and reductions run in it and the
  returned values have it; gradients reach the inputs in their own dtype.
* The Z-score scales each row by a power of two first (``eps`` alike), as the core does:
  the same bits for ordinary inputs, and the right Z-score for any finite input, up to each
  dtype's largest value.
* A constant row standardizes to zeros, with a finite gradient (``(I - 11^T/C)/eps`` times
  the incoming gradient, as autograd through ``torch.std`` gives; 0 when ``eps=0``).

Bad input raises the core's ``TypeError``/``ValueError`` with the same message, before
anything is computed. ``check_finite=False`` skips the one check that reads tensor values
(NaN/Inf in the logits, which costs a pass over the data and, on an accelerator, a
synchronisation); labels are always range-checked.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from .. import _checks
from .._ctkd import ctkd_lambda
from .._dkd import dkd_warmup
from .._mlkd import DEFAULT_TEMPERATURES
from . import _fused
from ._fused import compute_dtype as _compute_dtype
from ._fused import full_precision as _full_precision
from ._fused import upcast as _upcast

__all__ = [
    "DEFAULT_TEMPERATURES",
    "confidence_masks",
    "ctkd_lambda",
    "ctkd_temperature",
    "dkd_loss",
    "dkd_warmup",
    "gradient_reversal",
    "kd_loss",
    "mlkd_loss",
    "mlkd_terms",
    "standardized",
    "zscore",
]

#: Whether the public functions use the fused autograd Functions where they apply (the tests
#: switch it off to run the plain translation through the same public functions).
_FUSED = True


def _fused_here() -> bool:
    """The fused Functions, unless switched off or called under a ``torch.func`` transform
    (``grad``/``vmap``, as chunked losses such as Liger's use), where the plain ops apply."""
    return _FUSED and not torch._C._are_functorch_transforms_active()

_INT_KINDS = {
    torch.int8: "i", torch.int16: "i", torch.int32: "i", torch.int64: "i",
    torch.uint8: "u", torch.uint16: "u", torch.uint32: "u", torch.uint64: "u",
}


# ----------------------------------------------------------------------------- input handling
def _kind(dtype: torch.dtype) -> str:
    """NumPy-style dtype kind letter of a torch dtype (what ``_checks`` speaks)."""
    if dtype.is_floating_point:
        return "f"
    if dtype.is_complex:
        return "c"
    if dtype == torch.bool:
        return "b"
    return _INT_KINDS.get(dtype, str(dtype).replace("torch.", ""))


def _tensor(x: Any) -> tuple[torch.Tensor | None, tuple[int, ...], str]:
    """``(tensor, shape, kind)``; ``tensor`` is None when ``x`` is no numeric array (a string,
    objects...): then ``shape``/``kind`` are NumPy's view of it, for the caller's check to report."""
    if isinstance(x, torch.Tensor):
        return x, tuple(x.shape), _kind(x.dtype)
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError):
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError):
            arr = np.empty((), dtype=object)
        kind = arr.dtype.kind if arr.dtype.kind not in "fiub" else "O"
        return None, arr.shape, kind
    return t, tuple(t.shape), _kind(t.dtype)


def _logits(fn: str, name: str, x: Any, *, ndim: int | str | None = 2, check_finite: bool = True) -> torch.Tensor:
    """Validate logits with the core's checks (same order, same messages); no cast."""
    t, shape, kind = _tensor(x)
    _checks.check_logits(fn, name, shape, kind, ndim=ndim)
    if check_finite:
        _checks.check_finite(fn, name, _all_finite(t))
    return t


def _labels(fn: str, labels: Any, batch: int | tuple, num_classes: int, device: torch.device) -> torch.Tensor:
    """Class labels of shape ``(batch,)``, or of the leading shape ``batch`` (a tuple)."""
    y, shape, kind = _tensor(labels)
    lo = hi = None
    lead = (batch,) if isinstance(batch, int) else tuple(batch)
    if y is not None and shape == lead and y.numel() > 0 and kind in ("i", "u"):
        lo, hi = (int(v) for v in torch.stack(torch.aminmax(y)).tolist())
    _checks.check_labels(fn, "labels", shape, kind, batch, num_classes, lo, hi)
    return y.to(device=device, dtype=torch.int64)



def _token_labels(fn: str, labels: Any, lead: tuple, vocab: int, *, ignore_index: int, ce_weight: float,
                  device: torch.device, of: str) -> torch.Tensor | None:
    """Token ids of the leading shape ``lead`` in ``[0, vocab)`` or ``ignore_index``, flattened to
    int64 on ``device``; ``None`` without labels (refused when ``ce_weight > 0``). ``of`` names the
    argument whose tokens they label."""
    if labels is None:
        if ce_weight > 0:
            _checks.fail(fn, "labels", "token ids (needed when ce_weight > 0)", "None")
        return None
    y, shape, kind = _tensor(labels)
    if kind not in ("i", "u") or y is None:
        _checks.fail(fn, "labels", "an integer tensor of token ids", f"dtype kind {_checks.kind_name(kind)}", TypeError)
    if tuple(shape) != lead:
        _checks.fail(fn, "labels", f"of shape {lead} (the tokens of '{of}')", f"shape {tuple(shape)}")
    y = y.reshape(-1).to(device=device, dtype=torch.int64)
    kept = y[y != ignore_index]
    if kept.numel():
        lo, hi = (int(v) for v in torch.stack(torch.aminmax(kept)).tolist())
        if lo < 0 or hi >= vocab:
            _checks.fail(fn, "labels", f"token ids in [0, {vocab}) or ignore_index ({ignore_index})",
                         f"label {lo if lo < 0 else hi}")
    return y


def _pair(fn: str, s: Any, t: Any, *, standardize: Any, ddof: Any, eps: Any, check_finite: bool,
          ndim: int | str = 2):
    """The core's ``prepare_pair`` checks. Returns ``(s, t, standardize, ddof, eps)``."""
    s = _logits(fn, "student_logits", s, ndim=ndim, check_finite=check_finite)
    t = _logits(fn, "teacher_logits", t, ndim=ndim, check_finite=check_finite)
    _checks.check_same_shape(fn, "teacher_logits", tuple(t.shape), "student_logits", tuple(s.shape))
    h = _checks.check_hyper(fn, standardize=standardize, eps=eps)
    ddof = _checks.check_ddof(fn, ddof, s.shape[-1])
    return s, t, h["standardize"], ddof, h["eps"]


def _all_finite(x: torch.Tensor) -> bool:
    """No NaN/Inf in ``x``, with one reduction and one sync.

    A sum is non-finite when an entry is; only then (or when finite values overflow the sum,
    as logits near the dtype's largest value do) the exact min/max scan decides.
    """
    if x.numel() == 0:
        return True
    x = x.detach()
    if math.isfinite(x.sum(dtype=_compute_dtype(x.dtype)).item()):
        return True
    lo, hi = torch.stack(torch.aminmax(x)).tolist()
    return math.isfinite(lo) and math.isfinite(hi)


def _mask(fn: str, mask: Any, lead: tuple, device: torch.device) -> torch.Tensor | None:
    """The core's ``as_mask``: ``None`` or a boolean tensor of the leading shape (on ``device``)."""
    if mask is None:
        return None
    m, shape, kind = _tensor(mask)
    _checks.check_mask(fn, "mask", shape, kind, lead)
    return m.to(device=device)


def _reduce(rows: torch.Tensor, reduction: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The core's ``reduce_rows``: over the positions where ``mask`` is True (all without one);
    masked-out positions are 0 (value and gradient), ``"mean"`` of no position is 0. No sync."""
    if mask is not None:
        rows = torch.where(mask, rows, rows.new_zeros(()))
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    if mask is None:
        return rows.mean()
    return rows.sum() / mask.sum().clamp_min(1).to(rows.dtype)


# ----------------------------------------------------------------------------- plain translation of the core
def _rescale(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The core's ``rescale`` along the last axis: ``(x * 2**-k, eps * 2**-k)``."""
    power = _fused.row_power(x)
    return x * power, power * eps


def _standardize_scaled(x: torch.Tensor, eps: torch.Tensor, ddof: int, temperature: float = 1.0) -> torch.Tensor:
    """The core's ``standardize_scaled`` along the last axis.

    The deviation is a vector norm (autograd gives it a zero gradient at a constant row, as
    ``torch.std`` does, where a square root would give NaN). A positive denominator below
    ``2**24`` times the smallest normal number can only be ``eps`` scaled far down (a constant
    row of logits above about 1e23 in float32, 1e293 in float64); it is raised to that floor,
    so that autograd's incoming-gradient-over-denominator stays finite.
    """
    c = x.shape[-1]
    centred = x - x.mean(dim=-1, keepdim=True)
    std = torch.linalg.vector_norm(centred, dim=-1, keepdim=True) * (c - ddof) ** -0.5
    denom = (eps + std) * temperature
    positive = denom > 0
    safe = torch.where(positive, denom, 1.0).clamp_min(torch.finfo(x.dtype).tiny * 2.0**24)
    return torch.where(positive, centred / safe, 0.0)


def _zscore_plain(x: torch.Tensor, ddof: int, eps: float, temperature: float = 1.0) -> torch.Tensor:
    xs, eps_scaled = _rescale(x, eps)
    return _standardize_scaled(xs, eps_scaled, ddof, temperature)


def _zscore_rows(x: torch.Tensor, ddof: int, eps: float) -> torch.Tensor:
    """Z-score along the last axis of a checked tensor in the compute dtype (fused or plain)."""
    return _fused.ZScore.apply(x, ddof, eps) if _fused_here() else _zscore_plain(x, ddof, eps)


def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Per-row ``sum p (log p - log q)`` with ``0 log 0 = 0`` (also where ``log q`` is -inf)."""
    p = log_p.exp()
    positive = p > 0
    return (p * torch.where(positive, log_p - log_q, 0.0)).sum(dim=-1)


def _kd_rows_plain(s: torch.Tensor, t: torch.Tensor, tau: Any) -> torch.Tensor:
    """The core's ``kd_rows``: ``tau^2 * KL(softmax(t/tau) || softmax(s/tau))`` of prepared logits.

    ``tau``: a number, or a tensor of 1 or ``B`` temperatures (one per row).
    """
    if isinstance(tau, torch.Tensor):
        col = tau.reshape(-1, 1)
        return tau.reshape(-1).square() * _kl_rows(torch.log_softmax(t / col, dim=-1),
                                                   torch.log_softmax(s / col, dim=-1))
    return tau * tau * _kl_rows(torch.log_softmax(t / tau, dim=-1), torch.log_softmax(s / tau, dim=-1))


def _binary_and_rest(z: torch.Tensor, labels: torch.Tensor, rest_index: torch.Tensor):
    """The core's ``_binary_and_rest``: log-probabilities of [target, all others] of the full
    softmax, and the log-softmax over the non-target classes (exact exclusion), of ``z`` ``(B, C)``."""
    rest = z.gather(1, rest_index)
    log_all = torch.log_softmax(z, dim=1)
    lse_rest = torch.logsumexp(rest, dim=1)
    lse_all = torch.logsumexp(z, dim=1)
    log_binary = torch.stack([log_all.gather(1, labels.unsqueeze(1)).squeeze(1), lse_rest - lse_all], dim=1)
    return log_binary, torch.log_softmax(rest, dim=1)


def _dkd_parts(s: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, tau: float):
    """The core's ``dkd_parts``: per-sample ``(TCKD, NCKD)`` of ``(N, C)`` logits, each scaled by ``tau^2``."""
    c = s.shape[1]
    ar = torch.arange(c - 1, device=s.device)
    rest_index = ar.unsqueeze(0) + (ar.unsqueeze(0) >= labels.unsqueeze(1)).long()
    bs, rest_s = _binary_and_rest(s / tau, labels, rest_index)
    bt, rest_t = _binary_and_rest(t / tau, labels, rest_index)
    scale = tau * tau
    return scale * _kl_rows(bt, bs), scale * _kl_rows(rest_t, rest_s)


def _median(v: torch.Tensor) -> torch.Tensor:
    """``numpy.percentile(v, 50)`` (linear interpolation) of a 1-D tensor, without a sync."""
    ordered = v.sort().values
    pos = (v.numel() - 1) / 2
    lo = int(pos)
    return torch.lerp(ordered[lo], ordered[min(lo + 1, v.numel() - 1)], pos - lo)


def _gram_diff_sq(s: torch.Tensor, t: torch.Tensor, tau: float, *, classes: bool) -> torch.Tensor:
    """The core's ``_gram_diff_sq``: squared difference of the correlation matrices of ``softmax(z/tau)``."""
    ps, pt = torch.softmax(s / tau, dim=-1), torch.softmax(t / tau, dim=-1)
    if classes:
        gs, gt = ps.T @ ps, pt.T @ pt
    else:
        gs, gt = ps @ ps.T, pt @ pt.T
    return (gt - gs) ** 2


def _mlkd_plain(sw, ss, tw, ts, mask, cmask, *, temperatures, standardize, variant, ddof, eps):
    """The core's MLKD loop (unweighted terms), one temperature at a time."""
    if standardize:
        zw = (_zscore_plain(sw, ddof, eps), _zscore_plain(tw, ddof, eps))
        zs = (_zscore_plain(ss, ddof, eps), _zscore_plain(ts, ddof, eps))
    else:
        zw, zs = (sw, tw), (ss, ts)
    b, c = sw.shape
    kd = cc = bc = sw.new_zeros(())
    if variant == "reference":
        m_bar, c_bar = mask.mean(), cmask.mean()
        for j, tau in enumerate(temperatures):
            kd = kd + m_bar * _kd_rows_plain(*zw, tau).mean()
            strong = zs if j < 3 else zw  # inherited bug: positions 4 and 5 use the weak view
            kd = kd + _kd_rows_plain(*strong, tau).mean()
            cc = cc + c_bar * _gram_diff_sq(sw, tw, tau, classes=True).sum() / c
            bc = bc + m_bar * _gram_diff_sq(sw, tw, tau, classes=False).sum() / b
    else:
        for tau in temperatures:
            kd = kd + (mask * _kd_rows_plain(*zw, tau)).mean() + _kd_rows_plain(*zs, tau).mean()
            for s_, t_ in ((sw, tw), (ss, ts)):
                cc = cc + (_gram_diff_sq(s_, t_, tau, classes=True) * cmask).sum() / c
                bc = bc + (_gram_diff_sq(s_, t_, tau, classes=False) * mask).sum() / b
    return {"kd": kd, "cc": cc, "bc": bc}


# ----------------------------------------------------------------------------- public functions
def zscore(
    logits: Any,
    *,
    temperature: float = 1.0,
    ddof: int = 1,
    eps: float = 1e-7,
    axis: int = -1,
    check_finite: bool = True,
) -> torch.Tensor:
    r"""Standardize logits along ``axis`` and divide by a base temperature.

    :math:`\mathcal{Z}(x;\tau) = (x - \bar x) / ((\varepsilon + s(x))\,\tau)`; see
    :func:`logit_standardization.zscore` for the math and conventions (rows scaled by a power
    of two first: no overflow for any finite input). The backward is analytic (no autograd
    graph through mean and deviation).

    Args:
        logits: floating-point tensor of any shape with at least 2 entries along ``axis``.
        temperature: base temperature :math:`\tau > 0`.
        ddof: 1 (published code, Bessel-corrected) or 0 (the paper's formula).
        eps: non-negative constant added to the deviation.
        axis: the class axis.
        check_finite: reject NaN/Inf in ``logits`` (one pass over the data).

    Returns:
        Tensor of the input's shape, in the compute dtype (float32 for half-precision input).

    Example:
        >>> import torch
        >>> from logit_standardization.torch import zscore
        >>> zscore(torch.tensor([[1.0, 2.0, 3.0]]) * 50 + 7, temperature=2.0)
        tensor([[-0.5000,  0.0000,  0.5000]])
        >>> zscore(torch.tensor([[1.0, 2.0, 3.0]]) * 1e38)   # near float32's largest value
        tensor([[-1.0000,  0.0000,  1.0000]])
    """
    fn = "zscore"
    check = _checks.check_hyper(fn, check_finite=check_finite)["check_finite"]
    x = _logits(fn, "logits", logits, ndim=None, check_finite=check)
    ax = _checks.check_axis_classes(fn, "logits", tuple(x.shape), axis)
    h = _checks.check_hyper(fn, temperature=temperature, eps=eps)
    ddof = _checks.check_ddof(fn, ddof, x.shape[ax])
    tau, eps = h["temperature"], h["eps"]
    with _full_precision(x.device):
        x = _upcast(x, _compute_dtype(x.dtype))
        moved = ax != x.ndim - 1
        if moved:
            x = x.movedim(ax, -1)
        if _fused_here():
            z = _fused.ZScore.apply(x, ddof, eps)
            if tau != 1.0:
                z = z / tau
        else:
            z = _zscore_plain(x, ddof, eps, tau)
        return z.movedim(-1, ax) if moved else z


def standardized(loss_fn: Callable[..., Any], *, ddof: int = 1, eps: float = 1e-7) -> Callable[..., Any]:
    """Put :func:`zscore` in front of any ``loss_fn(student_logits, teacher_logits, ...)``.

    The torch counterpart of :func:`logit_standardization.standardized`.

    Example:
        >>> import torch
        >>> from logit_standardization.torch import standardized
        >>> mse = standardized(torch.nn.functional.mse_loss)
        >>> s = torch.tensor([[0.0, 1.0, 2.0]])
        >>> float(mse(s, 10 * s + 3)) < 1e-12
        True
    """

    def wrapped(student_logits: Any, teacher_logits: Any, *args: Any, **kwargs: Any) -> Any:
        return loss_fn(zscore(student_logits, ddof=ddof, eps=eps), zscore(teacher_logits, ddof=ddof, eps=eps),
                       *args, **kwargs)

    name = getattr(loss_fn, "__name__", "loss")
    wrapped.__name__ = f"standardized_{name}"
    wrapped.__doc__ = f"{wrapped.__name__}: logit standardization followed by {name}."
    wrapped.__wrapped__ = loss_fn  # type: ignore[attr-defined]
    return wrapped


def _temperature(fn: str, temperature: Any, batch: int, check_finite: bool) -> float | torch.Tensor:
    """A positive number, or a tensor of shape (), (1,), (B,) or (B, 1) (e.g. a learned temperature;
    with token-level logits ``(B, T, C)`` a per-sample temperature applies to every token of the sample)."""
    if not isinstance(temperature, torch.Tensor):
        return _checks.check_hyper(fn, temperature=temperature)["temperature"]
    shape = tuple(temperature.shape)
    if not temperature.dtype.is_floating_point:
        _checks.fail(fn, "temperature", "a real number or a floating-point tensor",
                     f"dtype kind {_checks.kind_name(_kind(temperature.dtype))}", TypeError)
    if shape not in ((), (1,), (batch,), (batch, 1)):
        _checks.fail(fn, "temperature", f"a number or a tensor of shape (), (1,), ({batch},) or ({batch}, 1)",
                     f"shape {shape}")
    if check_finite and not bool(torch.all(torch.isfinite(temperature) & (temperature > 0))):
        _checks.fail(fn, "temperature", "finite and > 0", "a tensor with other values")
    return temperature


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
    check_finite: bool = True,
) -> torch.Tensor:
    r"""KD loss :math:`\tau^2\,\mathrm{KL}(p_t \,\|\, q_s)`, logit-standardized by default.

    See :func:`logit_standardization.kd_loss` for the math (the mean over the positions
    where ``mask`` is True). Standardization and divergence run as one fused autograd
    function with an analytic backward, on the positions flattened to rows.

    Args:
        student_logits: ``(..., C)`` floating-point tensor with at least 2 dimensions:
            ``(B, C)``, or token-level ``(B, T, C)`` (a language model's logits).
        teacher_logits: tensor of the same shape (usually computed under ``no_grad``;
            if it requires grad it gets its gradient too).
        temperature: base temperature :math:`\tau > 0`; also a tensor of shape ``()``,
            ``(1,)``, ``(B,)`` or ``(B, 1)`` (per-sample), which receives a gradient
            when it requires one (CTKD).
        standardize, ddof, eps: see :func:`zscore`.
        reduction: ``"mean"`` (over the counted positions; ``batchmean`` for ``(B, C)``),
            ``"sum"`` or ``"none"`` (per-position losses of the leading shape, 0 where masked out).
        mask: ``None`` or a boolean tensor of the leading shape (``(B, T)``: False at padding
            and prompt tokens); a mask with no True entry gives 0 for ``"mean"``, not NaN.
        check_finite: reject NaN/Inf logits (and non-positive tensor temperatures).

    Returns:
        0-d tensor (the leading shape for ``"none"``) in the compute dtype.

    Example:
        >>> import torch
        >>> from logit_standardization.torch import kd_loss
        >>> t = torch.tensor([[2.0, 0.0, -2.0]], dtype=torch.float64)
        >>> abs(float(kd_loss(t * 0.1 + 5.0, t))) < 1e-12   # the same logits up to an affine map
        True
        >>> round(float(kd_loss(t * 0.1 + 5.0, t, standardize=False)), 4)
        0.8481
    """
    fn = "kd_loss"
    check = _checks.check_hyper(fn, check_finite=check_finite)["check_finite"]
    tensor_tau = isinstance(temperature, torch.Tensor)
    h = _checks.check_hyper(fn, reduction=reduction, **({} if tensor_tau else {"temperature": temperature}))
    s, t, standardize, ddof, eps = _pair(fn, student_logits, teacher_logits, standardize=standardize, ddof=ddof,
                                         eps=eps, check_finite=check, ndim=_checks.TOKENS)
    lead = tuple(s.shape[:-1])
    m = _mask(fn, mask, lead, s.device)
    tau = _temperature(fn, temperature, s.shape[0], check)
    dtype = _compute_dtype(s.dtype, t.dtype, *((tau.dtype,) if tensor_tau else ()))
    with _full_precision(s.device):
        s, t = _upcast(s, dtype), _upcast(t, dtype)
        if len(lead) > 1:  # token-level: the positions as rows (a per-sample temperature for each of them)
            s, t = s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1])
            if tensor_tau and tau.numel() > 1:
                tau = tau.reshape((-1,) + (1,) * (len(lead) - 1)).expand(lead).reshape(-1)
        if _fused_here():
            if tensor_tau:
                tau = tau.to(device=s.device, dtype=dtype).reshape(1, -1, 1)
            rows = _fused.KDRows.apply(s, t, tau, standardize, ddof, eps)
        else:
            if tensor_tau:
                tau = tau.to(device=s.device, dtype=dtype)
            if standardize:
                s, t = _zscore_plain(s, ddof, eps), _zscore_plain(t, ddof, eps)
            rows = _kd_rows_plain(s, t, tau)
        return _reduce(rows.reshape(lead), h["reduction"], m)


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
    check_finite: bool = True,
) -> torch.Tensor:
    r"""Decoupled KD :math:`\alpha\,\mathrm{TCKD} + \beta\,\mathrm{NCKD}`, logit-standardized by default.

    See :func:`logit_standardization.dkd_loss` for the math (exact exclusion of the target
    class, "others" as a log-domain sum). The warm-up factor (:func:`dkd_warmup`) is
    applied by :class:`~logit_standardization.torch.DKDLoss`.

    Args:
        student_logits, teacher_logits: ``(..., C)`` floating-point tensors (``(B, C)`` or
            token-level ``(B, T, C)``).
        labels: integer class indices in ``[0, C)`` of the leading shape (``(B,)``, ``(B, T)``;
            always range-checked, masked-out positions included).
        alpha, beta: weights of TCKD and NCKD (>= 0).
        temperature: base temperature :math:`\tau > 0`.
        standardize, ddof, eps, reduction, mask, check_finite: see :func:`kd_loss`.

    Returns:
        0-d tensor (the leading shape for ``"none"``) in the compute dtype.

    Example:
        >>> import torch
        >>> from logit_standardization.torch import dkd_loss
        >>> s = torch.tensor([[3.0, 1.0, 0.0]], dtype=torch.float64)
        >>> t = torch.tensor([[5.0, 0.0, 1.0]], dtype=torch.float64)
        >>> round(float(dkd_loss(s, t, torch.tensor([0]))), 6)
        1.063133
    """
    fn = "dkd_loss"
    check = _checks.check_hyper(fn, check_finite=check_finite)["check_finite"]
    h = _checks.check_hyper(fn, alpha=alpha, beta=beta, temperature=temperature, reduction=reduction)
    s, t, standardize, ddof, eps = _pair(fn, student_logits, teacher_logits, standardize=standardize, ddof=ddof,
                                         eps=eps, check_finite=check, ndim=_checks.TOKENS)
    lead = tuple(s.shape[:-1])
    y = _labels(fn, labels, lead, s.shape[-1], s.device)
    m = _mask(fn, mask, lead, s.device)
    dtype = _compute_dtype(s.dtype, t.dtype)
    with _full_precision(s.device):
        s, t = _upcast(s, dtype), _upcast(t, dtype)
        s, t, y = s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1]), y.reshape(-1)
        if standardize:
            s, t = _zscore_rows(s, ddof, eps), _zscore_rows(t, ddof, eps)
        tckd, nckd = _dkd_parts(s, t, y, h["temperature"])
        return _reduce((h["alpha"] * tckd + h["beta"] * nckd).reshape(lead), h["reduction"], m)


def confidence_masks(teacher_weak: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """MLKD's sample and class confidence masks (see :func:`logit_standardization.confidence_masks`).

    Computed without gradient in the compute dtype; the medians interpolate linearly, as
    ``numpy.percentile(., 50)`` does.

    Example:
        >>> import torch
        >>> from logit_standardization.torch import confidence_masks
        >>> m, c = confidence_masks(torch.tensor([[4.0, 0.0], [1.0, 0.0], [0.0, 0.0]]))
        >>> m.tolist(), c.tolist()
        ([0.0, 1.0, 1.0], [0.0, 1.0])
    """
    tw = _logits("confidence_masks", "teacher_weak", teacher_weak, check_finite=False)
    with torch.no_grad(), _full_precision(tw.device):
        p = torch.softmax(tw.to(_compute_dtype(tw.dtype)), dim=-1)
        conf = p.amax(dim=1)
        cconf = p.sum(dim=0)
        return (conf <= _median(conf)).to(p.dtype), (cconf <= _median(cconf)).to(p.dtype)


def _mlkd_terms(
    fn: str, student_weak: Any, student_strong: Any, teacher_weak: Any, teacher_strong: Any, *,
    temperatures: Any, kd_weight: float, standardize: bool, variant: str, ddof: int, eps: float,
    check_finite: bool,
) -> dict[str, torch.Tensor]:
    check = _checks.check_hyper(fn, check_finite=check_finite)["check_finite"]
    h = _checks.check_hyper(fn, variant=variant, temperatures=temperatures, kd_weight=kd_weight)
    sw, tw, _, ddof, eps = _pair(fn, student_weak, teacher_weak, standardize=False, ddof=ddof, eps=eps,
                                 check_finite=check)
    ss = _logits(fn, "student_strong", student_strong, check_finite=check)
    ts = _logits(fn, "teacher_strong", teacher_strong, check_finite=check)
    _checks.check_same_shape(fn, "student_strong", tuple(ss.shape), "student_weak", tuple(sw.shape))
    _checks.check_same_shape(fn, "teacher_strong", tuple(ts.shape), "student_weak", tuple(sw.shape))
    standardize = _checks.check_hyper(fn, standardize=standardize)["standardize"]
    dtype = _compute_dtype(sw.dtype, ss.dtype, tw.dtype, ts.dtype)
    with _full_precision(sw.device):
        sw, ss, tw, ts = (_upcast(x, dtype) for x in (sw, ss, tw, ts))
        mask, cmask = confidence_masks(tw)
        terms = (_fused.mlkd_terms if _fused_here() else _mlkd_plain)(
            sw, ss, tw, ts, mask, cmask, temperatures=h["temperatures"], standardize=standardize,
            variant=h["variant"], ddof=ddof, eps=eps)
        w = h["kd_weight"]
        return {k: w * v for k, v in terms.items()}


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
    check_finite: bool = True,
) -> dict[str, torch.Tensor]:
    r"""MLKD's instance (``"kd"``), class (``"cc"``) and batch (``"bc"``) terms.

    See :func:`logit_standardization.mlkd_terms` for the math and the two variants. All
    temperatures are evaluated in one batched pass per view (a repeated temperature only
    once), the Z-scores once per view.

    Args:
        student_weak, student_strong, teacher_weak, teacher_strong: ``(B, C)`` logits.
        temperatures, kd_weight, standardize, variant, ddof, eps: as in the core.
        check_finite: reject NaN/Inf logits.

    Returns:
        ``{"kd", "cc", "bc"}`` of 0-d tensors in the compute dtype.

    Example:
        >>> import torch
        >>> from logit_standardization.torch import mlkd_terms
        >>> g = torch.Generator().manual_seed(0)
        >>> sw, ss, tw, ts = (torch.randn(4, 5, generator=g) for _ in range(4))
        >>> sorted(mlkd_terms(sw, ss, tw, ts))
        ['bc', 'cc', 'kd']
    """
    return _mlkd_terms("mlkd_terms", student_weak, student_strong, teacher_weak, teacher_strong,
                       temperatures=temperatures, kd_weight=kd_weight, standardize=standardize, variant=variant,
                       ddof=ddof, eps=eps, check_finite=check_finite)


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
    check_finite: bool = True,
) -> torch.Tensor:
    """Sum of :func:`mlkd_terms` (cross-entropy not included), a 0-d tensor.

    Example:
        >>> import torch
        >>> from logit_standardization.torch import mlkd_loss, mlkd_terms
        >>> g = torch.Generator().manual_seed(0)
        >>> args = [torch.randn(4, 5, generator=g) for _ in range(4)]
        >>> bool(torch.isclose(mlkd_loss(*args), sum(mlkd_terms(*args).values())))
        True
    """
    terms = _mlkd_terms("mlkd_loss", student_weak, student_strong, teacher_weak, teacher_strong,
                        temperatures=temperatures, kd_weight=kd_weight, standardize=standardize, variant=variant,
                        ddof=ddof, eps=eps, check_finite=check_finite)
    return terms["kd"] + terms["cc"] + terms["bc"]


def ctkd_temperature(raw: Any, *, t_start: float = 1.0, t_end: float = 20.0, check_finite: bool = True) -> torch.Tensor:
    r"""CTKD's temperature :math:`t_\mathrm{start} + t_\mathrm{end}\,\sigma(g)` of a raw tensor ``g``.

    See :func:`logit_standardization.ctkd_temperature`. Differentiable; a number becomes a
    0-d tensor of the default dtype, half precision is computed in float32.

    Example:
        >>> import torch
        >>> from logit_standardization.torch import ctkd_temperature
        >>> ctkd_temperature(torch.tensor([1.0]))
        tensor([15.6212])
    """
    fn = "ctkd_temperature"
    h = _checks.check_hyper(fn, t_start=t_start, t_end=t_end, check_finite=check_finite)
    g, _, kind = _tensor(raw)
    _checks.check_real_kind(fn, "raw", kind)
    if kind != "f":
        g = g.to(torch.get_default_dtype())
    if h["check_finite"]:
        _checks.check_finite(fn, "raw", _all_finite(g))
    with _full_precision(g.device):
        return h["t_start"] + h["t_end"] * torch.sigmoid(_upcast(g, _compute_dtype(g.dtype)))


def gradient_reversal(x: torch.Tensor, lambda_: float | torch.Tensor) -> torch.Tensor:
    r"""Identity forward; the backward multiplies the incoming gradient by ``lambda_``.

    As in CTKD, the sign is *not* flipped here: the reversal comes from a negative
    ``lambda_`` (see :func:`ctkd_lambda`).

    Example:
        >>> import torch
        >>> from logit_standardization.torch import gradient_reversal
        >>> g = torch.ones(2, requires_grad=True)
        >>> (3 * gradient_reversal(g, -0.5)).sum().backward()
        >>> g.grad
        tensor([-1.5000, -1.5000])
    """
    if not isinstance(lambda_, torch.Tensor):
        lambda_ = _checks.check_real("gradient_reversal", "lambda_", lambda_)
    return _fused.GradReverse.apply(x, lambda_)
