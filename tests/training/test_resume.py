"""Fault tolerance with real processes: SIGKILL then --resume is bit-identical; SIGTERM saves and exits."""

from __future__ import annotations

import json
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
