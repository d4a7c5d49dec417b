"""Throughput of one distillation step of ``lskd-train`` against a plain reference loop.

A step is: teacher forward (``no_grad``), student forward and backward, SGD step, for
resnet32x4 -> resnet8x4 on CIFAR-100-sized inputs with KD+LS (the recipe
``cifar100/kd_ls/resnet32x4-resnet8x4``: w_ce 0.1, w_kd 9, T 2).

* ``plain``: the loop a user would write from the reference code: float32, eager, the
  standardization and KD written as the reference operation sequence (mean, unbiased std,
  subtract, divide, log_softmax, softmax, kl_div, sum, mean).
* ``engine``: :func:`logit_standardization.training.engine.train_step` with the recipe's
  method object, as ``lskd-train`` runs it. On CPU with the default settings (float32,
  eager); on CUDA with ``--amp`` (bf16 by default) and channels_last.

The two are measured in alternating rounds in one process and the median images/s of each is
compared. The data pipeline (PIL decode-free CIFAR-sized images through the training
transform: random crop, flip, ToTensor, Normalize) is timed on its own, with the worker
settings the engine uses, so that it can be compared with the training throughput.

Usage::

    python benchmarks/bench_train.py                 # CPU
    python benchmarks/bench_train.py --device cuda   # GPU: AMP + channels_last vs plain
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from logit_standardization.training.data import build_transform, seed_worker
from logit_standardization.training.engine import StudentWithLoss, train_step
from logit_standardization.training.methods import build_method
from logit_standardization.training.models import create_model
from logit_standardization.training.recipes import load_recipe


def reference_kd_ls(s: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
    """KD with logit standardization as the reference code computes it, op by op."""
    zs = (s - s.mean(dim=-1, keepdim=True)) / (1e-7 + s.std(dim=-1, keepdim=True))
    zt = (t - t.mean(dim=-1, keepdim=True)) / (1e-7 + t.std(dim=-1, keepdim=True))
    log_p = F.log_softmax(zs / tau, dim=1)
    q = F.softmax(zt / tau, dim=1)
    return F.kl_div(log_p, q, reduction="none").sum(1).mean() * tau * tau


class RandomImages(Dataset):
    """CIFAR-sized uint8 images through a PIL transform, like the CIFAR-100 dataset."""

    def __init__(self, n: int, transform) -> None:
        rng = np.random.default_rng(0)
        self.data = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        self.labels = rng.integers(0, 100, size=n)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.data[i])), int(self.labels[i])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--batch", type=int, default=64, help="batch size (the recipe's 64)")
    p.add_argument("--steps", type=int, default=4, help="steps per round")
    p.add_argument("--rounds", type=int, default=5, help="alternating measurement rounds")
    p.add_argument("--amp", choices=("off", "bf16", "fp16"), help="engine AMP dtype (default: bf16 on CUDA, off on CPU)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="engine in channels_last (default: on CUDA only)")
    p.add_argument("--workers", type=int, default=2, help="data-loader workers for the data-pipeline timing")
    args = p.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    cfg = load_recipe("cifar100/kd_ls/resnet32x4-resnet8x4")
    m = cfg["method"]
    amp = args.amp or ("bf16" if cuda else "off")
    channels_last = cuda if args.channels_last is None else args.channels_last
    if amp == "fp16" and not cuda:
        p.error("--amp fp16 needs --device cuda")

    teacher = create_model("resnet32x4", dataset="cifar100").to(device).eval().requires_grad_(False)
    students = {name: create_model("resnet8x4", dataset="cifar100").to(device) for name in ("plain", "engine")}
    students["engine"].load_state_dict(students["plain"].state_dict())
    opt_kw = dict(lr=cfg["optimizer"]["lr"], momentum=0.9, weight_decay=5e-4)
    opts = {name: torch.optim.SGD(s.parameters(), **opt_kw) for name, s in students.items()}
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 100, (args.batch,), device=device)

    method = build_method(m).to(device)
    if channels_last:
        students["engine"].to(memory_format=torch.channels_last)
        teacher_cl = create_model("resnet32x4", dataset="cifar100").to(device).eval().requires_grad_(False)
        teacher_cl.load_state_dict(teacher.state_dict())
        teacher_cl.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
    else:
        teacher_cl, x_cl = teacher, x
    distiller = StudentWithLoss(students["engine"], method, device=device, amp=amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def plain_step() -> None:
        with torch.no_grad():
            t = teacher(x)
        s = students["plain"](x)
        loss = m["ce_weight"] * F.cross_entropy(s, y) + m["kd_weight"] * reference_kd_ls(s, t, m["temperature"])
        opts["plain"].zero_grad(set_to_none=True)
        loss.backward()
        opts["plain"].step()

    def engine_step() -> None:
        train_step(distiller, teacher_cl, opts["engine"], scaler, x_cl, y, amp=amp)

    steps = {"plain": plain_step, "engine": engine_step}
    for fn in steps.values():  # warm-up (allocator, cuDNN autotuning)
        for _ in range(2):
            fn()
    sync(device)
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(args.rounds):
        order = list(steps.items())
        for name, fn in order if r % 2 == 0 else order[::-1]:  # alternate who goes first
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            sync(device)
            rates[name].append(args.steps * args.batch / (time.perf_counter() - t0))
    plain, engine = statistics.median(rates["plain"]), statistics.median(rates["engine"])
    what = ", ".join([f"AMP {amp}" if amp != "off" else "float32", "channels_last" if channels_last else "eager"])
    print(f"device {device} ({torch.get_num_threads()} threads), batch {args.batch}, resnet32x4 -> resnet8x4, "
          f"KD+LS; median of {args.rounds} rounds x {args.steps} steps")
    print(f"  plain reference loop (fp32, eager):  {plain:10.1f} images/s")
    print(f"  lskd-train step ({what}): {engine:10.1f} images/s")
    print(f"  ratio engine / plain: {engine / plain:.2f}x")

    # data pipeline on its own, with the engine's loader settings
    dataset = RandomImages(args.batch * 40, build_transform("cifar100", train=True))
    loader_kw = dict(batch_size=args.batch, shuffle=True, num_workers=args.workers, pin_memory=cuda,
                     worker_init_fn=seed_worker, drop_last=True)
    if args.workers > 0:
        loader_kw.update(persistent_workers=True, prefetch_factor=4)
    loader = DataLoader(dataset, **loader_kw)
    for _ in loader:  # start the workers
        break
    t0 = time.perf_counter()
    n = 0
    for images, labels in loader:
        images.to(device, non_blocking=True)
        n += labels.numel()
    sync(device)
    data_rate = n / (time.perf_counter() - t0)
    verdict = "not a bottleneck" if data_rate > engine else "the BOTTLENECK: raise data.num_workers"
    print(f"  data loading alone ({args.workers} workers, CIFAR transform): {data_rate:10.1f} images/s "
          f"({data_rate / engine:.1f}x the training step: {verdict})")


if __name__ == "__main__":
    main()
