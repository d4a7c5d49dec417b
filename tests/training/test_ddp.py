"""torchrun with two CPU processes (gloo) matches one process with the same global batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _train_helpers as H  # noqa: E402

# CTKD+LS: the learnable temperature must stay synchronised across the ranks. No augmentation
# and a training set of 22 full global batches, so that both runs see exactly the same batches;
# the digits MLPs have no BatchNorm, so the averaged DDP gradient equals the one-process one.
RECIPE = """\
extends: _base/demo
description: CTKD+LS on digits, DDP test
note: test recipe
teacher: {arch: mlp_digits}
student: {arch: mlp_digits_small}
method: {name: ctkd, standardize: true, ce_weight: 0.1, kd_weight: 9.0, lambda_loops: 2}
data: {augment: false, train_subset: 1408, batch_size: 64, test_batch_size: 60}
schedule: {epochs: 2}
"""


def test_two_processes_match_one_process(tmp_path):
    recipe = tmp_path / "ctkd_digits.yaml"
    recipe.write_text(RECIPE)
    teacher = H.random_teacher(tmp_path / "teacher.pt", "mlp_digits", "digits", seed=1)
    common = [str(recipe), "--teacher", str(teacher), "--quiet", "--device", "cpu", "--seed", "11"]
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "logit_standardization.training", *common, "--output", str(tmp_path / "ddp")],
        env=H.env(), capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = H.lskd_train(*common, "--output", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr

    # only rank 0 logs and writes
    assert ddp.stdout.count("epoch 1/2") == 1
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2

    a, b = H.read_metrics(tmp_path / "ddp"), H.read_metrics(tmp_path / "single")
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        for key in ("train_loss", "train_loss_ce", "train_loss_kd", "temperature", "test_loss"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-6), key
        for key in ("train_top1", "train_top5", "test_top1", "test_top5"):
            assert ra[key] == pytest.approx(rb[key], abs=0.6), key  # at most a borderline sample or two
    assert a[-1]["temperature"] != pytest.approx(15.6212, abs=1e-6)  # it was trained
    wa, wb = H.student_state(tmp_path / "ddp"), H.student_state(tmp_path / "single")
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6) for k in wa)
    ta = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)["method"]["loss.raw_temperature"]
    tb = torch.load(tmp_path / "single" / "last.pt", weights_only=True)["method"]["loss.raw_temperature"]
    assert torch.allclose(ta, tb, rtol=1e-5)
