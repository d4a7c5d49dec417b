"""``benchmarks/gpu_check.py --dry-run``: the GPU check's code paths on the CPU, at tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
CHECKS = ["fused_losses", "train_step_fp16", "train_step_bf16", "channels_last", "torch_compile", "onnxruntime",
          "benchmark"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "dry_run.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--output", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert out.exists(), f"no report (exit {proc.returncode})\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc, json.loads(out.read_text())


@pytest.mark.slow
def test_dry_run_passes_and_prints_the_table(dry_run):
    proc, report = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert report["mode"] == "dry-run" and report["passed"] is True
    assert list(report["checks"]) == CHECKS
    for name in CHECKS:
        assert name in proc.stdout
    assert report["environment"]["device"] == "cpu"


@pytest.mark.slow
def test_dry_run_report_holds_the_measurements(dry_run):
    checks = dry_run[1]["checks"]
    for name, entry in checks.items():
        assert entry["status"] in ("ok", "skipped"), (name, entry)
        if entry["status"] == "skipped":  # only torch.compile may be skipped, with the reason recorded
            assert name == "torch_compile" and "dry run" in entry["reason"], entry
    cases = checks["fused_losses"]["cases"]
    assert {(c["loss"], c["dtype"]) for c in cases} >= {("kd_loss", d) for d in ("float32", "float16", "bfloat16")}
    assert all(c["ok"] for c in cases)
    fp16, bf16 = checks["train_step_fp16"], checks["train_step_bf16"]
    assert fp16["grad_scaler"] is True and fp16["channels_last"] is True and fp16["grad_scale"][-1] > 0
    assert bf16["grad_scaler"] is False and bf16["logits_dtype"] == "torch.float32"
    assert checks["channels_last"]["first_loss_rel_diff"] < 1e-4
    ort = checks["onnxruntime"]
    assert ort["cpu_provider"]["verified"] is True and ort["cpu_provider"]["provider"] == "CPUExecutionProvider"
    assert "dry run" in ort["cuda_provider"]
    bench = checks["benchmark"]
    assert set(bench["ratio_vs_plain"]) == {"bf16 + channels_last"} and bench["ratio_vs_plain"]["bf16 + channels_last"] > 0
    assert "dry run" in bench["goal_met"]


def test_without_a_gpu_the_full_check_refuses_with_a_hint(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--output", str(tmp_path / "r.json")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--dry-run" in proc.stderr
