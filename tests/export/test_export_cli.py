"""``lskd-export``: success output, every error case with its message and distinct exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from logit_standardization.export import EXIT_CODES, ExportError
from logit_standardization.export import _api
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


def test_exit_codes_are_distinct():
    codes = list(EXIT_CODES.values())
    assert len(set(codes)) == len(codes) and not {0, 1, 2} & set(codes)


def test_success_prints_the_report(student, capsys):
    code, out, err = _cli(capsys, student, "--onnx", *FAST)
    assert code == 0
    assert (student.parent / "student.onnx").is_file()
    assert "wrote" in out and "verify fp32" in out and "ok" in out and "CPUExecutionProvider" in out
    assert "loaded mlp_digits_small" in err  # progress goes to stderr


def test_console_script_runs_in_a_fresh_process(student):
    """The installed entry point, default exporter, JSON report."""
    exe = Path(sys.executable).with_name("lskd-export")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "logit_standardization.export.cli"]
    out = student.parent / "cli.onnx"
    proc = subprocess.run(
        [*cmd, str(student), "--onnx", "-o", str(out), "--json", "--quiet", "--provider", "cpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    import json

    report = json.loads(proc.stdout)
    assert report["verified"] is True and report["exporter"] == "dynamo" and report["output"] == str(out)
    assert proc.stderr.strip() == ""  # --quiet
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.run(["logits"], {"input": np.zeros((2, 1, 8, 8), np.float32)})[0].shape == (2, 10)


def test_benchmark_table(student, capsys):
    code, out, _ = _cli(capsys, student, "--onnx", *FAST, "--benchmark")
    assert code == 0
    assert "| batch | PyTorch eager ms | ONNX Runtime (CPUExecutionProvider) ms | speed-up |" in out
    assert "\n| 1 |" in out and "\n| 64 |" in out


def test_missing_checkpoint(tmp_path, capsys):
    code, _, err = _cli(capsys, tmp_path / "nope.pt", "--onnx")
    assert code == EXIT_CODES["CheckpointNotFoundError"] == 3
    assert "nope.pt" in err and "does not exist" in err


def test_checkpoint_is_a_directory(tmp_path, capsys):
    code, _, err = _cli(capsys, tmp_path, "--onnx")
    assert code == 3 and "is not a file" in err


def test_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"definitely not a checkpoint")
    code, _, err = _cli(capsys, bad, "--onnx")
    assert code == EXIT_CODES["CheckpointFormatError"] == 5
    assert "not a PyTorch checkpoint" in err


def test_state_dict_without_arch(student, capsys):
    torch.save(torch.load(student, weights_only=True)["state_dict"], student.parent / "sd.pt")
    code, _, err = _cli(capsys, student.parent / "sd.pt", "--onnx")
    assert code == 5 and "pass --arch NAME" in err and "mlp_digits_small" in err


def test_unknown_architecture_lists_known_ones(student, capsys):
    code, _, err = _cli(capsys, student, "--onnx", "--arch", "resnet9000")
    assert code == EXIT_CODES["UnknownArchitectureError"] == 6
    assert "unknown architecture 'resnet9000'" in err
    for known in ("resnet8x4", "wrn_40_2", "ShuffleV2", "MobileNetV1", "mlp_digits"):
        assert known in err


def test_unknown_dataset(student, capsys):
    code, _, err = _cli(capsys, student, "--onnx", "--dataset", "mnist")
    assert code == 6 and "unknown dataset 'mnist'" in err and "cifar100" in err


def test_state_dict_mismatch_names_the_keys(student, tmp_path, capsys):
    state = dict(torch.load(student, weights_only=True)["state_dict"])
    state["head.extra"] = state.pop("net.3.bias")
    torch.save(state, tmp_path / "broken.pt")
    code, _, err = _cli(capsys, tmp_path / "broken.pt", "--onnx", "--arch", "mlp_digits_small")
    assert code == EXIT_CODES["StateDictMismatchError"] == 7
    assert "missing keys: net.3.bias" in err and "unexpected keys: head.extra" in err


def test_weights_of_another_architecture(student, capsys):
    code, _, err = _cli(capsys, student, "--onnx", "--arch", "mlp_digits")
    assert code == 7 and "shape mismatch" in err and "'mlp_digits'" in err


def test_existing_output_needs_force(student, capsys):
    out = student.parent / "student.onnx"
    out.write_text("keep me")
    code, _, err = _cli(capsys, student, "--onnx", *FAST)
    assert code == EXIT_CODES["OutputExistsError"] == 8 and "--force" in err
    assert out.read_text() == "keep me"
    code, _, _ = _cli(capsys, student, "--onnx", *FAST, "--force")
    assert code == 0 and out.read_bytes()[:1] != b"k"


@pytest.mark.parametrize("where", ["parent_is_a_file", "output_is_a_directory"])
def test_unwritable_output(student, capsys, where):
    if where == "parent_is_a_file":
        (student.parent / "afile").write_text("x")
        target = student.parent / "afile" / "model.onnx"
    else:
        target = student.parent / "adir"
        target.mkdir()
    code, _, err = _cli(capsys, student, "--onnx", "-o", target, "--force")
    assert code == EXIT_CODES["OutputNotWritableError"] == 9
    assert str(target) in err


def test_verification_failure_prints_the_numbers(student, capsys, monkeypatch):
    real = _api.reference_function

    def off_by_a_bit(st):  # the source model, with its logits shifted by 1e-3
        fn, name = real(st)
        return (lambda x: fn(x) + 1e-3), name

    monkeypatch.setattr(_api, "reference_function", off_by_a_bit)
    code, out, err = _cli(capsys, student, "--onnx", *FAST)
    assert code == EXIT_CODES["VerificationError"] == 10
    # the report (stdout) holds the numbers; the error (stderr) is one line pointing at them
    assert "FAILED max|diff| 0.001" in out and "criterion max_abs_diff <= 0.0001" in out
    error = [line for line in err.splitlines() if line.startswith("lskd-export: error:")]
    assert len(error) == 1 and "verification failed (fp32" in error[0] and "does not match its source model" in error[0]
    assert "FAILED" not in err  # printed once, in the report
    # a looser tolerance accepts the same difference
    code, _, _ = _cli(capsys, student, "--onnx", *FAST, "--force", "--atol", "2e-3")
    assert code == 0


def test_cuda_provider(student, capsys):
    code, out, err = _cli(capsys, student, "--onnx", *FAST[:2], "--provider", "cuda")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert code == 0 and "CUDAExecutionProvider" in out
    else:
        assert code == EXIT_CODES["ProviderUnavailableError"] == 12
        assert "onnxruntime-gpu" in err and not (student.parent / "student.onnx").exists()


def test_auto_provider_says_which_ran(student, capsys):
    code, out, _ = _cli(capsys, student, "--onnx", *FAST[:2], "--provider", "auto")
    expected = "CUDAExecutionProvider" if "CUDAExecutionProvider" in ort.get_available_providers() else "CPU"
    assert code == 0 and expected in out


def test_bad_calibration_data(student, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = _cli(capsys, student, "--onnx", "--int8", "--calibration-data", tmp_path / "empty", *FAST)
    assert code == EXIT_CODES["CalibrationDataError"] == 13 and "holds no .npy arrays or images" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--fp16", "--int8"], "not allowed with argument"),
        (["--calibration-data", "x"], "--calibration-data needs --int8"),
        (["--fp16-io"], "--fp16-io needs --fp16"),
        (["--batch", "0"], "expected 'dynamic' or a positive integer"),
        (["--verify-batches", "1,x"], "comma-separated positive integers"),
        (["--provider", "tpu"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(student, capsys, extra, message):
    with pytest.raises(SystemExit) as info:
        main([str(student), "--onnx", *extra])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_library_raises_typed_errors(student):
    with pytest.raises(ExportError) as info:
        _api.export_onnx(student.parent / "missing.pt")
    assert isinstance(info.value, FileNotFoundError) and info.value.exit_code == 3
    with pytest.raises(ValueError, match="'fp16' and 'int8' cannot both be set"):
        _api.export_onnx(student, fp16=True, int8=True)
