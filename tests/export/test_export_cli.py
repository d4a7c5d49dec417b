"""``lskd-export``: success output, every error case with its message and exit code; the source is never
overwritten, each line is printed once, metadata only for what is known."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from logit_standardization.export import EXIT_CODES, ExportError, SetupError, export_onnx, read_metadata
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


# ------------------------------------------------------------------------------ safetensors
@pytest.fixture
def student_st(tmp_path):
    from logit_standardization.training.checkpoint import save_safetensors

    torch.manual_seed(0)
    net = create_model("mlp_digits_small", dataset="digits").eval()
    payload = student_payload(net, arch="mlp_digits_small", dataset="digits", num_classes=10)
    return save_safetensors(payload, tmp_path / "student.safetensors"), net


def test_safetensors_student_exports_from_its_metadata(student_st, capsys):
    from logit_standardization.export import read_metadata

    path, net = student_st
    code, out, err = _cli(capsys, path, "--onnx", *FAST)
    assert code == 0 and "loaded mlp_digits_small (digits) from student.safetensors" in err
    onnx_path = path.with_name("student.onnx")
    meta = read_metadata(onnx_path)
    assert (meta["arch"], meta["dataset"], meta["num_classes"], meta["input_size"]) == (
        "mlp_digits_small", "digits", 10, [1, 8, 8])
    assert meta["source_format"] == "student.safetensors" and meta["normalization"]["mean"] == [0.3053]
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(["logits"], {"input": x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, net(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)


def test_plain_safetensors_needs_arch(student_st, tmp_path, capsys):
    from safetensors.torch import save_file

    _, net = student_st
    plain = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(plain))
    code, _, err = _cli(capsys, plain, "--onnx", *FAST)
    assert code == 5 and "plain safetensors state dict" in err and "pass --arch NAME" in err
    code, _, _ = _cli(capsys, plain, "--onnx", "--arch", "mlp_digits_small", "-o", tmp_path / "p.onnx", *FAST)
    assert code == 0


def _one_line(err: str) -> str:
    assert err.startswith("lskd-export: error: ") and err.count("\n") == 1, err
    return err


def test_flipped_byte_in_safetensors_is_refused(student_st, capsys):
    path, _ = student_st
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    code, _, err = _cli(capsys, path, "--onnx", *FAST)
    assert code == EXIT_CODES["CheckpointFormatError"] == 5
    assert "is corrupt: its SHA-256" in _one_line(err) and "student.safetensors.sha256" in err
    assert not path.with_name("student.onnx").exists()


def test_truncated_safetensors_header_is_refused(student_st, capsys):
    path, _ = student_st
    data = path.read_bytes()
    path.write_bytes(data[:20])
    path.with_name(path.name + ".sha256").unlink()  # unverified: safetensors' own check must refuse it
    code, _, err = _cli(capsys, path, "--onnx", *FAST)
    assert code == 5 and "SafetensorError: Error while deserializing header" in _one_line(err)
    assert "not a safetensors file" in err


def test_safetensors_metadata_missing_a_field_is_refused(student_st, capsys):
    from safetensors import safe_open
    from safetensors.torch import save_file

    path, _ = student_st
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    del meta["input_size"]
    save_file(tensors, str(path), metadata=meta)
    path.with_name(path.name + ".sha256").unlink()
    code, _, err = _cli(capsys, path, "--onnx", *FAST)
    assert code == 5 and "safetensors metadata field 'input_size' is missing" in _one_line(err)


def test_sha256_of_a_pt_student_is_checked_too(student, capsys):
    from logit_standardization.training.checkpoint import file_sha256

    student.with_name("student.pt.sha256").write_text(f"{'0' * 64}  student.pt\n")
    code, _, err = _cli(capsys, student, "--onnx", *FAST)
    assert code == 5 and "is corrupt" in _one_line(err)
    student.with_name("student.pt.sha256").write_text(f"{file_sha256(student)}  student.pt\n")
    code, _, _ = _cli(capsys, student, "--onnx", *FAST)
    assert code == 0


# ----------------------------------------------------------------------------- the source is never the output; lines once; metadata
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
