"""Latency of every CIFAR-100 student: eager PyTorch vs the exported graph in ONNX Runtime.

For each student architecture of the shipped CIFAR-100 distillation recipes, a ``student.pt``
is written, exported with ``export_onnx`` (verified against PyTorch), and both runtimes are
timed side by side in this one process: calls interleaved, order alternating, median per
side, batch 1 and 64. The table is Markdown; the last line says for how many students ONNX
Runtime is at least 1.5x faster than eager PyTorch at batch 1.

Usage::

    python benchmarks/bench_export.py [--threads N] [--budget S] [--exporter auto|dynamo|torchscript]
                                      [--provider auto|cpu|cuda] [--archs a,b,...]

Weights are untrained (latency does not depend on their values); BN running statistics are
measured on random inputs so activations have a trained network's scale.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

from logit_standardization.export import export_onnx
from logit_standardization.training.checkpoint import student_payload
from logit_standardization.training.models import create_model
from logit_standardization.training.recipes import list_recipes, load_recipe

TARGET = 1.5


def cifar_students() -> list[str]:
    """Student architectures of the shipped CIFAR-100 distillation recipes."""
    names = [n for n in list_recipes("cifar100/") if "/teacher/" not in n]
    return sorted({load_recipe(n)["student"]["arch"] for n in names}, key=str.lower)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _student_file(arch: str, directory: Path) -> tuple[Path, int]:
    torch.manual_seed(0)
    net = create_model(arch, dataset="cifar100")
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(torch.randn(16, 3, 32, 32))
    net.eval()
    path = directory / f"{arch}.pt"
    torch.save(student_payload(net, arch=arch, dataset="cifar100", num_classes=100), path)
    return path, sum(p.numel() for p in net.parameters())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for both runtimes (default 1)")
    p.add_argument("--budget", type=float, default=2.0, help="seconds of timing per model and batch size")
    p.add_argument("--exporter", default="auto", choices=("auto", "dynamo", "torchscript"))
    p.add_argument("--provider", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--archs", help="comma-separated subset of the students")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    archs = args.archs.split(",") if args.archs else cifar_students()

    print(f"command: python {shlex.join(['benchmarks/bench_export.py', *(argv if argv is not None else sys.argv[1:])])}")
    print(
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, {_cpu_name()} ({os.cpu_count()} CPUs), "
        f"{args.threads} thread(s), batch 1 and 64, median of interleaved repetitions; "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )
    print()
    print(
        "| student | params | exporter | max abs diff | eager b1 ms | ORT b1 ms | speed-up b1 "
        "| eager b64 ms | ORT b64 ms | speed-up b64 |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    speedups = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            ckpt, n_params = _student_file(arch, Path(tmp))
            report = export_onnx(
                ckpt, exporter=args.exporter, provider=args.provider, run_benchmark=True,
                verify_batch_sizes=(1, 4, 16), benchmark_batch_sizes=(1, 64),
            )  # fmt: skip
            bench = report.benchmark
            b1, b64 = bench.rows
            speedups[arch] = b1.speedup
            print(
                f"| {arch} | {n_params / 1e6:.2f}M | {report.exporter} | {report.verifications[0].max_abs_diff:.1e} "
                f"| {b1.reference_ms:.2f} | {b1.onnx_ms:.2f} | {b1.speedup:.2f}x "
                f"| {b64.reference_ms:.1f} | {b64.onnx_ms:.1f} | {b64.speedup:.2f}x |",
                flush=True,
            )
    provider = bench.provider
    met = [a for a, s in speedups.items() if s >= TARGET]
    print()
    print(
        f"ONNX Runtime provider: {provider}; total {time.perf_counter() - started:.0f} s; "
        f"load average at end {os.getloadavg()[0]:.1f}"
    )
    print(
        f"target ONNX Runtime >= {TARGET}x eager at batch 1: met for {len(met)}/{len(speedups)} students "
        f"(min {min(speedups.values()):.2f}x, median {sorted(speedups.values())[len(speedups) // 2]:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
