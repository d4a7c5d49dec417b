"""KD + logit standardization at language-model vocabulary sizes: the materialised logits against the
chunked ``fused_linear_kd_loss``, measured side by side in one run (one fresh process per method).

Contenders, forward + backward of ``tau^2 KL(softmax(Z(t)/tau) || softmax(Z(s)/tau))`` with the
student logits ``h @ W.T`` (gradients to ``h`` and ``W``) and the teacher's ``h_t @ W_t.T``
(no gradient), ``tau = 2``:

* ``reference``: the operation sequence of the published code on materialised logits (matmul,
  mean, unbiased std, subtract, divide, log_softmax, softmax, kl_div, sum, mean; backward);
* ``fused_linear``: ``logit_standardization.torch.fused_linear_kd_loss`` (token chunks, analytic
  gradient formed in the forward pass; default chunk size);
* ``liger``: Liger Kernel's ``LigerFusedLinearJSDLoss`` at ``beta=0`` (the forward KL of the
  distillation base, no standardization: the closest chunked loss there is), ``compiled=False``,
  at its default chunk size and at this library's; skipped, with the reason, when ``liger_kernel``
  is not importable (not a dependency of this project).

Memory: each method runs in a fresh Python process (``--child``), which creates its inputs and
then runs the steps; the number reported is the growth of the process's peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) over its value once the inputs exist, on CPU (the
peak of everything the step allocates: logits, saved tensors, gradients including the ``(V, H)``
weight gradient; large tensors are returned to the system when freed, so the peak is real, not a
high-water mark of a cache), and ``torch.cuda.max_memory_allocated`` minus the allocation before
the step on CUDA. ``tracemalloc`` would miss torch's allocations. Time: the median wall-clock time
of ``--repeats`` steps after one warm-up step, per process. Ratios are against ``reference``.
Targets at the default shape: memory <= 1/8 of the reference, time <= 1.0x.

Run (CPU, the default shape: 2048 tokens x hidden 1024 x vocabulary 32000, float32)::

    python benchmarks/bench_large_vocab.py

and, on a GPU::

    python benchmarks/bench_large_vocab.py --device cuda --dtype bfloat16 --tokens 8192 --hidden 4096 --vocab 128256

Example (the table's ratios):

    >>> ratio(100.0, 400.0)
    '0.25x'
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

METHODS = ("reference", "fused_linear", "liger", "liger_same_chunk")


def ratio(value: float, reference: float) -> str:
    """``value / reference`` as a short string (``-`` when there is no reference)."""
    return f"{value / reference:.2f}x" if reference else "-"


# ----------------------------------------------------------------------------- one method, in its own process
def _contender(name: str, args):
    """A function ``step(hs, ws, ht, wt) -> loss`` (forward only; the caller runs the backward)."""
    import torch
    import torch.nn.functional as F

    tau = 2.0
    if name == "reference":

        def normalize(x):
            return (x - x.mean(dim=-1, keepdim=True)) / (1e-7 + x.std(dim=-1, keepdim=True))

        def step(hs, ws, ht, wt):
            s = hs @ ws.T
            with torch.no_grad():
                t = ht @ wt.T
            log_q = F.log_softmax(normalize(s.float()) / tau, dim=1)
            p = F.softmax(normalize(t.float()) / tau, dim=1)
            return F.kl_div(log_q, p, reduction="none").sum(1).mean() * tau**2

        return step
    if name == "fused_linear":
        from logit_standardization.torch import fused_linear_kd_loss

        return lambda hs, ws, ht, wt: fused_linear_kd_loss(hs, ws, ht, wt, temperature=tau)
    from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss  # ImportError: the row is skipped

    from logit_standardization.torch.fused_linear import _default_chunk_size

    chunk = 1024 if name == "liger" else _default_chunk_size(args.tokens, args.hidden, args.vocab)
    loss = LigerFusedLinearJSDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, beta=0.0, temperature=tau,
                                   compiled=False, chunk_size=chunk)
    labels = torch.zeros(args.tokens, dtype=torch.long, device=args.device)
    return lambda hs, ws, ht, wt: loss(hs, ws, ht, wt, labels)


def child(name: str, args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    dev, dtype = torch.device(args.device), getattr(torch, args.dtype)
    try:
        step = _contender(name, args)
    except ImportError as exc:
        return {"skipped": f"{type(exc).__name__}: {exc}"}
    g = torch.Generator(device=dev).manual_seed(0)
    n, h, v = args.tokens, args.hidden, args.vocab
    hs = (torch.randn(n, h, generator=g, device=dev, dtype=dtype)).requires_grad_()
    ws = (torch.randn(v, h, generator=g, device=dev, dtype=dtype) * h**-0.5).requires_grad_()
    ht = torch.randn(n, h, generator=g, device=dev, dtype=dtype)
    wt = torch.randn(v, h, generator=g, device=dev, dtype=dtype) * (2 * h**-0.5)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times, value = [], None
    for i in range(args.repeats + 1):
        hs.grad = ws.grad = None
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step(hs, ws, ht, wt)
        loss.backward()
        if cuda:
            torch.cuda.synchronize()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
        value = float(loss)
        del loss
    if cuda:
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {"peak_bytes": peak, "median_s": statistics.median(times), "times_s": times, "loss": value,
            "grad_norm": float(ws.grad.float().norm())}


# ----------------------------------------------------------------------------- driver
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per method (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads (default 1: on a shared CPU more threads wait for each other)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    print(f"tokens {args.tokens} x hidden {args.hidden} x vocabulary {args.vocab}, {args.dtype} on {args.device}, "
          f"{args.threads} thread(s), {args.repeats} timed steps per method, one process per method")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    results = {}
    for name in args.methods.split(","):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--tokens", str(args.tokens),
               "--hidden", str(args.hidden), "--vocab", str(args.vocab), "--dtype", args.dtype, "--device",
               args.device, "--repeats", str(args.repeats), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            results[name] = {"skipped": f"failed: {proc.stderr.strip().splitlines()[-1:]}"}
        else:
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ref = results.get("reference", {})
    ref_mem, ref_time = ref.get("peak_bytes", 0), ref.get("median_s", 0)
    print(f"\n{'method':<18} {'peak added memory':>18} {'vs reference':>13} {'median time':>12} "
          f"{'vs reference':>13} {'loss':>10}")
    for name, r in results.items():
        if "skipped" in r:
            print(f"{name:<18} skipped: {r['skipped']}")
            continue
        print(f"{name:<18} {r['peak_bytes'] / 2**20:>14.0f} MiB {ratio(r['peak_bytes'], ref_mem):>13} "
              f"{r['median_s']:>10.3f} s {ratio(r['median_s'], ref_time):>13} {r['loss']:>10.5f}")


if __name__ == "__main__":
    main()
