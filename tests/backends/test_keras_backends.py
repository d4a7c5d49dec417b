"""The Keras suite on the other Keras backend, and the Distiller under tf.distribute.MirroredStrategy.

A Keras process has one backend, chosen when Keras is imported, so both checks run in
subprocesses: the Keras test files (and the module's doctests) again under the backend this
process does not use (torch when this one is TensorFlow, and the other way round; JAX is not
installed), and a two-replica MirroredStrategy run on two logical CPU devices, which must be
configured before TensorFlow initializes.
"""

from __future__ import annotations

import importlib.util

# TensorFlow and Triton (imported by torch.compile and torchvision) load conflicting native
# symbols: importing Triton after TensorFlow segfaults, so import it first when it is installed.
if importlib.util.find_spec("triton") is not None:
    import triton  # noqa: F401

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

ROOT = Path(__file__).resolve().parents[2]
GUARD = "LSKD_KERAS_BACKEND_SUBPROCESS"  # set in the subprocesses: never recurse
KERAS_TEST_FILES = ["tests/backends/test_keras_functions.py", "tests/backends/test_keras_losses.py",
                    "tests/backends/test_keras_training.py", "logit_standardization/keras"]
OTHER_BACKEND = {"tensorflow": "torch", "torch": "tensorflow", "jax": "tensorflow"}[keras.backend.backend()]

pytestmark = pytest.mark.skipif(os.environ.get(GUARD) is not None, reason="already inside a backend subprocess")


def _env(backend: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({GUARD: backend, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"})
    env.pop("PYTEST_XDIST_WORKER", None)
    return env


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return proc


def _report(proc: subprocess.CompletedProcess) -> str:
    return f"exit code {proc.returncode}\n--- stdout ---\n{proc.stdout[-20000:]}\n--- stderr ---\n{proc.stderr[-8000:]}"


@pytest.mark.slow
def test_keras_suite_passes_on_the_other_backend():
    args = ["-q", "-p", "no:xdist", "-p", "no:cacheprovider", *KERAS_TEST_FILES]
    # pytest runs in the process whose Keras backend is asserted first
    script = ("import sys, keras, pytest; backend = keras.backend.backend(); "
              f"print('KERAS BACKEND', backend); assert backend == {OTHER_BACKEND!r}, backend; "
              f"sys.exit(pytest.main({args!r}))")
    proc = _run([sys.executable, "-c", script], _env(OTHER_BACKEND), timeout=900)
    assert proc.returncode == 0, _report(proc)
    assert f"KERAS BACKEND {OTHER_BACKEND}" in proc.stdout, _report(proc)
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, _report(proc)


MIRRORED_SCRIPT = r"""
import json
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np
from sklearn.datasets import load_digits

import logit_standardization as core
import logit_standardization.keras as K

x, y = load_digits(return_X_y=True)
order = np.random.default_rng(0).permutation(len(y))
x, y = (x[order] / 16.0).astype("float32"), y[order].astype("int32")
# even batch remainders: Keras's predict under MirroredStrategy fails on a batch that splits unevenly
x_tr, y_tr, x_te, y_te = x[:1300], y[:1300], x[1300:1796], y[1300:1796]

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def dense(hidden, seed):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((64,))] + ([keras.layers.Dense(hidden, activation="relu")] if hidden else [])
    return keras.Sequential(layers + [keras.layers.Dense(10)])


def acc(model):
    return float(np.mean(np.argmax(model.predict(x_te, verbose=0), axis=1) == y_te))


with strategy.scope():
    teacher = dense(64, 1)
    teacher.compile(optimizer=keras.optimizers.Adam(1e-2),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
teacher.fit(x_tr, y_tr, epochs=15, batch_size=64, verbose=0)

with strategy.scope():
    student = dense(None, 2)
    acc0 = acc(student)
    distiller = K.Distiller(teacher, student)  # KD+LS x9 + 0.1 CE
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
history = distiller.fit(x_tr, y_tr, epochs=4, batch_size=64, verbose=0)
loss_value = distiller.evaluate(x_te, y_te, batch_size=len(y_te), verbose=0)[0]
s_te = distiller.predict(x_te, verbose=0)
t_te = teacher.predict(x_te, verbose=0)
m = s_te.max(1, keepdims=True)
log_p = s_te - m - np.log(np.exp(s_te - m).sum(1, keepdims=True))
expected = 9.0 * core.kd_loss(s_te, t_te) + 0.1 * float(-np.mean(log_p[np.arange(len(y_te)), y_te]))

with strategy.scope():
    ctkd = K.CTKDLoss(kd_weight=9.0)
    online = K.Distiller(teacher, dense(None, 3), loss=ctkd, ce_weight=0.1)
    online.compile(optimizer=keras.optimizers.SGD(0.5))
online.fit(x_tr[:512], y_tr[:512], epochs=2, batch_size=64, verbose=0)
per_replica = [float(v.numpy()) for v in strategy.experimental_local_results(ctkd.raw_temperature.value)]

print("RESULT " + json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "acc0": acc0, "acc1": acc(student), "losses": history.history["loss"],
    "loss_value": float(loss_value), "expected": float(expected),
    "raw_temperature": per_replica, "lambda": ctkd.grl_lambda,
}))
"""


@pytest.mark.slow
def test_distiller_trains_under_mirrored_strategy_on_two_logical_cpus():
    proc = _run([sys.executable, "-c", MIRRORED_SCRIPT], _env("tensorflow"), timeout=600)
    assert proc.returncode == 0, _report(proc)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, _report(proc)
    r = json.loads(lines[-1][len("RESULT "):])
    assert r["replicas"] == 2
    assert r["acc1"] > 0.8 and r["acc1"] > r["acc0"] + 0.4, r
    assert r["losses"][-1] < r["losses"][0], r
    # the per-replica losses are scaled so that the total is the single-device value
    assert r["loss_value"] == pytest.approx(r["expected"], rel=1e-4), r
    # CTKD's temperature is one mirrored variable: both replicas hold the same, trained value
    assert len(r["raw_temperature"]) == 2 and r["raw_temperature"][0] == r["raw_temperature"][1], r
    assert r["raw_temperature"][0] != pytest.approx(1.0, abs=1e-6), r
    assert r["lambda"] == pytest.approx(-0.0954915, rel=1e-5), r  # ctkd_lambda(2)
