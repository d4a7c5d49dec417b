"""PyTorch losses, measured side by side in one run: speed ratios and peak memory.

1. KD with logit standardization, forward + backward, float32 on CPU: the reference operation
   sequence of the published code (mean, unbiased std, subtract, divide, log_softmax, softmax,
   kl_div, sum, mean) against the fused ``logit_standardization.torch.kd_loss`` (with its default
   NaN/Inf scan and with ``check_finite=False``). Targets: >= 1.5x at 256 x 1000, >= 1x at 64 x 100.
2. Peak memory of the same two, forward + backward, measured two ways:
   * allocator peak: the profiler's allocation/free events (``profile_memory=True``), summed in
     time order; the peak of the running sum is the most memory allocated at once during the step
     (the inputs, allocated before, are not counted);
   * saved tensors: bytes of the distinct storages autograd keeps for the backward, counted with
     ``torch.autograd.graph.saved_tensors_hooks`` (inputs saved by reference included).
   Target: the fused path uses no more.
3. MLKD: ``mlkd_loss`` (all temperatures in one batched pass per view) against the same terms
   computed with one KD, CC and BC call per temperature, the way the published code loops (KD:
   the fused ``kd_loss``; CC and BC written as in the published code). Target: >= 2x at the
   CIFAR-100 setting (64 x 100).

Timings interleave the contenders repetition by repetition and report medians, so a busy
machine slows both sides alike. Each repetition is timed twice: wall-clock, and the CPU time of
the calling thread (``time.thread_time``), which leaves out the time the process waits while
other jobs run; with one intra-op thread every kernel runs on that thread, so the CPU-time
ratio is the steadier number on a shared machine (with more threads it misses the workers and
is not printed). Run: ``python benchmarks/bench_losses.py`` (``--threads``, ``--repeats``; one
intra-op thread by default: on a shared CPU, multi-threaded parallel regions wait for
descheduled workers and the numbers stop meaning anything).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import logit_standardization.torch as lt


# ----------------------------------------------------------------------------- contenders
def reference_kd(s: torch.Tensor, t: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """The published normalize() + kd_loss as one operation sequence."""

    def normalize(x):
        mean = x.mean(dim=-1, keepdim=True)
        std = x.std(dim=-1, keepdim=True)
        return (x - mean) / (1e-7 + std)

    log_q = F.log_softmax(normalize(s) / temperature, dim=1)
    p = F.softmax(normalize(t) / temperature, dim=1)
    return F.kl_div(log_q, p, reduction="none").sum(1).mean() * temperature**2


def fused_kd(s, t):
    return lt.kd_loss(s, t, temperature=2.0)


def fused_kd_unchecked(s, t):
    return lt.kd_loss(s, t, temperature=2.0, check_finite=False)


def cc_loss(s, t, temperature):
    """MLKD's class-correlation loss at one temperature, as the published code writes it."""
    ps, pt = F.softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1)
    return ((pt.T @ pt - ps.T @ ps) ** 2).sum() / s.shape[1]


def bc_loss(s, t, temperature):
    """MLKD's batch-correlation loss at one temperature, as the published code writes it."""
    ps, pt = F.softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1)
    return ((pt @ pt.T - ps @ ps.T) ** 2).sum() / s.shape[0]


def mlkd_per_temperature(sw, ss, tw, ts, temperatures=lt.DEFAULT_TEMPERATURES, w=9.0):
    """MLKD (variant "reference") with one KD, CC and BC call per temperature (KD: the fused
    ``kd_loss``; masks computed once, as in the batched version)."""
    mask, cmask = lt.confidence_masks(tw)
    m_bar, c_bar = mask.mean(), cmask.mean()
    kd = cc = bc = 0.0
    for j, tau in enumerate(temperatures):
        kd = kd + m_bar * lt.kd_loss(sw, tw, temperature=tau)
        kd = kd + (lt.kd_loss(ss, ts, temperature=tau) if j < 3 else lt.kd_loss(sw, tw, temperature=tau))
        cc = cc + c_bar * cc_loss(sw, tw, tau)
        bc = bc + m_bar * bc_loss(sw, tw, tau)
    return w * kd + w * cc + w * bc


def mlkd_batched(sw, ss, tw, ts):
    return lt.mlkd_loss(sw, ss, tw, ts)


# ----------------------------------------------------------------------------- measurement
def step(fn, inputs, grads):
    for x in grads:
        x.grad = None
    fn(*inputs).backward()


def time_side_by_side(contenders: dict, inputs, grads, repeats: int, target_s: float = 0.02):
    """Seconds per forward+backward, contenders interleaved in every repetition.

    Returns ``{name: (median, minimum, median CPU time)}`` over the repetitions: the median is
    the measurement; the minimum shows the cost with the least interference from other load; the
    CPU time is that of the calling thread (see the module docstring).
    """
    loops = {}
    for name, fn in contenders.items():
        for _ in range(3):
            step(fn, inputs, grads)
        t0 = time.perf_counter()
        step(fn, inputs, grads)
        loops[name] = max(1, int(target_s / max(time.perf_counter() - t0, 1e-7)))
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            n = loops[name]
            c0, t0 = time.thread_time(), time.perf_counter()
            for _ in range(n):
                step(fn, inputs, grads)
            t1, c1 = time.perf_counter(), time.thread_time()
            samples[name].append((t1 - t0) / n)
            cpu[name].append((c1 - c0) / n)
    return {name: (statistics.median(v), min(v), statistics.median(cpu[name])) for name, v in samples.items()}


def allocator_peak(fn, inputs, grads) -> int:
    """Peak bytes allocated at once during one forward+backward (profiler allocation events)."""
    step(fn, inputs, grads)  # warm up
    for x in grads:
        x.grad = None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(*inputs).backward()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def saved_bytes(fn, inputs, grads) -> int:
    """Bytes of the distinct storages autograd saves for the backward of one forward."""
    storages: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
        return t

    for x in grads:
        x.grad = None
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*inputs)
    out.backward()
    return sum(storages.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=25, help="interleaved repetitions per contender")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, CPU, float32, {torch.get_num_threads()} intra-op thread(s), "
          f"medians of {args.repeats} interleaved repetitions")

    one_thread = torch.get_num_threads() == 1

    def cpu_ratio(a, b):
        return f"{a / b:>6.2f}x" if one_thread else f"{'-':>7}"

    print("\n1. KD + logit standardization, forward + backward (student requires grad, teacher does not)")
    print(f"{'B x C':>10} {'reference':>10} {'fused':>10} {'no scan':>10} {'ratio':>7} {'no scan':>8} "
          f"{'ratio of minima':>16} {'CPU-time ratio':>15} {'no scan':>8}")
    for b, c in [(256, 1000), (64, 100)]:
        s = (torch.randn(b, c) * 4 + 1).requires_grad_()
        t = torch.randn(b, c) * 8
        ref = reference_kd(s, t)
        assert torch.allclose(fused_kd(s, t), ref, rtol=1e-5), "the two sides must compute the same loss"
        med = time_side_by_side({"ref": reference_kd, "fused": fused_kd, "nocheck": fused_kd_unchecked}, (s, t), (s,),
                                args.repeats)
        (r, r_min, r_cpu), (f, f_min, f_cpu), (u, _, u_cpu) = med["ref"], med["fused"], med["nocheck"]
        print(f"{f'{b} x {c}':>10} {r * 1e6:>8.0f}us {f * 1e6:>8.0f}us {u * 1e6:>8.0f}us {r / f:>6.2f}x {r / u:>7.2f}x "
              f"{r_min / f_min:>15.2f}x {cpu_ratio(r_cpu, f_cpu):>15} {cpu_ratio(r_cpu, u_cpu):>8}")

    print("\n2. Peak memory of one forward + backward, KD + LS, float32")
    print(f"{'B x C':>10} {'':>22} {'reference':>12} {'fused':>12} {'fused/ref':>10}")
    for b, c in [(256, 1000), (64, 100)]:
        s = torch.randn(b, c, requires_grad=True)
        t = torch.randn(b, c)
        for label, measure in (("allocator peak", allocator_peak), ("saved for backward", saved_bytes)):
            r, f = measure(reference_kd, (s, t), (s,)), measure(fused_kd, (s, t), (s,))
            print(f"{f'{b} x {c}':>10} {label:>22} {r / 1024:>10.0f}KiB {f / 1024:>10.0f}KiB {f / r:>10.2f}")

    print("\n3. MLKD (5 temperatures, variant 'reference'), forward + backward through both student views")
    print(f"{'B x C':>10} {'per temperature':>16} {'batched':>10} {'ratio':>7} {'ratio of minima':>16} "
          f"{'CPU-time ratio':>15}")
    for b, c in [(64, 100), (128, 1000)]:
        views = [torch.randn(b, c) * 3 for _ in range(4)]
        sw, ss = views[0].requires_grad_(), views[1].requires_grad_()
        inputs = (sw, ss, views[2], views[3])
        assert torch.allclose(mlkd_batched(*inputs), mlkd_per_temperature(*inputs), rtol=1e-5)
        med = time_side_by_side({"loop": mlkd_per_temperature, "batched": mlkd_batched}, inputs, (sw, ss),
                                args.repeats)
        (lo, lo_min, lo_cpu), (ba, ba_min, ba_cpu) = med["loop"], med["batched"]
        print(f"{f'{b} x {c}':>10} {lo * 1e6:>14.0f}us {ba * 1e6:>8.0f}us {lo / ba:>6.2f}x {lo_min / ba_min:>15.2f}x "
              f"{cpu_ratio(lo_cpu, ba_cpu):>15}")


if __name__ == "__main__":
    main()
