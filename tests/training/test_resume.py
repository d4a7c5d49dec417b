"""Fault tolerance with real processes: SIGKILL then --resume is bit-identical; SIGTERM saves and exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _train_helpers as H  # noqa: E402

EPOCHS = 4


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return H.random_teacher(tmp_path_factory.mktemp("teacher") / "teacher.pt", "mlp_digits", "digits")


def _args(out: Path, teacher: Path, *extra: str) -> list[str]:
    return ["demo/kd_ls", "--output", str(out), "--teacher", str(teacher), "--epochs", str(EPOCHS), "--seed", "7",
            "--quiet", "--device", "cpu", *extra]


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "logit_standardization.training", *args], env=H.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_epochs(proc: subprocess.Popen, run: Path, n: int, timeout: float = 120) -> None:
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"training ended early (rc {proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("training did not reach the expected epoch in time")


@pytest.fixture(scope="module")
def uninterrupted(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    result = H.lskd_train(*_args(out, teacher))
    assert result.returncode == 0, result.stderr
    return out


def test_sigkill_then_resume_gives_the_same_weights(teacher, uninterrupted, tmp_path):
    out = tmp_path / "run"
    proc = _start(_args(out, teacher))
    _wait_for_epochs(proc, out, 2)
    assert proc.poll() is None, "the run must still be training when it is killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = torch.load(out / "last.pt", weights_only=True)["epoch"]
    assert 1 <= done < EPOCHS and not (out / "summary.json").exists()

    result = H.lskd_train(*_args(out, teacher, "--resume"))
    assert result.returncode == 0, result.stderr
    assert f"resuming {out} at epoch {done + 1}" in result.stdout
    full, resumed = H.student_state(uninterrupted), H.student_state(out)
    diff = {k: float((full[k] - resumed[k]).abs().max()) for k in full}
    assert all(torch.equal(full[k], resumed[k]) for k in full), (done, diff)
    assert H.without_timing(H.read_metrics(out)) == H.without_timing(H.read_metrics(uninterrupted)), done
    best_full = torch.load(uninterrupted / "best.pt", weights_only=True)
    best_resumed = torch.load(out / "best.pt", weights_only=True)
    assert best_full["epoch"] == best_resumed["epoch"]
    assert all(torch.equal(best_full["student"]["state_dict"][k], v)
               for k, v in best_resumed["student"]["state_dict"].items())


def test_sigterm_saves_inside_the_epoch_and_resume_finishes(teacher, tmp_path):
    out = tmp_path / "run"
    proc = _start(_args(out, teacher))
    _wait_for_epochs(proc, out, 1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM received: saved" in err and "--resume" in err and "Traceback" not in err
    last = torch.load(out / "last.pt", weights_only=True)
    partial = last["partial"]
    if partial is not None:  # stopped inside an epoch: the position is recorded
        assert partial["epoch"] == last["epoch"] + 1 and partial["batches_done"] >= 1

    result = H.lskd_train(*_args(out, teacher, "--resume"))
    assert result.returncode == 0, result.stderr
    records = H.read_metrics(out)
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["last"]["epoch"] == EPOCHS
    if partial is not None:
        # the interrupted epoch's training statistics cover all 1437 samples: the counts
        # before the interruption were saved and continued
        record = records[partial["epoch"] - 1]
        correct = record["train_top1"] * 1437 / 100
        assert correct == pytest.approx(round(correct), abs=1e-6) and record["images_per_s"] > 0


# ------------------------------------------------------------------ a last.pt is checked before it is used
import errno  # noqa: E402
import hashlib  # noqa: E402
import shutil  # noqa: E402

from logit_standardization.training import checkpoint as ckpt  # noqa: E402
from logit_standardization.training.cli import main  # noqa: E402

SMALL = 2  # epochs of the in-process runs (demo/teacher: a few seconds on one CPU thread)


def _small_args(out: Path, *extra: str) -> list[str]:
    return ["demo/teacher", "--output", str(out), "--epochs", str(SMALL), "--seed", "3", "--quiet", "--device", "cpu",
            "--no-plots", *extra]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(_small_args(out)) == 0
    return out


@pytest.fixture
def run_copy(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def _edit_last(run: Path, edit) -> None:
    last = torch.load(run / "last.pt", weights_only=True)
    edit(last)
    ckpt.save_atomic(last, run / "last.pt")  # a valid checksum: only the field check can refuse it


def _resume_refused(run: Path, capsys, *extra: str) -> str:
    before = (run / "metrics.jsonl").read_text()
    assert main(_small_args(run, "--resume", *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("lskd-train: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert (run / "metrics.jsonl").read_text() == before  # nothing was trained or rewritten
    return err


def _set(key, value):
    return lambda ck: ck.__setitem__(key, value)


def _delete(key):
    return lambda ck: ck.pop(key)


def _first_weight(ck):
    return next(k for k, v in ck["student"]["state_dict"].items() if v.dim() == 2)


BAD_FIELDS = {
    "epoch_far_ahead": (_set("epoch", 999), "'epoch' is 999, outside [0, 2]"),
    "epoch_negative": (_set("epoch", -3), "'epoch' is -3, outside [0, 2]"),
    "epoch_not_int": (_set("epoch", "1"), "'epoch' is '1', not an int"),
    "epoch_bool": (_set("epoch", True), "'epoch' is True, not an int"),
    "history_string": (_set("history", "oops"), "'history' is a str, not a list"),
    "history_not_dicts": (_set("history", [1, 2]), "'history' record 0 is a int, not a dict"),
    "history_short": (lambda ck: ck["history"].pop(), "'history' holds 1 records for 2 finished epochs"),
    "history_no_accuracy": (lambda ck: ck["history"][1].pop("test_top1"), "'history' record 1 has no 'test_top1'"),
    "kind_missing": (_delete("kind"), "'kind' is missing"),
    "kind_best": (_set("kind", "best"), "'kind' is 'best', expected 'last'"),
    "optimizer_missing": (_delete("optimizer"), "'optimizer' is missing"),
    "student_missing": (_delete("student"), "'student' is missing"),
    "config_missing": (_delete("config"), "'config' is missing"),
    "history_missing": (_delete("history"), "'history' is missing"),
    "weight_shape": (lambda ck: ck["student"]["state_dict"].__setitem__(_first_weight(ck), torch.zeros(3, 3)),
                     "'student.state_dict' does not fit the model: 1 shape mismatches"),
    "weight_missing": (lambda ck: ck["student"]["state_dict"].pop(_first_weight(ck)),
                       "'student.state_dict' does not fit the model: 1 missing keys"),
    "student_arch": (lambda ck: ck["student"].__setitem__("arch", "mlp_digits_small"),
                     "'student.arch' is 'mlp_digits_small'"),
    "method_extra": (lambda ck: ck["method"].__setitem__("log_t", torch.zeros(1)), "'method' does not fit"),
    "momentum_shape": (lambda ck: ck["optimizer"]["state"][0].__setitem__("momentum_buffer", torch.zeros(2)),
                       "'optimizer.state[0].momentum_buffer' has shape (2,)"),
    "param_group_size": (lambda ck: ck["optimizer"]["param_groups"][0]["params"].pop(),
                         "'optimizer.param_groups[0]' has"),
    "optimizer_groups": (lambda ck: ck["optimizer"].__setitem__("param_groups", []), "'optimizer.param_groups' has 0"),
    "optimizer_lr": (lambda ck: ck["optimizer"]["param_groups"][0].__setitem__("lr", float("nan")),
                     "'optimizer.param_groups[0].lr' is nan"),
    "scaler_list": (_set("scaler", []), "'scaler' is a list"),
    "best_string": (_set("best", "x"), "'best' is not a dict"),
    "best_epoch": (lambda ck: ck["best"].__setitem__("epoch", 7), "'best.epoch' is 7, outside [0, 2]"),
    "partial_wrong_epoch": (_set("partial", {"epoch": 9, "batches_done": 1, "terms": [], "sums": [], "counts": [0, 0, 0],
                                             "seconds": {"train": 0.0, "data": 0.0}, "world_size": 1, "batch": 64}),
                            "'partial' is inside epoch 9, expected 3"),
    "config_string": (_set("config", "x"), "'config' is a str"),
}


@pytest.mark.parametrize("case", sorted(BAD_FIELDS))
def test_resume_refuses_a_bad_field_with_exit_2_naming_it(run_copy, capsys, case):
    edit, message = BAD_FIELDS[case]
    _edit_last(run_copy, edit)
    err = _resume_refused(run_copy, capsys)
    assert message in err and "last.pt" in err, err


def test_resume_refuses_a_config_the_command_changes(run_copy, capsys):
    err = _resume_refused(run_copy, capsys, "--set", "optimizer.lr=0.5")
    assert "cannot resume" in err and "optimizer.lr: 0.05 -> 0.5" in err


def test_resume_of_a_valid_checkpoint_still_continues(run_copy, capsys):
    assert main(_small_args(run_copy, "--resume", "--epochs", str(SMALL + 1))) == 0
    out = capsys.readouterr().out
    assert f"resuming {run_copy} at epoch {SMALL + 1}" in out
    assert [r["epoch"] for r in H.read_metrics(run_copy)] == [1, 2, 3]
    assert ckpt.verify_checksum(run_copy / "last.pt") is True


def _flip_a_mantissa_bit(path: Path, tensor: torch.Tensor) -> None:
    data = bytearray(path.read_bytes())
    raw = tensor.contiguous().numpy().tobytes()[:64]
    at = data.find(raw)
    assert at >= 0 and data.find(raw, at + 1) < 0
    data[at] ^= 0x01  # lowest bit of the first float32's mantissa (little-endian)
    path.write_bytes(bytes(data))


def test_every_checkpoint_has_a_sha256_file(finished):
    for name in ("last.pt", "best.pt", "student.pt", "student.safetensors"):
        digest, fname = (finished / f"{name}.sha256").read_text().split()
        assert fname == name and digest == hashlib.sha256((finished / name).read_bytes()).hexdigest()


def test_a_flipped_bit_in_a_weight_is_refused(run_copy, capsys):
    last = torch.load(run_copy / "last.pt", weights_only=True)
    key = _first_weight(last)
    _flip_a_mantissa_bit(run_copy / "last.pt", last["student"]["state_dict"][key])
    # without the checksum the damage would load silently: the same keys, one weight changed
    silently = torch.load(run_copy / "last.pt", weights_only=True)["student"]["state_dict"][key]
    assert not torch.equal(silently, last["student"]["state_dict"][key])
    assert (silently - last["student"]["state_dict"][key]).abs().max() < 1e-6
    err = _resume_refused(run_copy, capsys)
    assert f"'{run_copy / 'last.pt'}' is corrupt" in err and "last.pt.sha256" in err


def test_a_corrupt_teacher_file_is_refused_too(tmp_path):
    teacher = H.random_teacher(tmp_path / "teacher.pt", "mlp_digits", "digits")
    weights = torch.load(teacher, weights_only=True)["state_dict"]
    _flip_a_mantissa_bit(teacher, next(v for v in weights.values() if v.dim() == 2))
    with pytest.raises(ckpt.CheckpointError, match="teacher.pt' is corrupt"):
        ckpt.load_checkpoint(teacher)
    (tmp_path / "teacher.pt.sha256").unlink()  # a file without a checksum file loads unverified
    assert ckpt.load_checkpoint(teacher)["arch"] == "mlp_digits"


def test_a_malformed_checksum_file_is_refused(run_copy, capsys):
    (run_copy / "last.pt.sha256").write_text("not a digest\n")
    err = _resume_refused(run_copy, capsys)
    assert "last.pt.sha256" in err and "holds no SHA-256" in err


def test_stale_temporary_files_are_removed_at_start(run_copy, capsys):
    stale = [".last.pt.k2j3abcd.tmp", ".best.pt.zz91.tmp", ".student.pt.x.tmp", ".last.pt.sha256.q1.tmp",
             ".student.safetensors.y7.tmp", ".student.safetensors.sha256.w2.tmp"]
    for name in stale:
        (run_copy / name).write_bytes(b"PK\x03\x04 half a file")
    (run_copy / "notes.tmp").write_text("not ours")
    assert main(_small_args(run_copy, "--resume", "--epochs", str(SMALL + 1))) == 0
    out = capsys.readouterr().out
    assert all(not (run_copy / name).exists() for name in stale)
    assert (run_copy / "notes.tmp").exists() and out.count("removed the stale temporary file") == len(stale)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EACCES])
def test_a_failed_checkpoint_write_keeps_the_previous_file_and_exits_2(tmp_path, capsys, monkeypatch, code):
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("kind") == "last" and obj.get("epoch") == 2:
            f.write(b"PK\x03\x04 the first bytes")
            raise OSError(code, os.strerror(code))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    out = tmp_path / "run"
    assert main(_small_args(out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot write checkpoint '{out / 'last.pt'}': {os.strerror(code)} ({errno.errorcode[code]})" in err
    assert "previous file" in err
    monkeypatch.undo()
    kept = ckpt.load_checkpoint(out / "last.pt")  # verified against its own checksum file
    assert kept["epoch"] == 1 and ckpt.verify_checksum(out / "last.pt")
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    # the kept epoch-1 state resumes
    assert main(_small_args(out, "--resume")) == 0
    assert [r["epoch"] for r in H.read_metrics(out)] == [1, 2]
