"""Keras backend functions against the NumPy core: values, gradients, mixed precision, errors.

Runs on the Keras backend of the process (TensorFlow by default); test_keras_backends.py
runs this file again under the other backend.
"""

from __future__ import annotations

import importlib.util

# TensorFlow and Triton (imported by torch.compile and torchvision) load conflicting native
# symbols: importing Triton after TensorFlow segfaults, so import it first when it is installed.
if importlib.util.find_spec("triton") is not None:
    import triton  # noqa: F401

import inspect
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
FUNCTIONS = ["zscore", "standardized", "kd_loss", "dkd_loss", "dkd_warmup", "mlkd_terms", "mlkd_loss",
             "confidence_masks", "ctkd_temperature", "ctkd_lambda"]

# float32 inputs against the float64 core on the same (float32-rounded) values: (rtol, atol)
F32_TOL = {
    "zscore": (1e-5, 1e-5),
    "kd_loss": (1e-4, 1e-5),
    "dkd_loss": (1e-4, 1e-5),
    "mlkd_terms": (1e-4, 1e-5),
    "ctkd_temperature": (1e-6, 1e-5),
}
# half-precision inputs (statistics in float32) against the core on the same half values
HALF_TOL = {"float16": (2e-3, 2e-3), "bfloat16": (1.6e-2, 1.6e-2)}


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


def fd_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar NumPy function ``f`` (the core)."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


def rand(shape, seed, scale=3.0, offset=0.0):
    return np.random.default_rng(seed).normal(size=shape) * scale + offset


# ----------------------------------------------------------------------------- API
@pytest.mark.parametrize("name", FUNCTIONS)
def test_signature_matches_core(name):
    ours, theirs = inspect.signature(getattr(K, name)), inspect.signature(getattr(core, name))

    def facts(sig):  # names, kinds and defaults (the annotations name each face's tensor types)
        return [(p.name, p.kind, p.default) for p in sig.parameters.values()]

    assert facts(ours) == facts(theirs)


def test_module_is_keras_backend_not_shadowing_keras():
    # the package logit_standardization.keras (and its modules) must import the real Keras package
    assert K.keras is keras and K.keras.__name__ == "keras"
    assert K.__name__ == "logit_standardization.keras"
    assert issubclass(K.KDLoss, keras.losses.Loss)
    from logit_standardization.keras import losses, models
    from logit_standardization.keras import ops as kops

    for module in (kops, losses, models):
        assert module.keras is keras and module.ops is ops


def test_all_covers_the_core_and_every_name_exists():
    assert set(core.__all__) <= set(K.__all__)
    assert {"KDLoss", "DKDLoss", "CTKDLoss", "Distiller", "EpochSchedule", "StandardizedLogitsDistillation",
            "pack_targets"} <= set(K.__all__)
    assert all(hasattr(K, name) for name in K.__all__)
    assert K.DEFAULT_TEMPERATURES == core.DEFAULT_TEMPERATURES


def test_dkd_warmup_confidence_masks_and_standardized_match_core():
    assert K.dkd_warmup is core.dkd_warmup  # pure Python: the core's own function
    tw = rand((7, 5), 4, 3.0)
    for ours, ref in zip(K.confidence_masks(tw), core.confidence_masks(tw)):
        np.testing.assert_array_equal(to_np(ours), ref)
    half = ops.cast(ops.convert_to_tensor(tw.astype(np.float32)), "float16")
    for ours, ref in zip(K.confidence_masks(half), core.confidence_masks(to_np(half))):
        np.testing.assert_array_equal(to_np(ours), ref)

    def l2(s, t):
        return ops.sum((s - t) ** 2)

    s, t = rand((4, 6), 1), rand((4, 6), 2, 5.0, 3.0)
    wrapped = K.standardized(l2, ddof=0, eps=1e-3)
    assert wrapped.__name__ == "standardized_l2" and wrapped.__wrapped__ is l2
    ref = core.standardized(lambda a, b: float(np.sum((a - b) ** 2)), ddof=0, eps=1e-3)(s, t)
    np.testing.assert_allclose(float(wrapped(s, t)), ref, rtol=1e-12)
    with pytest.raises(ValueError) as ours:
        K.standardized(l2, ddof=6)(s, t)
    with pytest.raises(ValueError) as theirs:
        core.standardized(l2, ddof=6)(s, t)
    assert str(ours.value) == str(theirs.value)


# ----------------------------------------------------------------------------- float64 values
CASES64 = [
    ("zscore", lambda m, a: m.zscore(a[0], temperature=1.7, ddof=1)),
    ("zscore", lambda m, a: m.zscore(a[0], ddof=0, eps=0.0, axis=0)),
    ("kd_loss", lambda m, a: m.kd_loss(a[0], a[1])),
    ("kd_loss", lambda m, a: m.kd_loss(a[0], a[1], temperature=4.0, standardize=False, reduction="none")),
    ("kd_loss", lambda m, a: m.kd_loss(a[0], a[1], ddof=0, eps=0.0, reduction="sum")),
    ("dkd_loss", lambda m, a: m.dkd_loss(a[0], a[1], a[4])),
    ("dkd_loss", lambda m, a: m.dkd_loss(a[0], a[1], a[4], alpha=9.0, beta=72.0, reduction="none")),
    ("dkd_loss", lambda m, a: m.dkd_loss(a[0], a[1], a[4], temperature=1.0, standardize=False, reduction="sum")),
    ("mlkd_terms", lambda m, a: m.mlkd_terms(*a[:4])),
    ("mlkd_terms", lambda m, a: m.mlkd_terms(*a[:4], variant="corrected", temperatures=(4.0, 1.0), kd_weight=0.9)),
    ("mlkd_terms", lambda m, a: m.mlkd_terms(*a[:4], standardize=False, ddof=0)),
    ("mlkd_loss", lambda m, a: m.mlkd_loss(*a[:4], variant="corrected")),
    ("ctkd_temperature", lambda m, a: m.ctkd_temperature(a[0], t_start=2.0, t_end=30.0)),
]


def _inputs(b, c, seed, dtype=np.float64):
    sw, ss = rand((b, c), seed, 2.0), rand((b, c), seed + 1, 0.5, 1.0)
    tw, ts = rand((b, c), seed + 2, 8.0, -3.0), rand((b, c), seed + 3, 5.0)
    labels = np.random.default_rng(seed).integers(0, c, size=b)
    return [v.astype(dtype) for v in (sw, ss, tw, ts)] + [labels]


def _as_np(out):
    if isinstance(out, dict):
        return {k: to_np(v) for k, v in out.items()}
    return to_np(out)


def _close(ours, ref, rtol, atol):
    if isinstance(ref, dict):
        assert set(ours) == set(ref)
        for k in ref:
            np.testing.assert_allclose(ours[k], ref[k], rtol=rtol, atol=atol, err_msg=k)
    else:
        np.testing.assert_allclose(ours, np.asarray(ref, dtype=np.float64), rtol=rtol, atol=atol)


@pytest.mark.parametrize("b,c", [(7, 10), (4, 2), (6, 100)])
@pytest.mark.parametrize("case", range(len(CASES64)))
def test_float64_matches_core(case, b, c):
    name, call = CASES64[case]
    args = _inputs(b, c, seed=10 * case + b)
    ours = call(K, args)
    if name != "mlkd_terms":
        assert keras.backend.standardize_dtype(ours.dtype) == "float64"
    _close(_as_np(ours), call(core, args), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", range(len(CASES64)))
def test_float32_matches_core_within_table(case):
    name, call = CASES64[case]
    args = _inputs(8, 12, seed=case, dtype=np.float32)
    ours = call(K, args)
    if name not in ("mlkd_terms",):
        assert keras.backend.standardize_dtype(ours.dtype) == "float32"
    rtol, atol = F32_TOL[name.replace("mlkd_loss", "mlkd_terms")]
    ref = call(core, [a.astype(np.float64) if a.dtype.kind == "f" else a for a in args])
    _close(_as_np(ours), ref, rtol, atol)


def test_constant_rows_and_two_classes_are_finite_and_match_core():
    s = np.array([[2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0], [1.0, 3.0, -2.0, 0.5]])
    t = np.array([[5.0, 5.0, 5.0, 5.0], [1.0, 2.0, 3.0, 4.0], [7.0, 7.0, 7.0, 7.0]])
    y = np.array([0, 3, 1])
    np.testing.assert_allclose(to_np(K.zscore(s)), core.zscore(s), atol=1e-12)
    assert np.all(to_np(K.zscore(s))[:2] == 0.0)
    np.testing.assert_allclose(to_np(K.kd_loss(s, t, reduction="none")), core.kd_loss(s, t, reduction="none"), atol=1e-12)
    np.testing.assert_allclose(float(K.dkd_loss(s, t, y)), core.dkd_loss(s, t, y), rtol=1e-9)
    two = np.array([[1e-3, 2e-3], [40.0, -7.0]])
    np.testing.assert_allclose(to_np(K.zscore(two)), core.zscore(two), rtol=1e-9)
    np.testing.assert_allclose(to_np(K.zscore(two, eps=0.0)), [[-0.5**0.5, 0.5**0.5], [0.5**0.5, -0.5**0.5]], rtol=1e-12)
    np.testing.assert_allclose(float(K.dkd_loss(two, two[::-1].copy(), np.array([1, 0]))),
                               core.dkd_loss(two, two[::-1].copy(), np.array([1, 0])), rtol=1e-9, atol=1e-15)


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
GRAD_CASES = [
    ("zscore", lambda m, x, o: m.zscore(x, temperature=2.0) * o["w"]),
    ("zscore-paper", lambda m, x, o: m.zscore(x, ddof=0, eps=0.0, axis=0) * o["w"]),
    ("kd_loss", lambda m, x, o: m.kd_loss(x, o["t"])),
    ("kd_loss-teacher-side", lambda m, x, o: m.kd_loss(o["t"], x, temperature=3.0)),
    ("kd_loss-raw", lambda m, x, o: m.kd_loss(x, o["t"], standardize=False, reduction="sum")),
    ("dkd_loss", lambda m, x, o: m.dkd_loss(x, o["t"], o["y"], alpha=9.0, beta=72.0)),
    ("dkd_loss-raw", lambda m, x, o: m.dkd_loss(x, o["t"], o["y"], standardize=False, temperature=1.0)),
    ("mlkd_loss", lambda m, x, o: m.mlkd_loss(x, x * 0.5 + 0.1, o["t"], o["t"] * 0.8)),
    ("mlkd_loss-corrected", lambda m, x, o: m.mlkd_loss(x, x * 0.5 + 0.1, o["t"], o["t"] * 0.8, variant="corrected")),
    ("ctkd_temperature", lambda m, x, o: m.ctkd_temperature(x) * o["w"]),
]


@pytest.mark.parametrize("case", range(len(GRAD_CASES)), ids=[c[0] for c in GRAD_CASES])
def test_gradient_matches_finite_differences_of_core(case):
    _, call = GRAD_CASES[case]
    x = rand((5, 6), case, 2.0)
    o = {"t": rand((5, 6), 100 + case, 4.0, 1.0), "y": np.array([0, 5, 2, 2, 1]), "w": rand((5, 6), 200 + case)}

    o_keras = dict(o, w=ops.convert_to_tensor(o["w"]))  # tensor * ndarray is not a tensor op on every backend

    def total(m, v):
        if m is K:
            return ops.sum(call(m, v, o_keras))
        return float(np.sum(call(m, v, o)))

    ours = grad_of(lambda v: total(K, v), x)
    ref = fd_grad(lambda v: total(core, v), x)
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


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
def test_half_precision_inputs_use_float32_statistics(half):
    rng = np.random.default_rng(3)
    # entries near float16's limit: a float16 sum of squares would overflow to inf
    s = np.clip(np.concatenate([rng.normal(size=(3, 9)) * 2e4, np.full((1, 9), 6e4)], axis=0), -6e4, 6e4)
    t = np.clip(rng.normal(size=(4, 9)) * 3e4, -6e4, 6e4)
    y = np.array([0, 8, 4, 2])
    s_h = ops.cast(ops.convert_to_tensor(s.astype(np.float32)), half)
    t_h = ops.cast(ops.convert_to_tensor(t.astype(np.float32)), half)
    s_ref, t_ref = to_np(s_h), to_np(t_h)  # the exact half values, in float64
    rtol, atol = HALF_TOL[half]

    z = K.zscore(s_h)
    assert keras.backend.standardize_dtype(z.dtype) == half
    assert np.all(np.isfinite(to_np(z)))
    np.testing.assert_allclose(to_np(z), core.zscore(s_ref), rtol=rtol, atol=atol)
    for ours, ref in [
        (K.kd_loss(s_h, t_h, reduction="none"), core.kd_loss(s_ref, t_ref, reduction="none")),
        (K.dkd_loss(s_h, t_h, y), core.dkd_loss(s_ref, t_ref, y)),
        (K.mlkd_loss(s_h, s_h, t_h, t_h), core.mlkd_loss(s_ref, s_ref, t_ref, t_ref)),
        (K.ctkd_temperature(ops.cast(ops.convert_to_tensor(np.float32(1.0)), half)), core.ctkd_temperature(1.0)),
    ]:
        assert keras.backend.standardize_dtype(ours.dtype) == "float32"
        assert np.all(np.isfinite(to_np(ours)))
        np.testing.assert_allclose(to_np(ours), ref, rtol=10 * rtol, atol=10 * atol)


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


# ----------------------------------------------------------------------------- errors: the core's messages
def _bad(name, *args, **kwargs):
    return name, args, kwargs


GOOD = np.arange(12.0).reshape(3, 4) % 5
BAD_CALLS = [
    _bad("zscore", np.arange(4).reshape(2, 2)),
    _bad("zscore", np.array([[True, False]])),
    _bad("zscore", np.array([["a", "b"]])),
    _bad("zscore", np.ones((3, 1))),
    _bad("zscore", np.array(1.0)),
    _bad("zscore", np.array([[1.0, np.nan]])),
    _bad("zscore", np.array([[1.0, np.inf]])),
    _bad("zscore", GOOD, temperature=0.0),
    _bad("zscore", GOOD, temperature=float("inf")),
    _bad("zscore", GOOD, temperature="2"),
    _bad("zscore", GOOD, eps=-1.0),
    _bad("zscore", GOOD, ddof=4),
    _bad("zscore", GOOD, ddof=1.0),
    _bad("zscore", GOOD, axis=2),
    _bad("zscore", GOOD, axis=1.5),
    _bad("kd_loss", GOOD, GOOD[:, :3]),
    _bad("kd_loss", GOOD, GOOD[:2]),
    _bad("kd_loss", GOOD[0], GOOD[0]),
    _bad("kd_loss", GOOD, GOOD, reduction="batchmean"),
    _bad("kd_loss", GOOD, GOOD, temperature=-1.0),
    _bad("kd_loss", GOOD, GOOD, standardize=1),
    _bad("kd_loss", GOOD, GOOD.astype(int)),
    _bad("kd_loss", GOOD, GOOD, standardize=False, ddof=7),
    _bad("dkd_loss", GOOD, GOOD, np.array([0, 1, 4])),
    _bad("dkd_loss", GOOD, GOOD, np.array([0, -1, 2])),
    _bad("dkd_loss", GOOD, GOOD, np.array([0.0, 1.0, 2.0])),
    _bad("dkd_loss", GOOD, GOOD, np.array([0, 1])),
    _bad("dkd_loss", GOOD, GOOD, np.array([[0, 1, 2]])),
    _bad("dkd_loss", GOOD, GOOD, np.array([0, 1, 2]), alpha=float("nan")),
    _bad("dkd_loss", GOOD, GOOD, np.array([0, 1, 2]), beta="8"),
    _bad("mlkd_terms", GOOD, GOOD, GOOD, GOOD, variant="paper"),
    _bad("mlkd_terms", GOOD, GOOD, GOOD, GOOD, temperatures=()),
    _bad("mlkd_terms", GOOD, GOOD, GOOD, GOOD, temperatures=(2.0, -1.0)),
    _bad("mlkd_terms", GOOD, GOOD, GOOD, GOOD, temperatures=2.0),
    _bad("mlkd_terms", GOOD, GOOD[:2], GOOD, GOOD),
    _bad("mlkd_terms", GOOD, GOOD, GOOD, GOOD[:, :2]),
    _bad("mlkd_loss", GOOD, GOOD, GOOD[:2], GOOD),
    _bad("mlkd_loss", GOOD, GOOD, GOOD, GOOD, kd_weight=None),
    _bad("ctkd_temperature", np.array(["x"])),
    _bad("ctkd_temperature", np.array([np.nan])),
    _bad("ctkd_temperature", 1.0, t_end=0.0),
    _bad("ctkd_temperature", 1.0, t_start=float("inf")),
    _bad("ctkd_lambda", 1, loops=0),
    _bad("ctkd_lambda", -1),
    _bad("ctkd_temperature", 1.0, t_start=-1.0),
    _bad("dkd_warmup", -1),
    _bad("dkd_warmup", "x"),
    _bad("dkd_warmup", 3, warmup_epochs=20.5),
    _bad("dkd_warmup", 3, warmup_epochs="x"),
    _bad("dkd_warmup", 3, warmup_epochs=0),
    _bad("kd_loss", GOOD, GOOD, eps="0"),
    _bad("kd_loss", GOOD, GOOD, ddof=-1),
    _bad("dkd_loss", GOOD, GOOD, np.array([0, 1, 2]), alpha=-1.0),
    _bad("mlkd_loss", GOOD, GOOD, GOOD, GOOD, kd_weight=-9.0),
    _bad("mlkd_loss", GOOD, GOOD, GOOD, GOOD, standardize="yes"),
]


@pytest.mark.parametrize("case", range(len(BAD_CALLS)), ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_CALLS)])
def test_bad_input_raises_the_core_message(case):
    name, args, kwargs = BAD_CALLS[case]
    with pytest.raises((TypeError, ValueError)) as ref:
        getattr(core, name)(*args, **kwargs)
    with pytest.raises(ref.type) as ours:
        getattr(K, name)(*args, **kwargs)
    assert str(ours.value) == str(ref.value)
    assert str(ours.value).startswith(f"{name}: argument '")
