"""Keras functions: what the conformance suite (tests/backends/test_conformance.py) does not cover.

Values, gradients against finite differences, signatures and error messages of every function
against the NumPy core are the conformance suite's. Here: the package's structure, properties
(hypothesis), analytic gradients at constant rows, confident raw logits, logits at the dtype's
maximum, bit identity after the power-of-two rescaling, half-precision dtypes and saturated
gradients, symbolic and compiled use. Runs on the Keras backend of the process (TensorFlow by
default); test_keras_backends.py runs this file again under the other backend.
"""

from __future__ import annotations

import importlib.util

# TensorFlow and Triton (imported by torch.compile and torchvision) load conflicting native
# symbols: importing Triton after TensorFlow segfaults, so import it first when it is installed.
if importlib.util.find_spec("triton") is not None:
    import triton  # noqa: F401

import warnings

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from keras import ops

import logit_standardization as core
import logit_standardization.keras as K
from lskd_testing import logit_batches

BACKEND = keras.backend.backend()


def to_np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


def grad_of(f, x: np.ndarray) -> np.ndarray:
    """Gradient of the scalar ``f(tensor)`` at the float64 point ``x``, by the backend's autodiff."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        v = tf.Variable(x)
        with tf.GradientTape() as tape:
            out = f(v)
        return tape.gradient(out, v).numpy()
    if BACKEND == "torch":
        import torch

        v = torch.tensor(x, requires_grad=True)
        f(v).backward()
        return v.grad.numpy()
    import jax

    return np.asarray(jax.grad(lambda v: f(v))(x))


def rand(shape, seed, scale=3.0, offset=0.0):
    return np.random.default_rng(seed).normal(size=shape) * scale + offset


# ----------------------------------------------------------------------------- API
def test_module_is_keras_backend_not_shadowing_keras():
    # the package logit_standardization.keras (and its modules) must import the real Keras package
    assert K.keras is keras and K.keras.__name__ == "keras"
    assert K.__name__ == "logit_standardization.keras"
    assert issubclass(K.KDLoss, keras.losses.Loss)
    from logit_standardization.keras import losses, models
    from logit_standardization.keras import ops as kops

    for module in (kops, losses, models):
        assert module.keras is keras and module.ops is ops


def test_namespace_is_the_union_of_the_modules_public_names():
    # a public name is declared in exactly one module; the package re-exports it from there
    from logit_standardization.keras import losses, models
    from logit_standardization.keras import ops as kops

    names = [*kops.__all__, *losses.__all__, *models.__all__]
    assert len(names) == len(set(names))
    assert K.__all__ == names
    for module in (kops, losses, models):
        for name in module.__all__:
            assert getattr(K, name) is getattr(module, name), name
    assert {"Distiller", "EpochSchedule", "StandardizedLogitsDistillation", "pack_targets"} <= set(K.__all__)


def test_standardized_wraps_the_loss_function():
    def l2(s, t):
        return ops.sum((s - t) ** 2)

    wrapped = K.standardized(l2, ddof=0, eps=1e-3)
    assert wrapped.__name__ == "standardized_l2" and wrapped.__wrapped__ is l2


def test_confident_raw_logits_stay_finite_where_the_reference_overflows():
    # T = 1, unstandardized, gaps of 2000: the published "-1000" DKD gives NaN here.
    s = np.array([[2000.0, 0.0, -10.0], [0.0, -2000.0, 5.0], [2500.0, 1.0, 0.0]])
    t = np.array([[0.0, 2000.0, 1.0], [3000.0, 0.0, 0.0], [3000.0, 0.0, 2.0]])
    y = np.array([0, 1, 0])  # last row: the target dominates both sides
    ours = float(K.dkd_loss(s, t, y, temperature=1.0, standardize=False))
    assert np.isfinite(ours)
    np.testing.assert_allclose(ours, core.dkd_loss(s, t, y, temperature=1.0, standardize=False), rtol=1e-9)
    g = grad_of(lambda v: K.dkd_loss(v, t, y, temperature=1.0, standardize=False), s)
    assert np.all(np.isfinite(g))


@given(logit_batches(), st.sampled_from([0, 1]), st.floats(0.5, 6.0))
def test_property_values_match_core_float64(x, ddof, tau):
    t = x[::-1].copy() * 0.5 + 1.0
    y = np.arange(x.shape[0]) % x.shape[1]
    # Summation order differs from NumPy's: rounding of the mean is amplified by the
    # conditioning max|x| / std(x) of the rows (up to ~1e8 for offsets 1e4, spreads 1e-4).
    cond = max(np.max(np.abs(v) / np.std(v, axis=1, keepdims=True)) for v in (x, t))
    atol = 1e-12 + 4e-16 * cond
    np.testing.assert_allclose(to_np(K.zscore(x, ddof=ddof, temperature=tau)), core.zscore(x, ddof=ddof, temperature=tau),
                               rtol=1e-9, atol=atol)
    np.testing.assert_allclose(float(K.kd_loss(x, t, temperature=tau, ddof=ddof)),
                               core.kd_loss(x, t, temperature=tau, ddof=ddof), rtol=1e-9, atol=10 * atol)
    np.testing.assert_allclose(float(K.dkd_loss(x, t, y, temperature=tau, ddof=ddof)),
                               core.dkd_loss(x, t, y, temperature=tau, ddof=ddof), rtol=1e-9, atol=100 * atol)


@given(logit_batches(min_classes=3), st.floats(-2.0, 2.0), st.floats(0.01, 100.0), st.floats(-50.0, 50.0))
def test_property_standardized_kd_invariant_to_affine_maps_of_either_input(x, g, a, b):
    # exact invariance needs eps = 0 (eps shifts Z by a relative eps / std)
    t = np.roll(x, 1, axis=1)
    base = float(K.kd_loss(x, t, eps=0.0, temperature=1.0 + g * g))
    assert np.isfinite(base) and base >= -1e-12
    cond = np.max(np.abs(a * x + b) / np.std(x * a, axis=1, keepdims=True))
    for s_, t_ in ((a * x + b, t), (x, a * t + b)):
        np.testing.assert_allclose(float(K.kd_loss(s_, t_, eps=0.0, temperature=1.0 + g * g)), base,
                                   rtol=1e-7, atol=1e-12 + 1e-14 * cond)


# ----------------------------------------------------------------------------- gradients
def test_gradient_at_constant_rows_is_finite_and_analytic():
    # d Z / d x at a constant row (s = 0): (I - 11^T / C) / eps (official-code notes §1)
    c, eps = 5, 1e-7
    x = np.full((2, c), 3.0)
    w = rand((2, c), 7)
    g = grad_of(lambda v: ops.sum(K.zscore(v, eps=eps) * ops.convert_to_tensor(w)), x)
    expected = (w - w.mean(axis=1, keepdims=True)) / eps
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, expected, rtol=1e-6)
    g = grad_of(lambda v: K.kd_loss(v, rand((2, c), 3)), x)
    assert np.all(np.isfinite(g))


# ----------------------------------------------------------------------------- mixed precision
@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_half_precision_inputs_return_the_documented_dtypes(half):
    # zscore keeps the input's dtype; the losses and the temperature are float32 (statistics in
    # float32). Their values for half inputs are the conformance suite's float16/bfloat16 cases.
    rng = np.random.default_rng(3)
    # entries near float16's limit: a float16 sum of squares would overflow to inf
    s_h, t_h = (ops.cast(ops.convert_to_tensor(np.clip(rng.normal(size=(4, 9)) * 3e4, -6e4, 6e4).astype(np.float32)),
                         half) for _ in range(2))
    y = np.array([0, 8, 4, 2])
    z = K.zscore(s_h)
    assert keras.backend.standardize_dtype(z.dtype) == half and np.all(np.isfinite(to_np(z)))
    for ours in (K.kd_loss(s_h, t_h, reduction="none"), K.dkd_loss(s_h, t_h, y), K.mlkd_loss(s_h, s_h, t_h, t_h),
                 K.ctkd_temperature(ops.cast(ops.convert_to_tensor(np.float32(1.0)), half))):
        assert keras.backend.standardize_dtype(ours.dtype) == "float32" and np.all(np.isfinite(to_np(ours)))


# ----------------------------------------------------------------------------- overflow: logits near the dtype maximum
DTYPE_MAX = {"float16": 65504.0, "bfloat16": 3.3895313892515355e38, "float32": float(np.finfo(np.float32).max),
             "float64": float(np.finfo(np.float64).max)}
# Z-score / loss tolerances per dtype (half: statistics in float32 on half-rounded inputs)
OVERFLOW_TOL = {"float16": (2e-3, 2e-3), "bfloat16": (1.6e-2, 1.6e-2), "float32": (1e-5, 1e-5), "float64": (1e-9, 1e-12)}


def _near_max(dtype):
    big = DTYPE_MAX[dtype]
    rng = np.random.default_rng(11)
    rows = np.clip(rng.uniform(-1.0, 1.0, size=(4, 7)), -1.0, 1.0)
    rows[0, 0], rows[1, 3] = 1.0, -1.0  # the largest finite value, both signs
    rows[3] = 0.5  # a constant row near the top
    x = rows * big
    if dtype == "float64":
        return ops.convert_to_tensor(x)
    return ops.cast(ops.convert_to_tensor(np.clip(x, -big, big).astype(np.float32)), dtype)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the core's own softmax of MLKD's Gram terms
@pytest.mark.parametrize("dtype", list(DTYPE_MAX))
def test_logits_near_the_dtype_maximum_give_the_right_zscore_and_finite_losses_and_gradients(dtype):
    s = _near_max(dtype)
    s_ref = to_np(s)  # the exact values, in float64
    assert np.max(np.abs(s_ref)) == DTYPE_MAX[dtype]
    t_ref = np.roll(s_ref, 2, axis=1) * 0.75
    t = ops.cast(ops.convert_to_tensor(t_ref), dtype)
    t_ref = to_np(t)
    y = np.array([0, 3, 6, 1])
    rtol, atol = OVERFLOW_TOL[dtype]
    z = K.zscore(s)
    assert keras.backend.standardize_dtype(z.dtype) == dtype
    np.testing.assert_allclose(to_np(z), core.zscore(s_ref), rtol=rtol, atol=atol)
    for name, ours, ref in [
        ("kd", K.kd_loss(s, t, reduction="none"), core.kd_loss(s_ref, t_ref, reduction="none")),
        ("dkd", K.dkd_loss(s, t, y, reduction="none"), core.dkd_loss(s_ref, t_ref, y, reduction="none")),
        ("mlkd", K.mlkd_terms(s, s, t, t)["kd"], core.mlkd_terms(s_ref, s_ref, t_ref, t_ref)["kd"]),
    ]:
        assert np.all(np.isfinite(to_np(ours))), name
        np.testing.assert_allclose(to_np(ours), ref, rtol=10 * rtol, atol=10 * atol, err_msg=name)
    for loss in (lambda v: K.kd_loss(v, t), lambda v: K.dkd_loss(v, t, y), lambda v: K.kd_loss(t, v)):
        g = grad_of(lambda v: loss(v), s_ref.astype(np.float32) if dtype != "float64" else s_ref)
        assert np.all(np.isfinite(g))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_power_of_two_rescaling_keeps_ordinary_values(dtype):
    # the scaling is exact: a row and the same row times 2**40 standardize to the same bits
    x = rand((5, 9), 3).astype(dtype)
    z1, z2 = to_np(K.zscore(x, eps=0.0)), to_np(K.zscore(x * np.asarray(2.0**40, dtype), eps=0.0))
    np.testing.assert_array_equal(z1, z2)
    tiny = np.array([[1e-30, 2e-30, -3e-30]], dtype=dtype)  # a sum of squares here would underflow
    np.testing.assert_allclose(to_np(K.zscore(tiny, eps=0.0)), core.zscore(tiny.astype(np.float64), eps=0.0),
                               rtol=1e-5 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_half_precision_gradient_of_kd_ls_at_a_constant_row_is_finite(half):
    # the true gradient there is (I - 11^T/C) g / eps (~1e7 |g|): beyond float16's range, so it saturates
    s = np.full((4, 6), 3.0, np.float32)
    s[1] = 0.0
    t = rand((4, 6), 5).astype(np.float32)
    t_h = ops.cast(ops.convert_to_tensor(t), half)

    def loss(v):
        return K.kd_loss(ops.cast(v, half), t_h)

    g = grad_of(loss, s)
    assert np.all(np.isfinite(g)) and np.any(g != 0)
    # the saturated direction is right: same signs as the float32 gradient
    g32 = grad_of(lambda v: K.kd_loss(v, ops.convert_to_tensor(to_np(t_h).astype(np.float32))), s)
    np.testing.assert_array_equal(np.sign(g[np.abs(g32) > 1.0]), np.sign(g32[np.abs(g32) > 1.0]))
    # through the loss class as Keras calls it (half y_pred, widened before Keras's cast)
    g_cls = grad_of(lambda v: K.KDLoss()(t_h, ops.cast(v, half)), s)
    assert np.all(np.isfinite(g_cls))


# ----------------------------------------------------------------------------- graph mode / symbolic
def test_zscore_in_a_functional_model_matches_core():
    inputs = keras.Input((6,))
    model = keras.Model(inputs, K.zscore(inputs, temperature=2.0))
    x = rand((5, 6), 1).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), core.zscore(x, temperature=2.0), rtol=1e-5, atol=1e-6)


def test_checks_need_no_concrete_values_inside_a_compiled_function():
    s = rand((3, 4), 0).astype(np.float32)
    y = np.array([0, 1, 3], np.int32)
    expected = core.dkd_loss(s, s * 2.0 + 1.0, y, standardize=False)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        spec = [tf.TensorSpec((None, 4), tf.float32), tf.TensorSpec((None,), tf.int32)]
        compiled = tf.function(lambda s, y: K.dkd_loss(s, s * 2.0 + 1.0, y, standardize=False), input_signature=spec)
        value = compiled(s, y)
        # the static checks still run while tracing
        with pytest.raises(ValueError, match="at least 2 classes"):
            tf.function(lambda s: K.zscore(s)).get_concrete_function(tf.TensorSpec((None, 1), tf.float32))
    elif BACKEND == "torch":
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # dynamo notes about Keras internals
            compiled = torch.compile(lambda s, y: K.dkd_loss(s, s * 2.0 + 1.0, y, standardize=False),
                                     backend="eager", fullgraph=True)  # fullgraph: no graph break, no host sync
            value = compiled(torch.from_numpy(s), torch.from_numpy(y))
    else:
        import jax

        value = jax.jit(lambda s, y: K.dkd_loss(s, s * 2.0 + 1.0, y, standardize=False))(s, y)
    np.testing.assert_allclose(float(to_np(value)), expected, rtol=1e-5, atol=1e-6)
