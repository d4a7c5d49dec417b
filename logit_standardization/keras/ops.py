"""Functional forms of the Keras 3 face, written with :mod:`keras.ops` only.

The functions of the NumPy core (:mod:`logit_standardization`) with the same names,
arguments and defaults, tested against it; the math is documented there. One
implementation serves every Keras backend (tested on TensorFlow and PyTorch).

Numerics: statistics, softmaxes and losses are computed in float32 for float16 and
bfloat16 inputs (mixed precision), in the input's dtype for float32 and float64. The
Z-score scales every row by a power of two first (as the core does), so logits up to the
dtype's largest value give the right Z-score and finite losses and gradients; the gradient
that reaches a half-precision input saturates at that dtype's largest value instead of
overflowing (it is about ``|g| / eps`` at an exactly constant row).

Checks: the core's, with the same messages. Value checks (NaN/Inf, label range) run at
once in eager execution; in a TensorFlow graph (``tf.function``, ``model.fit``) they run as
``tf.debugging.Assert`` ops that stop the step with the library's message (an
``InvalidArgumentError``). XLA (``jit_compile=True``) drops assertions, and ``jax.jit``
or ``torch.compile`` traces have no values to check: there only the static checks (dtype,
rank, class count, hyperparameters) run.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import keras  # the Keras 3 package (absolute import; this module is logit_standardization.keras.ops)
import numpy as np
from keras import ops

from .. import _checks
from .._ctkd import ctkd_lambda
from .._dkd import dkd_warmup
from .._mlkd import DEFAULT_TEMPERATURES

__all__ = [
    "DEFAULT_TEMPERATURES",
    "confidence_masks",
    "ctkd_lambda",
    "ctkd_temperature",
    "dkd_loss",
    "dkd_warmup",
    "kd_loss",
    "mlkd_loss",
    "mlkd_terms",
    "standardized",
    "zscore",
]


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


def _tf_graph(x: Any) -> bool:
    """Whether ``x`` belongs to a TensorFlow graph being built (``tf.function``, ``fit``, ``tf.data``)."""
    if keras.backend.backend() != "tensorflow" or keras.backend.is_keras_tensor(x):
        return False
    import tensorflow as tf

    return not tf.executing_eagerly()


def _assert(x: Any, condition: Any, message: str) -> Any:
    """``x`` with a TensorFlow run-time check attached: the step fails with ``message`` (an
    ``InvalidArgumentError``) when the scalar ``condition`` is false. ``check_numerics`` carries the
    message as an attribute, so it arrives verbatim (an ``Assert`` would escape its quotes)."""
    import tensorflow as tf

    flag = tf.where(condition, tf.constant(0.0), tf.constant(float("nan")))
    check = tf.debugging.check_numerics(flag, message)
    with tf.control_dependencies([check]):
        return tf.identity(x)


def _message(fn: str, name: str, expected: str, got: str = "") -> str:
    """The library's message text (what ``_checks.fail`` raises)."""
    return f"{fn}: argument '{name}' must be {expected}; got{' ' + got if got else ''}"


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


# largest finite values: the gradient reaching a half-precision input saturates there
_HALF_MAX = {"float16": 65504.0, "bfloat16": 3.3895313892515355e38}


def _widen(x: Any, dtype: str) -> Any:
    """``x`` cast to ``dtype``; for a half-precision ``x`` the backward pass clips the gradient to the
    half type's range before narrowing it (instead of overflowing to +-Inf)."""
    half = _dtype(x)
    if half not in _HALF_MAX or keras.backend.is_keras_tensor(x):
        return ops.cast(x, dtype)
    limit = _HALF_MAX[half]

    @ops.custom_gradient
    def widen(v):
        def grad(*args, upstream=None):
            g = args[0] if upstream is None else upstream
            return ops.cast(ops.clip(g, -limit, limit), half)

        return ops.cast(v, dtype), grad

    return widen(x)


def _as_logits(fn: str, name: str, x: Any, *, ndim: int | str | None = 2, like: Any = None) -> Any:
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
    elif _tf_graph(x):
        x = _assert(x, ops.all(ops.isfinite(x)), _message(fn, name, "finite (no NaN or Inf)", "non-finite values"))
    return _widen(x, _wide(dtype))


def _same_shape(fn: str, name: str, x: Any, ref_name: str, ref: Any) -> None:
    a, b = _shape(x), _shape(ref)
    _checks.check_same_shape(fn, name, _fill(a, b), ref_name, _fill(b, a))


def _as_labels(fn: str, name: str, labels: Any, batch: Any, num_classes: int) -> Any:
    """Validate integer class labels ``(B,)`` (or of the leading shape ``batch``, a tuple whose
    unknown dimensions are ``None``) in ``[0, C)``; return them as int32."""
    y = _tensor(labels)
    kind = _kind(_dtype(y)) if _is_tensor(y) else y.dtype.kind
    shape = _shape(y)
    lead = (batch,) if batch is None or isinstance(batch, int) else tuple(batch)
    lo = hi = None
    if _concrete(y) and len(shape) == len(lead) and all(shape) and kind in "iu":
        v = _value(y)
        lo, hi = int(v.min()), int(v.max())
    lead = _fill(lead, shape)
    _checks.check_labels(fn, name, _fill(shape, lead), kind, lead, num_classes, lo, hi)
    if _tf_graph(y):
        c = int(num_classes)
        y = _assert(y, ops.logical_and(ops.min(y) >= 0, ops.max(y) < c),
                    _message(fn, name, f"class indices in [0, {c})", f"a label outside [0, {c})"))
    return ops.cast(y, "int32")


def _as_mask(fn: str, mask: Any, lead: tuple) -> Any:
    """The core's ``as_mask``: ``None``, or a boolean tensor of the logits' leading shape."""
    if mask is None:
        return None
    m = _tensor(mask)
    kind = _kind(_dtype(m)) if _is_tensor(m) else m.dtype.kind
    shape = _shape(m)
    lead = _fill(lead, shape)
    _checks.check_mask(fn, "mask", _fill(shape, lead), kind, lead)
    return m


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


# exponents k for which 2**k and 2**-k are finite normal numbers, and the bits needed to write them
_EXPONENT_RANGE = {"float32": (126, 7), "float64": (1022, 10)}


def _pow2(n: Any, dtype: str) -> Any:
    """``2**n`` for an int32 tensor ``n`` in the dtype's normal range, exactly: a product of
    constant powers of two, one per bit of ``|n|`` (every partial product is a normal number)."""
    a, negative = ops.abs(n), n < 0
    out = ops.ones_like(n, dtype=dtype)
    for i in range(_EXPONENT_RANGE[dtype][1]):
        bit = ops.equal(ops.mod(ops.floor_divide(a, 2**i), 2), 1)
        factor = ops.where(negative, ops.full_like(n, 2.0 ** -(2**i), dtype=dtype),
                           ops.full_like(n, 2.0 ** (2**i), dtype=dtype))
        out = out * ops.where(bit, factor, ops.ones_like(out))
    return out


def _rescale(x: Any, eps: float, *, axis: int = -1) -> tuple[Any, Any]:
    """``(x * 2**-k, eps * 2**-k)`` per row, ``k = floor(log2(max|x|))`` clamped to the normal range
    (the core's :func:`logit_standardization._zscore.rescale`; any power of two near the magnitude
    does: power-of-two scaling is exact, so ordinary rows keep their bits and huge rows do not overflow)."""
    dtype = _dtype(x)
    top, _ = _EXPONENT_RANGE[dtype]
    m = ops.stop_gradient(ops.max(ops.abs(x), axis=axis, keepdims=True))
    m = ops.where(m > 0, m, ops.ones_like(m))
    k = ops.clip(ops.cast(ops.floor(ops.log2(m)), "int32"), -top, top)
    scale = ops.stop_gradient(_pow2(-k, dtype))
    return x * scale, eps * scale


def _standardize_scaled(x: Any, eps: Any, *, ddof: int, temperature: Any, axis: int = -1) -> Any:
    """The Z-score of rescaled rows (the core's ``standardize_scaled``); gradient-safe at constant rows."""
    c = x.shape[axis]
    centred = x - _mean(x, axis=axis, keepdims=True)
    var = ops.sum(centred * centred, axis=axis, keepdims=True) / (c - ddof)
    pos = var > 0
    std = ops.where(pos, ops.sqrt(ops.where(pos, var, ops.ones_like(var))), ops.zeros_like(var))
    denom = (eps + std) * temperature
    ok = denom > 0
    return ops.where(ok, centred / ops.where(ok, denom, ops.ones_like(denom)), ops.zeros_like(centred))


def _zscore(x: Any, *, temperature: Any, ddof: int, eps: float, axis: int = -1) -> Any:
    """Z-score of a checked tensor in its compute dtype, without overflow for any finite input."""
    scaled, eps_scaled = _rescale(x, eps, axis=axis)
    return _standardize_scaled(scaled, eps_scaled, ddof=ddof, temperature=temperature, axis=axis)


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
    """Per-sample cross-entropy of logits on integer labels."""
    onehot = ops.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return -ops.sum(onehot * ops.log_softmax(logits, axis=-1), axis=-1)


def _reduce(rows: Any, reduction: str, mask: Any = None) -> Any:
    """The core's ``reduce_rows``: over the positions where ``mask`` is True (all without one),
    masked-out positions 0, ``"mean"`` of no position 0."""
    if mask is not None:
        rows = ops.where(mask, rows, ops.zeros_like(rows))
    if reduction == "none":
        return rows
    if reduction == "sum":
        return ops.sum(rows)
    if mask is None:
        return _mean(rows)
    count = ops.sum(ops.cast(mask, rows.dtype))
    return ops.sum(rows) / ops.maximum(count, ops.ones_like(count))


def _grad_reverse(x: Any, lam: Any) -> Any:
    """Identity forward; the backward multiplies the incoming gradient by ``lam``."""
    frozen = ops.stop_gradient(x)
    return frozen + lam * (x - frozen)


# The functional forms on checked tensors: the public functions below and the loss classes
# (logit_standardization.keras.losses) both call these, so each formula is written once.
def _kd(s: Any, t: Any, *, temperature: Any, standardize: bool, ddof: int, eps: float) -> Any:
    """Per-sample KD (+LS) of checked logits; ``temperature`` a float or a scalar tensor."""
    zs, zt = _prepare(s, t, standardize=standardize, ddof=ddof, eps=eps)
    return _kd_rows(zs, zt, temperature)


def _dkd(s: Any, t: Any, labels: Any, *, alpha: Any, beta: Any, temperature: Any, standardize: bool, ddof: int,
         eps: float) -> Any:
    """Per-sample DKD (+LS) of checked logits and labels."""
    zs, zt = _prepare(s, t, standardize=standardize, ddof=ddof, eps=eps)
    return _dkd_rows(zs, zt, labels, alpha=alpha, beta=beta, tau=temperature)


def _ctkd_temperature(raw: Any, *, t_start: float, t_end: float) -> Any:
    return t_start + t_end * ops.sigmoid(raw)


def _pair(fn: str, student_logits: Any, teacher_logits: Any, *, standardize: Any, ddof: Any, eps: Any,
          ndim: int | str = 2):
    """Core ``prepare_pair`` checks in the same order; returns ``(s, t, {standardize, ddof, eps})`` unstandardized."""
    s = _as_logits(fn, "student_logits", student_logits, ndim=ndim)
    t = _as_logits(fn, "teacher_logits", teacher_logits, ndim=ndim, like=_shape(s))
    _same_shape(fn, "teacher_logits", t, "student_logits", s)
    h = _checks.check_hyper(fn, standardize=standardize, eps=eps)
    h["ddof"] = _checks.check_ddof(fn, ddof, s.shape[-1])
    dtype = "float64" if "float64" in (_dtype(s), _dtype(t)) else _dtype(s)
    return ops.cast(s, dtype), ops.cast(t, dtype), h


# ----------------------------------------------------------------------------- functions
def zscore(logits: Any, *, temperature: float = 1.0, ddof: int = 1, eps: float = 1e-7, axis: int = -1) -> Any:
    r"""Standardize logits along ``axis`` and divide by a base temperature (Keras).

    .. math::

        \mathcal{Z}(x; \tau) = \frac{x - \bar{x}}{(\varepsilon + s(x))\,\tau}

    See :func:`logit_standardization.zscore` for the math and the conventions
    (``ddof=1, eps=1e-7``: published code; ``ddof=0, eps=0``: the paper). Each row is first
    scaled by a power of two (with ``eps`` alike), as in the core, so logits up to the dtype's
    largest value standardize correctly. Constant rows map to zeros with a finite gradient.
    Works on symbolic tensors too, so it can be used inside a functional model.

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
        >>> np.round(ops.convert_to_numpy(zscore(np.array([[1.0, 2.0, 3.0]], "float32") * 1e38)), 6)
        array([[-1.,  0.,  1.]], dtype=float32)
    """
    fn = "zscore"
    x = _as_logits(fn, "logits", logits, ndim=None)
    in_dtype = _dtype(_tensor(logits))
    ax = _checks.check_axis_classes(fn, "logits", _fill(_shape(x)), axis)
    h = _checks.check_hyper(fn, temperature=temperature, eps=eps)
    ddof = _checks.check_ddof(fn, ddof, x.shape[ax])
    z = _zscore(x, temperature=h["temperature"], ddof=ddof, eps=h["eps"], axis=ax)
    return ops.cast(z, in_dtype) if _kind(in_dtype) == "f" else z


def standardized(loss_fn: Callable[..., Any], *, ddof: int = 1, eps: float = 1e-7) -> Callable[..., Any]:
    r"""Put logit standardization in front of any logit-based loss (Keras).

    Returns a function with the signature of ``loss_fn`` whose first two positional
    arguments (student and teacher logits, ``(B, C)``) are replaced by their :func:`zscore`
    (each with its own statistics) before ``loss_fn`` sees them; see
    :func:`logit_standardization.standardized`. ``ddof`` and ``eps`` are checked by
    :func:`zscore` when the wrapped function is called.

    Args:
        loss_fn: ``loss_fn(student_logits, teacher_logits, *args, **kwargs)`` on tensors.
        ddof: see :func:`zscore`.
        eps: see :func:`zscore`.

    Example:
        >>> import numpy as np
        >>> from keras import ops
        >>> from logit_standardization.keras import standardized
        >>> def l2(s, t):
        ...     return ops.mean((s - t) ** 2)
        >>> s = np.array([[0.0, 1.0, 2.0]]); t = 10 * s + 3
        >>> float(l2(s, t)) > 0, round(float(standardized(l2)(s, t)), 12)
        (True, 0.0)
    """

    def wrapped(student_logits: Any, teacher_logits: Any, *args: Any, **kwargs: Any) -> Any:
        s = zscore(student_logits, ddof=ddof, eps=eps)
        t = zscore(teacher_logits, ddof=ddof, eps=eps)
        return loss_fn(s, t, *args, **kwargs)

    wrapped.__name__ = f"standardized_{getattr(loss_fn, '__name__', 'loss')}"
    wrapped.__doc__ = f"{wrapped.__name__}: logit standardization followed by {getattr(loss_fn, '__name__', 'loss')}."
    wrapped.__wrapped__ = loss_fn  # type: ignore[attr-defined]
    return wrapped


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
) -> Any:
    r"""KD loss with logit standardization by default (Keras).

    .. math::

        \mathcal{L}_{KD} = \tau^2\,\frac{1}{|M|}\sum_{i \in M} \mathrm{KL}\big(
            \mathrm{softmax}(\tilde t_i/\tau)\,\|\,\mathrm{softmax}(\tilde s_i/\tau)\big)

    over the positions :math:`M` where ``mask`` is True (every row, or every token of
    ``(B, T, C)`` logits, without a mask; 0 when no position counts). See
    :func:`logit_standardization.kd_loss`. Gradients flow into both inputs;
    wrap the teacher logits in ``keras.ops.stop_gradient`` when the teacher is live.

    Args:
        student_logits: ``(..., C)`` floating-point tensor with at least 2 dimensions
            (``(B, C)``, or token-level ``(B, T, C)``).
        teacher_logits: floating-point tensor of the same shape.
        temperature: base temperature :math:`\tau > 0`.
        standardize: apply the Z-score pre-process to both inputs.
        ddof: deviation convention of :func:`zscore`.
        eps: constant added to the deviation.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (the per-position losses of the
            leading shape, 0 where masked out).
        mask: ``None`` or a boolean tensor of the leading shape (``(B, T)``: False at padding
            and prompt tokens).

    Returns:
        A scalar tensor, or the leading shape for ``reduction="none"``.

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
    h = _checks.check_hyper(fn, temperature=temperature, reduction=reduction)
    s, t, p = _pair(fn, student_logits, teacher_logits, standardize=standardize, ddof=ddof, eps=eps,
                    ndim=_checks.TOKENS)
    m = _as_mask(fn, mask, _shape(s)[:-1])
    rows = _kd(s, t, temperature=h["temperature"], standardize=p["standardize"], ddof=p["ddof"], eps=p["eps"])
    return _reduce(rows, h["reduction"], m)


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
) -> Any:
    r"""Decoupled KD (:math:`\alpha\,\mathrm{TCKD} + \beta\,\mathrm{NCKD}`) with logit standardization (Keras).

    See :func:`logit_standardization.dkd_loss` for the math: the target class is
    excluded exactly and "others" is a log-domain sum, so confident raw logits stay
    finite. The warm-up factor is :func:`dkd_warmup`, applied by the caller (or by
    :class:`~logit_standardization.keras.DKDLoss`).

    Args:
        student_logits: ``(..., C)`` floating-point tensor (``(B, C)`` or ``(B, T, C)``).
        teacher_logits: floating-point tensor of the same shape.
        labels: integer class indices in ``[0, C)`` of the leading shape (``(B,)``, ``(B, T)``).
        alpha: weight of TCKD.
        beta: weight of NCKD.
        temperature: base temperature :math:`\tau > 0`.
        standardize: apply the Z-score pre-process to both logit sets.
        ddof: deviation convention of :func:`zscore`.
        eps: constant added to the deviation.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        mask: ``None`` or a boolean tensor of the leading shape; see :func:`kd_loss`.

    Returns:
        A scalar tensor, or the leading shape for ``reduction="none"``.

    Example:
        >>> import numpy as np
        >>> from logit_standardization.keras import dkd_loss
        >>> s = np.array([[3.0, 1.0, 0.0]]); t = np.array([[5.0, 0.0, 1.0]])
        >>> round(float(dkd_loss(s, t, np.array([0]))), 6)
        1.063133
    """
    fn = "dkd_loss"
    h = _checks.check_hyper(fn, alpha=alpha, beta=beta, temperature=temperature, reduction=reduction)
    s, t, p = _pair(fn, student_logits, teacher_logits, standardize=standardize, ddof=ddof, eps=eps,
                    ndim=_checks.TOKENS)
    y = _as_labels(fn, "labels", labels, _shape(s)[:-1], s.shape[-1])
    m = _as_mask(fn, mask, _shape(s)[:-1])
    rows = _dkd(s, t, y, alpha=h["alpha"], beta=h["beta"], temperature=h["temperature"], **p)
    return _reduce(rows, h["reduction"], m)


def _confidence_masks(tw: Any) -> tuple[Any, Any]:
    p = ops.softmax(tw, axis=-1)
    conf = ops.max(p, axis=-1)
    cconf = ops.sum(p, axis=0)
    mask = ops.cast(conf <= _median(conf), tw.dtype)
    cmask = ops.cast(cconf <= _median(cconf), tw.dtype)
    return ops.stop_gradient(mask), ops.stop_gradient(cmask)


def confidence_masks(teacher_weak: Any) -> tuple[Any, Any]:
    """MLKD's confidence masks from the weak-view teacher logits (Keras).

    See :func:`logit_standardization.confidence_masks`: ``(sample_mask (B,), class_mask (C,))``
    as float tensors (1 where a sample's top probability, or a class's summed probability, is at
    or below the median), without gradient.

    Args:
        teacher_weak: ``(B, C)`` teacher logits of the weak view (temperature 1, never standardized).

    Example:
        >>> import numpy as np
        >>> from keras import ops
        >>> from logit_standardization.keras import confidence_masks
        >>> m, cm = confidence_masks(np.array([[4.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 9.0, 0.0]]))
        >>> ops.convert_to_numpy(m).tolist(), ops.convert_to_numpy(cm).tolist()
        ([1.0, 1.0, 0.0], [1.0, 0.0, 1.0])
    """
    return _confidence_masks(_as_logits("confidence_masks", "teacher_weak", teacher_weak))


def _gram_diff_sq(s: Any, t: Any, tau: float, *, classes: bool) -> Any:
    ps, pt = ops.softmax(s / tau, axis=-1), ops.softmax(t / tau, axis=-1)
    if classes:
        gs, gt = ops.einsum("bi,bj->ij", ps, ps), ops.einsum("bi,bj->ij", pt, pt)
    else:
        gs, gt = ops.einsum("ik,jk->ij", ps, ps), ops.einsum("ik,jk->ij", pt, pt)
    return ops.square(gt - gs)


def _mlkd_terms(fn, sw, ss, tw, ts, *, temperatures, kd_weight, standardize, variant, ddof, eps) -> dict[str, Any]:
    h = _checks.check_hyper(fn, variant=variant, temperatures=temperatures, kd_weight=kd_weight)
    variant, temps, w = h["variant"], h["temperatures"], h["kd_weight"]
    sw, tw, _ = _pair(fn, sw, tw, standardize=False, ddof=ddof, eps=eps)
    ss = _as_logits(fn, "student_strong", ss, like=_shape(sw))
    ts = _as_logits(fn, "teacher_strong", ts, like=_shape(sw))
    _same_shape(fn, "student_strong", ss, "student_weak", sw)
    _same_shape(fn, "teacher_strong", ts, "student_weak", sw)
    p = _checks.check_hyper(fn, standardize=standardize, eps=eps)
    ddof = _checks.check_ddof(fn, ddof, sw.shape[-1])
    dtype = "float64" if "float64" in {_dtype(v) for v in (sw, ss, tw, ts)} else "float32"
    sw, ss, tw, ts = (ops.cast(v, dtype) for v in (sw, ss, tw, ts))
    zw = _prepare(sw, tw, standardize=p["standardize"], ddof=ddof, eps=p["eps"])
    zs = _prepare(ss, ts, standardize=p["standardize"], ddof=ddof, eps=p["eps"])
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
        t_start: lower end of the temperature range (>= 0).
        t_end: width of the temperature range (> 0).

    Returns:
        A tensor of ``raw``'s shape (float32 for integer or half-precision input).

    Example:
        >>> from logit_standardization.keras import ctkd_temperature
        >>> round(float(ctkd_temperature(1.0)), 4)
        15.6212
    """
    fn = "ctkd_temperature"
    h = _checks.check_hyper(fn, t_start=t_start, t_end=t_end)
    g = _tensor(raw)
    kind = _kind(_dtype(g)) if _is_tensor(g) else g.dtype.kind
    _checks.check_real_kind(fn, "raw", kind)
    g = ops.cast(g, _wide(_dtype(g)))
    if _concrete(g):
        _checks.check_finite(fn, "raw", bool(_value(ops.all(ops.isfinite(g)))))
    return _ctkd_temperature(g, t_start=h["t_start"], t_end=h["t_end"])
