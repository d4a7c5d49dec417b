"""Keras training on real data (scikit-learn's digits): offline ``compile(loss=KDLoss(...))``,
the online ``Distiller``, ``keras.distillation`` interop, saving and mixed precision.

Runs on the Keras backend of the process; test_keras_backends.py runs it again under the other one.
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
from keras import ops
from sklearn.datasets import load_digits

import logit_standardization as core
import logit_standardization.keras as K

BACKEND = keras.backend.backend()
C = 10
pytestmark = pytest.mark.slow  # training runs (seconds each)


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=512), axis=1) == y))


def dense_model(hidden: int | None, seed: int, name: str) -> keras.Model:
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((64,))]
    if hidden:
        layers.append(keras.layers.Dense(hidden, activation="relu"))
    layers.append(keras.layers.Dense(C))
    return keras.Sequential(layers, name=name)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = (x[order] / 16.0).astype("float32"), y[order].astype("int32")
    d = {"x_tr": x[:1300], "y_tr": y[:1300], "x_te": x[1300:], "y_te": y[1300:]}
    teacher = dense_model(64, seed=1, name="teacher")
    teacher.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(d["x_tr"], d["y_tr"], epochs=15, batch_size=64, verbose=0)
    d["teacher"] = teacher
    d["t_tr"] = teacher.predict(d["x_tr"], verbose=0)
    d["t_te"] = teacher.predict(d["x_te"], verbose=0)
    d["teacher_acc"] = accuracy(teacher, d["x_te"], d["y_te"])
    assert d["teacher_acc"] > 0.9
    return d


def test_offline_compile_kd_learns_and_the_saved_model_reloads_with_its_loss(digits, tmp_path):
    d = digits
    student = dense_model(None, seed=2, name="student")
    acc0 = accuracy(student, d["x_te"], d["y_te"])
    student.compile(optimizer=keras.optimizers.Adam(1e-2), loss=K.KDLoss(temperature=2.0))
    history = student.fit(d["x_tr"], d["t_tr"], epochs=5, batch_size=64, verbose=0)  # y_true = teacher logits
    acc1 = accuracy(student, d["x_te"], d["y_te"])
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert acc1 > 0.8 and acc1 > acc0 + 0.4, (acc0, acc1)

    # the compiled loss is the core's kd_loss on the student's logits
    value = student.evaluate(d["x_te"], d["t_te"], batch_size=len(d["x_te"]), verbose=0)
    s_te = student.predict(d["x_te"], verbose=0)
    np.testing.assert_allclose(value, core.kd_loss(s_te, d["t_te"]), rtol=1e-4)

    path = tmp_path / "student.keras"
    student.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.loss) is K.KDLoss and loaded.loss.get_config() == student.loss.get_config()
    reloaded = loaded.evaluate(d["x_te"], d["t_te"], batch_size=len(d["x_te"]), verbose=0)
    np.testing.assert_allclose(reloaded, value, rtol=1e-6)


class DigitsStream(keras.utils.PyDataset):
    """Streams (images, pack_targets(teacher logits, labels)) batches."""

    def __init__(self, x, targets, batch_size):
        super().__init__()
        self.x, self.targets, self.batch_size = x, targets, batch_size

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, i):
        sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.x[sl], self.targets[sl]


def test_offline_dkd_with_packed_labels_streams_and_warms_up(digits):
    d = digits
    targets = K.pack_targets(d["t_tr"], d["y_tr"])
    assert targets.shape == (1300, C + 1) and np.array_equal(targets[:, -1], d["y_tr"])
    student = dense_model(None, seed=3, name="student_dkd")
    acc0 = accuracy(student, d["x_te"], d["y_te"])
    loss = K.DKDLoss(alpha=1.0, beta=8.0, temperature=2.0, warmup_epochs=4, ce_weight=1.0)
    student.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(loss.warmup_factor))
    student.fit(DigitsStream(d["x_tr"], targets, 64), epochs=3, verbose=0, callbacks=[K.EpochSchedule(), record])
    assert seen == [0.25, 0.5, 0.75]
    acc1 = accuracy(student, d["x_te"], d["y_te"])
    assert acc1 > 0.8 and acc1 > acc0 + 0.4, (acc0, acc1)

    # the compiled step reads the warm-up factor at run time (not a constant frozen at tracing)
    s_te = student.predict(d["x_te"], verbose=0)
    dkd = core.dkd_loss(s_te, d["t_te"], d["y_te"], reduction="none")
    log_p = s_te - s_te.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    ce = -log_p[np.arange(len(d["y_te"])), d["y_te"]]
    packed_te = K.pack_targets(d["t_te"], d["y_te"])
    for epoch, factor in [(3, 0.75), (1, 0.25)]:
        loss.set_epoch(epoch)
        value = student.evaluate(d["x_te"], packed_te, batch_size=len(d["y_te"]), verbose=0)
        np.testing.assert_allclose(value, np.mean(factor * dkd + ce), rtol=1e-4)


def test_distiller_trains_student_and_saves_or_exports_it_alone(digits, tmp_path):
    d = digits
    student = dense_model(None, seed=4, name="student_online")
    acc0 = accuracy(student, d["x_te"], d["y_te"])
    distiller = K.Distiller(d["teacher"], student)  # KD+LS, kd_weight 9, ce_weight 0.1
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    teacher_before = [w.copy() for w in d["teacher"].get_weights()]
    stopper = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=10)
    history = distiller.fit(d["x_tr"], d["y_tr"], epochs=5, batch_size=64, verbose=0,
                            validation_data=(d["x_te"], d["y_te"]), callbacks=[stopper])
    val = history.history["val_accuracy"]
    assert len(val) == 5 and val[-1] > 0.8 and val[-1] > acc0 + 0.4, (acc0, val)
    assert all(np.array_equal(a, b) for a, b in zip(teacher_before, d["teacher"].get_weights()))  # frozen

    # evaluate = KD+LS (x9) + 0.1 CE of the core on the same logits
    loss_value, acc = distiller.evaluate(d["x_te"], d["y_te"], batch_size=len(d["y_te"]), verbose=0)
    s_te = distiller.predict(d["x_te"], verbose=0)
    log_p = s_te - np.log(np.sum(np.exp(s_te - s_te.max(1, keepdims=True)), 1, keepdims=True)) - s_te.max(1, keepdims=True)
    ce = -np.mean(log_p[np.arange(len(d["y_te"])), d["y_te"]])
    np.testing.assert_allclose(loss_value, 9.0 * core.kd_loss(s_te, d["t_te"]) + 0.1 * ce, rtol=1e-4)
    np.testing.assert_allclose(acc, accuracy(student, d["x_te"], d["y_te"]), atol=1e-6)

    # the student alone: saved and reloaded, predicting what the distiller predicts
    path = tmp_path / "student.keras"
    distiller.student.save(path)
    alone = keras.saving.load_model(path)
    assert not any("teacher" in w.path for w in alone.weights)
    np.testing.assert_allclose(alone.predict(d["x_te"], verbose=0), s_te, rtol=1e-5, atol=1e-5)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        distiller.student.export(str(tmp_path / "served"), verbose=False)
        served = tf.saved_model.load(str(tmp_path / "served"))
        np.testing.assert_allclose(served.serve(d["x_te"]).numpy(), s_te, rtol=1e-5, atol=1e-5)


def test_distiller_with_dkd_and_ctkd_follows_the_epoch_and_saves_whole(digits, tmp_path):
    d = digits
    x, y = d["x_tr"][:512], d["y_tr"][:512]
    dkd = K.DKDLoss(alpha=9.0, beta=72.0, warmup_epochs=20)
    distiller = K.Distiller(d["teacher"], dense_model(None, seed=5, name="s_dkd"), loss=dkd, ce_weight=1.0)
    distiller.compile(optimizer=keras.optimizers.Adam(5e-3))
    history = distiller.fit(x, y, epochs=3, batch_size=128, verbose=0)  # EpochSchedule added by fit
    assert dkd.warmup_factor == pytest.approx(3 / 20)
    assert np.all(np.isfinite(history.history["loss"]))

    ctkd = K.CTKDLoss(kd_weight=9.0, ce_weight=0.1)
    distiller = K.Distiller(d["teacher"], dense_model(None, seed=6, name="s_ctkd"), loss=ctkd, ce_weight=0.0)
    assert any(v is ctkd.raw_temperature for v in distiller.trainable_variables)
    distiller.compile(optimizer=keras.optimizers.SGD(0.5))
    t0 = ctkd.current_temperature
    distiller.fit(x, y, epochs=3, batch_size=128, verbose=0)
    assert ctkd.grl_lambda == pytest.approx(core.ctkd_lambda(3))
    assert ctkd.current_temperature != pytest.approx(t0, abs=1e-6)  # the temperature is learned

    path = tmp_path / "distiller.keras"
    distiller.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "compile() was not called" / skipped optimizer state
        loaded = keras.saving.load_model(path)
    assert isinstance(loaded, K.Distiller) and isinstance(loaded.distillation_loss, K.CTKDLoss)
    assert loaded.distillation_loss.current_temperature == pytest.approx(ctkd.current_temperature, rel=1e-6)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), distiller.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(distiller.evaluate(x, y, verbose=0), rel=1e-5)
    loaded.fit(x, y, epochs=1, batch_size=128, verbose=0)  # resumes training


def test_keras_distillation_distiller_with_standardized_logits(digits, tmp_path):
    d = digits
    student = dense_model(None, seed=7, name="student_kdist")
    acc0 = accuracy(student, d["x_te"], d["y_te"])
    ls = K.StandardizedLogitsDistillation(temperature=2.0, kd_weight=9.0)
    distiller = keras.distillation.Distiller(teacher=d["teacher"], student=student, distillation_losses=[ls],
                                             student_loss_weight=0.1)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = distiller.fit(d["x_tr"], d["y_tr"], epochs=5, batch_size=64, verbose=0)
    acc1 = accuracy(distiller.student, d["x_te"], d["y_te"])
    assert acc1 > 0.8 and acc1 > acc0 + 0.4, (acc0, acc1, history.history)

    # its distillation term is ours: 9 x the core's KD+LS on the same logits
    s_te = distiller.student.predict(d["x_te"], verbose=0)
    term = ls.compute_loss(ops.convert_to_tensor(d["t_te"]), ops.convert_to_tensor(s_te))
    np.testing.assert_allclose(float(term), 9.0 * core.kd_loss(s_te, d["t_te"]), rtol=1e-4)
    config = keras.saving.serialize_keras_object(ls)
    again = keras.saving.deserialize_keras_object(config)
    assert isinstance(again, K.StandardizedLogitsDistillation) and again.get_config() == ls.get_config()


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_distillation_keeps_float32_losses_without_nan(digits, policy):
    d = digits
    x, y = d["x_tr"][:256], d["y_tr"][:256]
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        teacher = dense_model(64, seed=8, name="half_teacher")
        teacher.set_weights(d["teacher"].get_weights())  # the trained teacher, computing in half precision
        student = dense_model(None, seed=9, name="half_student")
        half = policy.split("_")[1]
        out = student(x[:4])
        assert keras.backend.standardize_dtype(out.dtype) == half
        # large logits: a half-precision variance of these would overflow
        loss = K.KDLoss(kd_weight=9.0)
        big = ops.cast(ops.convert_to_tensor(np.linspace(-3e4, 3e4, 40, dtype="float32").reshape(4, C)), half)
        value = loss(big, out)
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
        assert np.isfinite(ops.convert_to_numpy(value))
        distiller = K.Distiller(teacher, student, loss=loss, ce_weight=0.1)
        distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
        history = distiller.fit(x, y, epochs=2, batch_size=64, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        assert history.history["loss"][-1] < history.history["loss"][0]
    finally:
        keras.config.set_dtype_policy(previous)


# ----------------------------------------------------------------------------- bad values inside fit
def _fit_error():
    """What stops ``fit`` on bad values: an assertion of the TensorFlow graph, or the eager ValueError."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.errors.InvalidArgumentError
    return ValueError


def test_fit_stops_on_labels_out_of_range_and_non_finite_teacher_logits(digits):
    d = digits
    x, y, t = d["x_tr"][:128], d["y_tr"][:128].copy(), d["t_tr"][:128].copy()
    bad_y = y.copy()
    bad_y[70] = C  # one label out of range, in the second batch
    distiller = K.Distiller(d["teacher"], dense_model(None, seed=10, name="s_bad_labels"))
    distiller.compile(optimizer="sgd")
    assert not distiller.run_eagerly
    with pytest.raises(_fit_error(), match=r"pack_targets: argument 'labels' must be class indices in \[0, 10\); got "):
        distiller.fit(x, bad_y, epochs=1, batch_size=64, verbose=0)

    student = dense_model(None, seed=11, name="s_bad_targets")
    student.compile(optimizer="sgd", loss=K.DKDLoss(ce_weight=1.0))
    packed = K.pack_targets(t, y)
    packed[100, -1] = -1.0  # a label written into the targets by hand
    with pytest.raises(_fit_error(), match=r"DKDLoss: argument 'y_true' must be class indices in \[0, 10\) in its last column; got "):
        student.fit(x, packed, epochs=1, batch_size=64, verbose=0)

    bad_t = t.copy()
    bad_t[90, 3] = np.nan
    student.compile(optimizer="sgd", loss=K.KDLoss())
    with pytest.raises(_fit_error(), match=r"KDLoss: argument 'y_true' must be finite \(no NaN or Inf\); got non-finite values"):
        student.fit(x, bad_t, epochs=1, batch_size=64, verbose=0)
    bad_t[90, 3] = np.inf
    with pytest.raises(_fit_error(), match=r"KDLoss: argument 'y_true' must be finite"):
        student.evaluate(x, bad_t, batch_size=64, verbose=0)
    # the checks cost nothing on good data: the same fit runs
    student.fit(x, t, epochs=1, batch_size=64, verbose=0)


def test_fit_stops_on_a_nan_teacher_inside_the_distiller(digits):
    d = digits
    teacher = dense_model(64, seed=12, name="nan_teacher")
    weights = [w.copy() for w in d["teacher"].get_weights()]
    weights[-1][2] = np.nan  # a NaN bias: every teacher logit of class 2 is NaN
    teacher.set_weights(weights)
    distiller = K.Distiller(teacher, dense_model(None, seed=13, name="s_nan_teacher"))
    distiller.compile(optimizer="sgd")
    with pytest.raises(_fit_error(), match=r"pack_targets: argument 'teacher_logits' must be finite"):
        distiller.fit(d["x_tr"][:64], d["y_tr"][:64], epochs=1, batch_size=64, verbose=0)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.data pipelines run TensorFlow graphs")
def test_pack_targets_in_a_tf_data_map_checks_the_labels(digits):
    import tensorflow as tf

    d = digits
    ds = tf.data.Dataset.from_tensor_slices((d["t_tr"][:8], np.array([0, 1, 2, 3, 4, 5, 6, 12], "int32")))
    ds = ds.batch(4).map(lambda t, y: K.pack_targets(t, y))
    batches = iter(ds)
    assert next(batches).shape == (4, C + 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"pack_targets: argument 'labels' must be class indices"):
        next(batches)


# ----------------------------------------------------------------------------- mixed precision, constant rows
def test_mixed_float16_compile_kd_moves_the_weights_from_constant_logits(digits):
    """A zero-initialised head gives constant logit rows, where the Z-score gradient is ~|g| / eps."""
    d = digits
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(14)
        student = keras.Sequential([keras.Input((64,)), keras.layers.Dense(C, kernel_initializer="zeros",
                                                                             bias_initializer="zeros")])
        student.compile(optimizer=keras.optimizers.Adam(1e-2), loss=K.KDLoss())
        before = [w.copy() for w in student.get_weights()]
        history = student.fit(d["x_tr"][:512], d["t_tr"][:512], epochs=4, batch_size=64, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        moved = [float(np.max(np.abs(a - b))) for a, b in zip(before, student.get_weights())]
        assert all(m > 1e-3 for m in moved), moved
        assert all(np.all(np.isfinite(w)) for w in student.get_weights())
        logits = student.predict(d["x_te"], verbose=0)
        assert np.all(np.isfinite(logits)) and np.all(np.std(logits, axis=1) > 0)  # no longer constant rows
    finally:
        keras.config.set_dtype_policy(previous)


# ----------------------------------------------------------------------------- keras.distillation
def test_standardized_logits_distillation_takes_loss_like_logits_distillation():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(6, 5)).astype("float32") * 4
    s = rng.normal(size=(6, 5)).astype("float32")
    zt, zs = core.zscore(t, temperature=3.0), core.zscore(s, temperature=3.0)
    for loss in ("kl_divergence", keras.losses.KLDivergence(), keras.losses.kl_divergence):
        value = K.StandardizedLogitsDistillation(temperature=3.0, loss=loss).compute_loss(t, s)
        np.testing.assert_allclose(float(value), core.kd_loss(s, t, temperature=3.0), rtol=1e-5)
    mse = K.StandardizedLogitsDistillation(3.0, "mse", kd_weight=2.0).compute_loss(t, s)
    np.testing.assert_allclose(float(mse), 2.0 * np.mean((zt - zs) ** 2), rtol=1e-5)
    raw = K.StandardizedLogitsDistillation(3.0, keras.losses.MeanAbsoluteError(), standardize=False)
    np.testing.assert_allclose(float(raw.compute_loss(t, s)), np.mean(np.abs(t - s)) / 3.0, rtol=1e-5)
    # multi-output: one loss per output, None skips one
    multi = K.StandardizedLogitsDistillation(3.0, ["kl_divergence", None, "mse"])
    value = multi.compute_loss([t, t, t], [s, s * 100, s])
    np.testing.assert_allclose(float(value), core.kd_loss(s, t, temperature=3.0) + np.mean((zt - zs) ** 2), rtol=1e-5)
    again = K.StandardizedLogitsDistillation.from_config(multi.get_config())
    np.testing.assert_allclose(float(again.compute_loss([t, t, t], [s, s, s])), float(value), rtol=1e-6)


def test_keras_distiller_serialization_and_saving_with_standardized_logits(tmp_path):
    """Keras's own test_distiller_serialization_and_saving (keras/src/distillation/distiller_test.py)
    with StandardizedLogitsDistillation in place of LogitsDistillation, plus equal predictions."""
    import json

    from keras.distillation import Distiller

    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.layers.Dense(32, activation="relu", name="teacher_dense_1"),
                                keras.layers.Dense(16, activation="relu", name="teacher_dense_2"),
                                keras.layers.Dense(10, name="teacher_output")])
    student = keras.Sequential([keras.layers.Dense(16, activation="relu", name="student_dense_1"),
                                keras.layers.Dense(8, activation="relu", name="student_dense_2"),
                                keras.layers.Dense(10, name="student_output")])
    distillation_loss = K.StandardizedLogitsDistillation(temperature=3.0, loss="kl_divergence")
    original = Distiller(teacher=teacher, student=student, distillation_losses=distillation_loss,
                         student_loss_weight=0.7)
    x_test = np.random.random((2, 20)).astype(np.float32)
    _ = original(x_test)

    config = original.get_config()
    for key in ["teacher", "student", "distillation_losses", "distillation_loss_weights", "student_loss_weight"]:
        assert key in config, key
    assert isinstance(json.dumps(config), str)
    reconstructed = Distiller.from_config(config)
    assert reconstructed.student_loss_weight == 0.7
    assert isinstance(reconstructed.distillation_losses[0], K.StandardizedLogitsDistillation)
    assert reconstructed.distillation_losses[0].temperature == 3.0
    assert reconstructed.distillation_losses[0].get_config() == distillation_loss.get_config()
    assert tuple(reconstructed(x_test).shape) == (2, 10)

    path = tmp_path / "distiller_model.keras"
    original.compile(loss="sparse_categorical_crossentropy")
    original.save(path)
    loaded = keras.models.load_model(path)
    assert tuple(loaded(x_test).shape) == (2, 10)
    assert loaded.student_loss_weight == 0.7
    assert isinstance(loaded.distillation_losses[0], K.StandardizedLogitsDistillation)
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(x_test)), ops.convert_to_numpy(original(x_test)),
                               rtol=1e-6, atol=1e-6)
    # the loaded distiller trains (Keras does not restore the compile state of its Distiller: compile again)
    loaded.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = np.random.random((32, 20)).astype(np.float32), np.random.randint(0, 10, 32)
    history = loaded.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
