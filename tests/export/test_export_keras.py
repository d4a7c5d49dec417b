"""A Keras 3 ``.keras`` student exported on the TensorFlow backend (Keras ONNX export, tf2onnx).

Runs in a separate process with ``KERAS_BACKEND=tensorflow``: the Keras backend is fixed at
import time, and TensorFlow stays out of the test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap


SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    import keras
    import onnx
    import onnxruntime as ort
    from logit_standardization.export import read_metadata
    from logit_standardization.export.cli import main

    out = Path(sys.argv[1])
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(100, name="head")(x)
    model = keras.Model(inputs, logits, name="tiny_keras_student")
    # non-trivial BN statistics
    bn = model.layers[2]
    bn.moving_mean.assign(np.linspace(-0.2, 0.2, 8).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 1.5, 8).astype("float32"))
    model.save(out / "student.keras")

    result = {"backend": keras.backend.backend()}
    result["rc"] = main([str(out / "student.keras"), "--onnx", "--dataset", "cifar100", "--provider", "cpu"])
    onnx_path = out / "student.onnx"
    graph = onnx.load(str(onnx_path))
    onnx.checker.check_model(graph, full_check=True)
    result["io"] = [graph.graph.input[0].name, graph.graph.output[0].name]
    result["batch_dim"] = graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    result["meta"] = read_metadata(onnx_path)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    xb = np.random.default_rng(3).standard_normal((5, 32, 32, 3)).astype("float32")
    got = sess.run(["logits"], {"input": xb})[0]
    want = keras.ops.convert_to_numpy(model(xb, training=False))
    result["max_diff"] = float(np.abs(got - want).max())
    result["max_logit"] = float(np.abs(want).max())

    # a Lambda layer holds Python bytecode: refused under safe_mode
    lam_in = keras.Input((4,))
    lam = keras.Model(lam_in, keras.layers.Lambda(lambda t: t * 2.0)(lam_in))
    lam.save(out / "lambda.keras")
    result["lambda_rc"] = main([str(out / "lambda.keras"), "--onnx", "--provider", "cpu"])
    result["lambda_onnx"] = (out / "lambda.onnx").exists()
    print(json.dumps(result))
    """
)


def test_keras_student_on_tensorflow(tmp_path):
    script = tmp_path / "keras_export.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"] == "tensorflow"
    assert result["rc"] == 0, proc.stderr[-3000:]
    assert result["io"] == ["input", "logits"] and result["batch_dim"] == "batch"
    meta = result["meta"]
    assert meta["arch"] == "tiny_keras_student" and meta["num_classes"] == 100
    assert meta["input_size"] == [32, 32, 3] and meta["input_layout"] == "NHWC"
    assert meta["normalization"]["mean"] == [0.5071, 0.4867, 0.4408]
    assert meta["exporter"] == "keras (tensorflow backend)"
    assert result["max_diff"] <= 1e-4 and result["max_logit"] > 1e-3
    assert result["lambda_rc"] == 4 and not result["lambda_onnx"]
    assert "refusing to load" in proc.stderr and "Lambda" in proc.stderr
