"""One-command check of the CUDA paths on one GPU (``make gpu-check``), with a JSON report.

Checks, each recorded as ``ok``, ``failed`` or ``skipped`` (with the reason):

1. ``fused_losses``: the library's fused losses on the device against the reference operation
   sequence of ``benchmarks/bench_losses.py`` (``reference_kd``: mean, unbiased std, subtract,
   divide, log_softmax, softmax, kl_div, sum, mean; ``mlkd_per_temperature``), values and
   gradients, for float32, float16 and bfloat16 logits (the half-precision references run on the
   float32 upcast, as the library computes statistics in float32).
2. ``train_step_fp16`` / ``train_step_bf16``: the ``lskd-train`` step
   (:func:`logit_standardization.training.engine.train_step`) of teacher -> student with KD+LS
   under float16 autocast with a ``GradScaler`` and under bfloat16 autocast, channels_last:
   finite losses, float32 logits, weights that move and stay channels_last, and a first-step
   loss close to the float32 one.
3. ``channels_last``: float32 logits and first-step loss of a channels_last student and teacher
   against the contiguous ones (TF32 off for the comparison).
4. ``torch_compile``: ``torch.compile`` of the student inside the training step (bf16 autocast,
   channels_last): compile time and the first-step loss against eager.
5. ``onnxruntime``: ``export_onnx`` of the student (verified on ONNX Runtime's CPU provider in
   this environment), then the file run by ONNX Runtime's CUDA provider in a separate virtual
   environment that this script creates with ``onnxruntime-gpu`` (never installed here) and
   compared with the PyTorch logits; the provider that actually ran is recorded (ONNX Runtime
   falls back to the CPU silently).
6. ``benchmark``: images/s of the distillation train step, teacher resnet32x4 -> student
   resnet8x4, CIFAR-shaped random batches of 64, AMP (bf16 and fp16) + channels_last (and the
   compiled student when ``torch_compile`` passed) against the plain float32 eager loop with the
   reference operation sequence; medians of interleaved rounds; goal >= 2x for AMP +
   channels_last.

``--dry-run`` runs the same code on the CPU at tiny sizes (resnet14 -> resnet8, batch 4): bf16
autocast and float16 autocast with a ``GradScaler`` on the CPU, channels_last, ``torch.compile``
in a subprocess with a time limit (skipped with the reason when it does not finish in time), ONNX
Runtime's CPU provider in this environment instead of a new virtual environment, and the
benchmark without its goal. The test suite runs it (``tests/test_gpu_check.py``).

Usage::

    python benchmarks/gpu_check.py                 # on a CUDA machine: at most --budget-s (480 s)
    python benchmarks/gpu_check.py --dry-run       # anywhere, CPU only

The exit status is 0 when no check failed, 1 otherwise; the report is written to ``--output``
(default ``runs/gpu_check/report.json``, ``dry_run.json`` for ``--dry-run``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: Sizes of a full run on a GPU and of a dry run on the CPU.
SIZES = {
    "gpu": dict(teacher="resnet32x4", student="resnet8x4", batch=64, steps=20, loss_shapes=[(64, 100), (256, 1000)],
                rounds=7, round_steps=10, warmup=3, compile_timeout_s=240.0),
    "dry": dict(teacher="resnet14", student="resnet8", batch=4, steps=2, loss_shapes=[(8, 10), (16, 100)],
                rounds=2, round_steps=1, warmup=1, compile_timeout_s=150.0),
}
#: Tolerances of the fused-loss comparison: (rtol, atol) of values and gradients per logit dtype.
LOSS_TOLERANCE = {"float32": (1e-4, 1e-6), "float16": (2e-3, 1e-6), "bfloat16": (1.6e-2, 1e-6)}
SPEED_GOAL = 2.0
ORT_REQUIREMENT = "onnxruntime-gpu[cuda,cudnn]"
RECIPE = "cifar100/kd_ls/resnet32x4-resnet8x4"  # KD+LS: temperature 2, kd_weight 9, ce_weight 0.1


# ----------------------------------------------------------------------------- the report
class Report:
    def __init__(self, mode: str, budget_s: float) -> None:
        self.start = time.monotonic()
        self.budget_s = budget_s
        self.data: dict[str, Any] = {"mode": mode, "budget_s": budget_s, "checks": {}}

    def remaining(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)

    def run(self, name: str, fn: Callable[[], dict], *, needs_s: float = 0.0) -> dict:
        if self.remaining() < needs_s:
            entry = {"status": "skipped", "reason": f"time budget: {self.remaining():.0f} s left, needs about {needs_s:.0f} s"}
        else:
            t0 = time.monotonic()
            try:
                entry = fn()
                entry.setdefault("status", "ok")
            except Skip as exc:
                entry = {"status": "skipped", "reason": str(exc)}
            except Exception as exc:  # noqa: BLE001 - every failure is recorded, the other checks go on
                entry = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                         "traceback": traceback.format_exc(limit=6)}
            entry["seconds"] = round(time.monotonic() - t0, 2)
        self.data["checks"][name] = entry
        print(f"  {name:<18} {entry['status']:<8} {entry.get('seconds', 0):7.1f} s  {summary(entry)}", flush=True)
        return entry


class Skip(Exception):
    """A check that cannot run here (the message is the reason)."""


class CheckFailed(Exception):
    """A check whose measurements are outside its criteria."""


def summary(entry: dict) -> str:
    if entry["status"] != "ok" or "summary" not in entry:
        return entry.get("reason", "").splitlines()[0][:110] if entry.get("reason") else entry.get("summary", "")
    return entry["summary"]


def _bench_losses():
    spec = importlib.util.spec_from_file_location("lskd_bench_losses", HERE / "bench_losses.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- 1. fused losses
def _close(a, b, rtol: float, atol: float) -> tuple[bool, float]:
    """max |a - b| <= atol + rtol * max |b| (a scale-aware criterion for whole tensors)."""
    a, b = a.double(), b.double()
    err = float((a - b).abs().max()) if a.numel() else 0.0
    return err <= atol + rtol * float(b.abs().max()), err


def check_fused_losses(device, sizes: dict) -> dict:
    import torch

    import logit_standardization.torch as lt

    bl = _bench_losses()
    gen = torch.Generator().manual_seed(0)
    rows, worst = [], {}
    for dtype_name, (rtol, atol) in LOSS_TOLERANCE.items():
        dtype = getattr(torch, dtype_name)
        for b, c in sizes["loss_shapes"]:
            s0 = (torch.randn(b, c, generator=gen) * 3).to(device, dtype)
            t0 = (torch.randn(b, c, generator=gen) * 5 + 1).to(device, dtype)
            g_z = torch.randn(b, c, generator=gen).to(device, dtype)
            cases = {
                "kd_loss": (lambda s, t: lt.kd_loss(s, t, temperature=2.0),
                            lambda s, t: bl.reference_kd(s.float(), t.float(), 2.0)),
                "zscore": (lambda s, t: lt.zscore(s), lambda s, t: _reference_zscore(s.float()).to(dtype)),
            }
            if dtype == torch.float32:
                views = [(torch.randn(b, c, generator=gen) * k).to(device) for k in (2, 2, 4, 4)]
                cases["mlkd_loss"] = (lambda *v: lt.mlkd_loss(*v), lambda *v: bl.mlkd_per_temperature(*v))
            for name, (fused, ref) in cases.items():
                inputs = views if name == "mlkd_loss" else [s0, t0]
                xf = [x.detach().clone().requires_grad_(True) for x in inputs]
                xr = [x.detach().clone().requires_grad_(True) for x in inputs]
                vf, vr = fused(*xf), ref(*xr)
                upstream = None if vf.dim() == 0 else g_z  # a loss, or the Z-score tensor with a random upstream gradient
                gf = torch.autograd.grad(vf, xf, grad_outputs=upstream, allow_unused=True)
                gr = torch.autograd.grad(vr, xr, grad_outputs=upstream, allow_unused=True)
                # a loss is computed in float32 whatever the logits are; a Z-score is returned in their dtype
                ok_v, err_v = _close(vf.detach(), vr.detach(), *((1e-4, 1e-5) if vf.dim() == 0 else (rtol, atol)))
                ok_g, err_g = True, 0.0
                for a, r in zip(gf, gr):
                    if a is None or r is None:
                        ok_g = ok_g and (a is None) == (r is None)
                        continue
                    assert a.dtype == r.dtype == dtype, f"{name}: gradient dtype {a.dtype}, reference {r.dtype}"
                    ok, err = _close(a, r, rtol, atol)
                    ok_g, err_g = ok_g and ok, max(err_g, err)
                value = float(vf.detach().float().abs().max()) if vf.dim() else float(vf.detach())
                reference = float(vr.detach().float().abs().max()) if vr.dim() else float(vr.detach())
                row = dict(loss=name, dtype=dtype_name, shape=[b, c], value=value, reference=reference,
                           value_max_abs_err=err_v, grad_max_abs_err=err_g, ok=bool(ok_v and ok_g))
                rows.append(row)
                key = f"{name}/{dtype_name}"
                worst[key] = max(worst.get(key, 0.0), err_g)
    bad = [r for r in rows if not r["ok"]]
    entry = {"device": str(device), "tolerances": LOSS_TOLERANCE, "cases": rows,
             "summary": f"{len(rows) - len(bad)}/{len(rows)} cases within tolerance (values and gradients)"}
    if bad:
        entry.update(status="failed", reason="outside tolerance: " + ", ".join(
            f"{r['loss']} {r['dtype']} {r['shape']}" for r in bad))
    return entry


def _reference_zscore(x):
    mean = x.mean(dim=-1, keepdim=True)
    return (x - mean) / (1e-7 + x.std(dim=-1, keepdim=True))


# ----------------------------------------------------------------------------- 2-4. training step
def _pair(device, sizes: dict, *, channels_last: bool, seed: int = 0):
    import torch

    from logit_standardization.training.models import create_model

    torch.manual_seed(seed)
    teacher = create_model(sizes["teacher"], dataset="cifar100").to(device).eval().requires_grad_(False)
    student = create_model(sizes["student"], dataset="cifar100").to(device)
    if channels_last:
        teacher.to(memory_format=torch.channels_last)
        student.to(memory_format=torch.channels_last)
    return teacher, student


def _batch(device, sizes: dict, *, channels_last: bool, seed: int = 1):
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(sizes["batch"], 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 100, (sizes["batch"],), generator=gen).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _engine(device, student, amp: str, student_fn=None):
    import torch

    from logit_standardization.training.engine import StudentWithLoss
    from logit_standardization.training.methods import build_method

    method = build_method(_kd_ls_method()).to(device)
    model = StudentWithLoss(student, method, device=device, amp=amp, student_fn=student_fn)
    optimizer = torch.optim.SGD([*student.parameters(), *method.parameters()], lr=0.05, momentum=0.9,
                                weight_decay=5e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    return model, optimizer, scaler


def _kd_ls_method() -> dict:
    from logit_standardization.training.recipes import load_recipe

    return load_recipe(RECIPE)["method"]


def _first_loss_fp32(device, sizes: dict, *, channels_last: bool) -> float:
    from logit_standardization.training.engine import train_step

    teacher, student = _pair(device, sizes, channels_last=channels_last)
    x, y = _batch(device, sizes, channels_last=channels_last)
    model, opt, scaler = _engine(device, student, "off")
    loss, _, _ = train_step(model, teacher, opt, scaler, x, y, amp="off")
    return float(loss)


def check_train_step(device, sizes: dict, amp: str) -> dict:
    import torch

    from logit_standardization.training.engine import train_step

    if amp == "fp16" and device.type == "cpu" and not _cpu_fp16_autocast():
        raise Skip("float16 autocast is not available on this CPU build of torch")
    teacher, student = _pair(device, sizes, channels_last=True)
    x, y = _batch(device, sizes, channels_last=True)
    model, opt, scaler = _engine(device, student, amp)
    before = [p.detach().clone() for p in student.parameters()]
    losses, scales = [], []

    def moved() -> int:
        return sum(not torch.equal(a, p.detach()) for a, p in zip(before, student.parameters()))

    # With float16 the GradScaler skips the first steps while it lowers its scale from 2**16
    # until the scaled gradients are finite (as at the start of any fp16 run): go on until one
    # step has been taken, at most 30 more.
    while len(losses) < sizes["steps"] or (scaler.is_enabled() and not moved() and len(losses) < sizes["steps"] + 30):
        loss, terms, out = train_step(model, teacher, opt, scaler, x, y, amp=amp)
        losses.append(float(loss))
        scales.append(float(scaler.get_scale()) if scaler.is_enabled() else None)
    _sync(device)
    moved = moved()
    conv_weights = [m.weight for m in student.modules() if isinstance(m, torch.nn.Conv2d)]
    still_cl = all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights)
    fp32_first = _first_loss_fp32(device, sizes, channels_last=False)
    rel = abs(losses[0] - fp32_first) / max(abs(fp32_first), 1e-12)
    problems = []
    if not all(map(lambda v: v == v and abs(v) != float("inf"), losses)):
        problems.append("non-finite loss")
    if out.dtype != torch.float32:
        problems.append(f"student logits {out.dtype}, expected float32")
    if moved == 0:
        problems.append("no parameter moved")
    if not still_cl:
        problems.append("conv weights left channels_last")
    if rel > 0.1:
        problems.append(f"first-step loss {losses[0]:.5f} vs float32 {fp32_first:.5f} (relative {rel:.3g} > 0.1)")
    if amp == "fp16" and scales[-1] is not None and scales[-1] < 1.0:
        problems.append(f"GradScaler scale collapsed to {scales[-1]}")
    entry = {"amp": amp, "channels_last": True, "grad_scaler": amp == "fp16", "steps": sizes["steps"],
             "losses": losses, "grad_scale": scales, "first_loss_fp32": fp32_first, "first_loss_rel_diff": rel,
             "parameters_moved": f"{moved}/{len(before)}", "logits_dtype": str(out.dtype),
             "terms": {k: float(v) for k, v in terms.items()},
             "summary": f"loss {losses[0]:.4f} -> {losses[-1]:.4f} in {len(losses)} steps; "
                        f"first step vs fp32 {rel:.2e}" + (f"; scale {scales[-1]:g}" if scales[-1] else "")}
    if problems:
        entry.update(status="failed", reason="; ".join(problems))
    return entry


def _cpu_fp16_autocast() -> bool:
    import torch

    try:
        with torch.autocast("cpu", dtype=torch.float16):
            return (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float16
    except Exception:  # noqa: BLE001
        return False


def check_channels_last(device, sizes: dict) -> dict:
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        out = {}
        for cl in (False, True):
            teacher, student = _pair(device, sizes, channels_last=cl)
            x, _ = _batch(device, sizes, channels_last=cl)
            with torch.no_grad():
                out[cl] = (teacher(x), student(x))
        logit_err = max(float((a - b).abs().max()) for a, b in zip(out[False], out[True]))
        scale = max(float(a.abs().max()) for a in out[False])
        loss = {cl: _first_loss_fp32(device, sizes, channels_last=cl) for cl in (False, True)}
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    rel = abs(loss[True] - loss[False]) / max(abs(loss[False]), 1e-12)
    entry = {"logits_max_abs_diff": logit_err, "logits_max_abs": scale, "first_loss": loss[False],
             "first_loss_channels_last": loss[True], "first_loss_rel_diff": rel,
             "summary": f"logits max|diff| {logit_err:.2e} (max|logit| {scale:.3g}), loss rel diff {rel:.2e}"}
    if logit_err > 1e-4 * max(scale, 1.0) or rel > 1e-4:
        entry.update(status="failed", reason=entry["summary"])
    return entry


def check_compile(device, sizes: dict) -> dict:
    import torch

    from logit_standardization.training.engine import train_step

    amp = "bf16"
    results = {}
    for compiled in (False, True):
        teacher, student = _pair(device, sizes, channels_last=True)
        x, y = _batch(device, sizes, channels_last=True)
        fn = torch.compile(student) if compiled else None
        model, opt, scaler = _engine(device, student, amp, student_fn=fn)
        t0 = time.perf_counter()
        first, _, _ = train_step(model, teacher, opt, scaler, x, y, amp=amp)
        _sync(device)
        first_s = time.perf_counter() - t0
        losses = [float(first)]
        t0 = time.perf_counter()
        for _ in range(2):
            loss, _, _ = train_step(model, teacher, opt, scaler, x, y, amp=amp)
            losses.append(float(loss))
        _sync(device)
        results[compiled] = dict(first_step_s=first_s, next_step_s=(time.perf_counter() - t0) / 2, losses=losses)
    rel = abs(results[True]["losses"][0] - results[False]["losses"][0]) / max(abs(results[False]["losses"][0]), 1e-12)
    entry = {"amp": amp, "channels_last": True, "eager": results[False], "compiled": results[True],
             "first_loss_rel_diff": rel,
             "summary": f"compile + first step {results[True]['first_step_s']:.1f} s; "
                        f"first loss vs eager {rel:.2e}"}
    if rel > 0.05:
        entry.update(status="failed", reason=f"compiled first-step loss differs from eager by {rel:.3g} (> 0.05)")
    return entry


def check_compile_in_subprocess(sizes: dict, timeout_s: float) -> dict:
    """The dry run's torch.compile check, in a child process with a time limit."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "compile.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--dry-run", "--only", "torch_compile", "--output", str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=os.environ.copy())
        except subprocess.TimeoutExpired:
            raise Skip(f"skipped in the dry run: torch.compile of the student did not finish within {timeout_s:.0f} s "
                       "on this CPU (inductor compiles C++ here; on a GPU it is checked in full)") from None
        if not out.exists():
            raise CheckFailed(f"the compile subprocess wrote no report (exit {proc.returncode}): {proc.stderr[-2000:]}")
        entry = json.loads(out.read_text())["checks"]["torch_compile"]
        entry.pop("seconds", None)
        entry["subprocess_timeout_s"] = timeout_s
        return entry


# ----------------------------------------------------------------------------- 5. ONNX Runtime
ORT_CHILD = r'''
import json, sys, time
import numpy as np
import onnxruntime as ort
if hasattr(ort, "preload_dlls"):
    try:
        ort.preload_dlls()
    except Exception as exc:
        print("preload_dlls:", exc, file=sys.stderr)
data = np.load(sys.argv[2])
session = ort.InferenceSession(sys.argv[1], providers=[("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"])
result = {"onnxruntime": ort.__version__, "available_providers": ort.get_available_providers(),
          "session_providers": session.get_providers()}
diffs, agree, n = [], 0, 0
for key in sorted(k for k in data.files if k.startswith("x")):
    x, ref = data[key], data["ref" + key[1:]]
    out = session.run(["logits"], {"input": x})[0]
    diffs.append(float(np.abs(out - ref).max()))
    agree += int((out.argmax(1) == ref.argmax(1)).sum()); n += len(x)
x = data["x0"]
for _ in range(3):
    session.run(["logits"], {"input": x})
t0 = time.perf_counter()
for _ in range(20):
    session.run(["logits"], {"input": x})
result.update(max_abs_diff=max(diffs), top1_agreement=agree / n, max_abs_logit=float(np.abs(data["ref0"]).max()),
              latency_ms=(time.perf_counter() - t0) / 20 * 1e3, batch=int(len(x)))
json.dump(result, open(sys.argv[3], "w"))
'''


def _ort_venv(path: Path, pip_args: list[str], requirement: str, timeout_s: float) -> tuple[Path, dict]:
    """A virtual environment with onnxruntime-gpu and NumPy (created, or reused when it has them)."""
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    info: dict[str, Any] = {"venv": str(path), "requirement": requirement}
    check = [str(python), "-c", "import onnxruntime, numpy; print(onnxruntime.__version__)"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        info["created"] = False
        return python, info
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, capture_output=True, timeout=120)
    cmd = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pip_args, requirement, "numpy"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout_s, 10))
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"pip install {requirement} did not finish within {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        last = [line for line in proc.stderr.splitlines() if line.strip()][-3:]
        raise CheckFailed(f"could not install {requirement} into {path} (no network? pass --ort-pip-args "
                          f"'--no-index --find-links DIR' or --ort-venv with a prepared environment): " + " | ".join(last))
    info.update(created=True, install_s=round(time.monotonic() - t0, 1))
    return python, info


def check_onnxruntime(device, sizes: dict, args, report: Report, workdir: Path) -> dict:
    import numpy as np
    import torch

    from logit_standardization.export import export_onnx
    from logit_standardization.training.checkpoint import student_payload
    from logit_standardization.training.models import create_model

    torch.manual_seed(0)
    net = create_model(sizes["student"], dataset="cifar100")
    ckpt = workdir / "student.pt"
    torch.save(student_payload(net, arch=sizes["student"], dataset="cifar100", num_classes=100), ckpt)
    export = export_onnx(ckpt, workdir / "student.onnx", provider="cpu", force=True)
    cpu = export.verifications[0]
    entry: dict[str, Any] = {"exporter": export.exporter, "opset": export.opset, "cpu_provider": {
        "verified": export.verified, "max_abs_diff": cpu.max_abs_diff, "top1_agreement": cpu.top1_agreement,
        "provider": cpu.provider}}
    if not export.verified:
        raise CheckFailed(f"ONNX Runtime CPU verification failed: {export.summary()}")
    if device.type == "cpu":
        entry["cuda_provider"] = "not run in the dry run (CPU provider in this environment instead)"
        entry["summary"] = f"CPU provider max|diff| {cpu.max_abs_diff:.2e}, top-1 {cpu.top1_agreement:.4f}"
        return entry

    # the CUDA provider, in its own virtual environment
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        gen = torch.Generator().manual_seed(2)
        net = net.to(device).eval()
        arrays = {}
        with torch.no_grad():
            for i, b in enumerate((1, 16, sizes["batch"])):
                x = torch.randn(b, 3, 32, 32, generator=gen)
                arrays[f"x{i}"] = x.numpy()
                arrays[f"ref{i}"] = net(x.to(device)).float().cpu().numpy()
    finally:
        torch.backends.cudnn.allow_tf32 = saved
    np.savez(workdir / "batches.npz", **arrays)
    venv_path = Path(args.ort_venv) if args.ort_venv else workdir / "ort-gpu-venv"
    python, info = _ort_venv(venv_path, args.ort_pip_args.split(), args.ort_requirement, report.remaining() - 60)
    entry["venv"] = info
    child = workdir / "ort_child.py"
    child.write_text(ORT_CHILD)
    result_path = workdir / "ort_cuda.json"
    proc = subprocess.run([str(python), str(child), str(workdir / "student.onnx"), str(workdir / "batches.npz"),
                           str(result_path)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 or not result_path.exists():
        raise CheckFailed(f"ONNX Runtime (CUDA) run failed: {proc.stderr.strip()[-1500:]}")
    cuda = json.loads(result_path.read_text())
    entry["cuda_provider"] = cuda
    problems = []
    if not cuda["session_providers"] or cuda["session_providers"][0] != "CUDAExecutionProvider":
        problems.append(f"the session runs on {cuda['session_providers']}, not CUDAExecutionProvider")
    if cuda["max_abs_diff"] > 1e-3 * max(cuda["max_abs_logit"], 1.0) or cuda["top1_agreement"] < 0.99:
        problems.append(f"max|diff| {cuda['max_abs_diff']:.2e}, top-1 {cuda['top1_agreement']:.4f} against PyTorch")
    entry["summary"] = (f"CUDA provider ({cuda['onnxruntime']}) max|diff| {cuda['max_abs_diff']:.2e}, "
                        f"top-1 {cuda['top1_agreement']:.4f}, {cuda['latency_ms']:.2f} ms at batch {cuda['batch']}")
    if problems:
        entry.update(status="failed", reason="; ".join(problems))
    return entry


# ----------------------------------------------------------------------------- 6. benchmark
def check_benchmark(device, sizes: dict, *, with_compile: bool, dry_run: bool) -> dict:
    import torch
    import torch.nn.functional as F

    from logit_standardization.training.engine import train_step

    bl = _bench_losses()
    m = _kd_ls_method()
    contenders: dict[str, Callable[[], None]] = {}
    teacher, student = _pair(device, sizes, channels_last=False)
    x, y = _batch(device, sizes, channels_last=False)
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    def plain() -> None:
        with torch.no_grad():
            t = teacher(x)
        s = student(x)
        loss = m["ce_weight"] * F.cross_entropy(s, y) + m["kd_weight"] * bl.reference_kd(s, t, m["temperature"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    contenders["plain fp32"] = plain
    amps = ["bf16", "fp16"] if device.type == "cuda" else ["bf16"]
    variants = [(amp, False) for amp in amps] + ([("bf16", True)] if with_compile else [])
    for amp, compiled in variants:
        t_cl, s_cl = _pair(device, sizes, channels_last=True)
        x_cl, y_cl = _batch(device, sizes, channels_last=True)
        fn = torch.compile(s_cl) if compiled else None
        model, o, scaler = _engine(device, s_cl, amp, student_fn=fn)
        name = f"{amp} + channels_last" + (" + compile" if compiled else "")
        contenders[name] = (lambda m=model, o=o, sc=scaler, t=t_cl, xx=x_cl, yy=y_cl, a=amp:
                            train_step(m, t, o, sc, xx, yy, amp=a))
    for fn in contenders.values():  # warm-up: allocator, cuDNN autotuning, compilation
        for _ in range(sizes["warmup"]):
            fn()
    _sync(device)
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    order = list(contenders.items())
    for r in range(sizes["rounds"]):
        for name, fn in order if r % 2 == 0 else order[::-1]:
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(sizes["round_steps"]):
                fn()
            _sync(device)
            rates[name].append(sizes["round_steps"] * sizes["batch"] / (time.perf_counter() - t0))
    medians = {name: statistics.median(v) for name, v in rates.items()}
    base = medians["plain fp32"]
    ratios = {name: m / base for name, m in medians.items() if name != "plain fp32"}
    best_amp = max(v for k, v in ratios.items() if "compile" not in k)
    entry = {"pair": f"{sizes['teacher']} -> {sizes['student']}", "batch": sizes["batch"], "rounds": sizes["rounds"],
             "steps_per_round": sizes["round_steps"], "images_per_s": rates, "median_images_per_s": medians,
             "ratio_vs_plain": ratios, "goal": SPEED_GOAL,
             "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
             "summary": ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()) + f" (plain {base:.0f} img/s)"}
    if dry_run:
        entry["goal_met"] = "not applied in the dry run (CPU, tiny models)"
    else:
        entry["goal_met"] = best_amp >= SPEED_GOAL
        if not entry["goal_met"]:
            entry.update(status="failed", reason=f"AMP + channels_last is {best_amp:.2f}x the plain loop, goal {SPEED_GOAL}x")
    return entry


# ----------------------------------------------------------------------------- main
CHECKS = ["fused_losses", "train_step_fp16", "train_step_bf16", "channels_last", "torch_compile", "onnxruntime",
          "benchmark"]


def environment(device) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "device": str(device), "platform": platform.platform(), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), capability=list(torch.cuda.get_device_capability(device)),
                   cudnn=torch.backends.cudnn.version(), bf16_supported=torch.cuda.is_bf16_supported())
    else:
        env["cpu"] = platform.processor() or platform.machine()
    try:
        import onnxruntime

        env["onnxruntime_main_env"] = onnxruntime.__version__
    except ImportError:
        env["onnxruntime_main_env"] = None
    return env


def print_table(report: Report) -> None:
    rows = [(name, e["status"], f"{e.get('seconds', 0):.1f}", summary(e)) for name, e in report.data["checks"].items()]
    widths = [max(len(r[i]) for r in rows + [("check", "status", "s", "")]) for i in range(3)]
    print()
    print(f"{'check':<{widths[0]}}  {'status':<{widths[1]}}  {'s':>{widths[2]}}  details")
    for name, status, secs, text in rows:
        print(f"{name:<{widths[0]}}  {status:<{widths[1]}}  {secs:>{widths[2]}}  {text}")
    bench = report.data["checks"].get("benchmark", {})
    if bench.get("status") in ("ok", "failed") and "ratio_vs_plain" in bench:
        print(f"\ntrain step {bench['pair']}, batch {bench['batch']}, medians of {bench['rounds']} interleaved rounds:")
        for name, rate in bench["median_images_per_s"].items():
            ratio = bench["ratio_vs_plain"].get(name)
            print(f"  {name:<32} {rate:10.1f} images/s" + (f"   {ratio:.2f}x" if ratio else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="the same code paths on the CPU at tiny sizes")
    p.add_argument("--output", help="JSON report (default runs/gpu_check/report.json or dry_run.json)")
    p.add_argument("--budget-s", type=float, default=480.0, help="overall time budget; checks that do not fit are skipped")
    p.add_argument("--only", action="append", choices=CHECKS, help="run only these checks (repeatable)")
    p.add_argument("--ort-venv", help="virtual environment for onnxruntime-gpu (created when missing; default: a temporary one)")
    p.add_argument("--ort-requirement", default=ORT_REQUIREMENT, help="what pip installs there (default %(default)s)")
    p.add_argument("--ort-pip-args", default="", help="extra pip arguments, e.g. '--no-index --find-links wheels/'")
    args = p.parse_args(argv)

    import torch

    mode = "dry-run" if args.dry_run else "gpu"
    if args.dry_run:
        device = torch.device("cpu")
        sizes = SIZES["dry"]
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device; run on a machine with one GPU, or use --dry-run", file=sys.stderr)
            return 2
        device = torch.device("cuda", 0)
        sizes = SIZES["gpu"]
        torch.backends.cudnn.benchmark = True
    output = Path(args.output or ROOT / "runs" / "gpu_check" / ("dry_run.json" if args.dry_run else "report.json"))
    report = Report(mode, args.budget_s)
    report.data["environment"] = environment(device)
    report.data["sizes"] = sizes
    selected = args.only or CHECKS
    print(f"gpu_check ({mode}) on {report.data['environment'].get('gpu', device)}; budget {args.budget_s:.0f} s", flush=True)

    def want(name: str) -> bool:
        return name in selected

    if want("fused_losses"):
        report.run("fused_losses", lambda: check_fused_losses(device, sizes), needs_s=10)
    for amp in ("fp16", "bf16"):
        if want(f"train_step_{amp}"):
            report.run(f"train_step_{amp}", lambda amp=amp: check_train_step(device, sizes, amp), needs_s=15)
    if want("channels_last"):
        report.run("channels_last", lambda: check_channels_last(device, sizes), needs_s=10)
    if want("torch_compile"):
        if args.dry_run and args.only != ["torch_compile"]:
            report.run("torch_compile", lambda: check_compile_in_subprocess(sizes, sizes["compile_timeout_s"]))
        else:
            report.run("torch_compile", lambda: check_compile(device, sizes), needs_s=90)
    if want("onnxruntime"):
        with tempfile.TemporaryDirectory(prefix="lskd_gpu_check_") as tmp:
            report.run("onnxruntime", lambda: check_onnxruntime(device, sizes, args, report, Path(tmp)), needs_s=30)
    if want("benchmark"):
        compiled = report.data["checks"].get("torch_compile", {}).get("status") == "ok"
        report.run("benchmark", lambda: check_benchmark(device, sizes, with_compile=compiled and not args.dry_run,
                                                         dry_run=args.dry_run), needs_s=20)

    statuses = [e["status"] for e in report.data["checks"].values()]
    report.data["total_s"] = round(time.monotonic() - report.start, 1)
    report.data["passed"] = "failed" not in statuses
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report.data, indent=2, default=str) + "\n")
    print_table(report)
    print(f"\n{statuses.count('ok')} ok, {statuses.count('failed')} failed, {statuses.count('skipped')} skipped "
          f"in {report.data['total_s']:.0f} s; report: {output}")
    return 0 if report.data["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
