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
#
# The two runs agree only up to float32 rounding: 32-row and 64-row batches may go through
# different matmul kernels, and the DDP gradient is the average of two half-batch sums, so the
# logits and gradients differ in their last bits. The checks must sit above what those bits can
# do and below what a desynchronisation does.
#
# * The temperature's gradient d(T^2 KL)/dT = 2T KL - (q - p).s/T - w.t/T cancels to leading
#   order (T^2 KL tends to a constant as T grows): at the published start T = 15.6 its batch
#   mean is ~1/200 of the 2T KL term, and KL = sum p (log p - log q) is itself a sum of
#   products of differences ~0.05 of log-probabilities ~ -log 10. The float32 rounding of the
#   log-softmax leaves ~3e-6 error per sample, ~2% relative error in each step's gradient,
#   re-drawn by any last-bit change of the logits. This error grows like T while the signal of
#   a desynchronised rank (its own half-batch mean) shrinks like 1/T^2: at T = 15.6 they are
#   only ~40x apart per step, and float32 runs of that recipe ended up to 8e-5 apart in the
#   raw temperature, within 7x of what a desynchronised temperature does (5e-4). Starting at
#   T = 3.4 (init -2) the per-step gap is ~3000x.
# * At this start (in-process runs with the teacher and student logits and every gradient
#   perturbed by 1, 4 or 256 ulps, 30 seeds each, and a float64 run), the raw temperature
#   moves by 0.31 with a float32 spread of ~3.5e-6 rms per run, whatever the size of the
#   perturbation (it is set by the rounding inside the loss); no two runs were more than 1e-5
#   apart. A temperature that is not all-reduced (each rank trained by its own half batch)
#   ends 1.1e-3 away, one fed by rank 0's gradient only 0.14 away. The tolerance, 3e-4 of the
#   movement (9e-5), is ~18 sigma of a two-run difference and 12x below the smaller desync.
# * Epoch losses and the logged temperature: float32 spread <= 1e-5 relative (2.6e-5 for the
#   test loss with 256-ulp noise in every gradient), so rel 1e-4 has a margin >= 4x; the
#   temperature's 1e-4 also catches the own-half-batch desync (1.2e-3 relative).
# * Weights are compared per tensor, by the norm of the difference relative to the norm: the
#   float32 spread is <= 1e-6 (9e-5 with 256-ulp noise in every gradient), unsynchronised
#   student gradients give ~0.3. An element-wise rtol fails on the near-zero entries, whose
#   absolute error follows the tensor's scale (last-bit noise alone reached 0.6 of the
#   rtol=1e-4, atol=1e-6 budget).
INIT = -2.0  # raw temperature at the start: T = 1 + 20 sigmoid(-2) = 3.38
RECIPE = f"""\
extends: _base/demo
description: CTKD+LS on digits, DDP test
note: test recipe
teacher: {{arch: mlp_digits}}
student: {{arch: mlp_digits_small}}
method: {{name: ctkd, standardize: true, ce_weight: 0.1, kd_weight: 9.0, loops: 2, init: {INIT}}}
data: {{augment: false, train_subset: 1408, batch_size: 64, test_batch_size: 60}}
schedule: {{epochs: 2}}
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
    wa, wb = H.student_state(tmp_path / "ddp"), H.student_state(tmp_path / "single")
    assert wa.keys() == wb.keys()
    for k in wa:
        diff = float((wa[k] - wb[k]).norm() / wb[k].norm())
        assert diff <= 1e-4, (k, diff)
    ta = float(torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)["method"]["loss.raw_temperature"])
    tb = float(torch.load(tmp_path / "single" / "last.pt", weights_only=True)["method"]["loss.raw_temperature"])
    moved = abs(tb - INIT)
    assert moved > 0.1, tb  # it was trained (by about 0.31)
    assert abs(ta - tb) <= 3e-4 * moved, (ta, tb)
