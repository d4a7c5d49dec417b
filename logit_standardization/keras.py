"""Keras 3 backend: logit standardization for ``model.compile(loss=...)``, an online
:class:`Distiller`, and :mod:`keras.distillation` interop.

Everything here is written with :mod:`keras.ops` only, so one implementation serves
every Keras backend (tested on TensorFlow and PyTorch). The functions have the same names,
arguments and defaults as the NumPy core (:mod:`logit_standardization`), which holds
the math; this module is tested against it.

* Functions: :func:`zscore`, :func:`kd_loss`, :func:`dkd_loss`, :func:`mlkd_terms`,
  :func:`mlkd_loss`, :func:`ctkd_temperature`, :func:`ctkd_lambda`.
* Losses for ``model.compile``: :class:`KDLoss`, :class:`DKDLoss`, :class:`CTKDLoss`
  (the latter trains its temperature only inside :class:`Distiller`), with
  :func:`pack_targets` to carry labels next to the teacher logits.
* Online distillation: :class:`Distiller`, and :class:`EpochSchedule` for the DKD
  warm-up and the CTKD :math:`\\lambda` schedule.
* :mod:`keras.distillation`: :class:`StandardizedLogitsDistillation`.

Numerics: statistics, softmaxes and losses are computed in float32 for float16 and
bfloat16 inputs (mixed precision), in the input's dtype for float32 and float64.
Input checks are those of the core, with the same messages. Value checks (NaN/Inf,
label range) need concrete values, so they run in eager execution only; inside a
compiled graph (``tf.function``, ``torch.compile``, XLA, ``jax.jit``) the static checks (dtype, rank,
shape, hyperparameters) still run.
"""

from __future__ import annotations

import math
from typing import Any

import keras  # the Keras 3 package (absolute import; this module is logit_standardization.keras)
import numpy as np
from keras import ops

from . import _checks
from ._ctkd import ctkd_lambda
from ._mlkd import DEFAULT_TEMPERATURES

__all__ = [
    "CTKDLoss",
    "DEFAULT_TEMPERATURES",
    "DKDLoss",
    "Distiller",
    "EpochSchedule",
    "KDLoss",
    "StandardizedLogitsDistillation",
    "ctkd_lambda",
    "ctkd_temperature",
    "dkd_loss",
    "kd_loss",
    "mlkd_loss",
    "mlkd_terms",
    "pack_targets",
    "zscore",
]

_PACKAGE = "logit_standardization"


# ----------------------------------------------------------------------------- tensor facts
def _dtype(x: Any) -> str:
    return keras.backend.standardize_dtype(x.dtype)


def _kind(dtype: str) -> str:
    """NumPy-style kind letter of a Keras dtype name."""
    if dtype.startswith("float") or dtype == "bfloat16":
        return "f"
    if dtype.startswith("uint"):
        return "u"
    if dtype.startswith("int"):
        return "i"
    if dtype == "bool":
        return "b"
    if dtype.startswith("complex"):
        return "c"
    return dtype


def _wide(dtype: str) -> str:
    """Compute dtype: float32 for half precision (and non-float input), else the input's float dtype."""
    if dtype in ("float32", "float64"):
        return dtype
    return "float32"


def _shape(x: Any) -> tuple[int | None, ...]:
    """Static shape; ``None`` for dimensions unknown while tracing."""
    return tuple(None if d is None else int(d) for d in x.shape)


def _fill(shape: tuple[int | None, ...], like: tuple[int | None, ...] | None = None) -> tuple[int, ...]:
    """Replace unknown dimensions for the static checks (they cannot be checked before run time)."""
    out = []
    for i, d in enumerate(shape):
        if d is None:
            other = like[i] if like is not None and i < len(like) else None
            d = other if other is not None else 1
        out.append(d)
    return tuple(out)


def _concrete(x: Any) -> bool:
    """Whether ``x`` holds values that can be read now (eager execution, not a tracer)."""
    if keras.backend.is_keras_tensor(x):
        return False
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.executing_eagerly())
    if backend == "torch":
        import torch

        if torch.compiler.is_compiling():
            return False
        return getattr(getattr(x, "device", None), "type", "cpu") != "meta"
    if backend == "jax":
        import jax

        return not isinstance(x, jax.core.Tracer)
    return False


def _value(x: Any) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def _is_tensor(x: Any) -> bool:
    return ops.is_tensor(x) or keras.backend.is_keras_tensor(x)


def _tensor(x: Any) -> Any:
    """A backend tensor of ``x``; NumPy arrays and Python numbers keep their dtype (float64 stays float64)."""
    if _is_tensor(x):
        return x
    arr = np.asarray(x)
    return ops.convert_to_tensor(arr) if arr.dtype.kind in "fiub" else arr


def _as_logits(fn: str, name: str, x: Any, *, ndim: int | None = 2, like: Any = None) -> Any:
    """Validate ``x`` as logits (core checks, same order) and return it in its compute dtype."""
    x = _tensor(x)
    if not _is_tensor(x):  # not numeric: the core's message about the dtype kind
        _checks.check_logits(fn, name, x.shape, x.dtype.kind, ndim=ndim)
    dtype = _dtype(x)
    shape = _shape(x)
    _checks.check_logits(fn, name, _fill(shape, like), _kind(dtype), ndim=ndim)
    if shape and shape[-1] is None:
        _checks.fail(fn, name, "an array whose class axis has a static size", f"shape {shape}")
    if _concrete(x):
        _checks.check_finite(fn, name, bool(_value(ops.all(ops.isfinite(x)))))
    return ops.cast(x, _wide(dtype))


def _same_shape(fn: str, name: str, x: Any, ref_name: str, ref: Any) -> None:
    a, b = _shape(x), _shape(ref)
    _checks.check_same_shape(fn, name, _fill(a, b), ref_name, _fill(b, a))


def _as_labels(fn: str, name: str, labels: Any, batch: int | None, num_classes: int) -> Any:
    """Validate integer class labels ``(B,)`` in ``[0, C)``; return them as int32."""
    y = _tensor(labels)
    kind = _kind(_dtype(y)) if _is_tensor(y) else y.dtype.kind
    shape = _shape(y)
    lo = hi = None
    if _concrete(y) and len(shape) == 1 and shape[0] and kind in "iu":
        v = _value(y)
        lo, hi = int(v.min()), int(v.max())
    batch = batch if batch is not None else (shape[0] if len(shape) == 1 and shape[0] is not None else 1)
    _checks.check_labels(fn, name, _fill(shape, (batch,)), kind, batch, num_classes, lo, hi)
    return ops.cast(y, "int32")


def _check_std_args(fn: str, ddof: Any, eps: Any, num_classes: int) -> tuple[int, float]:
    eps = _checks.check_positive(fn, "eps", eps, allow_zero=True)
    return _checks.check_ddof(fn, ddof, num_classes), eps


# ----------------------------------------------------------------------------- kernels (checked inputs)
# Some keras.ops (mean, matmul, quantile on the torch backend) compute float64 in
# float32 (Keras promotes 64-bit types to 32-bit); the kernels use sum, einsum and
# sort instead, so float64 stays exact on every backend.
def _mean(x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
    n = ops.shape(x)[axis] if axis is not None else ops.size(x)
    return ops.sum(x, axis=axis, keepdims=keepdims) / ops.cast(n, x.dtype)


def _median(v: Any) -> Any:
    """``numpy.percentile(v, 50)`` (linear interpolation, NumPy's rounding) of a 1-D tensor."""
    n = ops.shape(v)[0]
    ordered = ops.sort(v)
    lo, hi = ops.take(ordered, (n - 1) // 2), ops.take(ordered, n // 2)
    return hi - (hi - lo) * 0.5


def _zscore(x: Any, *, temperature: float, ddof: int, eps: float, axis: int = -1) -> Any:
    """Z-score of a checked tensor in its compute dtype. Gradient-safe at constant rows."""
    c = x.shape[axis]
    centred = x - _mean(x, axis=axis, keepdims=True)
    var = ops.sum(centred * centred, axis=axis, keepdims=True) / (c - ddof)
    pos = var > 0
    std = ops.where(pos, ops.sqrt(ops.where(pos, var, ops.ones_like(var))), ops.zeros_like(var))
    denom = (std + eps) * temperature
    ok = denom > 0
    return ops.where(ok, centred / ops.where(ok, denom, ops.ones_like(denom)), ops.zeros_like(centred))


def _kl_rows(log_p: Any, log_q: Any) -> Any:
    """Per-row ``sum p (log p - log q)`` of finite log-probabilities (``0 log 0 = 0``)."""
    return ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)


def _kd_rows(s: Any, t: Any, tau: Any) -> Any:
    """Per-sample ``tau^2 * KL(softmax(t/tau) || softmax(s/tau))`` (``tau`` a float or a scalar tensor)."""
    return tau * tau * _kl_rows(ops.log_softmax(t / tau, axis=-1), ops.log_softmax(s / tau, axis=-1))


def _prepare(s: Any, t: Any, *, standardize: bool, ddof: int, eps: float) -> tuple[Any, Any]:
    if standardize:
        return (_zscore(s, temperature=1.0, ddof=ddof, eps=eps), _zscore(t, temperature=1.0, ddof=ddof, eps=eps))
    return s, t


def _binary_and_rest(z: Any, onehot: Any) -> tuple[Any, Any]:
    """For scaled logits ``z`` (B, C): log [p_target, sum of the others] (B, 2), and the
    log-softmax over the non-target classes (B, C) with 0 in the target entry."""
    target = onehot > 0
    lse_all = ops.logsumexp(z, axis=-1)
    lse_rest = ops.logsumexp(ops.where(target, ops.full_like(z, -math.inf), z), axis=-1)
    z_gt = ops.sum(z * onehot, axis=-1)
    log_binary = ops.stack([z_gt - lse_all, lse_rest - lse_all], axis=-1)
    return log_binary, ops.where(target, ops.zeros_like(z), z - ops.expand_dims(lse_rest, -1))


def _dkd_rows(s: Any, t: Any, labels: Any, *, alpha: Any, beta: Any, tau: Any) -> Any:
    onehot = ops.one_hot(labels, s.shape[-1], dtype=s.dtype)
    bs, rest_s = _binary_and_rest(s / tau, onehot)
    bt, rest_t = _binary_and_rest(t / tau, onehot)
    tckd = _kl_rows(bt, bs)
    nckd = _kl_rows(rest_t, rest_s)  # the target entries are 0 on both sides: exp(0) * (0 - 0) = 0
    return tau * tau * (alpha * tckd + beta * nckd)


def _ce_rows(logits: Any, labels: Any) -> Any:
    onehot = ops.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return -ops.sum(onehot * ops.log_softmax(logits, axis=-1), axis=-1)


def _reduce(rows: Any, reduction: str) -> Any:
    if reduction == "none":
        return rows
    return ops.sum(rows) if reduction == "sum" else _mean(rows)


def _grad_reverse(x: Any, lam: Any) -> Any:
    """Identity forward; the backward multiplies the incoming gradient by ``lam``."""
    frozen = ops.stop_gradient(x)
    return frozen + lam * (x - frozen)


# ----------------------------------------------------------------------------- functions
def zscore(logits: Any, *, temperature: float = 1.0, ddof: int = 1, eps: float = 1e-7, axis: int = -1) -> Any:
    r"""Standardize logits along ``axis`` and divide by a base temperature (Keras).

    .. math::

        \mathcal{Z}(x; \tau) = \frac{x - \bar{x}}{(\varepsilon + s(x))\,\tau}

    See :func:`logit_standardization.zscore` for the math and the conventions
    (``ddof=1, eps=1e-7``: published code; ``ddof=0, eps=0``: the paper). Constant
    rows map to zeros with a finite gradient. Works on symbolic tensors too, so it
    can be used inside a functional model.

    Args:
        logits: floating-point tensor (or array) with at least 2 entries along ``axis``.
        temperature: base temperature :math:`\tau > 0`.
        ddof: delta degrees of freedom of the deviation.
        eps: non-negative constant added to the deviation.
        axis: the class axis.

    Returns:
        A tensor of the input's shape and dtype; the statistics are computed in
        float32 for float16/bfloat16 input.

    Example:
        >>> import numpy as np
        >>> from keras import ops
        >>> from logit_standardization.keras import zscore
        >>> z = zscore(np.array([[1.0, 2.0, 3.0]]) * 50 + 7, temperature=2.0)
        >>> np.round(ops.convert_to_numpy(z), 6)
        array([[-0.5,  0. ,  0.5]])
    """
    fn = "zscore"
    x = _as_logits(fn, "logits", logits, ndim=None)
    in_dtype = _dtype(_tensor(logits))
    ax = _checks.check_axis_classes(fn, "logits", _fill(_shape(x)), axis)
    tau = _checks.check_positive(fn, "temperature", temperature)
    eps = _checks.check_positive(fn, "eps", eps, allow_zero=True)
    ddof = _checks.check_ddof(fn, ddof, x.shape[ax])
    z = _zscore(x, temperature=tau, ddof=ddof, eps=eps, axis=ax)
    return ops.cast(z, in_dtype) if _kind(in_dtype) == "f" else z


def _pair(fn: str, student_logits: Any, teacher_logits: Any, *, standardize: Any, ddof: Any, eps: Any):
    """Core ``prepare_pair``: checks in the same order, then (optionally) standardize."""
    s = _as_logits(fn, "student_logits", student_logits)
    t = _as_logits(fn, "teacher_logits", teacher_logits, like=_shape(s))
    _same_shape(fn, "teacher_logits", t, "student_logits", s)
    _checks.check_bool(fn, "standardize", standardize)
    ddof, eps = _check_std_args(fn, ddof, eps, s.shape[-1])
    dtype = "float64" if "float64" in (_dtype(s), _dtype(t)) else _dtype(s)
    s, t = ops.cast(s, dtype), ops.cast(t, dtype)
    return _prepare(s, t, standardize=standardize, ddof=ddof, eps=eps)


def kd_loss(
    student_logits: Any,
    teacher_logits: Any,
    *,
    temperature: float = 2.0,
    standardize: bool = True,
    ddof: int = 1,
    eps: float = 1e-7,
    reduction: str = "mean",
) -> Any:
    r"""KD loss with logit standardization by default (Keras).

    .. math::

        \mathcal{L}_{KD} = \tau^2\,\frac{1}{B}\sum_i \mathrm{KL}\big(
            \mathrm{softmax}(\tilde t_i/\tau)\,\|\,\mathrm{softmax}(\tilde s_i/\tau)\big)

    See :func:`logit_standardization.kd_loss`. Gradients flow into both inputs;
    wrap the teacher logits in ``keras.ops.stop_gradient`` when the teacher is live.

    Args:
        student_logits: ``(B, C)`` floating-point tensor.
        teacher_logits: ``(B, C)`` floating-point tensor.
        temperature: base temperature :math:`\tau > 0`.
        standardize: apply the Z-score pre-process to both inputs.
        ddof: deviation convention of :func:`zscore`.
        eps: constant added to the deviation.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (the ``(B,)`` per-sample losses).

    Returns:
        A scalar tensor, or ``(B,)`` for ``reduction="none"``.

    Example:
        >>> import numpy as np
        >>> from logit_standardization.keras import kd_loss
        >>> t = np.array([[2.0, 0.0, -2.0]])
        >>> round(float(kd_loss(t * 0.1 + 5.0, t)), 9)
        0.0
        >>> round(float(kd_loss(t * 0.1 + 5.0, t, standardize=False)), 6)
        0.848105
    """
    fn = "kd_loss"
    reduction = _checks.check_reduction(fn, reduction)
    tau = _checks.check_positive(fn, "temperature", temperature)
    s, t = _pair(fn, student_logits, teacher_logits, standardize=standardize, ddof=ddof, eps=eps)
    return _reduce(_kd_rows(s, t, tau), reduction)


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
) -> Any:
    r"""Decoupled KD (:math:`\alpha\,\mathrm{TCKD} + \beta\,\mathrm{NCKD}`) with logit standardization (Keras).

    See :func:`logit_standardization.dkd_loss` for the math: the target class is
    excluded exactly and "others" is a log-domain sum, so confident raw logits stay
    finite.

    Args:
        student_logits: ``(B, C)`` floating-point tensor.
        teacher_logits: ``(B, C)`` floating-point tensor.
        labels: ``(B,)`` integer class indices in ``[0, C)``.
        alpha: weight of TCKD.
        beta: weight of NCKD.
        temperature: base temperature :math:`\tau > 0`.
        standardize: apply the Z-score pre-process to both logit sets.
        ddof: deviation convention of :func:`zscore`.
        eps: constant added to the deviation.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        A scalar tensor, or ``(B,)`` for ``reduction="none"``.

    Example:
        >>> import numpy as np
        >>> from logit_standardization.keras import dkd_loss
        >>> s = np.array([[3.0, 1.0, 0.0]]); t = np.array([[5.0, 0.0, 1.0]])
        >>> round(float(dkd_loss(s, t, np.array([0]))), 6)
        1.063133
    """
    fn = "dkd_loss"
    reduction = _checks.check_reduction(fn, reduction)
    tau = _checks.check_positive(fn, "temperature", temperature)
    a = _checks.check_real(fn, "alpha", alpha)
    b = _checks.check_real(fn, "beta", beta)
    s, t = _pair(fn, student_logits, teacher_logits, standardize=standardize, ddof=ddof, eps=eps)
    y = _as_labels(fn, "labels", labels, _shape(s)[0], s.shape[-1])
    return _reduce(_dkd_rows(s, t, y, alpha=a, beta=b, tau=tau), reduction)


def _confidence_masks(tw: Any) -> tuple[Any, Any]:
    p = ops.softmax(tw, axis=-1)
    conf = ops.max(p, axis=-1)
    cconf = ops.sum(p, axis=0)
    mask = ops.cast(conf <= _median(conf), tw.dtype)
    cmask = ops.cast(cconf <= _median(cconf), tw.dtype)
    return ops.stop_gradient(mask), ops.stop_gradient(cmask)


def _gram_diff_sq(s: Any, t: Any, tau: float, *, classes: bool) -> Any:
    ps, pt = ops.softmax(s / tau, axis=-1), ops.softmax(t / tau, axis=-1)
    if classes:
        gs, gt = ops.einsum("bi,bj->ij", ps, ps), ops.einsum("bi,bj->ij", pt, pt)
    else:
        gs, gt = ops.einsum("ik,jk->ij", ps, ps), ops.einsum("ik,jk->ij", pt, pt)
    return ops.square(gt - gs)


def _mlkd_terms(fn, sw, ss, tw, ts, *, temperatures, kd_weight, standardize, variant, ddof, eps) -> dict[str, Any]:
    variant = _checks.check_choice(fn, "variant", variant, _checks.MLKD_VARIANTS)
    temps = _checks.check_temperatures(fn, temperatures)
    w = _checks.check_real(fn, "kd_weight", kd_weight)
    sw = _as_logits(fn, "student_logits", sw)
    tw = _as_logits(fn, "teacher_logits", tw, like=_shape(sw))
    _same_shape(fn, "teacher_logits", tw, "student_logits", sw)
    _check_std_args(fn, ddof, eps, sw.shape[-1])
    ss = _as_logits(fn, "student_strong", ss, like=_shape(sw))
    ts = _as_logits(fn, "teacher_strong", ts, like=_shape(sw))
    _same_shape(fn, "student_strong", ss, "student_weak", sw)
    _same_shape(fn, "teacher_strong", ts, "student_weak", sw)
    _checks.check_bool(fn, "standardize", standardize)
    dtype = "float64" if "float64" in {_dtype(v) for v in (sw, ss, tw, ts)} else "float32"
    sw, ss, tw, ts = (ops.cast(v, dtype) for v in (sw, ss, tw, ts))
    ddof, eps = _check_std_args(fn, ddof, eps, sw.shape[-1])
    zw = _prepare(sw, tw, standardize=standardize, ddof=ddof, eps=eps)
    zs = _prepare(ss, ts, standardize=standardize, ddof=ddof, eps=eps)
    mask, cmask = _confidence_masks(tw)
    b, c = ops.cast(ops.shape(sw)[0], dtype), float(sw.shape[-1])

    kd = cc = bc = 0.0
    if variant == "reference":
        m_bar, c_bar = _mean(mask), _mean(cmask)
        for j, tau in enumerate(temps):
            kd = kd + m_bar * _mean(_kd_rows(*zw, tau))
            strong = zs if j < 3 else zw  # inherited: positions 4 and 5 use the weak view
            kd = kd + _mean(_kd_rows(*strong, tau))
            cc = cc + c_bar * ops.sum(_gram_diff_sq(sw, tw, tau, classes=True)) / c
            bc = bc + m_bar * ops.sum(_gram_diff_sq(sw, tw, tau, classes=False)) / b
    else:
        for tau in temps:
            kd = kd + _mean(mask * _kd_rows(*zw, tau)) + _mean(_kd_rows(*zs, tau))
            for s_, t_ in ((sw, tw), (ss, ts)):
                cc = cc + ops.sum(_gram_diff_sq(s_, t_, tau, classes=True) * cmask) / c
                bc = bc + ops.sum(_gram_diff_sq(s_, t_, tau, classes=False) * mask) / b
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
) -> dict[str, Any]:
    r"""The instance (``"kd"``), class (``"cc"``) and batch (``"bc"``) terms of MLKD (Keras).

    See :func:`logit_standardization.mlkd_terms` for the math and the two variants
    (``"reference"``: the published code, quirks included; ``"corrected"``: the MLKD
    paper). The confidence masks (batch and class medians of the weak teacher's
    probabilities) carry no gradient.

    Args:
        student_weak: ``(B, C)`` student logits of the weakly augmented view.
        student_strong: ``(B, C)`` student logits of the strongly augmented view.
        teacher_weak: ``(B, C)`` teacher logits of the weak view.
        teacher_strong: ``(B, C)`` teacher logits of the strong view.
        temperatures: the temperatures :math:`\mathcal T`.
        kd_weight: :math:`w`, multiplied into every term.
        standardize: apply the Z-score pre-process inside the KD terms only.
        variant: ``"reference"`` or ``"corrected"``.
        ddof: deviation convention of :func:`zscore`.
        eps: constant added to the deviation.

    Returns:
        ``{"kd": tensor, "cc": tensor, "bc": tensor}`` of scalars.

    Example:
        >>> import numpy as np
        >>> from logit_standardization.keras import mlkd_terms
        >>> rng = np.random.default_rng(0)
        >>> sorted(mlkd_terms(*(rng.normal(size=(4, 5)) for _ in range(4))))
        ['bc', 'cc', 'kd']
    """
    return _mlkd_terms(
        "mlkd_terms", student_weak, student_strong, teacher_weak, teacher_strong,
        temperatures=temperatures, kd_weight=kd_weight, standardize=standardize,
        variant=variant, ddof=ddof, eps=eps,
    )


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
) -> Any:
    r"""Sum of :func:`mlkd_terms` (Keras); see :func:`logit_standardization.mlkd_loss`.

    Example:
        >>> import numpy as np
        >>> from logit_standardization.keras import mlkd_loss
        >>> rng = np.random.default_rng(0)
        >>> float(mlkd_loss(*(rng.normal(size=(4, 5)) for _ in range(4)))) > 0
        True
    """
    terms = _mlkd_terms(
        "mlkd_loss", student_weak, student_strong, teacher_weak, teacher_strong,
        temperatures=temperatures, kd_weight=kd_weight, standardize=standardize,
        variant=variant, ddof=ddof, eps=eps,
    )
    return terms["kd"] + terms["cc"] + terms["bc"]


def ctkd_temperature(raw: Any, *, t_start: float = 1.0, t_end: float = 20.0) -> Any:
    r"""CTKD's temperature :math:`t_\mathrm{start} + t_\mathrm{end}\,\sigma(g)` of a raw parameter (Keras).

    See :func:`logit_standardization.ctkd_temperature`. Differentiable in ``raw``.

    Args:
        raw: real scalar or tensor :math:`g`.
        t_start: lower end of the temperature range.
        t_end: width of the temperature range (> 0).

    Returns:
        A tensor of ``raw``'s shape (float32 for integer or half-precision input).

    Example:
        >>> from logit_standardization.keras import ctkd_temperature
        >>> round(float(ctkd_temperature(1.0)), 4)
        15.6212
    """
    fn = "ctkd_temperature"
    t0 = _checks.check_real(fn, "t_start", t_start)
    width = _checks.check_positive(fn, "t_end", t_end)
    g = _tensor(raw)
    kind = _kind(_dtype(g)) if _is_tensor(g) else g.dtype.kind
    _checks.check_real_kind(fn, "raw", kind)
    g = ops.cast(g, _wide(_dtype(g)))
    if _concrete(g):
        _checks.check_finite(fn, "raw", bool(_value(ops.all(ops.isfinite(g)))))
    return t0 + width * ops.sigmoid(g)


# ----------------------------------------------------------------------------- targets
def pack_targets(teacher_logits: Any, labels: Any) -> Any:
    """Put integer labels next to teacher logits: ``(B, C)`` and ``(B,)`` → ``(B, C + 1)``.

    The loss classes read a ``(B, C + 1)`` target as teacher logits plus the label
    in the last column (they tell the two formats apart by the width). The result
    is float32 (float64 for float64 teacher logits), which holds every label up to
    :math:`2^{24}` exactly. NumPy inputs give a NumPy array (for ``fit`` or a
    ``tf.data``/``PyDataset`` pipeline), tensors a tensor.

    Args:
        teacher_logits: ``(B, C)`` floating-point teacher logits.
        labels: ``(B,)`` (or ``(B, 1)``) integer class indices in ``[0, C)``.

    Returns:
        ``(B, C + 1)`` targets.

    Example:
        >>> import numpy as np
        >>> from logit_standardization.keras import pack_targets
        >>> pack_targets(np.array([[0.5, -1.0, 2.0]]), np.array([2]))
        array([[ 0.5, -1. ,  2. ,  2. ]])
    """
    fn = "pack_targets"
    numpy_in = not (_is_tensor(teacher_logits) or _is_tensor(labels))
    t = _as_logits(fn, "teacher_logits", teacher_logits)
    y = _tensor(labels)
    if _is_tensor(y) and len(_shape(y)) == 2 and _shape(y)[1] == 1:
        y = ops.reshape(y, (-1,))
    y = _as_labels(fn, "labels", y, _shape(t)[0], t.shape[-1])
    dtype = "float64" if _dtype(t) == "float64" else "float32"
    packed = ops.concatenate([ops.cast(t, dtype), ops.expand_dims(ops.cast(y, dtype), -1)], axis=-1)
    return ops.convert_to_numpy(packed) if numpy_in else packed


def _split_targets(fn: str, y_true: Any, y_pred: Any, *, labels_required: str | None) -> tuple[Any, Any]:
    """``(teacher_logits, labels or None)`` from plain ``(B, C)`` or packed ``(B, C+1)`` targets.

    ``labels_required`` names the reason labels are needed (``None`` if they are optional).
    """
    c = y_pred.shape[-1]
    shape = _shape(y_true)
    packed = f"teacher logits and labels of shape (batch, {c + 1}) made by pack_targets"
    if len(shape) != 2 or shape[-1] not in (c, c + 1):
        _checks.fail(fn, "y_true", f"teacher logits of shape (batch, {c}) or {packed}", f"shape {shape}")
    if shape[-1] == c:
        if labels_required is not None:
            _checks.fail(fn, "y_true", f"{packed} ({labels_required})", f"shape {shape}")
        return y_true, None
    teacher, column = y_true[:, :c], y_true[:, c]
    labels = ops.cast(ops.round(column), "int32")
    if _concrete(column):
        v = _value(column)
        bad = v[(v != np.round(v)) | (v < 0) | (v >= c)]
        if bad.size:
            _checks.fail(fn, "y_true", f"class indices in [0, {c}) in its last column", f"label {float(bad.flat[0]):g}")
    return teacher, labels


# ----------------------------------------------------------------------------- loss classes
def _epoch_variable(value: float, name: str) -> Any:
    """A non-trainable float32 scalar that :class:`EpochSchedule` sets from the epoch."""
    return keras.Variable(value, trainable=False, dtype="float32", name=name)


def _ddof_argument(fn: str, ddof: Any) -> int:
    """``ddof`` given before the class count is known: type and sign now, the bound per call."""
    if isinstance(ddof, bool) or not isinstance(ddof, int) or ddof < 0:
        _checks.check_ddof(fn, ddof, 2)  # raises the core's message
    return int(ddof)


def _register(cls):
    return keras.saving.register_keras_serializable(package=_PACKAGE)(cls)


def _loss_dtype(fn: str, dtype: Any) -> Any:
    """Keras ``dtype`` argument of a loss, refusing half precision (targets would lose labels)."""
    if dtype is None:
        return None
    name = keras.dtype_policies.get(dtype).compute_dtype
    if name not in ("float32", "float64"):
        _checks.fail(fn, "dtype", "float32 or float64 (statistics need at least float32)", repr(dtype))
    return dtype


class _DistillLoss(keras.losses.Loss):
    """Shared plumbing of the loss classes: checks, logits from ``y_pred``, config."""

    _fn = "_DistillLoss"

    def __init__(self, *, standardize, ddof, eps, ce_weight, reduction, name, dtype):
        fn = self._fn
        super().__init__(name=name, reduction=reduction, dtype=_loss_dtype(fn, dtype))
        self._dtype_argument = dtype
        self.standardize = _checks.check_bool(fn, "standardize", standardize)
        self.eps = _checks.check_positive(fn, "eps", eps, allow_zero=True)
        self.ddof = _ddof_argument(fn, ddof)
        self.ce_weight = _checks.check_positive(fn, "ce_weight", ce_weight, allow_zero=True)

    def _logits(self, y_true, y_pred):
        fn = self._fn
        s = _as_logits(fn, "y_pred", y_pred)
        _checks.check_ddof(fn, self.ddof, s.shape[-1])
        return s, _as_logits(fn, "y_true", y_true, like=_shape(s)[:1] + (None,))

    def _rows(self, s, labels, distill_rows):
        rows = distill_rows
        if self.ce_weight and labels is not None:
            rows = rows + self.ce_weight * _ce_rows(s, labels)
        return rows

    def get_config(self):
        config = super().get_config()
        config.update(standardize=self.standardize, ddof=self.ddof, eps=self.eps, ce_weight=self.ce_weight,
                      dtype=self._dtype_argument)
        return config


@_register
class KDLoss(_DistillLoss):
    r"""KD with logit standardization as a Keras loss: ``model.compile(loss=KDLoss(...))``.

    ``loss(y_true, y_pred)`` with ``y_pred`` the student logits ``(B, C)`` and
    ``y_true`` either the teacher logits ``(B, C)`` (offline distillation: precomputed
    or streamed) or :func:`pack_targets` output ``(B, C + 1)`` with the label in the
    last column. Per sample,

    .. math::

        \ell_i = w_{kd}\,\tau^2\,\mathrm{KL}\big(\mathrm{softmax}(\tilde t_i/\tau)\,\|\,
            \mathrm{softmax}(\tilde s_i/\tau)\big) + w_{ce}\,\mathrm{CE}(s_i, y_i)

    (the cross-entropy uses the raw student logits and needs packed targets), then
    Keras's ``reduction`` (``"sum_over_batch_size"``, the default, is the core's
    ``"mean"``) and ``sample_weight`` apply. The published KD+LS recipe is
    ``KDLoss(temperature=2.0, kd_weight=9.0, ce_weight=0.1)`` (Sun et al., CVPR 2024, supplementary §2).

    Args:
        temperature: base temperature :math:`\tau > 0`.
        standardize: apply the Z-score pre-process to both logit sets.
        ddof: deviation convention of :func:`zscore` (1: published code, 0: paper).
        eps: constant added to the deviation.
        kd_weight: :math:`w_{kd}`, the weight of the KD term.
        ce_weight: :math:`w_{ce}`, the weight of the cross-entropy (labels required when > 0).
        reduction: a Keras reduction.
        name: loss name.
        dtype: computation dtype (float32 or float64; default ``keras.config.floatx()``).

    Example:
        >>> import numpy as np
        >>> from logit_standardization.keras import KDLoss, pack_targets
        >>> t = np.array([[2.0, 0.0, -2.0], [0.0, 1.0, 0.0]], dtype="float32")
        >>> round(float(KDLoss()(t, 0.5 * t - 1.0)), 6)
        0.0
        >>> y = pack_targets(t, np.array([0, 1]))
        >>> float(KDLoss(ce_weight=0.1)(y, 0.5 * t)) > 0
        True
    """

    _fn = "KDLoss"

    def __init__(
        self,
        *,
        temperature: float = 2.0,
        standardize: bool = True,
        ddof: int = 1,
        eps: float = 1e-7,
        kd_weight: float = 1.0,
        ce_weight: float = 0.0,
        reduction: str = "sum_over_batch_size",
        name: str = "kd_loss",
        dtype: Any = None,
    ):
        super().__init__(standardize=standardize, ddof=ddof, eps=eps, ce_weight=ce_weight,
                         reduction=reduction, name=name, dtype=dtype)
        self.temperature = _checks.check_positive(self._fn, "temperature", temperature)
        self.kd_weight = _checks.check_real(self._fn, "kd_weight", kd_weight)

    def _tau(self):
        return self.temperature

    def call(self, y_true, y_pred):
        need = "ce_weight > 0 needs labels" if self.ce_weight else None
        s, y_true = self._logits(y_true, y_pred)
        t, labels = _split_targets(self._fn, y_true, s, labels_required=need)
        zs, zt = _prepare(s, t, standardize=self.standardize, ddof=self.ddof, eps=self.eps)
        return self._rows(s, labels, self.kd_weight * _kd_rows(zs, zt, ops.cast(self._tau(), s.dtype)))

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature, kd_weight=self.kd_weight)
        return config


@_register
class DKDLoss(_DistillLoss):
    r"""Decoupled KD with logit standardization as a Keras loss; targets from :func:`pack_targets`.

    ``loss(y_true, y_pred)`` with ``y_true = pack_targets(teacher_logits, labels)``
    ``(B, C + 1)`` and ``y_pred`` the student logits. Per sample
    :math:`\ell_i = f\,(\alpha\,\mathrm{TCKD}_i + \beta\,\mathrm{NCKD}_i) + w_{ce}\,\mathrm{CE}(s_i, y_i)`
    (see :func:`logit_standardization.dkd_loss`) with the warm-up factor
    :math:`f = \min(\text{epoch}/W, 1)` with :math:`W` = ``warmup_epochs`` (1 without warm-up).
    The published DKD+LS CIFAR recipe is ``DKDLoss(alpha=9, beta=72, temperature=2,
    warmup_epochs=20, ce_weight=1.0)``. With ``warmup_epochs`` set, add
    :class:`EpochSchedule` to ``fit``'s callbacks (the :class:`Distiller` adds it
    itself); the epoch is 1 until then.

    Args:
        alpha: weight of TCKD.
        beta: weight of NCKD.
        temperature: base temperature :math:`\tau > 0`.
        warmup_epochs: length of the linear warm-up in epochs, or ``None``.
        standardize: apply the Z-score pre-process to both logit sets.
        ddof: deviation convention of :func:`zscore`.
        eps: constant added to the deviation.
        ce_weight: weight of the cross-entropy on the labels.
        reduction: a Keras reduction.
        name: loss name.
        dtype: computation dtype (float32 or float64).

    Example:
        >>> import numpy as np
        >>> from logit_standardization.keras import DKDLoss, pack_targets
        >>> y = pack_targets(np.array([[5.0, 0.0, 1.0]]), np.array([0]))
        >>> round(float(DKDLoss(dtype="float64")(y, np.array([[3.0, 1.0, 0.0]]))), 6)
        1.063133
    """

    _fn = "DKDLoss"

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 2.0,
        warmup_epochs: int | None = None,
        standardize: bool = True,
        ddof: int = 1,
        eps: float = 1e-7,
        ce_weight: float = 0.0,
        reduction: str = "sum_over_batch_size",
        name: str = "dkd_loss",
        dtype: Any = None,
    ):
        super().__init__(standardize=standardize, ddof=ddof, eps=eps, ce_weight=ce_weight,
                         reduction=reduction, name=name, dtype=dtype)
        fn = self._fn
        self.alpha = _checks.check_real(fn, "alpha", alpha)
        self.beta = _checks.check_real(fn, "beta", beta)
        self.temperature = _checks.check_positive(fn, "temperature", temperature)
        if warmup_epochs is not None and (
            isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 1
        ):
            _checks.fail(fn, "warmup_epochs", "None or an int >= 1", repr(warmup_epochs))
        self.warmup_epochs = warmup_epochs
        self._warmup = None if warmup_epochs is None else _epoch_variable(1.0 / warmup_epochs, "dkd_warmup")

    @property
    def variables(self) -> list:
        """The warm-up factor variable (empty without warm-up), for a model to track."""
        return [] if self._warmup is None else [self._warmup]

    @property
    def warmup_factor(self) -> float:
        """The current warm-up factor :math:`\\min(\\text{epoch}/W, 1)` with :math:`W` = ``warmup_epochs``."""
        return 1.0 if self._warmup is None else float(_value(self._warmup))

    def set_epoch(self, epoch: float) -> None:
        """Set the (1-based) epoch that drives the warm-up; called by :class:`EpochSchedule`."""
        e = _checks.check_epoch(self._fn, "epoch", epoch)
        if self._warmup is not None:
            self._warmup.assign(min(max(e, 0.0) / self.warmup_epochs, 1.0))

    def call(self, y_true, y_pred):
        s, y_true = self._logits(y_true, y_pred)
        t, labels = _split_targets(self._fn, y_true, s, labels_required="DKD needs labels")
        zs, zt = _prepare(s, t, standardize=self.standardize, ddof=self.ddof, eps=self.eps)
        rows = _dkd_rows(zs, zt, labels, alpha=self.alpha, beta=self.beta, tau=self.temperature)
        if self._warmup is not None:
            rows = rows * ops.cast(self._warmup, rows.dtype)
        return self._rows(s, labels, rows)

    def get_config(self):
        config = super().get_config()
        config.update(alpha=self.alpha, beta=self.beta, temperature=self.temperature, warmup_epochs=self.warmup_epochs)
        return config


@_register
class CTKDLoss(KDLoss):
    r"""Curriculum temperature KD (Li et al., AAAI 2023) with logit standardization.

    KD (as :class:`KDLoss`) at the learnable temperature
    :math:`T = t_\mathrm{start} + t_\mathrm{end}\,\sigma(g)` (:func:`ctkd_temperature`),
    scaled by :math:`T^2`. The raw parameter :math:`g` (``raw_temperature``, initialised
    to ``init``) passes through a gradient-reversal layer whose factor
    :math:`\lambda` = :func:`ctkd_lambda` of the epoch goes from 0 to -1 over ``loops``
    epochs, so :math:`g` ascends the distillation loss while the student descends it.

    A Keras loss owns no trainable weights (``compile`` optimizes the model's weights
    only), so the temperature learns only when a model tracks ``raw_temperature``:
    pass the loss to :class:`Distiller`, which does so and keeps :math:`\lambda` on
    schedule. In a plain ``model.compile`` it acts as KD at the fixed initial
    temperature. Keyword arguments of :class:`KDLoss` other than ``temperature`` apply.

    Args:
        t_start: lower end of the temperature range.
        t_end: width of the temperature range (> 0).
        init: initial value of the raw parameter :math:`g`.
        loops: epochs over which :math:`\lambda` decays (see :func:`ctkd_lambda`).
        max_value: :math:`\lambda_{max}`.
        min_value: :math:`\lambda_{min}`.
        schedule: ``"cosine"`` or ``"linear"``.
        **kwargs: ``standardize``, ``ddof``, ``eps``, ``kd_weight``, ``ce_weight``,
            ``reduction``, ``name``, ``dtype`` as in :class:`KDLoss`.

    Example:
        >>> from logit_standardization.keras import CTKDLoss
        >>> loss = CTKDLoss()
        >>> round(loss.current_temperature, 4), round(loss.grl_lambda, 5)
        (15.6212, -0.02447)
    """

    _fn = "CTKDLoss"

    def __init__(
        self,
        *,
        t_start: float = 1.0,
        t_end: float = 20.0,
        init: float = 1.0,
        loops: int = 10,
        max_value: float = 0.0,
        min_value: float = -1.0,
        schedule: str = "cosine",
        name: str = "ctkd_loss",
        **kwargs: Any,
    ):
        if "temperature" in kwargs:
            _checks.fail(self._fn, "temperature", "left out (CTKD learns it)", repr(kwargs["temperature"]), TypeError)
        super().__init__(name=name, **kwargs)
        fn = self._fn
        self.t_start = _checks.check_real(fn, "t_start", t_start)
        self.t_end = _checks.check_positive(fn, "t_end", t_end)
        self.init = _checks.check_real(fn, "init", init)
        self.schedule_config = {"loops": loops, "max_value": max_value, "min_value": min_value, "schedule": schedule}
        lam = ctkd_lambda(1, **self.schedule_config)  # validates the schedule arguments
        self.raw_temperature = keras.Variable(self.init, trainable=True, dtype="float32", name="ctkd_raw_temperature")
        self._lambda = _epoch_variable(lam, "ctkd_lambda")

    @property
    def variables(self) -> list:
        """``[raw_temperature (trainable), lambda (not trainable)]``, for a model to track."""
        return [self.raw_temperature, self._lambda]

    @property
    def current_temperature(self) -> float:
        """The temperature the next call will use."""
        return float(_value(ctkd_temperature(self.raw_temperature.value, t_start=self.t_start, t_end=self.t_end)))

    @property
    def grl_lambda(self) -> float:
        """The current gradient-reversal factor."""
        return float(_value(self._lambda))

    def set_epoch(self, epoch: float) -> None:
        """Set the (1-based) epoch that drives :math:`\\lambda`; called by :class:`EpochSchedule`."""
        self._lambda.assign(ctkd_lambda(epoch, **self.schedule_config))

    def _tau(self):
        raw = _grad_reverse(ops.convert_to_tensor(self.raw_temperature), self._lambda)
        return self.t_start + self.t_end * ops.sigmoid(raw)

    def get_config(self):
        config = super().get_config()
        del config["temperature"]
        config.update(t_start=self.t_start, t_end=self.t_end, init=self.init, **self.schedule_config)
        return config


# ----------------------------------------------------------------------------- callbacks, Distiller
def _epoch_losses(model: Any) -> list:
    found = []
    for candidate in (getattr(model, "loss", None), getattr(model, "distillation_loss", None)):
        if candidate is None:
            continue
        for item in keras.tree.flatten(candidate):
            if hasattr(item, "set_epoch") and item not in found:
                found.append(item)
    return found


class EpochSchedule(keras.callbacks.Callback):
    """Tell the epoch-driven losses of the model which epoch starts (1-based).

    Drives the :class:`DKDLoss` warm-up and the :class:`CTKDLoss` :math:`\\lambda`
    schedule, for a model compiled with such a loss or a :class:`Distiller` (which
    adds this callback itself). Use ``initial_epoch`` of ``fit`` to resume.

    Example:
        >>> from logit_standardization.keras import DKDLoss, EpochSchedule
        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> model.compile(loss=DKDLoss(warmup_epochs=20))
        >>> cb = EpochSchedule(); cb.set_model(model); cb.on_epoch_begin(4)
        >>> model.loss.warmup_factor
        0.25
    """

    def on_epoch_begin(self, epoch, logs=None):
        for loss in _epoch_losses(self.model):
            loss.set_epoch(epoch + 1)


@_register
class Distiller(keras.Model):
    r"""Online distillation: a frozen teacher runs in inference mode, the student trains.

    A :class:`keras.Model` whose ``call`` is the student, so ``fit``, ``evaluate``,
    ``predict`` and callbacks work as for any model; ``compute_loss`` runs the teacher
    (``training=False``, no gradient) on the same inputs and returns

    .. math::

        \mathcal{L} = \mathrm{loss}(\mathrm{pack\_targets}(t, y),\, s)
            + w_{ce}\,\mathrm{CE}(s, y) + \text{student regularizers}

    with Keras's reduction and ``sample_weight``. Without labels (``fit(x)``) the loss
    sees the plain teacher logits and the cross-entropy is left out. The default
    ``loss`` with ``ce_weight=0.1`` is the published KD+LS recipe
    (``KDLoss(temperature=2.0, kd_weight=9.0)``). A :class:`CTKDLoss`'s temperature
    becomes a weight of the distiller; :class:`EpochSchedule` is added to ``fit``.

    Save or export the student alone with ``distiller.student.save(...)`` /
    ``distiller.student.export(...)``; the distiller itself also saves and reloads.

    Args:
        teacher: a trained :class:`keras.Model` giving logits; frozen here.
        student: the :class:`keras.Model` to train, giving logits of the same shape.
        loss: a :class:`KDLoss`, :class:`DKDLoss`, :class:`CTKDLoss` or any Keras loss
            taking ``(targets, student_logits)``; default ``KDLoss(kd_weight=9.0)``.
        ce_weight: weight of the cross-entropy of the student on the labels.
        **kwargs: :class:`keras.Model` arguments (``name``...).

    Example:
        >>> import keras, numpy as np
        >>> from logit_standardization.keras import Distiller
        >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> distiller = Distiller(teacher, student)
        >>> distiller.compile(optimizer="adam", metrics=["accuracy"])
        >>> x, y = np.ones((8, 4), "float32"), np.zeros(8, "int32")
        >>> history = distiller.fit(x, y, epochs=1, verbose=0)
        >>> sorted(history.history)
        ['accuracy', 'loss']
    """

    def __init__(self, teacher, student, *, loss=None, ce_weight: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(teacher, keras.Model):
            _checks.fail("Distiller", "teacher", "a keras.Model", type(teacher).__name__, TypeError)
        if not isinstance(student, keras.Model):
            _checks.fail("Distiller", "student", "a keras.Model", type(student).__name__, TypeError)
        if loss is None:
            loss = KDLoss(kd_weight=9.0)
        if not callable(loss):
            _checks.fail("Distiller", "loss", "a Keras loss", repr(loss), TypeError)
        self.ce_weight = _checks.check_positive("Distiller", "ce_weight", ce_weight, allow_zero=True)
        self.teacher = teacher
        self.student = student
        self.teacher.trainable = False
        self.distillation_loss = loss
        self._loss_variables = list(getattr(loss, "variables", []) or [])
        reduction = getattr(loss, "reduction", "sum_over_batch_size")
        self._ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction, name="ce")

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        """Configure training like :meth:`keras.Model.compile`; the loss is the distiller's own."""
        if loss is not None:
            _checks.fail("Distiller.compile", "loss", "left out (pass it as Distiller(..., loss=...))",
                          repr(loss))
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Re-compile from a saved compile config (used when a saved distiller is loaded)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y_pred is None:
            y_pred = self(x, training=training)
        teacher_logits = ops.stop_gradient(self.teacher(x, training=False))
        if y is not None:
            y = ops.reshape(y, (-1,)) if len(_shape(y)) == 2 and _shape(y)[1] == 1 else y
            targets = pack_targets(teacher_logits, y)
        else:
            targets = teacher_logits
        total = self.distillation_loss(targets, y_pred, sample_weight)
        if self.ce_weight and y is not None:
            total = total + self.ce_weight * self._ce(y, y_pred, sample_weight)
        for extra in self.student.losses:
            total = total + ops.cast(ops.sum(extra), total.dtype)
        return total

    def fit(self, *args, callbacks=None, **kwargs):
        """:meth:`keras.Model.fit`, with :class:`EpochSchedule` added when the loss needs the epoch."""
        callbacks = list(callbacks or [])
        if _epoch_losses(self) and not any(isinstance(cb, EpochSchedule) for cb in callbacks):
            callbacks.append(EpochSchedule())
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def get_config(self):
        def model_config(model):  # the distiller's own compile config governs; drop the models' ones
            config = keras.saving.serialize_keras_object(model)
            config.pop("compile_config", None)
            return config

        return {
            "name": self.name,
            "teacher": model_config(self.teacher),
            "student": model_config(self.student),
            "loss": keras.saving.serialize_keras_object(self.distillation_loss),
            "ce_weight": self.ce_weight,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        de = keras.saving.deserialize_keras_object
        teacher, student, loss = de(config.pop("teacher")), de(config.pop("student")), de(config.pop("loss"))
        return cls(teacher, student, loss=loss, **config)


# ----------------------------------------------------------------------------- keras.distillation
@_register
class StandardizedLogitsDistillation(keras.distillation.DistillationLoss):
    r"""Logit-standardized KD for :class:`keras.distillation.Distiller`.

    The drop-in counterpart of :class:`keras.distillation.LogitsDistillation`:
    ``compute_loss(teacher_outputs, student_outputs)`` returns :func:`kd_loss`
    (batch mean, :math:`\tau^2`-scaled, both sides standardized) times ``kd_weight``,
    summed over the outputs of multi-output models. That Distiller passes no labels
    to its distillation losses, so DKD does not fit there; use :class:`Distiller`.

    Args:
        temperature: base temperature :math:`\tau > 0`.
        kd_weight: weight of the KD term.
        standardize: apply the Z-score pre-process.
        ddof: deviation convention of :func:`zscore`.
        eps: constant added to the deviation.

    Example:
        >>> import numpy as np
        >>> from logit_standardization.keras import StandardizedLogitsDistillation
        >>> t = np.array([[2.0, 0.0, -2.0]], dtype="float32")
        >>> round(float(StandardizedLogitsDistillation().compute_loss(t, 3 * t)), 6)
        0.0
    """

    def __init__(self, temperature: float = 2.0, *, kd_weight: float = 1.0, standardize: bool = True,
                 ddof: int = 1, eps: float = 1e-7):
        fn = "StandardizedLogitsDistillation"
        self.temperature = _checks.check_positive(fn, "temperature", temperature)
        self.kd_weight = _checks.check_real(fn, "kd_weight", kd_weight)
        self.standardize = _checks.check_bool(fn, "standardize", standardize)
        self.ddof = _ddof_argument(fn, ddof)
        self.eps = _checks.check_positive(fn, "eps", eps, allow_zero=True)

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        def one(t, s):
            return kd_loss(s, ops.stop_gradient(_tensor(t)), temperature=self.temperature,
                           standardize=self.standardize, ddof=self.ddof, eps=self.eps)

        losses = keras.tree.flatten(keras.tree.map_structure(one, teacher_outputs, student_outputs))
        total = losses[0] if len(losses) == 1 else ops.sum(ops.stack(losses))
        return self.kd_weight * total

    def get_config(self):
        return {"temperature": self.temperature, "kd_weight": self.kd_weight, "standardize": self.standardize,
                "ddof": self.ddof, "eps": self.eps}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
