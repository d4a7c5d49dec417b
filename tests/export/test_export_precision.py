"""Reduced precision: float16 (float32 or float16 I/O) and int8 (dynamic, static with calibration data)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from logit_standardization.export import (
    TOP1_THRESHOLDS,
    CalibrationDataError,
    compare_logits,
    export_onnx,
    read_calibration_data,
    read_metadata,
    verify,
)
from logit_standardization.training.checkpoint import student_payload
from logit_standardization.training.models import create_model

CIFAR_MEAN, CIFAR_STD = [0.5071, 0.4867, 0.4408], [0.2675, 0.2565, 0.2761]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _student(directory, arch, dataset):
    """A student file whose BN statistics are measured (logits at a trained network's scale)."""
    torch.manual_seed(0)
    net = create_model(arch, dataset=dataset)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if bns:
        for m in bns:
            m.momentum = None
        net.train()
        with torch.no_grad():
            net(torch.randn(8, 3, 32, 32))
    net.eval()
    path = directory / f"{arch}.pt"
    n_cls = net(torch.zeros(1, *((3, 32, 32) if dataset == "cifar100" else (1, 8, 8)))).shape[1]
    torch.save(student_payload(net, arch=arch, dataset=dataset, num_classes=n_cls), path)
    return net, path


@pytest.fixture(scope="module")
def resnet8(tmp_path_factory):
    return _student(tmp_path_factory.mktemp("r8"), "resnet8", "cifar100")


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    # predictions of the untrained MLP vary across random inputs, so top-1 agreement is informative
    return _student(tmp_path_factory.mktemp("mlp"), "mlp_digits", "digits")


def _x(batch, size, seed=5):
    return np.random.default_rng(seed).standard_normal((batch, *size)).astype(np.float32)


def _compare(net, path, size, dtype=np.float32):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _x(32, size)
    got = sess.run(["logits"], {"input": x.astype(dtype)})[0]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    return compare_logits(want, got), got.dtype


def _ops(path):
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_fp16_keeps_float32_io(resnet8):
    net, ckpt = resnet8
    report = export_onnx(ckpt, fp16=True, exporter="torchscript", provider="cpu", verify_batch_sizes=(1, 4))
    assert report.output.name == "resnet8.fp16.onnx" and report.precision == "fp16"
    assert [v.precision for v in report.verifications] == ["fp32", "fp16"] and report.verified
    assert report.verifications[1].criterion == f"top1_agreement >= {TOP1_THRESHOLDS['fp16']:g}"
    model = onnx.load(str(report.output))
    onnx.checker.check_model(model, full_check=True)
    kinds = Counter(t.data_type for t in model.graph.initializer)
    assert kinds[onnx.TensorProto.FLOAT16] > 0 and kinds[onnx.TensorProto.FLOAT] == 0
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert read_metadata(report.output)["precision"] == "fp16"
    (diff, agree), dtype = _compare(net, report.output, (3, 32, 32))
    assert dtype == np.float32 and diff < 1e-2 and agree >= 0.9


def test_fp16_io(mlp):
    net, ckpt = mlp
    report = export_onnx(ckpt, fp16=True, fp16_io=True, exporter="torchscript", provider="cpu")
    model = onnx.load(str(report.output))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert report.verified
    (diff, agree), dtype = _compare(net, report.output, (1, 8, 8), dtype=np.float16)
    assert dtype == np.float16 and agree >= TOP1_THRESHOLDS["fp16"] and diff < 1e-2


@pytest.mark.parametrize("which", ["resnet8", "mlp"])
def test_int8_dynamic(request, which):
    net, ckpt = request.getfixturevalue(which)
    size = (3, 32, 32) if which == "resnet8" else (1, 8, 8)
    report = export_onnx(ckpt, int8=True, exporter="torchscript", provider="cpu", force=True)
    assert report.output.name.endswith(".int8.onnx") and report.precision == "int8-dynamic"
    assert report.verified and report.verifications[1].top1_agreement >= TOP1_THRESHOLDS["int8-dynamic"]
    ops = _ops(report.output)
    assert ops["DynamicQuantizeLinear"] > 0 and (ops["ConvInteger"] + ops["MatMulInteger"]) > 0
    assert read_metadata(report.output)["precision"] == "int8-dynamic"
    (diff, agree), _ = _compare(net, report.output, size)
    assert agree >= TOP1_THRESHOLDS["int8-dynamic"] and diff < 0.1


def test_int8_static_from_npy_batches_and_samples(resnet8, tmp_path):
    net, ckpt = resnet8
    calib = tmp_path / "calib"
    calib.mkdir()
    np.save(calib / "batch0.npy", _x(6, (3, 32, 32), seed=1))
    np.save(calib / "one.npy", _x(1, (3, 32, 32), seed=2)[0])  # a single sample, no batch axis
    out = tmp_path / "static.onnx"
    report = export_onnx(ckpt, out, int8=True, calibration_data=calib, exporter="torchscript", provider="cpu")
    assert report.precision == "int8-static" and report.verified
    ops = _ops(out)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    (diff, agree), _ = _compare(net, out, (3, 32, 32))
    assert agree >= TOP1_THRESHOLDS["int8-static"] and diff < 0.2


def test_int8_static_from_images(resnet8, tmp_path):
    _, ckpt = resnet8
    calib = tmp_path / "images"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(calib / f"img{i}.png")
    report = export_onnx(
        ckpt, tmp_path / "img.onnx", int8=True, calibration_data=calib, exporter="torchscript", provider="cpu"
    )
    assert report.precision == "int8-static" and report.verified
    # the static graph is verified on the calibration images (its ranges were fitted to them)
    assert report.verifications[1].inputs == "calibration" and report.verifications[1].batch_sizes == (4,)


def test_calibration_images_are_resized_and_normalized(tmp_path):
    Image.new("RGB", (64, 50), (255, 0, 51)).save(tmp_path / "red.png")
    (batch,) = read_calibration_data(
        tmp_path, input_size=(3, 32, 32), layout="NCHW", normalization={"mean": CIFAR_MEAN, "std": CIFAR_STD}, batch=None
    )
    assert batch.shape == (1, 3, 32, 32) and batch.dtype == np.float32
    expected = (np.array([1.0, 0.0, 0.2]) - CIFAR_MEAN) / CIFAR_STD
    np.testing.assert_allclose(batch[0, :, 7, 9], expected, rtol=1e-5)
    (nhwc,) = read_calibration_data(
        tmp_path, input_size=(32, 32, 3), layout="NHWC", normalization={"mean": CIFAR_MEAN, "std": CIFAR_STD}, batch=None
    )
    np.testing.assert_allclose(nhwc[0, 7, 9], expected, rtol=1e-5)


def test_calibration_batches_fit_a_fixed_batch(tmp_path):
    np.save(tmp_path / "a.npy", _x(7, (1, 8, 8)))
    batches = read_calibration_data(tmp_path, input_size=(1, 8, 8), layout="NCHW", normalization=None, batch=3)
    assert [b.shape[0] for b in batches] == [3, 3]
    with pytest.raises(CalibrationDataError, match="fixed batch of 8"):
        read_calibration_data(tmp_path, input_size=(1, 8, 8), layout="NCHW", normalization=None, batch=8)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "holds no .npy arrays or images"),
        (np.zeros((2, 3, 28, 28), np.float32), r"bad\.npy.*shape \(3, 32, 32\).*got \(2, 3, 28, 28\)"),
        (np.array(["a", "b"]), "numeric array"),
    ],
)
def test_calibration_data_errors(tmp_path, content, message):
    if content is not None:
        np.save(tmp_path / "bad.npy", content)
    with pytest.raises(CalibrationDataError, match=message):
        read_calibration_data(
            tmp_path, input_size=(3, 32, 32), layout="NCHW", normalization={"mean": CIFAR_MEAN, "std": CIFAR_STD},
            batch=None,
        )  # fmt: skip


def test_calibration_data_must_be_a_directory(tmp_path):
    with pytest.raises(CalibrationDataError, match="is not a directory"):
        read_calibration_data(tmp_path / "nope", input_size=(1, 8, 8), layout="NCHW", normalization=None, batch=None)


def test_verify_reports_disagreement(mlp, tmp_path):
    net, ckpt = mlp
    report = export_onnx(ckpt, tmp_path / "m.onnx", exporter="torchscript", provider="cpu")

    def shifted(x):  # a "model" whose classes are rolled by one: top-1 never agrees
        with torch.no_grad():
            return np.roll(net(torch.from_numpy(x)).numpy(), 1, axis=1)

    bad = verify(report.output, shifted, (1, 8, 8), precision="int8-dynamic", batch_sizes=(8,), provider="cpu")
    assert not bad.passed and bad.top1_agreement == 0.0 and bad.criterion == "top1_agreement >= 0.9"
    fp32 = verify(report.output, shifted, (1, 8, 8), batch_sizes=(8,), atol=1e-4, provider="cpu")
    assert not fp32.passed and fp32.max_abs_diff > 1e-4 and "FAILED" in fp32.describe()
    assert verify(report.output, shifted, (1, 8, 8), batch_sizes=(8,), precision="fp16", min_top1=0.0).passed
