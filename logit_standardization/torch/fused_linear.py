r"""KD with logit standardization fused with the language-model head: no ``(tokens, vocabulary)`` logits.

For language-model distillation the logits are ``h @ W.T (+ b)`` over a vocabulary of
32k-256k entries: at 8192 tokens and 128256 entries one float32 logit tensor is 4 GiB, and
autograd keeps several of them (logits, Z-scores, log-softmaxes) for the backward.
:func:`fused_linear_kd_loss` takes the hidden states and the head weights instead, and loops
over chunks of tokens. Per chunk it forms the student's (and teacher's) logits, their Z-score
(per token, over the vocabulary), the KD divergence and the cross-entropy, and, in the same
pass, the gradient with respect to the chunk's student logits (analytic, below); it then
multiplies that gradient into the chunk's hidden-state gradient and adds it into the weight
(and bias) gradient, and drops the chunk. The backward only multiplies the stored gradients by
the incoming one.

The Z-score of a token is a function of that token's own logits only (mean and deviation over
the vocabulary), so a chunk's statistics are exact: the result equals the materialised
computation (:func:`~logit_standardization.torch.kd_loss` and ``cross_entropy`` on
``h @ W.T + b``) up to rounding, whatever the chunk size. Memory: the gradients of the inputs
(as large as the inputs) plus a few ``(chunk, vocabulary)`` buffers.

Per token, with :math:`\tilde s = Z(s)/\tau`, :math:`\tilde t = Z(t)/\tau` (the logits
themselves over :math:`\tau` without standardization), :math:`q = \mathrm{softmax}(\tilde s)`,
:math:`p = \mathrm{softmax}(\tilde t)`:

.. math::

    \ell = w_{ce}\,(\mathrm{lse}(s) - s_y) + w_{kd}\,\tau^2\,\mathrm{KL}(p \,\|\, q),
    \qquad
    \frac{\partial \ell}{\partial s} = w_{ce}\,(\mathrm{softmax}(s) - e_y)
        + w_{kd}\,\tau\,J_Z^\top (q - p),

.. math::

    J_Z^\top g = \frac{g - \bar g}{\varepsilon + \sigma} - Z(s)\,\frac{g^\top Z(s)}{n\,\sigma},
    \qquad n = V - \mathrm{ddof}

(:math:`\bar g = 0` for :math:`g = q - p`; the second term is dropped at a constant row, as
autograd through ``torch.std`` does; see :func:`logit_standardization.torch._fused.zscore_backward`).
The Z-score is the library's overflow-free one (rows scaled by a power of two first).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import nn

from .. import _checks
from . import _fused
from .functional import _kind, _tensor, _token_labels

__all__ = ["fused_linear_kd_loss", "FusedLinearKDLoss"]

_FN = "fused_linear_kd_loss"


# ----------------------------------------------------------------------------- chunk size
def _default_chunk_size(tokens: int, hidden: int, vocab: int) -> int:
    """Token-chunk size chosen from the shapes: as many chunks as ``ceil(vocab / hidden)``, so that a
    chunk's ``(chunk, vocab)`` logits are about as large as the hidden states, rounded up to a power
    of two, at most ``2**26 / vocab`` rows (256 MiB per float32 buffer) and at most ``tokens``."""
    chunks = max(1, math.ceil(vocab / max(hidden, 1)))
    size = 1 << max(0, math.ceil(math.log2(max(1, math.ceil(tokens / chunks)))))
    return max(1, min(size, max(1, (1 << 26) // vocab), tokens))


# ----------------------------------------------------------------------------- the sweep over chunks
def _head(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None):
    """The head in its matmul dtype, the wider of the hidden states' and the weight's (no copy unless
    they differ)."""
    dt = torch.promote_types(h.dtype, w.dtype)
    return w.to(dt), None if b is None else b.to(dt)


def _sweep(cfg: dict, hs, ws, bs, ht, wt, bt, tl, labels, valid, row_weight, need):
    """One pass over the token chunks.

    Returns ``(ce_rows, kd_rows, grads)``: the unweighted per-token cross-entropy (zeros when
    ``ce_weight`` is 0) and ``tau^2 KL`` (ignored tokens: 0), and, when ``row_weight`` (``(N,)``,
    the factor of each token's loss in the result, zero at ignored tokens) is given, the float32
    (or float64) gradients ``(hidden, weight, bias)`` of ``sum_i row_weight_i * loss_i`` for the
    inputs flagged in ``need``.
    """
    cdt, tau, standardize, ddof, eps = cfg["cdt"], cfg["tau"], cfg["standardize"], cfg["ddof"], cfg["eps"]
    ce_w, kd_w, chunk = cfg["ce_weight"], cfg["kd_weight"], cfg["chunk"]
    n_tok, vocab = hs.shape[0], ws.shape[0]
    n = vocab - ddof
    dev = hs.device
    do_ce = ce_w > 0 and labels is not None
    ce_rows = torch.zeros(n_tok, dtype=cdt, device=dev)
    kd_rows = torch.zeros(n_tok, dtype=cdt, device=dev)
    acc = torch.promote_types(cdt, torch.float32)
    grad = row_weight is not None
    gh = torch.zeros(hs.shape, dtype=acc, device=dev) if grad and need[0] else None
    gw = torch.zeros(ws.shape, dtype=acc, device=dev) if grad and need[1] else None
    gb = torch.zeros(vocab, dtype=acc, device=dev) if grad and need[2] else None
    ws_mm, bs_mm = _head(hs, ws, bs)
    mm = ws_mm.dtype
    low = mm != gw.dtype if gw is not None else False
    if tl is None:
        wt_mm, bt_mm = _head(ht, wt, bt)
    for a in range(0, n_tok, chunk):
        e = min(a + chunk, n_tok)
        h = hs[a:e].to(mm)
        s = nnf.linear(h, ws_mm, bs_mm).to(cdt)  # a fresh buffer in either case (written in place below)
        if tl is not None:
            t = tl[a:e].to(dtype=cdt, copy=True)  # the caller's tensor is never written
        else:
            t = nnf.linear(ht[a:e].to(wt_mm.dtype), wt_mm, bt_mm).to(cdt)
        ce_buf = None
        if do_ce:
            y = labels[a:e]
            y = y.masked_fill(y == cfg["ignore_index"], 0).unsqueeze(1)
            ce_buf = torch.log_softmax(s, dim=-1)
            ce_rows[a:e] = -ce_buf.gather(1, y).squeeze(1)
        # Z-score (with 1/tau folded in), in place in the fresh logit buffers
        if standardize:
            zs, sig_s = _fused.zscore_forward(s, ddof, eps, tau, inplace=True)
            zt, _ = _fused.zscore_forward(t, ddof, eps, tau, inplace=True)
        else:
            zs, zt, sig_s = (s.div_(tau), t.div_(tau), None) if tau != 1.0 else (s, t, None)
        logq = torch.log_softmax(zs, dim=-1)
        logp = torch.log_softmax(zt, dim=-1)
        p = torch.exp(logp, out=zt)  # the teacher's Z-score is not needed again
        lr = logp.sub_(logq)  # log p - log q
        if not standardize:
            lr = lr.masked_fill_(p == 0, 0.0)  # 0 log 0 = 0 also where log q is -inf
        kd_rows[a:e] = lr.mul_(p).sum(dim=-1) * (tau * tau)
        if not grad:
            continue
        # d(tau^2 KL)/ds: tau (q - p) through the Z-score (the fold of _fused.KDRows, in place)
        diff = logq.exp_().sub_(p)  # q - p
        del p, zt
        if standardize:
            dot = torch.mul(diff, zs, out=lr).sum(dim=-1, keepdim=True)
            inv_d = _fused._inverse_deviation(sig_s, eps)
            coef = dot.div_(sig_s).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
            g = diff.mul_(inv_d.mul_(tau) if tau != 1.0 else inv_d).addcmul_(zs, coef, value=-(tau ** 3) / n)
        else:
            g = diff.mul_(tau)
        del lr, zs, s
        w_row = row_weight[a:e].unsqueeze(1)
        g = g.mul_(w_row * kd_w)
        if do_ce:
            soft = ce_buf.exp_()  # softmax(s)
            soft.scatter_add_(1, y, torch.full_like(y, -1, dtype=cdt))  # minus the one-hot label
            g = g.addcmul_(soft, w_row, value=ce_w)  # ignored tokens have w_row = 0
            del soft, ce_buf
        # into the parameters: the matmuls in the matmul dtype, summed over chunks in float32 or wider
        gm = _to_half(g) if mm == torch.float16 else g.to(mm)
        if gh is not None:
            gh[a:e] = gm @ ws_mm
        if gw is not None:
            if low:  # a (V, H) product in the matmul dtype, summed in float32
                gw.add_(gm.T @ h)
            else:
                gw.addmm_(gm.T, h)
        if gb is not None:
            gb.add_(g.sum(dim=0))
    if valid is not None:
        ce_rows.mul_(valid)
        kd_rows.mul_(valid)
    return ce_rows, kd_rows, (gh, gw, gb)


def _to_half(g: torch.Tensor) -> torch.Tensor:
    """float16 without overflow (the gradient at an exactly constant row is ~|g|/eps)."""
    limit = torch.finfo(torch.float16).max
    return g.clamp(-limit, limit).to(torch.float16)


class _FusedLinearKD(torch.autograd.Function):
    """``(loss, ce term, kd term)``; gradients to the student's hidden states, weight and bias."""

    @staticmethod
    def forward(ctx, hs, ws, bs, ht, wt, bt, tl, labels, cfg):
        need = tuple(ctx.needs_input_grad[:3])
        valid = None if labels is None else (labels != cfg["ignore_index"]).to(cfg["cdt"])
        count = hs.shape[0] if valid is None else int(valid.sum().item())
        reduction = cfg["reduction"]
        ctx.cfg, ctx.need, ctx.reduction = cfg, need, reduction
        ctx.dtypes = (hs.dtype, ws.dtype, None if bs is None else bs.dtype)
        fused_grad = any(need) and reduction != "none"
        scale = (1.0 / count if count else 0.0) if reduction == "mean" else 1.0
        row_weight = None
        if fused_grad:
            row_weight = torch.full((hs.shape[0],), scale, dtype=cfg["cdt"], device=hs.device)
            if valid is not None:
                row_weight.mul_(valid)
        ce_rows, kd_rows, grads = _sweep(cfg, hs, ws, bs, ht, wt, bt, tl, labels, valid, row_weight, need)
        ce_rows.mul_(cfg["ce_weight"])
        kd_rows.mul_(cfg["kd_weight"])
        if reduction == "none":
            # the backward recomputes the chunks with the per-token incoming gradient
            ctx.save_for_backward(hs, ws, bs, ht, wt, bt, tl, labels, valid)
            loss = ce_rows + kd_rows
            ce, kd = ce_rows, kd_rows
        else:
            ctx.save_for_backward(*grads)
            ce, kd = ce_rows.sum() * scale, kd_rows.sum() * scale
            loss = ce + kd
        ctx.mark_non_differentiable(ce, kd)
        return loss, ce, kd

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad, _ce, _kd):
        need, dtypes = ctx.need, ctx.dtypes
        if ctx.reduction == "none":
            hs, ws, bs, ht, wt, bt, tl, labels, valid = ctx.saved_tensors
            row_weight = grad.to(ctx.cfg["cdt"])
            if valid is not None:
                row_weight = row_weight * valid
            _, _, grads = _sweep(ctx.cfg, hs, ws, bs, ht, wt, bt, tl, labels, valid, row_weight, need)
            out = [None if g is None else g.to(dt) for g, dt in zip(grads, dtypes)]
        else:
            out = [None if g is None else (g * grad).to(dt) for g, dt in zip(ctx.saved_tensors, dtypes)]
        return (*out, None, None, None, None, None, None)


# ----------------------------------------------------------------------------- checks
def _float_tensor(fn: str, name: str, x: Any, ndims: tuple[int, ...]) -> torch.Tensor:
    t, shape, kind = _tensor(x)
    if kind != "f" or t is None:
        _checks.fail(fn, name, "a floating-point tensor", f"dtype kind {_checks.kind_name(kind)}", TypeError)
    if t.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        _checks.fail(fn, name, f"a {want} tensor", f"shape {tuple(shape)}")
    return t


def _bias(fn: str, name: str, b: Any, rows: int, weight_name: str) -> torch.Tensor | None:
    if b is None:
        return None
    b = _float_tensor(fn, name, b, (1,))
    if b.shape[0] != rows:
        _checks.fail(fn, name, f"of shape ({rows},) (the rows of '{weight_name}')", f"shape {tuple(b.shape)}")
    return b


def _prepare(fn, student_hidden, student_weight, teacher_hidden, teacher_weight, labels, teacher_logits,
             student_bias, teacher_bias, h):
    hs = _float_tensor(fn, "student_hidden", student_hidden, (2, 3))
    lead, hidden = tuple(hs.shape[:-1]), hs.shape[-1]
    if math.prod(lead) < 1 or hidden < 1:
        _checks.fail(fn, "student_hidden", "a non-empty (tokens, hidden) or (batch, time, hidden) tensor",
                     f"shape {tuple(hs.shape)}")
    ws = _float_tensor(fn, "student_weight", student_weight, (2,))
    if ws.shape[1] != hidden:
        _checks.fail(fn, "student_weight", f"of shape (vocabulary, {hidden}) (the hidden size of 'student_hidden')",
                     f"shape {tuple(ws.shape)}")
    bs = _bias(fn, "student_bias", student_bias, ws.shape[0], "student_weight")
    by_logits = teacher_logits is not None
    if by_logits and (teacher_hidden is not None or teacher_weight is not None or teacher_bias is not None):
        _checks.fail(fn, "teacher_logits", "given without teacher_hidden, teacher_weight and teacher_bias",
                     "both forms of the teacher")
    if not by_logits and (teacher_hidden is None or teacher_weight is None):
        _checks.fail(fn, "teacher_hidden", "given with 'teacher_weight' (or the teacher given as 'teacher_logits')",
                     "no teacher")
    ht = wt = bt = tl = None
    if by_logits:
        tl = _float_tensor(fn, "teacher_logits", teacher_logits, (hs.ndim,))
        if tuple(tl.shape[:-1]) != lead:
            _checks.fail(fn, "teacher_logits", f"of shape {(*lead, 'vocabulary')} (the tokens of 'student_hidden')",
                         f"shape {tuple(tl.shape)}")
        t_vocab, t_name = tl.shape[-1], "teacher_logits"
    else:
        ht = _float_tensor(fn, "teacher_hidden", teacher_hidden, (hs.ndim,))
        if tuple(ht.shape[:-1]) != lead:
            _checks.fail(fn, "teacher_hidden", f"of shape {(*lead, 'hidden')} (the tokens of 'student_hidden')",
                         f"shape {tuple(ht.shape)}")
        wt = _float_tensor(fn, "teacher_weight", teacher_weight, (2,))
        if wt.shape[1] != ht.shape[-1]:
            _checks.fail(fn, "teacher_weight",
                         f"of shape (vocabulary, {ht.shape[-1]}) (the hidden size of 'teacher_hidden')",
                         f"shape {tuple(wt.shape)}")
        bt = _bias(fn, "teacher_bias", teacher_bias, wt.shape[0], "teacher_weight")
        t_vocab, t_name = wt.shape[0], "teacher_weight"
    s_vocab = ws.shape[0]
    vocab = h["vocab_size"]
    if vocab is None:
        if s_vocab != t_vocab:
            _checks.fail(fn, "vocab_size", f"given when the vocabularies differ (student {s_vocab}, "
                         f"teacher {t_vocab}: the first vocab_size entries of both are compared)", "None")
        vocab = s_vocab
    elif vocab > min(s_vocab, t_vocab):
        _checks.fail(fn, "vocab_size", f"at most the vocabulary of both heads (student {s_vocab}, "
                     f"teacher {t_vocab} in '{t_name}')", repr(vocab))
    if vocab < 2:
        _checks.fail(fn, "student_weight", "a head with at least 2 vocabulary entries", f"shape {tuple(ws.shape)}")
    ddof = _checks.check_ddof(fn, h["ddof"], vocab)
    y = _token_labels(fn, labels, lead, vocab, ignore_index=h["ignore_index"], ce_weight=h["ce_weight"],
                      device=hs.device, of="student_hidden")
    n_tok = math.prod(lead)
    hs2 = hs.reshape(n_tok, hidden)
    ws_v = ws[:vocab]
    bs_v = None if bs is None else bs[:vocab]
    if by_logits:
        tl = tl.detach().reshape(n_tok, -1)[:, :vocab]
    else:
        ht = ht.detach().reshape(n_tok, ht.shape[-1])
        wt = wt.detach()[:vocab]
        bt = None if bt is None else bt.detach()[:vocab]
    teacher_dtype = (tl if by_logits else wt).dtype
    cdt = _fused.compute_dtype(hs.dtype, ws.dtype, teacher_dtype, *(() if by_logits else (ht.dtype,)))
    chunk = h["chunk_size"] or _default_chunk_size(n_tok, max(hidden, 1), vocab)
    cfg = {"cdt": cdt, "tau": h["temperature"], "standardize": h["standardize"], "ddof": ddof, "eps": h["eps"],
           "ce_weight": h["ce_weight"], "kd_weight": h["kd_weight"], "chunk": min(chunk, n_tok),
           "ignore_index": h["ignore_index"], "reduction": h["reduction"]}
    return (hs2, ws_v, bs_v, ht, wt, bt, tl, y), cfg, lead


def _fused_linear(fn: str, tensors: tuple, hyper: dict):
    """``(loss, ce term, kd term)`` after the checks (the class keeps the terms)."""
    h = _checks.check_hyper(fn, temperature=hyper["temperature"], standardize=hyper["standardize"],
                            eps=hyper["eps"], ce_weight=hyper["ce_weight"], kd_weight=hyper["kd_weight"],
                            ignore_index=hyper["ignore_index"], reduction=hyper["reduction"])
    _checks.check_hyper(fn, ddof=hyper["ddof"])
    h["ddof"] = hyper["ddof"]
    h["vocab_size"] = None if hyper["vocab_size"] is None else _checks.check_hyper(
        fn, vocab_size=hyper["vocab_size"])["vocab_size"]
    h["chunk_size"] = None if hyper["chunk_size"] is None else _checks.check_hyper(
        fn, chunk_size=hyper["chunk_size"])["chunk_size"]
    inputs, cfg, lead = _prepare(fn, *tensors, h)
    hs = inputs[0]
    with _fused.full_precision(hs.device):
        loss, ce, kd = _FusedLinearKD.apply(*inputs, cfg)
    if cfg["reduction"] == "none":
        return loss.reshape(lead), ce.reshape(lead), kd.reshape(lead)
    return loss, ce, kd


# ----------------------------------------------------------------------------- public
def fused_linear_kd_loss(
    student_hidden: Any,
    student_weight: Any,
    teacher_hidden: Any = None,
    teacher_weight: Any = None,
    labels: Any = None,
    *,
    teacher_logits: Any = None,
    temperature: float = 2.0,
    standardize: bool = True,
    ddof: int = 1,
    eps: float = 1e-7,
    ce_weight: float = 0.0,
    kd_weight: float = 1.0,
    ignore_index: int = -100,
    vocab_size: int | None = None,
    student_bias: Any = None,
    teacher_bias: Any = None,
    chunk_size: int | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""``ce_weight * CE + kd_weight * kd_loss`` of ``h @ W.T + b`` without materialising the logits.

    Equals, up to rounding, ``ce_weight * cross_entropy(s, labels, ignore_index=ignore_index) +
    kd_weight * kd_loss(s[kept], t[kept], temperature=..., standardize=..., ddof=..., eps=...)``
    with ``s = student_hidden @ student_weight[:V].T + student_bias[:V]`` and ``t`` the teacher's
    logits alike (or ``teacher_logits[..., :V]``), averaged over the kept tokens (those whose label
    is not ``ignore_index``; all tokens without labels). The tokens are processed in chunks
    (see the module docstring for the math); the gradient is formed in the forward pass.

    Args:
        student_hidden: ``(N, H)`` or ``(B, T, H)`` floating-point hidden states (gets a gradient).
        student_weight: ``(V_s, H)`` head weight (gets a gradient).
        teacher_hidden: ``(N, H_t)`` or ``(B, T, H_t)`` teacher hidden states (no gradient).
        teacher_weight: ``(V_t, H_t)`` teacher head weight (no gradient).
        labels: ``(N,)`` or ``(B, T)`` token ids in ``[0, V)``, or ``ignore_index``; needed when
            ``ce_weight > 0``; without labels every token counts.
        teacher_logits: ``(N, V_t)`` or ``(B, T, V_t)`` teacher logits instead of the teacher's
            hidden states and head (no gradient).
        temperature, standardize, ddof, eps: see :func:`~logit_standardization.torch.kd_loss`.
        ce_weight, kd_weight: the weights of the two terms (>= 0).
        ignore_index: label of tokens that do not count (padding, prompt).
        vocab_size: compare the first ``vocab_size`` entries of both heads (padded vocabularies,
            such as 152064 rows for 151936 tokens); needed when the two heads differ in size.
        student_bias, teacher_bias: ``(V_s,)``, ``(V_t,)`` head biases (the student's gets a gradient).
        chunk_size: tokens per chunk; ``None`` chooses one from the shapes (a chunk's logits about
            as large as the hidden states,
            at most 256 MiB per float32 buffer).
        reduction: ``"mean"`` (over the kept tokens; 0 when none is kept), ``"sum"``, or
            ``"none"`` (per-token values of shape ``(N,)``/``(B, T)``, 0 at ignored tokens; its
            backward recomputes the chunks with the per-token incoming gradient: twice the
            compute, the same bounded memory).

    Returns:
        0-d tensor (per-token for ``"none"``) in the compute dtype (float32 for float16/bfloat16
        inputs). Half-precision inputs are multiplied in their own dtype; statistics, softmaxes
        and the sums of the weight and bias gradients over chunks run in float32.

    Example:
        >>> import torch
        >>> from logit_standardization.torch import fused_linear_kd_loss, kd_loss
        >>> g = torch.Generator().manual_seed(0)
        >>> h = torch.randn(2, 5, 8, generator=g, dtype=torch.float64, requires_grad=True)
        >>> w = torch.randn(11, 8, generator=g, dtype=torch.float64, requires_grad=True)
        >>> ht, wt = torch.randn(2, 5, 6, generator=g, dtype=torch.float64), torch.randn(11, 6, generator=g, dtype=torch.float64)
        >>> loss = fused_linear_kd_loss(h, w, ht, wt, chunk_size=3)
        >>> ref = kd_loss((h @ w.T).reshape(10, 11), (ht @ wt.T).reshape(10, 11))
        >>> bool(torch.isclose(loss, ref, rtol=1e-12))
        True
        >>> loss.backward(); h.grad.shape, w.grad.shape
        (torch.Size([2, 5, 8]), torch.Size([11, 8]))
    """
    hyper = {"temperature": temperature, "standardize": standardize, "ddof": ddof, "eps": eps,
             "ce_weight": ce_weight, "kd_weight": kd_weight, "ignore_index": ignore_index,
             "vocab_size": vocab_size, "chunk_size": chunk_size, "reduction": reduction}
    tensors = (student_hidden, student_weight, teacher_hidden, teacher_weight, labels, teacher_logits,
               student_bias, teacher_bias)
    return _fused_linear(_FN, tensors, hyper)[0]


class FusedLinearKDLoss(nn.Module):
    """:func:`fused_linear_kd_loss` as a module: the hyperparameters at construction, the tensors per call.

    ``forward(student_hidden, student_weight, teacher_hidden=None, teacher_weight=None, labels=None, *,
    teacher_logits=None, student_bias=None, teacher_bias=None)`` returns
    ``ce_weight * CE + kd_weight * KD`` of the logits ``h @ W.T + b`` without materialising them.
    :attr:`last_terms` holds the weighted ``"ce"`` and ``"kd"`` terms of the last call (detached).

    Example:
        >>> import torch
        >>> from logit_standardization.torch import FusedLinearKDLoss
        >>> loss_fn = FusedLinearKDLoss(ce_weight=0.1, kd_weight=9.0)
        >>> h, w = torch.randn(16, 8, requires_grad=True), torch.randn(50, 8, requires_grad=True)
        >>> y = torch.randint(0, 50, (16,)); y[:4] = -100           # ignored tokens
        >>> loss = loss_fn(h, w, torch.randn(16, 12), torch.randn(50, 12), y)
        >>> loss.backward()
        >>> sorted(loss_fn.last_terms), bool(h.grad[:4].abs().max() == 0)
        (['ce', 'kd'], True)
    """

    def __init__(self, *, temperature: float = 2.0, standardize: bool = True, ddof: int = 1, eps: float = 1e-7,
                 kd_weight: float = 1.0, ce_weight: float = 0.0, ignore_index: int = -100,
                 vocab_size: int | None = None, chunk_size: int | None = None, reduction: str = "mean") -> None:
        super().__init__()
        fn = type(self).__name__
        h = _checks.check_hyper(fn, temperature=temperature, standardize=standardize, ddof=ddof, eps=eps,
                                kd_weight=kd_weight, ce_weight=ce_weight, ignore_index=ignore_index,
                                reduction=reduction)
        if vocab_size is not None:
            h.update(_checks.check_hyper(fn, vocab_size=vocab_size))
        if chunk_size is not None:
            h.update(_checks.check_hyper(fn, chunk_size=chunk_size))
        self.temperature, self.standardize, self.ddof, self.eps = (h["temperature"], h["standardize"], h["ddof"],
                                                                    h["eps"])
        self.kd_weight, self.ce_weight, self.ignore_index = h["kd_weight"], h["ce_weight"], h["ignore_index"]
        self.vocab_size, self.chunk_size, self.reduction = vocab_size, chunk_size, h["reduction"]
        self.last_terms: dict[str, torch.Tensor] = {}

    def forward(self, student_hidden: torch.Tensor, student_weight: torch.Tensor, teacher_hidden: Any = None,
                teacher_weight: Any = None, labels: Any = None, *, teacher_logits: Any = None,
                student_bias: Any = None, teacher_bias: Any = None) -> torch.Tensor:
        hyper = {"temperature": self.temperature, "standardize": self.standardize, "ddof": self.ddof,
                 "eps": self.eps, "ce_weight": self.ce_weight, "kd_weight": self.kd_weight,
                 "ignore_index": self.ignore_index, "vocab_size": self.vocab_size, "chunk_size": self.chunk_size,
                 "reduction": self.reduction}
        tensors = (student_hidden, student_weight, teacher_hidden, teacher_weight, labels, teacher_logits,
                   student_bias, teacher_bias)
        loss, ce, kd = _fused_linear(type(self).__name__, tensors, hyper)
        self.last_terms = {"ce": ce.detach(), "kd": kd.detach()}
        return loss

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, standardize={self.standardize}, ddof={self.ddof}, "
                f"eps={self.eps}, kd_weight={self.kd_weight}, ce_weight={self.ce_weight}, "
                f"ignore_index={self.ignore_index}, vocab_size={self.vocab_size}, chunk_size={self.chunk_size}, "
                f"reduction={self.reduction!r}")
