"""PyTorch backend: the losses of :mod:`logit_standardization` as functions and ``nn.Module`` s.

Same names, arguments and defaults as the NumPy core (the specification; the math is
written there), plus one keyword, ``check_finite``, on every function that takes logits.
Everything follows the inputs' device; nothing here moves data to another device.

Functions: :func:`zscore`, :func:`kd_loss`, :func:`dkd_loss`, :func:`mlkd_terms`,
:func:`mlkd_loss`, :func:`ctkd_temperature`, :func:`ctkd_lambda`, plus
:func:`standardized`, :func:`confidence_masks` and :func:`gradient_reversal`.

Modules: :class:`KDLoss`, :class:`DKDLoss`, :class:`MLKDLoss`, :class:`CTKDLoss`,
:class:`GradientReversal`, :class:`CTKDLambdaSchedule`.

Numerics:

* Compute dtype: float32 for float16/bfloat16 inputs (also under ``torch.autocast``, which
  is switched off inside these functions), the input dtype for float32/float64 (the wider
  one if student and teacher differ). Statistics, softmaxes and reductions run in it and
  the returned values have it; gradients reach the inputs in their own dtype.
* The standardization and the KD divergence are one fused ``autograd.Function`` with an
  analytic backward (the Jacobian of :func:`logit_standardization.zscore`), batched over
  temperatures, so MLKD evaluates all of its temperatures in one call.
* A constant row standardizes to zeros, with a finite gradient (``(I - 11^T/C)/eps`` times
  the incoming gradient, as autograd through ``torch.std`` gives; 0 when ``eps=0``).
* The custom backward passes are first-order only (double backward raises).

Bad input raises the core's ``TypeError``/``ValueError`` with the same message, before
anything is computed. ``check_finite=False`` skips the one check that reads tensor values
(NaN/Inf in the logits, which costs a pass over the data and, on an accelerator, a
synchronisation); labels are always range-checked.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from . import _checks
from ._ctkd import ctkd_lambda
from ._mlkd import DEFAULT_TEMPERATURES

__all__ = [
    "DEFAULT_TEMPERATURES",
    "CTKDLambdaSchedule",
    "CTKDLoss",
    "DKDLoss",
    "GradientReversal",
    "KDLoss",
    "MLKDLoss",
    "confidence_masks",
    "ctkd_lambda",
    "ctkd_temperature",
    "dkd_loss",
    "gradient_reversal",
    "kd_loss",
    "mlkd_loss",
    "mlkd_terms",
    "standardized",
    "zscore",
]

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


def _tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(x)


def _logits(fn: str, name: str, x: Any, *, ndim: int | None = 2, check_finite: bool = True) -> torch.Tensor:
    """Validate logits with the core's checks (same order, same messages); no cast."""
    x = _tensor(x)
    _checks.check_logits(fn, name, tuple(x.shape), _kind(x.dtype), ndim=ndim)
    if check_finite:
        _checks.check_finite(fn, name, _all_finite(x))
    return x


def _pair(fn: str, s: Any, t: Any, *, standardize: bool, ddof: int, eps: float, check_finite: bool):
    """The core's ``prepare_pair`` checks. Returns ``(s, t, ddof, eps)``."""
    _checks.check_bool(fn, "check_finite", check_finite)
    s = _logits(fn, "student_logits", s, check_finite=check_finite)
    t = _logits(fn, "teacher_logits", t, check_finite=check_finite)
    _checks.check_same_shape(fn, "teacher_logits", tuple(t.shape), "student_logits", tuple(s.shape))
    _checks.check_bool(fn, "standardize", standardize)
    eps = _checks.check_positive(fn, "eps", eps, allow_zero=True)
    ddof = _checks.check_ddof(fn, ddof, s.shape[-1])
    return s, t, ddof, eps


def _labels(fn: str, labels: Any, batch: int, num_classes: int, device: torch.device) -> torch.Tensor:
    y = _tensor(labels)
    kind = _kind(y.dtype)
    lo = hi = None
    if y.ndim == 1 and y.numel() > 0 and kind in ("i", "u"):
        lo, hi = (int(v) for v in torch.stack(torch.aminmax(y)).tolist())
    _checks.check_labels(fn, "labels", tuple(y.shape), kind, batch, num_classes, lo, hi)
    return y.to(device=device, dtype=torch.int64)


def _compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs, else the widest input float dtype."""
    out = torch.float32
    for d in dtypes:
        out = torch.promote_types(out, d)
    return out


_AUTOCAST_AVAILABLE: dict[str, bool] = {}
_NO_CONTEXT = contextlib.nullcontext()


def _full_precision(device: torch.device) -> Any:
    """A context that switches autocast off on ``device`` when it is on (statistics and
    softmaxes must not run in half precision); a no-op context otherwise."""
    kind = device.type
    available = _AUTOCAST_AVAILABLE.get(kind)
    if available is None:
        available = _AUTOCAST_AVAILABLE[kind] = torch.amp.is_autocast_available(kind)
    if available and torch.is_autocast_enabled(kind):
        return torch.autocast(device_type=kind, enabled=False)
    return _NO_CONTEXT


def _all_finite(x: torch.Tensor) -> bool:
    """No NaN/Inf in ``x``, with one reduction and one sync.

    A sum is non-finite when an entry is; only then (or when finite values overflow the sum,
    far beyond any logit) the exact min/max scan decides.
    """
    if x.numel() == 0:
        return True
    x = x.detach()
    if math.isfinite(x.sum(dtype=_compute_dtype(x.dtype)).item()):
        return True
    lo, hi = torch.stack(torch.aminmax(x)).tolist()
    return math.isfinite(lo) and math.isfinite(hi)


class _SaturatingUpcast(torch.autograd.Function):
    """Widen a float16 tensor; the backward narrows the gradient back to float16 saturating at
    +-65504 instead of overflowing (the gradient at an exactly constant row is ~|g|/eps)."""

    @staticmethod
    def forward(ctx, x, dtype):
        return x.to(dtype)

    @staticmethod
    def backward(ctx, grad):
        limit = torch.finfo(torch.float16).max
        return grad.clamp(-limit, limit).to(torch.float16), None


def _upcast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` in the compute dtype (see :class:`_SaturatingUpcast` for float16 inputs)."""
    if x.dtype == torch.float16 and dtype != torch.float16 and x.requires_grad:
        return _SaturatingUpcast.apply(x, dtype)
    return x.to(dtype)


def _reduce(rows: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return rows
    return rows.sum() if reduction == "sum" else rows.mean()


# ----------------------------------------------------------------------------- fused kernels
def _zscore_forward(x: torch.Tensor, ddof: int, eps: float, scale: Any = 1.0):
    r"""``scale * Z(x)`` along the last axis, and what the backward needs.

    Returns ``(z, sigma, factor)`` with ``z = (x - mean) * factor``,
    ``factor = scale / (eps + s)`` (0 where ``eps + s == 0``: a constant row maps to zeros,
    as in the core) and ``sigma`` the deviation :math:`s` (as the core computes it: the mean
    first, then the root of the summed squared deviations over ``C - ddof``). ``scale`` (a number or a tensor
    broadcasting against ``(..., 1)``) folds a ``1/temperature`` into the same pass.
    """
    centred = x - x.mean(dim=-1, keepdim=True)
    sigma = torch.linalg.vector_norm(centred, dim=-1, keepdim=True).mul_((x.shape[-1] - ddof) ** -0.5)
    if eps > 0:
        factor = sigma.add(eps).reciprocal_()
    else:
        factor = sigma.reciprocal().masked_fill_(sigma == 0, 0.0)
    if not (isinstance(scale, float) and scale == 1.0):
        factor = factor.mul_(scale)
    return centred.mul_(factor), sigma, factor


def _zscore_backward(grad: torch.Tensor, z: torch.Tensor, rho: Any, sigma: torch.Tensor, factor: torch.Tensor, n: int,
                     *, zero_sum: bool = False):
    r"""Vector-Jacobian product of the Z-score (notes §1).

    .. math::

        \frac{\partial L}{\partial x} = \frac{g - \bar g}{\varepsilon + s}
            - Z(x)\,\frac{g^\top Z(x)}{n\,s}, \qquad n = C - \mathrm{ddof},

    with the second term dropped where :math:`s = 0` (as autograd through ``torch.std``
    does) and everything 0 where :math:`\varepsilon + s = 0`. ``g`` is the gradient with
    respect to :math:`Z(x)`; ``z`` and ``factor`` come from :func:`_zscore_forward` with
    ``scale = 1/rho``, i.e. ``z = Z(x)/rho`` and ``factor = 1/((eps + s) rho)``.
    ``zero_sum=True`` skips :math:`\bar g` for a ``g`` whose rows sum to 0 analytically
    (the KD gradients :math:`q - p` and :math:`p \odot (\log p - \log q - \mathrm{KL})`).
    """
    inv_d = factor if isinstance(rho, float) and rho == 1.0 else factor * rho
    coef = torch.linalg.vecdot(grad, z, dim=-1).unsqueeze_(-1)
    # (g . Z) / (n s), times rho; 0/0 at s = 0 (then z = 0 too) becomes 0
    coef = coef.div_(sigma * (n / (rho * rho))).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    if zero_sum:
        return torch.mul(grad, inv_d).addcmul_(z, coef, value=-1)
    out = torch.addcmul(grad.mean(dim=-1, keepdim=True).mul_(inv_d).neg_(), z, coef, value=-1)
    return out.addcmul_(grad, inv_d)


class _ZScore(torch.autograd.Function):
    """``Z(x)`` along the last axis with the analytic backward."""

    @staticmethod
    def forward(ctx, x, ddof: int, eps: float):
        z, sigma, factor = _zscore_forward(x, ddof, eps)
        ctx.save_for_backward(z, sigma, factor)
        ctx.n = x.shape[-1] - ddof
        return z

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        z, sigma, factor = ctx.saved_tensors
        with _full_precision(grad.device):
            return _zscore_backward(grad, z, 1.0, sigma, factor, ctx.n), None, None


class _KDRows(torch.autograd.Function):
    r"""Per-sample KD divergences, standardization fused in, at one or ``K`` temperatures.

    ``s, t``: ``(B, C)``. ``tau``: a number, or a tensor of shape ``(1, B or 1, 1)`` (one
    temperature, possibly per sample; output ``(B,)``) or ``(K, 1, 1)`` (output ``(K, B)``).
    Row value :math:`r = \tau^2\,\mathrm{KL}(p \,\|\, q)`, :math:`p = \mathrm{softmax}(\tilde t/\tau)`,
    :math:`q = \mathrm{softmax}(\tilde s/\tau)`, :math:`\tilde x = Z(x)` (``x`` itself
    without standardization). Gradients:

    .. math::

        \frac{\partial r}{\partial \tilde s} = \tau\,(q - p), \qquad
        \frac{\partial r}{\partial \tilde t} = \tau\,w, \quad w = p \odot (\log p - \log q - \mathrm{KL}),

    .. math::

        \frac{\partial r}{\partial \tau} = 2\tau\,\mathrm{KL} - (q - p)^\top \tilde s - w^\top \tilde t,

    followed by :func:`_zscore_backward` for ``s`` and ``t``. With one temperature its
    reciprocal is folded into the standardization pass (the saved ``zs`` is then
    :math:`\tilde s/\tau`).
    """

    @staticmethod
    def forward(ctx, s, t, tau, standardize: bool, ddof: int, eps: float):
        need_s, need_t, need_tau = ctx.needs_input_grad[:3]
        scalar = not isinstance(tau, torch.Tensor)
        fold = scalar or tau.shape[0] == 1
        if fold:
            rho = tau if scalar else tau[0]  # number or (B or 1, 1)
            scale = 1.0 / rho
            tau2 = rho * rho if scalar else rho.squeeze(-1).square()
        else:
            rho, scale, tau2 = 1.0, 1.0, tau.squeeze(-1).square()  # (K, 1)
        keep_t = need_t or need_tau
        # teacher first, so its standardized copy can be dropped early (peak memory)
        if standardize:
            zt, sig_t, f_t = _zscore_forward(t, ddof, eps, scale)
        else:
            zt, sig_t, f_t = (t * scale if fold else t), None, None
        logp = torch.log_softmax(zt if fold else zt / tau, dim=-1)
        if not keep_t:
            zt = sig_t = f_t = None
        p = logp.exp()
        if standardize:
            zs, sig_s, f_s = _zscore_forward(s, ddof, eps, scale)
        else:
            zs, sig_s, f_s = (s * scale if fold else s), None, None
        logq = torch.log_softmax(zs if fold else zs / tau, dim=-1)
        lr = logp.sub_(logq)  # log p - log q
        kl = torch.linalg.vecdot(p, lr, dim=-1)
        diff = logq.exp_().sub_(p) if (need_s or need_tau) else None  # q - p
        del logq
        w = p.mul_(lr.sub_(kl.unsqueeze(-1))) if keep_t else None  # p (log p - log q - KL)
        del p, lr
        ctx.meta = (standardize, s.shape[-1] - ddof, fold, scalar, rho if scalar else None)
        ctx.save_for_backward(None if scalar else tau, zs, zt, diff, w,
                              kl if need_tau else None, sig_s, f_s, sig_t, f_t)
        return kl * tau2

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        tau, zs, zt, diff, w, kl, sig_s, f_s, sig_t, f_t = ctx.saved_tensors
        standardize, n, fold, scalar, rho = ctx.meta
        need_s, need_t, need_tau = ctx.needs_input_grad[:3]
        gs = gt = gtau = None
        with _full_precision(grad.device):
            if fold:
                if not scalar:
                    rho = tau[0]  # (B or 1, 1)
                g_tau = grad.unsqueeze(-1) * rho  # (B, 1)
            else:
                rho = 1.0
                g_tau = (grad * tau.squeeze(-1)).unsqueeze(-1)  # (K, B, 1)
            if need_s:
                gz = diff * g_tau if fold else (diff * g_tau).sum(0)
                gs = _zscore_backward(gz, zs, rho, sig_s, f_s, n, zero_sum=True) if standardize else gz
            if need_t:
                gz = w * g_tau if fold else (w * g_tau).sum(0)
                gt = _zscore_backward(gz, zt, rho, sig_t, f_t, n, zero_sum=True) if standardize else gz
            if need_tau:
                # the saved zs, zt are Z/tau when folded: multiplying by tau converts back
                proj = torch.linalg.vecdot(diff, zs, dim=-1) + torch.linalg.vecdot(w, zt, dim=-1)
                tau_r = tau.squeeze(-1)  # (1, B or 1) or (K, 1)
                if fold:
                    gtau = grad * tau_r[0] * (2.0 * kl - proj)  # (B,)
                    gtau = gtau.sum().reshape(1, 1, 1) if tau.shape[1] == 1 else gtau.reshape(1, -1, 1)
                else:
                    gtau = (grad * (2.0 * tau_r * kl - proj)).sum(1).reshape(-1, 1, 1)
        return gs, gt, gtau, None, None, None


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lambda_):
        ctx.lambda_ = lambda_
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        lam = ctx.lambda_
        if isinstance(lam, torch.Tensor):
            lam = lam.to(device=grad.device, dtype=grad.dtype)
        return grad * lam, None


# ----------------------------------------------------------------------------- functions
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
    :func:`logit_standardization.zscore` for the math and conventions. The backward is
    analytic (no autograd graph through mean and deviation).

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
    """
    fn = "zscore"
    _checks.check_bool(fn, "check_finite", check_finite)
    x = _logits(fn, "logits", logits, ndim=None, check_finite=check_finite)
    ax = _checks.check_axis_classes(fn, "logits", tuple(x.shape), axis)
    tau = _checks.check_positive(fn, "temperature", temperature)
    eps = _checks.check_positive(fn, "eps", eps, allow_zero=True)
    ddof = _checks.check_ddof(fn, ddof, x.shape[ax])
    with _full_precision(x.device):
        x = _upcast(x, _compute_dtype(x.dtype))
        moved = ax != x.ndim - 1
        if moved:
            x = x.movedim(ax, -1)
        z = _ZScore.apply(x, ddof, eps)
        if tau != 1.0:
            z = z / tau
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

    wrapped.__name__ = f"standardized_{getattr(loss_fn, '__name__', 'loss')}"
    wrapped.__wrapped__ = loss_fn  # type: ignore[attr-defined]
    return wrapped


def _temperature(fn: str, temperature: Any, batch: int, check_finite: bool) -> float | torch.Tensor:
    """A positive number, or a tensor of shape (), (1,), (B,) or (B, 1) (e.g. a learned temperature)."""
    if not isinstance(temperature, torch.Tensor):
        return _checks.check_positive(fn, "temperature", temperature)
    shape = tuple(temperature.shape)
    if not temperature.dtype.is_floating_point:
        raise TypeError(f"{fn}: argument 'temperature' must be a real number or a floating-point tensor; "
                        f"got dtype kind {_checks.kind_name(_kind(temperature.dtype))}")
    if shape not in ((), (1,), (batch,), (batch, 1)):
        raise ValueError(f"{fn}: argument 'temperature' must be a number or a tensor of shape (), (1,), "
                         f"({batch},) or ({batch}, 1); got shape {shape}")
    if check_finite and not bool(torch.all(torch.isfinite(temperature) & (temperature > 0))):
        raise ValueError(f"{fn}: argument 'temperature' must be finite and > 0; got a tensor with other values")
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
    check_finite: bool = True,
) -> torch.Tensor:
    r"""KD loss :math:`\tau^2\,\mathrm{KL}(p_t \,\|\, q_s)`, logit-standardized by default.

    See :func:`logit_standardization.kd_loss` for the math. Standardization and
    divergence run as one fused autograd function with an analytic backward.

    Args:
        student_logits: ``(B, C)`` floating-point tensor.
        teacher_logits: ``(B, C)`` floating-point tensor (usually computed under ``no_grad``;
            if it requires grad it gets its gradient too).
        temperature: base temperature :math:`\tau > 0`; also a tensor of shape ``()``,
            ``(1,)``, ``(B,)`` or ``(B, 1)`` (per-sample), which receives a gradient
            when it requires one (CTKD).
        standardize, ddof, eps: see :func:`zscore`.
        reduction: ``"mean"`` (``batchmean``), ``"sum"`` or ``"none"`` (``(B,)``).
        check_finite: reject NaN/Inf logits (and non-positive tensor temperatures).

    Returns:
        0-d tensor (``(B,)`` for ``"none"``) in the compute dtype.

    Example:
        >>> import torch
        >>> from logit_standardization.torch import kd_loss
        >>> t = torch.tensor([[2.0, 0.0, -2.0]])
        >>> float(kd_loss(t * 0.1 + 5.0, t)) < 1e-12
        True
        >>> round(float(kd_loss(t * 0.1 + 5.0, t, standardize=False)), 4)
        0.8481
    """
    fn = "kd_loss"
    reduction = _checks.check_reduction(fn, reduction)
    if not isinstance(temperature, torch.Tensor):
        temperature = _checks.check_positive(fn, "temperature", temperature)
    s, t, ddof, eps = _pair(fn, student_logits, teacher_logits, standardize=standardize, ddof=ddof, eps=eps,
                            check_finite=check_finite)
    tau = _temperature(fn, temperature, s.shape[0], check_finite)
    dtype = _compute_dtype(s.dtype, t.dtype, *((tau.dtype,) if isinstance(tau, torch.Tensor) else ()))
    with _full_precision(s.device):
        if isinstance(tau, torch.Tensor):
            tau = tau.to(device=s.device, dtype=dtype).reshape(1, -1, 1)
        return _reduce(_KDRows.apply(_upcast(s, dtype), _upcast(t, dtype), tau, standardize, ddof, eps), reduction)


def _binary_and_rest(z: torch.Tensor, labels: torch.Tensor, rest_index: torch.Tensor):
    """Log-probabilities of [target, all others] of the full softmax, and the log-softmax
    over the non-target classes (exact exclusion), of scaled logits ``z`` ``(B, C)``."""
    rest = z.gather(1, rest_index)
    lse_all = torch.logsumexp(z, dim=1)
    lse_rest = torch.logsumexp(rest, dim=1)
    z_gt = z.gather(1, labels.unsqueeze(1)).squeeze(1)
    log_binary = torch.stack([z_gt - lse_all, lse_rest - lse_all], dim=1)
    return log_binary, rest - lse_rest.unsqueeze(1)


def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``sum p (log p - log q)`` along the last axis (an underflowed ``p`` contributes 0)."""
    return torch.linalg.vecdot(log_p.exp(), log_p - log_q, dim=-1)


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
    check_finite: bool = True,
) -> torch.Tensor:
    r"""Decoupled KD :math:`\alpha\,\mathrm{TCKD} + \beta\,\mathrm{NCKD}`, logit-standardized by default.

    See :func:`logit_standardization.dkd_loss` for the math (exact exclusion of the target
    class, "others" as a log-domain sum). The warm-up factor is applied by :class:`DKDLoss`.

    Args:
        student_logits, teacher_logits: ``(B, C)`` floating-point tensors.
        labels: ``(B,)`` integer class indices in ``[0, C)`` (always range-checked).
        alpha, beta: weights of TCKD and NCKD.
        temperature: base temperature :math:`\tau > 0`.
        standardize, ddof, eps, reduction, check_finite: see :func:`kd_loss`.

    Returns:
        0-d tensor (``(B,)`` for ``"none"``) in the compute dtype.

    Example:
        >>> import torch
        >>> from logit_standardization.torch import dkd_loss
        >>> s = torch.tensor([[3.0, 1.0, 0.0]], dtype=torch.float64)
        >>> t = torch.tensor([[5.0, 0.0, 1.0]], dtype=torch.float64)
        >>> round(float(dkd_loss(s, t, torch.tensor([0]))), 6)
        1.063133
    """
    fn = "dkd_loss"
    reduction = _checks.check_reduction(fn, reduction)
    tau = _checks.check_positive(fn, "temperature", temperature)
    a = _checks.check_real(fn, "alpha", alpha)
    b = _checks.check_real(fn, "beta", beta)
    s, t, ddof, eps = _pair(fn, student_logits, teacher_logits, standardize=standardize, ddof=ddof, eps=eps,
                            check_finite=check_finite)
    bsz, c = s.shape
    y = _labels(fn, labels, bsz, c, s.device)
    dtype = _compute_dtype(s.dtype, t.dtype)
    with _full_precision(s.device):
        s, t = _upcast(s, dtype), _upcast(t, dtype)
        if standardize:
            s, t = _ZScore.apply(s, ddof, eps), _ZScore.apply(t, ddof, eps)
        ar = torch.arange(c - 1, device=s.device)
        rest_index = ar.unsqueeze(0) + (ar.unsqueeze(0) >= y.unsqueeze(1)).long()
        bs, rest_s = _binary_and_rest(s / tau, y, rest_index)
        bt, rest_t = _binary_and_rest(t / tau, y, rest_index)
        rows = (tau * tau) * (a * _kl_rows(bt, bs) + b * _kl_rows(rest_t, rest_s))
        return _reduce(rows, reduction)


def _median(v: torch.Tensor) -> torch.Tensor:
    """``numpy.percentile(v, 50)`` (linear interpolation) of a 1-D tensor, without a sync."""
    ordered = v.sort().values
    pos = (v.numel() - 1) / 2
    lo = int(pos)
    return torch.lerp(ordered[lo], ordered[min(lo + 1, v.numel() - 1)], pos - lo)


def confidence_masks(teacher_weak: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
    with torch.no_grad(), _full_precision(teacher_weak.device):
        p = torch.softmax(teacher_weak.to(_compute_dtype(teacher_weak.dtype)), dim=-1)
        conf = p.amax(dim=1)
        cconf = p.sum(dim=0)
        return (conf <= _median(conf)).to(p.dtype), (cconf <= _median(cconf)).to(p.dtype)


def _correlation_terms(s: torch.Tensor, t: torch.Tensor, tau: torch.Tensor, class_weights=None, batch_weights=None):
    r"""MLKD's class and batch correlation sums at ``K`` temperatures (``tau``: ``(K, 1, 1)``).

    With :math:`P = \mathrm{softmax}(x/\tau_k)` (raw logits), returns two ``(K,)`` tensors:
    :math:`\sum (P_t^\top P_t - P_s^\top P_s)^2` and :math:`\sum (P_t P_t^\top - P_s P_s^\top)^2`,
    columns weighted by ``class_weights`` / ``batch_weights`` when given.
    """
    ps = torch.softmax(s.unsqueeze(0) / tau, dim=-1)
    pt = torch.softmax(t.unsqueeze(0) / tau, dim=-1)
    out = []
    for classes, weights in ((True, class_weights), (False, batch_weights)):
        if classes:
            sq = (pt.mT @ pt - ps.mT @ ps).square()
        else:
            sq = (pt @ pt.mT - ps @ ps.mT).square()
        if weights is not None:
            sq = sq * weights
        out.append(sq.sum(dim=(1, 2)))
    return out[0], out[1]


def _unique(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Distinct values in order of appearance, and the position of each input among them."""
    uniq: list[float] = []
    where = []
    for v in values:
        if v not in uniq:
            uniq.append(v)
        where.append(uniq.index(v))
    return uniq, where


def _mlkd_terms(
    fn: str, student_weak: Any, student_strong: Any, teacher_weak: Any, teacher_strong: Any, *,
    temperatures: Any, kd_weight: float, standardize: bool, variant: str, ddof: int, eps: float,
    check_finite: bool,
) -> dict[str, torch.Tensor]:
    variant = _checks.check_choice(fn, "variant", variant, _checks.MLKD_VARIANTS)
    temps = _checks.check_temperatures(fn, temperatures)
    w = _checks.check_real(fn, "kd_weight", kd_weight)
    _checks.check_bool(fn, "check_finite", check_finite)
    sw = _logits(fn, "student_logits", student_weak, check_finite=check_finite)
    tw = _logits(fn, "teacher_logits", teacher_weak, check_finite=check_finite)
    _checks.check_same_shape(fn, "teacher_logits", tuple(tw.shape), "student_logits", tuple(sw.shape))
    eps = _checks.check_positive(fn, "eps", eps, allow_zero=True)
    ddof = _checks.check_ddof(fn, ddof, sw.shape[-1])
    ss = _logits(fn, "student_strong", student_strong, check_finite=check_finite)
    ts = _logits(fn, "teacher_strong", teacher_strong, check_finite=check_finite)
    _checks.check_same_shape(fn, "student_strong", tuple(ss.shape), "student_weak", tuple(sw.shape))
    _checks.check_same_shape(fn, "teacher_strong", tuple(ts.shape), "student_weak", tuple(sw.shape))
    _checks.check_bool(fn, "standardize", standardize)

    dtype = _compute_dtype(sw.dtype, ss.dtype, tw.dtype, ts.dtype)
    dev = sw.device
    b, c = sw.shape
    with _full_precision(dev):
        sw, ss, tw, ts = (_upcast(x, dtype) for x in (sw, ss, tw, ts))
        mask, cmask = confidence_masks(tw)
        # Every temperature is evaluated once, in one batched call per view; repeated
        # temperatures (2 appears twice in the published list) are weighted by their count.
        uniq, where = _unique(temps)
        k = len(uniq)
        count = [where.count(i) for i in range(k)]
        late = [sum(1 for j in range(3, len(temps)) if where[j] == i) for i in range(k)]
        consts = torch.tensor([uniq, count, late], dtype=dtype, device=dev)
        taus, count_t, late_t = consts[0].reshape(k, 1, 1), consts[1], consts[2]
        weak = _KDRows.apply(sw, tw, taus, standardize, ddof, eps).reshape(k, b)
        if variant == "reference":
            m_bar, c_bar = mask.mean(), cmask.mean()
            # positions 1-3 use the strong view, positions 4, 5, ... the weak one (``late``)
            suniq, swhere = _unique(temps[:3])
            sconsts = torch.tensor([suniq, [swhere.count(i) for i in range(len(suniq))]], dtype=dtype, device=dev)
            strong = _KDRows.apply(ss, ts, sconsts[0].reshape(-1, 1, 1), standardize, ddof, eps).reshape(-1, b)
            kd = (torch.addcmul(late_t, count_t, m_bar) * weak.mean(1)).sum() + (sconsts[1] * strong.mean(1)).sum()
            cc_k, bc_k = _correlation_terms(sw, tw, taus)
            cc = c_bar * (count_t * cc_k).sum() / c
            bc = m_bar * (count_t * bc_k).sum() / b
        else:
            strong = _KDRows.apply(ss, ts, taus, standardize, ddof, eps).reshape(k, b)
            kd = (count_t * ((weak * mask).mean(1) + strong.mean(1))).sum()
            cw, bw = _correlation_terms(sw, tw, taus, cmask, mask)
            cs, bs = _correlation_terms(ss, ts, taus, cmask, mask)
            cc = (count_t * (cw + cs)).sum() / c
            bc = (count_t * (bw + bs)).sum() / b
        return {"kd": w * kd, "cc": w * cc, "bc": w * bc}


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
    t0 = _checks.check_real(fn, "t_start", t_start)
    width = _checks.check_positive(fn, "t_end", t_end)
    _checks.check_bool(fn, "check_finite", check_finite)
    g = raw if isinstance(raw, torch.Tensor) else torch.as_tensor(raw)
    kind = _kind(g.dtype)
    _checks.check_real_kind(fn, "raw", kind)
    if kind != "f":
        g = g.to(torch.get_default_dtype())
    if check_finite:
        _checks.check_finite(fn, "raw", _all_finite(g))
    with _full_precision(g.device):
        return t0 + width * torch.sigmoid(_upcast(g, _compute_dtype(g.dtype)))


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
    return _GradReverse.apply(x, lambda_)


# ----------------------------------------------------------------------------- modules
def _check_ddof_type(fn: str, ddof: Any) -> int:
    """``ddof`` is an int >= 0 (its upper bound, the class count, is checked at call time)."""
    if isinstance(ddof, bool) or not isinstance(ddof, int) or ddof < 0:
        _checks.check_ddof(fn, ddof, 2)
    return ddof


def _common_init(fn: str, *, standardize: Any, ddof: Any, eps: Any, check_finite: Any) -> tuple[bool, int, float, bool]:
    return (_checks.check_bool(fn, "standardize", standardize), _check_ddof_type(fn, ddof),
            _checks.check_positive(fn, "eps", eps, allow_zero=True), _checks.check_bool(fn, "check_finite", check_finite))


class KDLoss(nn.Module):
    """:func:`kd_loss` as a module; hyperparameters checked here, tensors at call time.

    Example:
        >>> import torch
        >>> from logit_standardization.torch import KDLoss
        >>> loss_fn = KDLoss(temperature=2.0)
        >>> loss_fn
        KDLoss(temperature=2.0, standardize=True, ddof=1, eps=1e-07, reduction='mean')
        >>> s = torch.randn(8, 10, requires_grad=True)
        >>> loss_fn(s, torch.randn(8, 10)).backward()
        >>> s.grad.shape
        torch.Size([8, 10])
    """

    def __init__(self, *, temperature: float = 2.0, standardize: bool = True, ddof: int = 1, eps: float = 1e-7,
                 reduction: str = "mean", check_finite: bool = True) -> None:
        super().__init__()
        fn = type(self).__name__
        self.temperature = _checks.check_positive(fn, "temperature", temperature)
        self.reduction = _checks.check_reduction(fn, reduction)
        self.standardize, self.ddof, self.eps, self.check_finite = _common_init(
            fn, standardize=standardize, ddof=ddof, eps=eps, check_finite=check_finite)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        return kd_loss(student_logits, teacher_logits, temperature=self.temperature, standardize=self.standardize,
                       ddof=self.ddof, eps=self.eps, reduction=self.reduction, check_finite=self.check_finite)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, standardize={self.standardize}, ddof={self.ddof}, "
                f"eps={self.eps}, reduction={self.reduction!r}")


class DKDLoss(nn.Module):
    r""":func:`dkd_loss` with DKD's linear warm-up.

    ``forward(..., epoch=e)`` multiplies the loss by :math:`\min(e / \text{warmup\_epochs}, 1)`
    (1-based epochs: 0.05, 0.10, ... up to 1 at epoch 20 with the CIFAR default); without
    ``epoch`` no factor is applied. The published LS settings are ``alpha=9, beta=72,
    temperature=2`` (the KD weight multiplied in).

    Example:
        >>> import torch
        >>> from logit_standardization.torch import DKDLoss
        >>> loss_fn = DKDLoss(alpha=9.0, beta=72.0)
        >>> s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
        >>> bool(torch.isclose(loss_fn(s, t, y, epoch=2), 0.1 * loss_fn(s, t, y)))
        True
    """

    def __init__(self, *, alpha: float = 1.0, beta: float = 8.0, temperature: float = 2.0, warmup_epochs: float = 20,
                 standardize: bool = True, ddof: int = 1, eps: float = 1e-7, reduction: str = "mean",
                 check_finite: bool = True) -> None:
        super().__init__()
        fn = type(self).__name__
        self.alpha = _checks.check_real(fn, "alpha", alpha)
        self.beta = _checks.check_real(fn, "beta", beta)
        self.temperature = _checks.check_positive(fn, "temperature", temperature)
        self.warmup_epochs = _checks.check_positive(fn, "warmup_epochs", warmup_epochs)
        self.reduction = _checks.check_reduction(fn, reduction)
        self.standardize, self.ddof, self.eps, self.check_finite = _common_init(
            fn, standardize=standardize, ddof=ddof, eps=eps, check_finite=check_finite)

    def warmup_factor(self, epoch: float | None) -> float:
        """``min(epoch / warmup_epochs, 1)``, or 1 without an epoch."""
        if epoch is None:
            return 1.0
        e = _checks.check_epoch(type(self).__name__, "epoch", epoch)
        return min(e / self.warmup_epochs, 1.0)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
                epoch: float | None = None) -> torch.Tensor:
        factor = self.warmup_factor(epoch)
        loss = dkd_loss(student_logits, teacher_logits, labels, alpha=self.alpha, beta=self.beta,
                        temperature=self.temperature, standardize=self.standardize, ddof=self.ddof, eps=self.eps,
                        reduction=self.reduction, check_finite=self.check_finite)
        return loss if factor == 1.0 else loss * factor

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}, "
                f"warmup_epochs={self.warmup_epochs}, standardize={self.standardize}, ddof={self.ddof}, "
                f"eps={self.eps}, reduction={self.reduction!r}")


class MLKDLoss(nn.Module):
    """:func:`mlkd_loss` as a module. ``forward`` returns the summed distillation loss and
    keeps the three terms of that call, detached, in :attr:`last_terms`.

    Example:
        >>> import torch
        >>> from logit_standardization.torch import MLKDLoss
        >>> loss_fn = MLKDLoss()
        >>> views = [torch.randn(8, 10) for _ in range(4)]
        >>> loss = loss_fn(*views)
        >>> bool(torch.isclose(loss, sum(loss_fn.last_terms.values())))
        True
    """

    def __init__(self, *, temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES, kd_weight: float = 9.0,
                 standardize: bool = True, variant: str = "reference", ddof: int = 1, eps: float = 1e-7,
                 check_finite: bool = True) -> None:
        super().__init__()
        fn = type(self).__name__
        self.temperatures = _checks.check_temperatures(fn, temperatures)
        self.kd_weight = _checks.check_real(fn, "kd_weight", kd_weight)
        self.variant = _checks.check_choice(fn, "variant", variant, _checks.MLKD_VARIANTS)
        self.standardize, self.ddof, self.eps, self.check_finite = _common_init(
            fn, standardize=standardize, ddof=ddof, eps=eps, check_finite=check_finite)
        self.last_terms: dict[str, torch.Tensor] = {}

    def forward(self, student_weak: torch.Tensor, student_strong: torch.Tensor, teacher_weak: torch.Tensor,
                teacher_strong: torch.Tensor) -> torch.Tensor:
        terms = mlkd_terms(student_weak, student_strong, teacher_weak, teacher_strong, temperatures=self.temperatures,
                           kd_weight=self.kd_weight, standardize=self.standardize, variant=self.variant,
                           ddof=self.ddof, eps=self.eps, check_finite=self.check_finite)
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        return terms["kd"] + terms["cc"] + terms["bc"]

    def extra_repr(self) -> str:
        return (f"temperatures={self.temperatures}, kd_weight={self.kd_weight}, standardize={self.standardize}, "
                f"variant={self.variant!r}, ddof={self.ddof}, eps={self.eps}")


class GradientReversal(nn.Module):
    """:func:`gradient_reversal` as a module: ``forward(x, lambda_)``.

    Example:
        >>> import torch
        >>> from logit_standardization.torch import GradientReversal
        >>> x = torch.ones(3, requires_grad=True)
        >>> GradientReversal()(x, -1.0).sum().backward()
        >>> x.grad
        tensor([-1., -1., -1.])
    """

    def forward(self, x: torch.Tensor, lambda_: float | torch.Tensor) -> torch.Tensor:
        return gradient_reversal(x, lambda_)


class CTKDLambdaSchedule:
    """CTKD's per-epoch gradient-reversal factor as a callable object: ``schedule(epoch) -> float``.

    A thin holder of :func:`ctkd_lambda`'s hyperparameters (checked here).

    Example:
        >>> from logit_standardization.torch import CTKDLambdaSchedule
        >>> schedule = CTKDLambdaSchedule(loops=10)
        >>> round(schedule(1), 5), schedule(10), schedule(11)
        (-0.02447, -1.0, -1.0)
    """

    def __init__(self, *, loops: int = 10, max_value: float = 0.0, min_value: float = -1.0,
                 schedule: str = "cosine") -> None:
        ctkd_lambda(0, loops=loops, max_value=max_value, min_value=min_value, schedule=schedule)  # validates
        self.loops, self.max_value, self.min_value, self.schedule = loops, float(max_value), float(min_value), schedule

    def __call__(self, epoch: float) -> float:
        return ctkd_lambda(epoch, loops=self.loops, max_value=self.max_value, min_value=self.min_value,
                           schedule=self.schedule)

    def __repr__(self) -> str:
        return (f"CTKDLambdaSchedule(loops={self.loops}, max_value={self.max_value}, min_value={self.min_value}, "
                f"schedule={self.schedule!r})")


class CTKDLoss(nn.Module):
    r"""KD at a learnable curriculum temperature (CTKD, notes §5), standardized by default.

    ``raw_temperature`` (``nn.Parameter`` of shape ``(1,)``, initialised to ``init``) goes
    through a gradient-reversal layer with factor ``grl_lambda`` and then
    :math:`T = t_\mathrm{start} + t_\mathrm{end}\,\sigma(\cdot)`; the loss is
    :func:`kd_loss` at :math:`T` (scaled by :math:`T^2`). Put the module's parameters in
    the optimizer; with a negative ``grl_lambda`` (see :class:`CTKDLambdaSchedule`) the
    temperature ascends the distillation loss while the student descends it. Being a
    registered parameter, the temperature is synchronised by DDP like any weight.

    ``instance_wise=True`` adds CTKD's instance-wise variant: a two-layer MLP on the
    (detached, standardized when ``standardize``) concatenated student and teacher logits
    predicts a per-sample offset of the raw temperature. Its last layer starts at zero, so
    every sample starts at the global initial temperature. Needs ``num_classes``.

    Args:
        t_start, t_end: temperature range :math:`(t_\mathrm{start}, t_\mathrm{start} + t_\mathrm{end})`.
        init: initial raw value (1.0: :math:`T \approx 15.62`).
        standardize, ddof, eps, reduction, check_finite: see :func:`kd_loss`.
        instance_wise: per-sample temperatures from an MLP.
        num_classes: ``C`` (instance-wise only).
        hidden_features: width of the MLP's hidden layer.

    Example:
        >>> import torch
        >>> from logit_standardization.torch import CTKDLoss
        >>> ctkd = CTKDLoss()
        >>> s = torch.randn(8, 10, requires_grad=True)
        >>> loss = ctkd(s, torch.randn(8, 10), grl_lambda=-1.0)
        >>> loss.backward()
        >>> round(float(ctkd.temperature), 4), ctkd.raw_temperature.grad.shape
        (15.6212, torch.Size([1]))
    """

    def __init__(self, *, t_start: float = 1.0, t_end: float = 20.0, init: float = 1.0, standardize: bool = True,
                 ddof: int = 1, eps: float = 1e-7, reduction: str = "mean", check_finite: bool = True,
                 instance_wise: bool = False, num_classes: int | None = None, hidden_features: int = 128) -> None:
        super().__init__()
        fn = type(self).__name__
        self.t_start = _checks.check_real(fn, "t_start", t_start)
        self.t_end = _checks.check_positive(fn, "t_end", t_end)
        init = _checks.check_real(fn, "init", init)
        self.reduction = _checks.check_reduction(fn, reduction)
        self.standardize, self.ddof, self.eps, self.check_finite = _common_init(
            fn, standardize=standardize, ddof=ddof, eps=eps, check_finite=check_finite)
        self.instance_wise = _checks.check_bool(fn, "instance_wise", instance_wise)
        self.raw_temperature = nn.Parameter(torch.full((1,), init))
        self.mlp: nn.Sequential | None = None
        if self.instance_wise:
            for name, value in (("num_classes", num_classes), ("hidden_features", hidden_features)):
                if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "num_classes" else 1):
                    raise (ValueError if isinstance(value, int) and not isinstance(value, bool) else TypeError)(
                        f"{fn}: argument '{name}' must be an int >= {2 if name == 'num_classes' else 1}"
                        f"{' with instance_wise=True' if name == 'num_classes' else ''}; got {value!r}")
            self.mlp = nn.Sequential(nn.Linear(2 * num_classes, hidden_features), nn.LeakyReLU(0.1),
                                     nn.Linear(hidden_features, 1))
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)
        self._last_temperature: torch.Tensor | None = None

    def raw(self, student_logits: torch.Tensor | None = None, teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
        """The raw temperature before the gradient reversal: ``(1,)``, or ``(B,)`` instance-wise."""
        if self.mlp is None:
            return self.raw_temperature
        if student_logits is None or teacher_logits is None:
            raise ValueError(f"{type(self).__name__}: the instance-wise temperature needs the logits")
        with torch.no_grad():
            feats = [(zscore(x, ddof=self.ddof, eps=self.eps, check_finite=False) if self.standardize else x)
                     for x in (student_logits, teacher_logits)]
            feats = torch.cat(feats, dim=1)
        w = self.mlp[0].weight
        return self.raw_temperature + self.mlp(feats.to(w.dtype)).squeeze(1)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
                grl_lambda: float | torch.Tensor) -> torch.Tensor:
        if self.mlp is not None:
            _logits(type(self).__name__, "student_logits", student_logits, check_finite=False)
            _logits(type(self).__name__, "teacher_logits", teacher_logits, check_finite=False)
        raw = gradient_reversal(self.raw(student_logits, teacher_logits), grl_lambda)
        temperature = ctkd_temperature(raw, t_start=self.t_start, t_end=self.t_end, check_finite=self.check_finite)
        self._last_temperature = temperature.detach()
        return kd_loss(student_logits, teacher_logits, temperature=temperature, standardize=self.standardize,
                       ddof=self.ddof, eps=self.eps, reduction=self.reduction, check_finite=self.check_finite)

    @property
    def temperature(self) -> torch.Tensor:
        """The (detached) temperature of the last forward: ``(1,)``, or ``(B,)`` instance-wise.

        Before the first forward: the temperature of the current ``raw_temperature``.
        """
        if self._last_temperature is not None:
            return self._last_temperature
        with torch.no_grad():
            return ctkd_temperature(self.raw_temperature, t_start=self.t_start, t_end=self.t_end)

    def extra_repr(self) -> str:
        return (f"t_start={self.t_start}, t_end={self.t_end}, standardize={self.standardize}, ddof={self.ddof}, "
                f"eps={self.eps}, reduction={self.reduction!r}, instance_wise={self.instance_wise}")
