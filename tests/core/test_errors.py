"""Bad input raises ValueError/TypeError naming the function, the argument, what was expected and what arrived."""

import subprocess
import sys

import numpy as np
import pytest

import logit_standardization as ls

S = np.zeros((4, 10)) + np.arange(10)
T = -S
Y = np.arange(4)
FOUR = [np.random.default_rng(0).normal(size=(4, 10)) for _ in range(4)]


@pytest.mark.parametrize(
    "call,exc,pattern",
    [
        (lambda: ls.kd_loss(S, T[:, :9]), ValueError, r"kd_loss: argument 'teacher_logits' must be of the same shape as 'student_logits' \(4, 10\); got \(4, 9\)"),
        (lambda: ls.kd_loss(S[:, :1], T[:, :1]), ValueError, r"kd_loss: argument 'student_logits' must be an array with at least 2 classes on the last axis; got shape \(4, 1\)"),
        (lambda: ls.kd_loss(S[0], T[0]), ValueError, r"kd_loss: argument 'student_logits' must be an array of shape \(\.\.\., classes\) with at least 2 dimensions; got shape \(10,\)"),
        (lambda: ls.mlkd_loss(*(x[None] for x in FOUR)), ValueError, r"mlkd_loss: argument 'student_logits' must be a 2-D array of shape \(batch, classes\); got shape \(1, "),
        (lambda: ls.kd_loss(S, T, mask=np.ones(3, bool)), ValueError, r"kd_loss: argument 'mask' must be of the leading shape of the logits \(4,\); got shape \(3,\)"),
        (lambda: ls.kd_loss(S, T, mask=np.ones(4)), TypeError, r"kd_loss: argument 'mask' must be a boolean array; got dtype kind floating point"),
        (lambda: ls.dkd_loss(S[None], T[None], Y), ValueError, r"dkd_loss: argument 'labels' must be a 2-D array of shape \(1, 4\); got shape \(4,\)"),
        (lambda: ls.zscore(S[:, :2], ddof=2), ValueError, r"zscore: argument 'ddof' must be an int in \[0, 2\)"),
        (lambda: ls.kd_loss(S[:, :3], T[:, :3], ddof=3), ValueError, r"kd_loss: argument 'ddof' must be an int in \[0, 3\)"),
        (lambda: ls.kd_loss(np.where(S > 3, np.nan, S), T), ValueError, r"kd_loss: argument 'student_logits' must be finite \(no NaN or Inf\); got non-finite values"),
        (lambda: ls.dkd_loss(S, np.where(S > 3, np.inf, S), Y), ValueError, r"dkd_loss: argument 'teacher_logits' must be finite"),
        (lambda: ls.zscore(np.ones((2, 3), dtype=int)), TypeError, r"zscore: argument 'logits' must be a floating-point array; got dtype kind integer"),
        (lambda: ls.kd_loss(S > 2, T), TypeError, r"kd_loss: argument 'student_logits' must be a floating-point array; got dtype kind boolean"),
        (lambda: ls.dkd_loss(S, T, Y.astype(float)), TypeError, r"dkd_loss: argument 'labels' must be an integer array of class indices; got dtype kind floating point"),
        (lambda: ls.dkd_loss(S, T, np.array([0, 1, 2, 10])), ValueError, r"dkd_loss: argument 'labels' must be class indices in \[0, 10\); got label 10"),
        (lambda: ls.dkd_loss(S, T, np.array([0, -1, 2, 3])), ValueError, r"dkd_loss: argument 'labels' must be class indices in \[0, 10\); got label -1"),
        (lambda: ls.dkd_loss(S, T, Y[:3]), ValueError, r"dkd_loss: argument 'labels' must be a 1-D array of shape \(4,\); got shape \(3,\)"),
        (lambda: ls.kd_loss(S, T, temperature=0.0), ValueError, r"kd_loss: argument 'temperature' must be finite and > 0; got 0.0"),
        (lambda: ls.kd_loss(S, T, temperature=-1), ValueError, r"kd_loss: argument 'temperature' must be finite and > 0; got -1"),
        (lambda: ls.zscore(S, temperature=float("inf")), ValueError, r"zscore: argument 'temperature' must be finite and > 0; got inf"),
        (lambda: ls.dkd_loss(S, T, Y, temperature=float("nan")), ValueError, r"dkd_loss: argument 'temperature' must be finite and > 0; got nan"),
        (lambda: ls.kd_loss(S, T, temperature="2"), TypeError, r"kd_loss: argument 'temperature' must be a real number; got '2'"),
        (lambda: ls.kd_loss(S, T, reduction="batchmean"), ValueError, r"kd_loss: argument 'reduction' must be one of 'mean', 'sum', 'none'; got 'batchmean'"),
        (lambda: ls.dkd_loss(S, T, Y, reduction=None), ValueError, r"dkd_loss: argument 'reduction' must be one of"),
        (lambda: ls.mlkd_terms(*FOUR, variant="paper"), ValueError, r"mlkd_terms: argument 'variant' must be one of 'reference', 'corrected'; got 'paper'"),
        (lambda: ls.mlkd_loss(*FOUR, variant="x"), ValueError, r"mlkd_loss: argument 'variant' must be one of"),
        (lambda: ls.mlkd_terms(*FOUR, temperatures=()), ValueError, r"mlkd_terms: argument 'temperatures' must be a non-empty sequence of positive numbers; got an empty sequence"),
        (lambda: ls.mlkd_terms(*FOUR, temperatures=(2.0, -1.0)), ValueError, r"mlkd_terms: argument 'temperatures' must be finite and > 0; got -1.0"),
        (lambda: ls.mlkd_terms(FOUR[0], FOUR[1][:2], FOUR[2], FOUR[3]), ValueError, r"mlkd_terms: argument 'student_strong' must be of the same shape as 'student_weak'"),
        (lambda: ls.kd_loss(S, T, standardize=1), TypeError, r"kd_loss: argument 'standardize' must be a bool; got 1"),
        (lambda: ls.zscore(S, eps=-1e-7), ValueError, r"zscore: argument 'eps' must be finite and >= 0; got -1e-07"),
        (lambda: ls.zscore(S, axis=2), ValueError, r"zscore: argument 'axis' must be a valid axis for an array of shape \(4, 10\); got 2"),
        (lambda: ls.ctkd_temperature(float("nan")), ValueError, r"ctkd_temperature: argument 'raw' must be finite"),
        (lambda: ls.ctkd_temperature(1.0, t_end=0.0), ValueError, r"ctkd_temperature: argument 't_end' must be finite and > 0; got 0.0"),
        (lambda: ls.ctkd_lambda(1, schedule="step"), ValueError, r"ctkd_lambda: argument 'schedule' must be one of 'cosine', 'linear'; got 'step'"),
        (lambda: ls.ctkd_lambda(1, loops=0), ValueError, r"ctkd_lambda: argument 'loops' must be an int >= 1; got 0"),
        (lambda: ls.ctkd_lambda(float("inf")), ValueError, r"ctkd_lambda: argument 'epoch' must be finite; got inf"),
        (lambda: ls.ctkd_lambda(-1), ValueError, r"ctkd_lambda: argument 'epoch' must be finite and >= 0; got -1"),
        (lambda: ls.ctkd_temperature(1.0, t_start=-30), ValueError, r"ctkd_temperature: argument 't_start' must be finite and >= 0; got -30"),
        (lambda: ls.dkd_warmup(-5), ValueError, r"dkd_warmup: argument 'epoch' must be finite and >= 0; got -5"),
        (lambda: ls.dkd_warmup("x"), TypeError, r"dkd_warmup: argument 'epoch' must be a real number; got 'x'"),
        (lambda: ls.dkd_warmup(1, warmup_epochs=20.5), TypeError, r"dkd_warmup: argument 'warmup_epochs' must be an int >= 1; got 20.5"),
        (lambda: ls.dkd_warmup(1, warmup_epochs=0), ValueError, r"dkd_warmup: argument 'warmup_epochs' must be an int >= 1; got 0"),
        (lambda: ls.kd_loss(S, T, ddof=1.5), TypeError, r"kd_loss: argument 'ddof' must be an int >= 0; got 1.5"),
        (lambda: ls.dkd_loss(S, T, Y, alpha=-1.0), ValueError, r"dkd_loss: argument 'alpha' must be finite and >= 0; got -1.0"),
        (lambda: ls.mlkd_loss(*FOUR, kd_weight=-9), ValueError, r"mlkd_loss: argument 'kd_weight' must be finite and >= 0; got -9"),
    ],
)
def test_bad_input(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_importing_the_core_imports_no_framework():
    code = (
        "import sys, logit_standardization\n"
        "heavy = {'torch', 'tensorflow', 'keras', 'jax', 'onnx', 'onnxruntime'}\n"
        "loaded = sorted(heavy & {m.split('.')[0] for m in sys.modules})\n"
        "print(loaded)\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr

