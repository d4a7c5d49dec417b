"""``lskd-export``: the source is never overwritten, each line is printed once, metadata only for what is
known, and an input size the network cannot take is a setup error (exit 2)."""

from __future__ import annotations

import dataclasses
import os

import onnx
import pytest
import torch

from logit_standardization.export import SetupError, _api, export_onnx, read_metadata
from logit_standardization.export.cli import main
from logit_standardization.training.checkpoint import student_payload
from logit_standardization.training.models import create_model

FAST = ["--exporter", "torchscript", "--provider", "cpu", "--verify-batches", "1,3"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def student(tmp_path):
    torch.manual_seed(0)
    net = create_model("mlp_digits_small", dataset="digits").eval()
    path = tmp_path / "student.pt"
    torch.save(student_payload(net, arch="mlp_digits_small", dataset="digits", num_classes=10), path)
    return path


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("how", ["same_path", "relative_path", "symlink", "hard_link"])
def test_output_that_is_the_checkpoint_is_refused_even_with_force(student, capsys, monkeypatch, how):
    original = student.read_bytes()
    if how == "same_path":
        target = student
    elif how == "relative_path":
        monkeypatch.chdir(student.parent)
        target = "./student.pt"
    elif how == "symlink":
        target = student.parent / "link.onnx"
        target.symlink_to(student)
    else:
        target = student.parent / "hard.onnx"
        os.link(student, target)
    code, out, err = _cli(capsys, student, "--onnx", "-o", target, "--force", *FAST)
    assert code == 2 and out == ""
    assert err.startswith("lskd-export: error: output ") and err.count("\n") == 1
    assert "the checkpoint" in err and "even with --force" in err
    assert student.read_bytes() == original
    assert sorted(p.name for p in student.parent.iterdir() if p.name.startswith(".lskd-export-")) == []


def test_each_line_is_printed_once(student, capsys):
    code, out, err = _cli(capsys, student, "--onnx", *FAST)
    assert code == 0
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == len(set(lines)), lines
    assert sum("verify fp32" in line for line in lines) == 1 and "verify fp32" in out
    assert "loaded mlp_digits_small" in err and "exported with torchscript" in err


def test_each_line_is_printed_once_with_reduced_precision(student, capsys):
    code, out, err = _cli(capsys, student, "--onnx", "--fp16", *FAST)
    assert code == 0
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == len(set(lines)), lines
    assert sum(line.startswith("verify ") for line in lines) == 2


def test_exporter_fallback_note_is_printed_once(student, capsys, monkeypatch):
    from logit_standardization.export import _convert

    real = _convert.export_torch

    def with_a_note(*args, **kwargs):
        used, external, notes = real(*args, **{**kwargs, "exporter": "torchscript"})
        note = "note: the torch.export-based exporter failed (simulated); using the TorchScript exporter"
        if kwargs.get("log"):
            kwargs["log"](note)
        return used, external, [*notes, note]

    monkeypatch.setattr(_convert, "export_torch", with_a_note)
    code, out, err = _cli(capsys, student, "--onnx", "--provider", "cpu")
    assert code == 0 and (out + err).count("simulated") == 1


def test_no_normalization_entry_for_a_model_without_normalization(student, tmp_path, monkeypatch):
    real = _api.load_student
    monkeypatch.setattr(_api, "load_student", lambda *a, **k: dataclasses.replace(real(*a, **k), normalization=None))
    report = export_onnx(student, tmp_path / "plain.onnx", exporter="torchscript", provider="cpu")
    assert report.normalization is None
    meta = read_metadata(report.output)
    assert "normalization" not in meta and meta["input_size"] == [1, 8, 8]
    doc = onnx.load(str(report.output)).doc_string
    assert "no normalization recorded" in doc and "metadata 'normalization'" not in doc
    # a model with normalization keeps its entry
    monkeypatch.undo()
    report = export_onnx(student, tmp_path / "norm.onnx", exporter="torchscript", provider="cpu")
    assert read_metadata(report.output)["normalization"] == {"mean": [0.3053], "std": [0.3759]}


@pytest.mark.parametrize("size, words", [([1, 9, 9], "input size [1, 9, 9] does not fit 'mlp_digits_small'"),
                                         ([3, 8, 8], "input size [3, 8, 8] does not fit 'mlp_digits_small'")])
def test_input_size_that_does_not_fit_the_network(student, capsys, size, words):
    payload = torch.load(student, weights_only=True)
    payload["input_size"] = size
    torch.save(payload, student)
    code, out, err = _cli(capsys, student, "--onnx", *FAST)
    assert code == 2 and out == ""
    error = err.splitlines()[-1]
    assert error.startswith("lskd-export: error: ") and words in error and "'input_size'" in error
    assert "exporter failed" not in err and not (student.parent / "student.onnx").exists()
    with pytest.raises(SetupError) as info:
        export_onnx(student, exporter="torchscript", provider="cpu")
    assert info.value.exit_code == 2 and isinstance(info.value, ValueError)


def test_input_size_that_changes_the_logits_shape(tmp_path, capsys):
    net = create_model("resnet8x4", dataset="cifar100").eval()
    payload = student_payload(net, arch="resnet8x4", dataset="cifar100", num_classes=100)
    payload["input_size"] = [3, 64, 64]  # a fixed 8x8 average pool: 64x64 inputs give more features
    torch.save(payload, tmp_path / "s.pt")
    code, out, err = _cli(capsys, tmp_path / "s.pt", "--onnx", *FAST)
    assert code == 2 and "input size [3, 64, 64]" in err and "does not fit" in err
