"""Keras loss classes, pack_targets and the Distiller's configuration.

Class values against the weight rule (``ce_weight * CE + kd_weight * functional loss``), their
``last_terms``, signatures and constructor errors are the conformance suite's
(tests/backends/test_conformance.py). Here: Keras's side of the classes -- ``sample_weight``,
masks and the reduction strings in the loss dtype, packed targets, the epoch state, configs and
serialization, target and argument errors. Runs on the Keras backend of the process;
test_keras_backends.py runs it again under the other one.
"""

from __future__ import annotations

import importlib.util

# TensorFlow and Triton (imported by torch.compile and torchvision) load conflicting native
# symbols: importing Triton after TensorFlow segfaults, so import it first when it is installed.
if importlib.util.find_spec("triton") is not None:
    import triton  # noqa: F401

import keras
import numpy as np
import pytest
from keras import ops

import logit_standardization as core
from logit_standardization import _checks
import logit_standardization.keras as K

BACKEND = keras.backend.backend()
B, C = 6, 5
RNG = np.random.default_rng(42)
S = RNG.normal(size=(B, C)) * 2.0
T = RNG.normal(size=(B, C)) * 6.0 + 1.0
Y = np.array([0, 4, 2, 2, 1, 3])
W = np.array([1.0, 0.5, 0.0, 2.0, 1.0, 3.0])


def to_np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


def ce_rows(s, y):
    m = s.max(axis=1, keepdims=True)
    log_p = s - m - np.log(np.exp(s - m).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(y)), y]


# ----------------------------------------------------------------------------- pack_targets
def test_pack_targets_numpy_and_tensor_inputs():
    packed = K.pack_targets(T.astype(np.float32), Y)
    assert isinstance(packed, np.ndarray) and packed.dtype == np.float32 and packed.shape == (B, C + 1)
    np.testing.assert_array_equal(packed[:, :C], T.astype(np.float32))
    np.testing.assert_array_equal(packed[:, C], Y)
    assert K.pack_targets(T, Y[:, None]).dtype == np.float64  # (B, 1) labels; float64 stays float64
    as_tensor = K.pack_targets(ops.convert_to_tensor(T.astype(np.float16)), ops.convert_to_tensor(Y))
    assert ops.is_tensor(as_tensor) and keras.backend.standardize_dtype(as_tensor.dtype) == "float32"
    np.testing.assert_array_equal(to_np(as_tensor)[:, C], Y)
    big = np.zeros((2, 1000), np.float16)  # bfloat16/float16 could not hold label 999 exactly; float32 does
    assert K.pack_targets(big, np.array([999, 513]))[:, -1].tolist() == [999.0, 513.0]


@pytest.mark.parametrize(
    "teacher,labels,match",
    [
        (T, Y[:4], r"pack_targets: argument 'labels' must be a 1-D array of shape \(6,\)"),
        (T, Y.astype(float), r"pack_targets: argument 'labels' must be an integer array"),
        (T, np.array([0, 1, 2, 3, 4, 5]), r"pack_targets: argument 'labels' must be class indices in \[0, 5\)"),
        (T.astype(int), Y, r"pack_targets: argument 'teacher_logits' must be a floating-point array"),
        (np.full((B, C), np.nan), Y, r"pack_targets: argument 'teacher_logits' must be finite"),
    ],
)
@pytest.mark.parametrize("as_tensor", [False, True])
def test_pack_targets_rejects_bad_input(teacher, labels, match, as_tensor):
    if as_tensor:
        teacher, labels = ops.convert_to_tensor(teacher), ops.convert_to_tensor(labels)
    with pytest.raises((TypeError, ValueError), match=match):
        K.pack_targets(teacher, labels)


# ----------------------------------------------------------------------------- reductions and sample weights
def test_kdloss_reductions_and_sample_weights_in_float64():
    rows = core.kd_loss(S, T, temperature=3.0, reduction="none")
    for reduction, sample_weight, expected in [
        ("sum_over_batch_size", None, rows.mean()),
        ("sum_over_batch_size", W, np.sum(rows * W) / B),
        ("mean", W[:, None], np.sum(rows * W) / B),
        ("sum", W, np.sum(rows * W)),
        ("mean_with_sample_weight", W, np.sum(rows * W) / W.sum()),
        ("none", W, rows * W),
        (None, None, rows),
    ]:
        loss = K.KDLoss(temperature=3.0, reduction=reduction, dtype="float64")
        value = loss(T, S, sample_weight=sample_weight)
        assert keras.backend.standardize_dtype(value.dtype) == "float64", reduction
        np.testing.assert_allclose(to_np(value), expected, rtol=1e-12, err_msg=str(reduction))
    # packed targets without a CE weight: only the KD term, the label is ignored
    plain = K.KDLoss(dtype="float64")
    np.testing.assert_array_equal(to_np(plain(K.pack_targets(T, Y), S)), to_np(plain(T, S)))


class _Given(keras.losses.Loss):
    """Keras's own reduction of given per-sample values (``y_true[:, 0]``): the semantics to follow."""

    def call(self, y_true, y_pred):
        return y_true[:, 0]


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None])
def test_reduction_mask_and_sample_weight_follow_keras(reduction):
    s = S.astype(np.float32)
    s[[1, 4]] = 0.0  # rows a Masking layer masks
    t = T.astype(np.float32)
    rows = to_np(K.KDLoss(reduction="none")(t, s)).astype(np.float32)
    given = np.repeat(rows[:, None], C, axis=1)
    for sample_weight in (None, W.astype(np.float32), W[:, None].astype(np.float32), np.zeros(B, np.float32)):
        for y_pred in (ops.convert_to_tensor(s), keras.layers.Masking(0.0)(ops.convert_to_tensor(s))):
            ours = K.KDLoss(reduction=reduction)(t, y_pred, sample_weight=sample_weight)
            theirs = _Given(reduction=reduction)(given, y_pred, sample_weight=sample_weight)
            assert keras.backend.standardize_dtype(ours.dtype) == "float32"
            np.testing.assert_allclose(to_np(ours), to_np(theirs), rtol=1e-6, atol=1e-7,
                                       err_msg=f"{reduction} {sample_weight}")


# ----------------------------------------------------------------------------- DKDLoss, CTKDLoss
def test_dkdloss_warmup_follows_set_epoch_with_sample_weights():
    warm = K.DKDLoss(alpha=9.0, beta=72.0, kd_weight=0.5, ce_weight=1.0, dtype="float64")
    assert warm.warmup_epochs == 20 and warm.warmup_factor == 1.0  # epoch unset: no warm-up factor
    dkd = core.dkd_loss(S, T, Y, alpha=9.0, beta=72.0, reduction="none")
    for epoch, factor in [(None, 1.0), (1, 0.05), (5, 0.25), (7.5, 0.375), (20, 1.0), (37, 1.0), (None, 1.0)]:
        warm.set_epoch(epoch)
        assert warm.warmup_factor == (1.0 if epoch is None else core.dkd_warmup(epoch))
        np.testing.assert_allclose(to_np(warm(K.pack_targets(T, Y), S, sample_weight=W)),
                                   np.sum((0.5 * factor * dkd + ce_rows(S, Y)) * W) / B, rtol=1e-12)


def test_dkdloss_refuses_a_negative_epoch_from_the_callback_or_the_variable():
    loss = K.DKDLoss(warmup_epochs=4)
    with pytest.raises(ValueError, match=r"^DKDLoss: argument 'epoch' must be finite and >= 0; got -1$"):
        loss.set_epoch(-1)
    with pytest.raises(TypeError, match=r"^DKDLoss: argument 'epoch' must be a real number; got 'x'$"):
        loss.set_epoch("x")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(C)])
    model.compile(loss=loss)
    callback = K.EpochSchedule()
    callback.set_model(model)
    with pytest.raises(ValueError, match=r"DKDLoss: argument 'epoch' must be finite and >= 0; got -1"):
        callback.on_epoch_begin(-2)  # epochs are 0-based in Keras, 1-based here
    loss.epoch.assign(-3.0)  # set through the variable: an eager call refuses it
    with pytest.raises(ValueError, match=r"DKDLoss: argument 'epoch' must be finite and >= 0; got -3.0"):
        loss(K.pack_targets(T.astype(np.float32), Y), S.astype(np.float32))


def test_ctkdloss_temperature_and_lambda_state():
    loss = K.CTKDLoss(t_start=2.0, t_end=10.0, init=-0.5, kd_weight=2.0, dtype="float64")
    assert loss.current_temperature == pytest.approx(core.ctkd_temperature(-0.5, t_start=2.0, t_end=10.0), rel=1e-6)
    assert loss.grl_lambda == pytest.approx(core.ctkd_lambda(1))
    loss.set_epoch(4)
    assert loss.grl_lambda == pytest.approx(core.ctkd_lambda(4))
    assert [v.trainable for v in loss.variables] == [True, False]


# ----------------------------------------------------------------------------- configs
LOSSES = [
    K.KDLoss(),
    K.KDLoss(temperature=4.0, standardize=False, ddof=0, eps=0.0, kd_weight=9.0, ce_weight=0.1, reduction="sum", name="kd9"),
    K.DKDLoss(),
    K.DKDLoss(alpha=9.0, beta=72.0, warmup_epochs=20, ce_weight=1.0, reduction="none"),
    K.CTKDLoss(),
    K.CTKDLoss(t_start=2.0, t_end=30.0, init=0.5, loops=5, schedule="linear", kd_weight=9.0, ce_weight=0.1),
    K.CTKDLoss(ddof=0, eps=0.0, reduction="sum", num_classes=5, hidden_features=16, standardize=False),
]


@pytest.mark.parametrize("loss", LOSSES, ids=lambda l: f"{type(l).__name__}-{l.name}-{l.reduction}")
def test_loss_config_round_trips_through_keras_serialization(loss):
    config = loss.get_config()
    again = type(loss).from_config(config)
    assert again.get_config() == config
    serialized = keras.saving.serialize_keras_object(loss)
    assert serialized["registered_name"] == f"logit_standardization>{type(loss).__name__}"
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is type(loss) and restored.get_config() == config
    targets = K.pack_targets(T.astype(np.float32), Y)
    np.testing.assert_allclose(to_np(restored(targets, S.astype(np.float32))), to_np(loss(targets, S.astype(np.float32))),
                               rtol=1e-6)


def test_distiller_config_round_trips():
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(C)], name="t")
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(C)], name="s")
    distiller = K.Distiller(teacher, student, loss=K.DKDLoss(alpha=2.0, warmup_epochs=3), ce_weight=0.5, name="d")
    config = distiller.get_config()
    again = K.Distiller.from_config(config)
    assert again.ce_weight == 0.5 and again.name == "d"
    assert again.distillation_loss.get_config() == distiller.distillation_loss.get_config()
    assert [w.shape for w in again.student.weights] == [w.shape for w in student.weights]
    assert not again.teacher.trainable and again.student.trainable
    # the warm-up variable is the distiller's (not trainable) state
    assert any(v is distiller.distillation_loss.variables[0] for v in distiller.non_trainable_variables)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "loss,y_true,match",
    [
        (K.KDLoss(), T[:, :4], r"KDLoss: argument 'y_true' must be teacher logits of shape \(batch, 5\) or teacher logits and labels of shape \(batch, 6\)"),
        (K.KDLoss(ce_weight=0.1), T, r"KDLoss: argument 'y_true' must be teacher logits and labels .*\(ce_weight > 0 needs labels\); got shape \(6, 5\)"),
        (K.DKDLoss(), T, r"DKDLoss: argument 'y_true' must be .*\(DKD needs labels\)"),
        (K.DKDLoss(), np.concatenate([T, np.full((B, 1), 2.5)], axis=1), r"DKDLoss: argument 'y_true' must be class indices in \[0, 5\) in its last column; got label 2.5"),
        (K.KDLoss(), np.concatenate([T, np.full((B, 1), 5.0)], axis=1), r"class indices in \[0, 5\)"),
        (K.KDLoss(ddof=5), T, r"KDLoss: argument 'ddof' must be an int in \[0, 5\)"),
        (K.KDLoss(), np.where(T > 0, np.inf, T), r"KDLoss: argument 'y_true' must be finite"),
    ],
)
def test_loss_rejects_bad_targets(loss, y_true, match):
    with pytest.raises(ValueError, match=match):
        loss(y_true, S)


# (class, argument, bad value): the message is check_hyper's, naming the class. The loss classes'
# other hyperparameters are the conformance suite's constructor cases.
BAD_HYPER = [
    (K.CTKDLoss, "num_classes", 1), (K.CTKDLoss, "num_classes", 10.0), (K.CTKDLoss, "hidden_features", 0),
    (K.StandardizedLogitsDistillation, "temperature", -2.0), (K.StandardizedLogitsDistillation, "kd_weight", -1.0),
    (K.StandardizedLogitsDistillation, "ddof", 0.5), (K.StandardizedLogitsDistillation, "eps", -1.0),
    (K.StandardizedLogitsDistillation, "standardize", None),
]


@pytest.mark.parametrize("cls,name,bad", BAD_HYPER, ids=[f"{c.__name__}-{n}-{b!r}" for c, n, b in BAD_HYPER])
def test_bad_hyperparameters_raise_the_check_hyper_message(cls, name, bad):
    with pytest.raises((TypeError, ValueError)) as ref:
        _checks.check_hyper(cls.__name__, **{name: bad})
    with pytest.raises(ref.type) as ours:
        cls(**{name: bad})
    assert str(ours.value) == str(ref.value)


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: K.KDLoss(dtype="float16"), ValueError, r"KDLoss: argument 'dtype' must be float32 or float64"),
        (lambda: K.KDLoss(dtype="mixed_bfloat16"), ValueError, r"KDLoss: argument 'dtype' must be float32 or float64"),
        (lambda: K.KDLoss(reduction="batchmean"), ValueError,
         r"^KDLoss: argument 'reduction' must be one of 'sum_over_batch_size', .*; got 'batchmean'$"),
        (lambda: K.CTKDLoss(instance_wise=True), ValueError,
         r"^CTKDLoss: argument 'instance_wise' must be False \(the Keras CTKDLoss learns one global temperature"),
        (lambda: K.CTKDLoss(temperature=2.0), TypeError, r"unexpected keyword argument 'temperature'"),
        (lambda: K.StandardizedLogitsDistillation(loss=None), ValueError,
         r"StandardizedLogitsDistillation: argument 'loss' must be a loss, or a structure"),
        (lambda: K.StandardizedLogitsDistillation(loss="no_such_loss"), ValueError, r"Could not interpret|Unknown"),
        (lambda: K.Distiller(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]), "student"), TypeError,
         r"Distiller: argument 'student' must be a keras.Model; got str"),
        (lambda: K.Distiller(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]),
                             keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]), ce_weight=-1.0), ValueError,
         r"^Distiller: argument 'ce_weight' must be finite and >= 0; got -1.0$"),
    ],
)
def test_bad_arguments_raise_named_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_distiller_compile_refuses_a_second_loss():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    distiller = K.Distiller(model, keras.models.clone_model(model))
    with pytest.raises(ValueError, match=r"Distiller.compile: argument 'loss' must be left out"):
        distiller.compile(optimizer="adam", loss="mse")
