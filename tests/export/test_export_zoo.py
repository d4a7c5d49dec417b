"""Every architecture of the model zoo exports to ONNX and matches PyTorch in ONNX Runtime.

The bulk CIFAR-100 test uses the TorchScript exporter (about 20x faster here); the
``torch.export``-based exporter (the default) runs on a sample that covers each kind of
operation in the zoo (residual blocks, channel shuffle and split, depthwise convolutions).
"""

from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch

from logit_standardization.export import export_onnx, read_metadata
from logit_standardization.training.checkpoint import student_payload
from logit_standardization.training.models import DATASET_INFO, create_model, list_models

CIFAR = list_models("cifar100")
DYNAMO_SAMPLE = ["resnet8x4", "ShuffleV2", "MobileNetV2"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _like_trained_batchnorm(model: torch.nn.Module, input_size, batch: int) -> None:
    """Random BN affine parameters and running statistics measured on random inputs.

    With the initial statistics (mean 0, variance 1) the activations of deep untrained
    networks grow without bound in eval mode; measured statistics keep the logits at the
    scale of a trained network's, and the exported graph must fold non-trivial BN.
    """
    g = torch.Generator().manual_seed(0)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in bns:
            m.weight.uniform_(0.5, 1.5, generator=g)
            m.bias.uniform_(-0.2, 0.2, generator=g)
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration pass
        model.train()
        model(torch.randn(batch, *input_size, generator=g))
    model.eval()


def _export(tmp_path, arch, dataset, exporter, sizes):
    torch.manual_seed(0)
    net = create_model(arch, dataset=dataset)
    info = DATASET_INFO[dataset]
    _like_trained_batchnorm(net, info.input_size, batch=8 if dataset == "cifar100" else 2)
    ckpt = tmp_path / f"{arch}.pt"
    n_cls = info.num_classes
    torch.save(student_payload(net, arch=arch, dataset=dataset, num_classes=n_cls), ckpt)
    report = export_onnx(ckpt, exporter=exporter, provider="cpu", verify_batch_sizes=sizes)
    return net, report


def _check_independently(net, report, batch):
    """Run the file as a user would, on a batch size the verification did not use."""
    sess = ort.InferenceSession(str(report.output), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(123).standard_normal((batch, *report.input_size)).astype(np.float32)
    got = sess.run(["logits"], {"input": x})[0]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("arch", CIFAR)
def test_every_cifar_architecture_exports_and_verifies(tmp_path, arch):
    net, report = _export(tmp_path, arch, "cifar100", "torchscript", sizes=(1, 2))
    assert report.verified
    assert report.exporter == "torchscript" and report.precision == "fp32"
    (check,) = report.verifications
    assert check.batch_sizes == (1, 2) and check.max_abs_diff <= 1e-4 and check.top1_agreement == 1.0
    _check_independently(net, report, batch=2)
    meta = read_metadata(report.output)
    assert (meta["arch"], meta["dataset"], meta["num_classes"]) == (arch, "cifar100", 100)
    assert meta["input_size"] == [3, 32, 32]


@pytest.mark.parametrize("arch", DYNAMO_SAMPLE)
def test_default_exporter_on_a_sample_of_architectures(tmp_path, arch):
    net, report = _export(tmp_path, arch, "cifar100", "auto", sizes=(1, 3))
    assert report.exporter == "dynamo", report.notes  # no fallback needed for the zoo
    assert report.verified
    _check_independently(net, report, batch=5)


@pytest.mark.slow
@pytest.mark.parametrize("arch", list_models("imagenet"))
def test_imagenet_architectures_export_and_verify(tmp_path, arch):
    # Deep ImageNet networks carry float32 rounding errors of about 1e-4 in either runtime
    # (ResNet101 here: PyTorch float32 vs float64 differ by ~2e-4). The tolerance is therefore
    # three times PyTorch's own float32 error, and ONNX Runtime must be as close to the
    # float64 result as PyTorch float32 is.
    torch.manual_seed(0)
    net = create_model(arch, dataset="imagenet")
    _like_trained_batchnorm(net, (3, 224, 224), batch=2)
    x = np.random.default_rng(7).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        exact = copy.deepcopy(net).double()(torch.from_numpy(x).double()).numpy()
        torch_err = float(np.abs(net(torch.from_numpy(x)).numpy() - exact).max())
    tol = max(1e-4, 3 * torch_err)
    ckpt = tmp_path / f"{arch}.pt"
    torch.save(student_payload(net, arch=arch, dataset="imagenet", num_classes=1000), ckpt)
    report = export_onnx(ckpt, exporter="torchscript", provider="cpu", verify_batch_sizes=(1, 2), atol=tol)
    assert report.verified and report.verifications[0].max_abs_diff <= tol
    assert report.num_classes == 1000 and report.input_size == (3, 224, 224)
    sess = ort.InferenceSession(str(report.output), providers=["CPUExecutionProvider"])
    onnx_err = float(np.abs(sess.run(["logits"], {"input": x})[0] - exact).max())
    assert onnx_err <= tol
    assert read_metadata(report.output)["normalization"] == {
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
