"""Untrusted files: a checkpoint that would run code when unpickled is refused, and nothing runs."""

from __future__ import annotations

import io
import pickle
import re
import subprocess
import zipfile
import sys

import pytest
import torch

from logit_standardization.export import UnsafeCheckpointError, export_onnx, safe_torch_load
from logit_standardization.export.cli import main


class _CreatesFile:
    """Unpickling this object calls ``open(path, "w")``: a harmless stand-in for any code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _malicious(tmp_path, layout):
    marker = tmp_path / f"pwned-{layout}"
    payload = {"arch": "resnet8", "dataset": "cifar100", "state_dict": _CreatesFile(marker)}
    path = tmp_path / f"evil-{layout}.pt"
    if layout == "torch-zip":
        torch.save(payload, path)
    else:  # a bare pickle, as older tools write
        path.write_bytes(pickle.dumps(payload, protocol=2))
    return path, marker


@pytest.mark.parametrize("layout", ["torch-zip", "bare-pickle"])
def test_payload_is_really_malicious(tmp_path, layout):
    """Control: the ordinary unpickler does run the payload (so the tests below could fail)."""
    path, marker = _malicious(tmp_path, layout)
    data = path.read_bytes()
    if layout == "torch-zip":
        with zipfile.ZipFile(path) as archive:
            data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))

        class _Tolerant(pickle.Unpickler):  # tensors' persistent ids do not matter here
            def persistent_load(self, pid):
                return None

        _Tolerant(io.BytesIO(data)).load()
    else:
        pickle.loads(data)
    assert marker.exists()


@pytest.mark.parametrize("layout", ["torch-zip", "bare-pickle"])
def test_malicious_checkpoint_is_refused_by_the_library(tmp_path, layout):
    path, marker = _malicious(tmp_path, layout)
    with pytest.raises(UnsafeCheckpointError) as info:
        safe_torch_load(path)
    message = str(info.value)
    assert re.search(r"call '(io|builtins)\.open'", message)  # names what it would have run
    assert "arbitrary code" in message and "nothing from it was executed" in message
    with pytest.raises(UnsafeCheckpointError):
        export_onnx(path, provider="cpu")
    assert not marker.exists()
    assert not list(tmp_path.glob("*.onnx"))


@pytest.mark.parametrize("layout", ["torch-zip", "bare-pickle"])
def test_malicious_checkpoint_is_refused_by_the_cli(tmp_path, layout, capsys):
    path, marker = _malicious(tmp_path, layout)
    assert main([str(path), "--onnx"]) == UnsafeCheckpointError.exit_code == 4
    assert "refusing to load" in capsys.readouterr().err
    assert not marker.exists()


def test_malicious_checkpoint_in_a_fresh_process(tmp_path):
    path, marker = _malicious(tmp_path, "torch-zip")
    proc = subprocess.run(
        [sys.executable, "-m", "logit_standardization.export.cli", str(path), "--onnx"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 4 and re.search(r"'(io|builtins)\.open'", proc.stderr)
    assert not marker.exists()


def test_custom_class_is_refused(tmp_path):
    """Even a harmless object of an unknown class is not instantiated."""
    path = tmp_path / "obj.pt"
    torch.save({"state_dict": {}, "extra": _CreatesFile(tmp_path / "unused")}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"(io|builtins)\.open"):
        safe_torch_load(path)


def test_a_pickle_named_safetensors_is_not_unpickled(tmp_path, capsys):
    """The file name chooses the safetensors reader: a pickle under that name is unreadable, never run."""
    path, marker = _malicious(tmp_path, "bare-pickle")
    renamed = path.with_suffix(".safetensors")
    path.rename(renamed)
    assert main([str(renamed), "--onnx"]) == 5
    err = capsys.readouterr().err
    assert "not a safetensors file" in err and err.count("\n") == 1
    assert not marker.exists()


def test_the_training_loader_refuses_the_same_files(tmp_path):
    """lskd-train (--teacher) and lskd-plot read checkpoints through the same reader as lskd-export."""
    from logit_standardization.training.checkpoint import CheckpointError, read_checkpoint

    for layout in ("torch-zip", "bare-pickle"):
        path, marker = _malicious(tmp_path, layout)
        with pytest.raises(CheckpointError, match=r"refusing to load teacher checkpoint.*'(io|builtins)\.open'") as info:
            read_checkpoint(path, what="teacher checkpoint")
        assert info.value.kind == "unsafe" and "nothing from it was executed" in str(info.value)
        assert not marker.exists()
