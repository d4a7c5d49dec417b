"""Checkpoint layouts accepted by the exporter, and the properties of the written graph."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from logit_standardization.export import (
    CheckpointFormatError,
    ConversionError,
    StateDictMismatchError,
    export_onnx,
    load_student,
    read_metadata,
)
from logit_standardization.export import _convert
from logit_standardization.training.checkpoint import student_payload
from logit_standardization.training.models import create_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net(arch="resnet8", dataset="cifar100", num_classes=None, seed=0):
    torch.manual_seed(seed)
    return create_model(arch, dataset=dataset, num_classes=num_classes).eval()


def _run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": x})[0]


def _torch(net, x):
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def _x(batch, size=(3, 32, 32), seed=0):
    return np.random.default_rng(seed).standard_normal((batch, *size)).astype(np.float32)


@pytest.fixture(scope="module")
def exported_resnet8(tmp_path_factory):
    """student.pt of resnet8 exported with the default (torch.export-based) exporter."""
    d = tmp_path_factory.mktemp("student")
    net = _net()
    payload = student_payload(net, arch="resnet8", dataset="cifar100", num_classes=100)
    payload["normalization"] = {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}  # the file's values win
    torch.save(payload, d / "student.pt")
    report = export_onnx(d / "student.pt", provider="cpu")
    return net, report, d


def test_graph_has_named_dynamic_io_and_passes_the_checker(exported_resnet8):
    _, report, _ = exported_resnet8
    assert report.output.name == "student.onnx" and report.exporter == "dynamo"
    model = onnx.load(str(report.output))
    onnx.checker.check_model(model, full_check=True)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("input", "logits")
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert in_dims == ["batch", 3, 32, 32] and out_dims == ["batch", 100]
    assert report.opset == next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def test_single_self_contained_file(exported_resnet8):
    _, report, directory = exported_resnet8
    model = onnx.load(str(report.output), load_external_data=False)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    # nothing else is left next to it (no external data, no temporary files)
    assert sorted(p.name for p in directory.iterdir()) == ["student.onnx", "student.pt"]


def test_metadata_records_what_inference_needs(exported_resnet8):
    _, report, _ = exported_resnet8
    meta = read_metadata(report.output)
    assert meta["arch"] == "resnet8" and meta["dataset"] == "cifar100" and meta["num_classes"] == 100
    assert meta["input_size"] == [3, 32, 32] and meta["input_layout"] == "NCHW"
    assert meta["normalization"] == {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}
    assert meta["precision"] == "fp32" and meta["batch"] == "dynamic" and meta["exporter"] == "dynamo"
    raw = {p.key: p.value for p in onnx.load(str(report.output)).metadata_props}
    assert json.loads(raw["normalization"])["std"] == [0.4, 0.5, 0.6]  # plain JSON strings for any reader


@pytest.mark.parametrize("batch", [1, 5, 8])
def test_dynamic_batch_runs_any_size(exported_resnet8, batch):
    net, report, _ = exported_resnet8
    x = _x(batch, seed=batch)
    np.testing.assert_allclose(_run(report.output, x), _torch(net, x), rtol=0, atol=1e-4)


def test_fixed_batch(tmp_path):
    net = _net("mlp_digits_small", "digits")
    torch.save(student_payload(net, arch="mlp_digits_small", dataset="digits", num_classes=10), tmp_path / "s.pt")
    report = export_onnx(tmp_path / "s.pt", batch=4, exporter="torchscript", provider="cpu")
    assert report.batch_size == 4 and report.verifications[0].batch_sizes == (4, 4, 4)
    dims = [d.dim_value for d in onnx.load(str(report.output)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [4, 1, 8, 8]
    assert read_metadata(report.output)["batch"] == 4
    x = _x(4, (1, 8, 8))
    np.testing.assert_allclose(_run(report.output, x), _torch(net, x), rtol=0, atol=1e-5)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        _run(report.output, _x(2, (1, 8, 8)))


@pytest.mark.parametrize("kind", ["best", "last"])
def test_training_checkpoints_best_and_last(tmp_path, kind):
    net = _net("mlp_digits_small", "digits", seed=1)
    payload = student_payload(net, arch="mlp_digits_small", dataset="digits", num_classes=10)
    ckpt = {"kind": kind, "epoch": 3, "top1": 12.5, "top5": 50.0, "student": payload}
    if kind == "last":
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        net(torch.randn(2, 1, 8, 8)).sum().backward()
        opt.step()
        ckpt.update(optimizer=opt.state_dict(), config={"schedule": {"epochs": 5}}, method_state={})
        payload["state_dict"] = {k: v.clone() for k, v in net.state_dict().items()}
    torch.save(ckpt, tmp_path / f"{kind}.pt")
    report = export_onnx(tmp_path / f"{kind}.pt", exporter="torchscript", provider="cpu")
    assert report.source_format == f"{kind}.pt training checkpoint" and report.verified
    x = _x(3, (1, 8, 8))
    np.testing.assert_allclose(_run(report.output, x), _torch(net, x), rtol=0, atol=1e-5)


def test_reference_zoo_file_needs_arch(tmp_path):
    net = _net("resnet8", seed=2)
    state = {"module." + k: v for k, v in net.state_dict().items()}  # saved from DataParallel
    torch.save({"model": state, "epoch": 240, "best_acc": 0.7}, tmp_path / "ckpt_epoch_240.pth")
    with pytest.raises(CheckpointFormatError, match=r"(?s)--arch.*resnet8x4"):
        export_onnx(tmp_path / "ckpt_epoch_240.pth", provider="cpu")
    report = export_onnx(
        tmp_path / "ckpt_epoch_240.pth", arch="resnet8", exporter="torchscript", provider="cpu", verify_batch_sizes=(2,)
    )
    assert report.source_format == "reference-zoo file {'model': state_dict}"
    assert report.dataset == "cifar100" and report.verified
    x = _x(2)
    np.testing.assert_allclose(_run(report.output, x), _torch(net, x), rtol=0, atol=1e-4)


def test_state_dict_nested_under_a_prefix(tmp_path):
    student, teacher = _net("mlp_digits_small", "digits"), _net("mlp_digits", "digits")
    state = {f"student.{k}": v for k, v in student.state_dict().items()}
    state.update({f"teacher.{k}": v for k, v in teacher.state_dict().items()})
    torch.save(state, tmp_path / "distiller.pt")
    loaded = load_student(tmp_path / "distiller.pt", arch="mlp_digits_small")
    assert any("'student.'" in note for note in loaded.notes)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), student(x))


def test_dataset_inferred_from_the_weights_for_shared_names(tmp_path):
    net = _net("ResNet18", "imagenet")
    torch.save(net.state_dict(), tmp_path / "r18.pt")
    loaded = load_student(tmp_path / "r18.pt", arch="ResNet18")
    assert loaded.dataset == "imagenet" and loaded.input_size == (3, 224, 224)
    assert any("inferred" in note for note in loaded.notes)
    with pytest.raises(StateDictMismatchError, match="conv1.weight"):
        load_student(tmp_path / "r18.pt", arch="ResNet18", dataset="cifar100")


def test_num_classes_override(tmp_path):
    net = _net("resnet8", num_classes=10)
    torch.save(net.state_dict(), tmp_path / "r8.pt")
    with pytest.raises(StateDictMismatchError, match=r"fc.weight.*\(10, 64\).*\(100, 64\).*--num-classes"):
        load_student(tmp_path / "r8.pt", arch="resnet8")
    report = export_onnx(
        tmp_path / "r8.pt", arch="resnet8", num_classes=10, exporter="torchscript", provider="cpu",
        verify_batch_sizes=(2,),
    )  # fmt: skip
    assert report.num_classes == 10 and read_metadata(report.output)["num_classes"] == 10
    assert _run(report.output, _x(2)).shape == (2, 10)


def test_report_serializes(exported_resnet8):
    _, report, _ = exported_resnet8
    data = json.loads(json.dumps(report.to_dict()))
    assert data["verified"] is True and data["verifications"][0]["precision"] == "fp32"
    assert data["verifications"][0]["max_abs_diff"] <= 1e-4
    assert "max|diff|" in report.summary()


class _DataDependent(torch.nn.Module):
    """Python control flow on tensor values: torch.export cannot capture it, tracing can."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


def test_exporter_falls_back_with_a_one_line_note(tmp_path):
    lines = []
    used, external, notes = _convert.export_torch(
        _DataDependent().eval(), (4,), tmp_path / "m.onnx", opset=None, batch=None, exporter="auto", log=lines.append
    )
    assert used == "torchscript" and not external
    assert len(lines) == 1 and "\n" not in lines[0] and lines[0].startswith("note:") and "TorchScript" in lines[0]
    assert notes == lines
    assert onnx.load(str(tmp_path / "m.onnx")).graph.input[0].name == "input"


def test_exporter_dynamo_only_raises(tmp_path):
    with pytest.raises(ConversionError, match="torch.export-based ONNX exporter failed"):
        _convert.export_torch(_DataDependent().eval(), (4,), tmp_path / "m.onnx", opset=None, batch=None, exporter="dynamo")
    assert ConversionError.exit_code == 11


def test_opset_is_honoured(tmp_path):
    net = _net("mlp_digits_small", "digits")
    torch.save(student_payload(net, arch="mlp_digits_small", dataset="digits", num_classes=10), tmp_path / "s.pt")
    report = export_onnx(tmp_path / "s.pt", opset=17, exporter="torchscript", provider="cpu")
    assert report.opset == 17 and report.verified


def test_weights_beyond_the_protobuf_limit_go_to_a_side_file(tmp_path, monkeypatch):
    """Models over 2 GiB: simulated by lowering the limit, the graph references <name>.data."""
    monkeypatch.setattr(_convert, "_SINGLE_FILE_LIMIT", 0)
    net = _net("mlp_digits_small", "digits")
    torch.save(student_payload(net, arch="mlp_digits_small", dataset="digits", num_classes=10), tmp_path / "s.pt")
    report = export_onnx(tmp_path / "s.pt", tmp_path / "out" / "big.onnx", provider="cpu")
    assert report.verified and any("2 GiB" in n for n in report.notes)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["big.onnx", "big.onnx.data"]
    locations = {
        e.value for t in onnx.load(str(report.output), load_external_data=False).graph.initializer
        for e in t.external_data if e.key == "location"
    }  # fmt: skip
    assert locations == {"big.onnx.data"}
    x = _x(2, (1, 8, 8))
    np.testing.assert_allclose(_run(report.output, x), _torch(net, x), rtol=0, atol=1e-5)
    with pytest.raises(ConversionError, match="over 2 GiB"):
        export_onnx(tmp_path / "s.pt", tmp_path / "h.onnx", fp16=True, exporter="torchscript", provider="cpu")
