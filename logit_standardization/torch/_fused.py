"""The fused autograd Functions of the PyTorch face: the speed path.

Each function here computes what a composition of plain operations in
:mod:`logit_standardization.torch.functional` computes, with an analytic backward instead of
an autograd graph through every step (less memory saved for the backward, fewer kernels).
The public functions of :mod:`~logit_standardization.torch.functional` call them where they
apply; the tests check each one against the plain translation (values and gradients).

* :class:`ZScore`: the Z-score along the last axis.
* :class:`KDRows`: per-sample KD divergences with the Z-score fused in, at one temperature
  (a number, a learned scalar or one per sample) or at a stack of ``K`` temperatures (MLKD).
* :class:`SaturatingUpcast`: float16 to the compute dtype, saturating the gradient on the way back.
* :class:`GradReverse`: identity forward, backward times :math:`\\lambda` (CTKD).
* :func:`mlkd_terms`: MLKD's terms with every temperature in one batched pass per view.

The Z-score is computed on rows scaled by a power of two (:func:`row_power`, ``eps`` scaled
alike), exactly as the core does, so it never overflows; the backward scales back. The
backward passes are first-order only (double backward raises).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Sequence

import torch

_AUTOCAST_AVAILABLE: dict[str, bool] = {}
_NO_CONTEXT = contextlib.nullcontext()


def full_precision(device: torch.device) -> Any:
    """A context that switches autocast off on ``device`` when it is on (statistics and
    softmaxes must not run in half precision); a no-op context otherwise."""
    kind = device.type
    available = _AUTOCAST_AVAILABLE.get(kind)
    if available is None:
        available = _AUTOCAST_AVAILABLE[kind] = torch.amp.is_autocast_available(kind)
    if available and torch.is_autocast_enabled(kind):
        return torch.autocast(device_type=kind, enabled=False)
    return _NO_CONTEXT


def compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs, else the widest input float dtype."""
    out = torch.float32
    for d in dtypes:
        out = torch.promote_types(out, d)
    return out


def _min_exponent(dtype: torch.dtype) -> int:
    """The smallest normal binary exponent of ``dtype`` (NumPy's ``finfo.minexp``: -126 for float32)."""
    return round(math.log2(torch.finfo(dtype).tiny))


def row_power(x: torch.Tensor) -> torch.Tensor:
    r""":math:`2^{-k}` per row (last axis, kept as a size-1 axis), :math:`k` the binary exponent of
    :math:`\max_j |x_j|` (``torch.frexp``), at least the smallest normal exponent of ``x.dtype``.

    An exact power of two in ``x.dtype``: multiplying by it changes no bit of an ordinary row and
    brings the largest magnitude of any finite row into :math:`[1/2, 1)` (the core's ``rescale``).
    """
    return _power_of_max(x.detach())


class SaturatingUpcast(torch.autograd.Function):
    """Widen a float16 tensor; the backward narrows the gradient back to float16 saturating at
    +-65504 instead of overflowing (the gradient at an exactly constant row is ~|g|/eps)."""

    @staticmethod
    def forward(ctx, x, dtype):
        return x.to(dtype)

    @staticmethod
    def backward(ctx, grad):
        limit = torch.finfo(torch.float16).max
        return grad.clamp(-limit, limit).to(torch.float16), None


def upcast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` in the compute dtype (see :class:`SaturatingUpcast` for float16 inputs)."""
    if x.dtype == dtype:
        return x
    if x.dtype == torch.float16 and x.requires_grad:
        return SaturatingUpcast.apply(x, dtype)
    return x.to(dtype)


# ----------------------------------------------------------------------------- Z-score
def _power_of_max(x: torch.Tensor) -> torch.Tensor:
    """:func:`row_power` without the autograd bookkeeping (for the forward of a Function, where
    grad mode is off): frexp of the row's largest magnitude, clamped, :math:`2^{-k}`."""
    _, k = torch.frexp(x.abs().amax(dim=-1, keepdim=True))
    return k.clamp_min_(_min_exponent(x.dtype)).to(x.dtype).neg_().exp2_()


def zscore_forward(x: torch.Tensor, ddof: int, eps: float, rho: Any = 1.0, *, inplace: bool = False):
    r"""``Z(x) / rho`` along the last axis, and the deviation the backward needs.

    Returns ``(z, sigma)``. The row is first multiplied by :math:`2^{-k}` (:func:`row_power`;
    ``eps`` too); then ``z = (x' - mean) / ((eps' + s') * rho)``, with the denominator raised to
    the smallest normal number (a constant row, the only case where it can be smaller, 0
    included, maps to zeros, as in the core); ``s'`` is the deviation of the scaled row (the
    mean first, then the root of the summed squared deviations over ``C - ddof``) and
    ``sigma = s' / 2^{-k}`` the deviation of the row itself (``inf`` beyond the dtype's range),
    which is what the backward needs. ``rho`` (a number or a tensor broadcasting against
    ``(..., 1)``) folds a temperature into the same pass. ``inplace=True`` overwrites ``x``
    (a buffer of the caller's own, such as a stack of teacher and student).
    """
    power = _power_of_max(x)
    centred = x.mul_(power) if inplace else x * power
    centred = centred.sub_(centred.mean(dim=-1, keepdim=True))
    sigma = torch.linalg.vector_norm(centred, dim=-1, keepdim=True).mul_((x.shape[-1] - ddof) ** -0.5)
    tiny = torch.finfo(x.dtype).tiny
    fold = not (isinstance(rho, float) and rho == 1.0)
    if eps > 0:
        denom = torch.add(sigma, power, alpha=eps)
        denom = denom.mul_(rho).clamp_min_(tiny) if fold else denom.clamp_min_(tiny)
    else:
        denom = (sigma * rho).clamp_min_(tiny) if fold else sigma.clamp_min(tiny)
    z = centred.div_(denom)
    return z, sigma.div_(power)


def _inverse_deviation(sigma: torch.Tensor, eps: float) -> torch.Tensor:
    """``1 / (eps + s)``, 0 where ``eps + s == 0`` (a constant row with ``eps = 0``)."""
    if eps > 0:
        return sigma.add(eps).reciprocal_()
    return sigma.reciprocal().masked_fill_(sigma == 0, 0.0)


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row dot product along the last axis (broadcasting), shape ``(..., 1)``. A product and a
    sum, not a matrix product: no TF32 or autocast rounding on an accelerator, and faster at
    small sizes."""
    return (a * b).sum(dim=-1, keepdim=True)


def zscore_backward(grad: torch.Tensor, z: torch.Tensor, rho: Any, sigma: torch.Tensor, eps: float, n: int, *,
                    zero_sum: bool = False):
    r"""Vector-Jacobian product of the Z-score (notes §1).

    .. math::

        \frac{\partial L}{\partial x} = \frac{g - \bar g}{\varepsilon + s}
            - Z(x)\,\frac{g^\top Z(x)}{n\,s}, \qquad n = C - \mathrm{ddof},

    with the second term dropped where :math:`s = 0` (as autograd through ``torch.std``
    does) and everything 0 where :math:`\varepsilon + s = 0`. ``g`` is the gradient with
    respect to :math:`Z(x)`; ``z`` and ``sigma`` come from :func:`zscore_forward` with
    ``rho``, i.e. ``z = Z(x)/rho``; ``sigma`` is the unscaled deviation :math:`s`, so
    the gradient is formed at the row's own scale (an overflowed :math:`s` gives 0, the
    underflowed true value). ``zero_sum=True`` skips :math:`\bar g` for a ``g`` whose rows sum
    to 0 analytically (the KD gradients :math:`q - p` and
    :math:`p \odot (\log p - \log q - \mathrm{KL})`).
    """
    inv_d = _inverse_deviation(sigma, eps)
    coef = _rowdot(grad, z)
    # (g . Z) / (n s), times rho; 0/0 at s = 0 (then z = 0 too) becomes 0
    coef = coef.div_(sigma * (n / (rho * rho))).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    if zero_sum:
        return torch.mul(grad, inv_d).addcmul_(z, coef, value=-1)
    out = torch.addcmul(grad.mean(dim=-1, keepdim=True).mul_(inv_d).neg_(), z, coef, value=-1)
    return out.addcmul_(grad, inv_d)


def _zero_sum_jacobian(g: torch.Tensor, z: torch.Tensor, rho: Any, sigma: torch.Tensor, eps: float, n: int,
                       dot: torch.Tensor) -> torch.Tensor:
    r"""``rho`` times :func:`zscore_backward` of a zero-sum ``g`` (``dot`` = ``g . z`` per row, given).

    With one temperature the KD gradient with respect to the student's logits is
    ``grad * rho * zscore_backward(q - p, ...)`` row by row (``grad`` the incoming gradient of the
    row's divergence), so the forward forms this ``(B, C)`` factor and the backward only
    multiplies it by ``grad``.
    """
    inv_d = _inverse_deviation(sigma, eps)
    if isinstance(rho, float):  # the constant goes into addcmul's scalar
        coef = dot.div_(sigma).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        return torch.mul(g, inv_d.mul_(rho) if rho != 1.0 else inv_d).addcmul_(z, coef, value=-(rho ** 3) / n)
    coef = dot.div_(sigma * (n / (rho * rho * rho))).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    return torch.mul(g, inv_d.mul_(rho)).addcmul_(z, coef, value=-1)


class ZScore(torch.autograd.Function):
    """``Z(x)`` along the last axis (no temperature) with the analytic backward."""

    @staticmethod
    def forward(ctx, x, ddof: int, eps: float):
        z, sigma = zscore_forward(x, ddof, eps)
        ctx.save_for_backward(z, sigma)
        ctx.n, ctx.eps = x.shape[-1] - ddof, eps
        return z

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        z, sigma = ctx.saved_tensors
        with full_precision(grad.device):
            return zscore_backward(grad, z, 1.0, sigma, ctx.eps, ctx.n), None, None


# ----------------------------------------------------------------------------- KD rows
class KDRows(torch.autograd.Function):
    r"""Per-sample KD divergences, standardization fused in, at one or ``K`` temperatures.

    ``s, t``: ``(B, C)``, same dtype. ``tau``: a number, or a tensor of shape ``(1, B or 1, 1)``
    (one temperature, possibly per sample; output ``(B,)``) or ``(K, 1, 1)`` (output ``(K, B)``).
    Row value :math:`r = \tau^2\,\mathrm{KL}(p \,\|\, q)`, :math:`p = \mathrm{softmax}(\tilde t/\tau)`,
    :math:`q = \mathrm{softmax}(\tilde s/\tau)`, :math:`\tilde x = Z(x)` (``x`` itself
    without standardization). Gradients:

    .. math::

        \frac{\partial r}{\partial \tilde s} = \tau\,(q - p), \qquad
        \frac{\partial r}{\partial \tilde t} = \tau\,w, \quad w = p \odot (\log p - \log q - \mathrm{KL}),

    .. math::

        \frac{\partial r}{\partial \tau} = 2\tau\,\mathrm{KL} - (q - p)^\top \tilde s - w^\top \tilde t,

    followed by :func:`zscore_backward` for ``s`` and ``t``.

    Teacher and student go through every pass together, stacked as one ``(2, B, C)`` tensor
    (one scaling, one Z-score, one log-softmax). With one temperature it is folded into the
    Z-score's denominator, and since each row's gradient is the row's incoming gradient times a
    factor known in the forward, the forward forms those factors (``(B, C)`` per input that
    needs a gradient, ``(B,)`` for the temperature) and the backward only multiplies; with ``K``
    temperatures the backward sums over them first and applies :func:`zscore_backward`.
    """

    @staticmethod
    def forward(ctx, s, t, tau, standardize: bool, ddof: int, eps: float):
        need_s, need_t, need_tau = ctx.needs_input_grad[:3]
        scalar = not isinstance(tau, torch.Tensor)
        fold = scalar or tau.shape[0] == 1
        if fold:
            rho = tau if scalar else tau[0]  # number or (B or 1, 1)
            tau2 = rho * rho if scalar else rho.squeeze(-1).square()
        else:
            rho, tau2 = 1.0, tau.squeeze(-1).square()  # (K, 1)
        n = s.shape[-1] - ddof
        keep_t = need_t or need_tau
        x = torch.stack((t, s))
        if standardize:
            z, sig = zscore_forward(x, ddof, eps, rho, inplace=True)
        else:
            z, sig = (x.div_(rho) if fold and not (scalar and rho == 1.0) else x), None
        lz = torch.log_softmax(z if fold else z.unsqueeze(1) / tau, dim=-1)  # (2, [K,] B, C)
        logp, logq = lz[0], lz[1]
        p = logp.exp()
        lr = logp.sub_(logq)  # log p - log q
        if not standardize:
            # 0 log 0 = 0 also where log q is -inf (raw logits whose range overflows); standardized
            # logits are bounded, so both log-softmaxes are finite there
            lr = lr.masked_fill_(p == 0, 0.0)
        # KL per row; lr is only needed again for w, else the product goes into its buffer (peak memory)
        kl = _rowdot(p, lr) if keep_t else lr.mul_(p).sum(dim=-1, keepdim=True)  # (..., 1)
        diff = logq.exp_().sub_(p) if (need_s or need_tau) else None  # q - p
        w = p.mul_(lr.sub_(kl)) if keep_t else None  # p (log p - log q - KL)
        del p, lr, logp, logq
        kl = kl.squeeze_(-1)
        out = kl * tau2
        zt, zs = z[0], z[1]
        ctx.fold = fold
        if fold:
            # every gradient is (incoming gradient of the row) x (a factor formed here)
            ds = _rowdot(diff, zs) if need_s or need_tau else None
            dt = _rowdot(w, zt) if keep_t else None
            g_s = g_t = g_tau = None
            if need_tau:
                # zs, zt are Z/tau (raw logits: s/tau, t/tau), so proj = ((q - p).Z + w.Z)/tau
                proj = (ds + dt).squeeze_(-1)
                r = rho if scalar else rho.squeeze(-1)
                g_tau = (2.0 * kl - proj).mul_(r)  # (B,)
            if need_s:
                g_s = _zero_sum_jacobian(diff, zs, rho, sig[1], eps, n, ds) if standardize else diff.mul_(rho)
            if need_t:
                g_t = _zero_sum_jacobian(w, zt, rho, sig[0], eps, n, dt) if standardize else w.mul_(rho)
            ctx.tau_shape = None if scalar else tuple(tau.shape)
            ctx.save_for_backward(g_s, g_t, g_tau)
        else:
            ctx.meta = (standardize, n, eps)
            # the student's half alone when the teacher's is not needed (the stack would keep both)
            zs = (zs if keep_t else zs.clone()) if need_s or need_tau else None
            ctx.save_for_backward(tau, zs, zt if keep_t else None, diff, w,
                                  kl if need_tau else None,
                                  sig[1] if standardize and need_s else None,
                                  sig[0] if standardize and need_t else None)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        need_s, need_t, need_tau = ctx.needs_input_grad[:3]
        if ctx.fold:
            g_s, g_t, g_tau = ctx.saved_tensors
            col = grad.unsqueeze(-1)
            gs = g_s * col if need_s else None
            gt = g_t * col if need_t else None
            gtau = None
            if need_tau:
                gtau = grad * g_tau
                gtau = gtau.sum().reshape(1, 1, 1) if ctx.tau_shape[1] == 1 else gtau.reshape(1, -1, 1)
            return gs, gt, gtau, None, None, None
        tau, zs, zt, diff, w, kl, sig_s, sig_t = ctx.saved_tensors
        standardize, n, eps = ctx.meta
        gs = gt = gtau = None
        with full_precision(grad.device):
            g_tau = (grad * tau.squeeze(-1)).unsqueeze(-1)  # (K, B, 1)
            if need_s:
                gz = (diff * g_tau).sum(0)
                gs = zscore_backward(gz, zs, 1.0, sig_s, eps, n, zero_sum=True) if standardize else gz
            if need_t:
                gz = (w * g_tau).sum(0)
                gt = zscore_backward(gz, zt, 1.0, sig_t, eps, n, zero_sum=True) if standardize else gz
            if need_tau:
                proj = (_rowdot(diff, zs) + _rowdot(w, zt)).squeeze_(-1)
                tau_r = tau.squeeze(-1)  # (K, 1)
                gtau = (grad * (2.0 * tau_r * kl - proj)).sum(1).reshape(-1, 1, 1)
        return gs, gt, gtau, None, None, None


# ----------------------------------------------------------------------------- gradient reversal
class GradReverse(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by ``lambda_`` (a number or tensor)."""

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


# ----------------------------------------------------------------------------- MLKD, batched
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


def mlkd_terms(sw: torch.Tensor, ss: torch.Tensor, tw: torch.Tensor, ts: torch.Tensor, mask: torch.Tensor,
               cmask: torch.Tensor, *, temperatures: Sequence[float], standardize: bool, variant: str, ddof: int,
               eps: float) -> dict[str, torch.Tensor]:
    """MLKD's unweighted ``kd``, ``cc``, ``bc`` of checked logits in the compute dtype, every
    temperature evaluated once in one batched :class:`KDRows` call per view (a repeated
    temperature is weighted by its count); ``mask``/``cmask`` from ``confidence_masks``."""
    dtype, dev = sw.dtype, sw.device
    b, c = sw.shape
    uniq, where = _unique(temperatures)
    k = len(uniq)
    count = [where.count(i) for i in range(k)]
    late = [sum(1 for j in range(3, len(temperatures)) if where[j] == i) for i in range(k)]
    consts = torch.tensor([uniq, count, late], dtype=dtype, device=dev)
    taus, count_t, late_t = consts[0].reshape(k, 1, 1), consts[1], consts[2]
    weak = KDRows.apply(sw, tw, taus, standardize, ddof, eps).reshape(k, b)
    if variant == "reference":
        m_bar, c_bar = mask.mean(), cmask.mean()
        # positions 1-3 use the strong view, positions 4, 5, ... the weak one (``late``)
        suniq, swhere = _unique(list(temperatures[:3]))
        sconsts = torch.tensor([suniq, [swhere.count(i) for i in range(len(suniq))]], dtype=dtype, device=dev)
        strong = KDRows.apply(ss, ts, sconsts[0].reshape(-1, 1, 1), standardize, ddof, eps).reshape(-1, b)
        kd = (torch.addcmul(late_t, count_t, m_bar) * weak.mean(1)).sum() + (sconsts[1] * strong.mean(1)).sum()
        cc_k, bc_k = _correlation_terms(sw, tw, taus)
        cc = c_bar * (count_t * cc_k).sum() / c
        bc = m_bar * (count_t * bc_k).sum() / b
    else:
        strong = KDRows.apply(ss, ts, taus, standardize, ddof, eps).reshape(k, b)
        kd = (count_t * ((weak * mask).mean(1) + strong.mean(1))).sum()
        cw, bw = _correlation_terms(sw, tw, taus, cmask, mask)
        cs, bs = _correlation_terms(ss, ts, taus, cmask, mask)
        cc = (count_t * (cw + cs)).sum() / c
        bc = (count_t * (bw + bs)).sum() / b
    return {"kd": kd, "cc": cc, "bc": bc}
