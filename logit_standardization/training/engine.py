r"""The training engine: one loop for every recipe (a teacher, a student alone, or distillation).

:func:`train` runs a resolved recipe (see :mod:`.recipes`) and writes, in the output
directory (rank 0 only):

* ``last.pt`` (resume state), ``best.pt`` (epoch of best test top-1), ``student.pt``
  (last-epoch network, the input of ``lskd-export``) -- see :mod:`.checkpoint`;
* ``metrics.jsonl``: one JSON object per epoch (learning rate, losses per term, top-1/top-5
  on train and test, CTKD temperature and :math:`\lambda`, DKD warm-up factor, seconds,
  data-loading seconds, images/s);
* ``summary.json``: best-epoch and last-epoch top-1/top-5, the paper's number, the teacher's
  accuracy, the resolved config, seed, world size and package versions;
* ``metrics.csv``: the records of ``metrics.jsonl`` as a table (:class:`.callbacks.CSVLogger`,
  always on), and what the other callbacks write (``--logger tensorboard|wandb``).

The run is a set-up (data, networks, method, optimizer, the resume state: :class:`_Run`), then
per epoch :func:`train_one_epoch` (the optimisation steps, :func:`train_step`) and
:func:`evaluate`, the epoch's record and checkpoints, and the callbacks
(:class:`.callbacks.Callback`: ``on_train_begin``, ``on_epoch_begin``, ``on_epoch_end``,
``on_train_end``, ``on_exception``), which rank 0 alone calls.

Per iteration: the teacher (frozen, eval mode, ``no_grad``) and the student run under the
optional autocast; logits are cast to float32 before any loss, so the standardization
statistics are float32 whatever the AMP mode. The loss is backpropagated (through a
``GradScaler`` for fp16) and SGD steps over the student's parameters and the method's (CTKD's
temperature), with weight decay on all of them as in the reference.

Learning rate: evaluated once at the start of each 1-based epoch :math:`e`:
``step``: :math:`\eta\,\gamma^{|\{m \in \text{milestones}: e > m\}|}` (the reference);
``cosine``: :math:`\eta_{min} + (\eta - \eta_{min})(1 + \cos(\pi (e-1)/E))/2`.

Randomness: every RNG (torch, NumPy, ``random``, the loader's generator and therefore the
worker seeds, and the sampler's order) is re-seeded at the start of each epoch from
``(seed, epoch, rank)``, so an epoch's computation depends only on the state at its start;
``last.pt`` is written at every epoch boundary, which makes a resumed run bit-identical to an
uninterrupted one on CPU. SIGTERM/SIGINT stop at the next iteration, save ``last.pt`` with
the position inside the epoch, and raise :class:`TrainingInterrupted`; resuming from such a
mid-epoch state continues with the same sample order (the already-seen batches are skipped)
but fresh augmentation draws.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import platform
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from . import distributed as D
from ._byo import load_checked_weights, run_payload
from ._errors import TrainingError
from .callbacks import Callback, CSVLogger
from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    remove_stale_temp_files,
    save_atomic,
    save_student,
    validate_resume_checkpoint,
)
from .methods import Method, build_method

__all__ = [
    "TrainingInterrupted",
    "StudentWithLoss",
    "train",
    "train_one_epoch",
    "train_step",
    "evaluate",
    "EpochStats",
    "Callback",
    "lr_at",
    "seed_everything",
    "accuracy_counts",
    "RESUME_SAFE_KEYS",
]

RESUME_SAFE_KEYS = (
    "schedule.epochs",
    "data.root",
    "data.download",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "data.prefetch_factor",
    "teacher.checkpoint",
    "student.checkpoint",
    "train.save_every",
    "train.eval_teacher",
    "train.compile",
    "description",
    "note",
    "source",
)
"""Config keys that may change between a run and its ``--resume`` (anything else is refused)."""


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT arrived; ``last.pt`` was saved. ``signum`` is the signal number."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


# ------------------------------------------------------------------------------------ helpers
def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), NumPy and ``random`` with ``seed``."""
    seed = int(seed) % (2**63)
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 1009 + int(rank)) % (2**63)


def lr_at(epoch: int, optimizer_cfg: dict[str, Any], schedule_cfg: dict[str, Any]) -> float:
    """Learning rate of a 1-based epoch.

    Example:
        >>> opt = {"lr": 0.05}; sched = {"name": "step", "milestones": [150, 180, 210], "gamma": 0.1, "epochs": 240}
        >>> [round(lr_at(e, opt, sched), 8) for e in (1, 150, 151, 181, 211)]
        [0.05, 0.05, 0.005, 0.0005, 5e-05]
        >>> lr_at(1, {"lr": 0.1}, {"name": "cosine", "epochs": 10, "min_lr": 0.0})
        0.1
    """
    base = float(optimizer_cfg["lr"])
    if schedule_cfg["name"] == "cosine":
        lo = float(schedule_cfg.get("min_lr") or 0.0)
        frac = (epoch - 1) / max(1, int(schedule_cfg["epochs"]))
        return lo + (base - lo) * 0.5 * (1.0 + math.cos(math.pi * frac))
    passed = sum(1 for m in schedule_cfg.get("milestones") or [] if epoch > m)
    return base * float(schedule_cfg.get("gamma", 0.1)) ** passed


def accuracy_counts(logits: torch.Tensor, labels: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Numbers of samples whose label is the top-1 and among the top-``k`` predictions.

    Example:
        >>> logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
        >>> [int(c) for c in accuracy_counts(logits, torch.tensor([1, 2]), k=2)]
        [1, 1]
    """
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hit = top == labels[:, None]
    return hit[:, 0].sum(), hit.any(dim=1).sum()


def _versions() -> dict[str, str]:
    import torchvision

    from .. import __version__

    return {"logit_standardization": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _flatten(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k not in RESUME_SAFE_KEYS]


def _subset(ds: Dataset, n: int | None, salt: int) -> Dataset:
    """A fixed random subset of ``n`` samples (the same for every seed and rank)."""
    if n is None or n >= len(ds):  # type: ignore[arg-type]
        return ds
    if n < 1:
        raise TrainingError(f"data subset size must be >= 1; got {n}")
    g = torch.Generator().manual_seed(20240 + salt)
    idx = torch.randperm(len(ds), generator=g)[:n].sort().values.tolist()  # type: ignore[arg-type]
    return Subset(ds, idx)


def _to_device(x: Any, device: torch.device, channels_last: bool) -> Any:
    if isinstance(x, (list, tuple)):
        return type(x)(_to_device(v, device, channels_last) for v in x)
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _autocast(device: torch.device, amp: str):
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


class StudentWithLoss(nn.Module):
    """Student forward (one or two views, under autocast) and the method's loss, as one module
    so that DDP synchronises the student's and the method's (CTKD's) gradients together.

    Args:
        student: the network being trained.
        method: a :class:`.methods.Method`.
        device: the device (selects the autocast device type).
        amp: ``"off"``, ``"bf16"`` or ``"fp16"``.
        student_fn: what to call instead of ``student`` (e.g. ``torch.compile(student)``).

    ``forward(images, labels, teacher_logits)`` returns ``(loss, terms, student_logits)``; the
    logits are float32 whatever ``amp`` is.
    """

    def __init__(self, student: nn.Module, method: Method, *, device: torch.device, amp: str,
                 student_fn: nn.Module | None = None) -> None:
        super().__init__()
        self.student = student
        self.method = method
        self._student_fn = [student_fn if student_fn is not None else student]  # not registered twice
        self.device = device
        self.amp = amp

    def forward(self, images: Any, labels: torch.Tensor, teacher_logits: Any):
        fn = self._student_fn[0]
        with _autocast(self.device, self.amp):
            if self.method.views == 2:
                out = (fn(images[0]), fn(images[1]))
            else:
                out = fn(images)
        out = tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()
        loss, terms = self.method(out, teacher_logits, labels)
        return loss, terms, out


@torch.no_grad()
def _teacher_logits(teacher: nn.Module | None, images: Any, device: torch.device, amp: str, views: int) -> Any:
    if teacher is None:
        return None
    with _autocast(device, amp):
        out = (teacher(images[0]), teacher(images[1])) if views == 2 else teacher(images)
    return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()


def train_step(model: nn.Module, teacher: nn.Module | None, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, images: Any, labels: torch.Tensor, *, views: int = 1,
               amp: str = "off") -> tuple[torch.Tensor, dict[str, torch.Tensor], Any]:
    """One optimisation step: teacher forward (``no_grad``), student forward and loss, backward, SGD.

    Args:
        model: a :class:`StudentWithLoss` (possibly wrapped in DDP).
        teacher: the frozen teacher in eval mode, or None for a network trained alone.
        optimizer: over the student's and the method's parameters.
        scaler: a ``GradScaler`` (disabled unless fp16).
        images: a batch on the device (a ``(weak, strong)`` pair when ``views == 2``).
        labels: ``(B,)`` class indices on the device.
        views: 1, or 2 for MLKD.
        amp: ``"off"``, ``"bf16"`` or ``"fp16"``.

    Returns:
        ``(loss, terms, student_logits)`` (graph-free loss and terms, float32 logits).
    """
    device = labels.device
    teacher_logits = _teacher_logits(teacher, images, device, amp, views)
    loss, terms, out = model(images, labels, teacher_logits)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), {k: v.detach() for k, v in terms.items()}, out


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, *, device: torch.device, amp: str = "off",
             channels_last: bool = False, state: D.DistState | None = None) -> dict[str, float]:
    """Top-1, top-5 (%) and mean cross-entropy of ``model`` on ``loader``, summed over ranks.

    The model is put in eval mode (and left there).
    """
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, n
    for images, labels in loader:
        images = _to_device(images, device, channels_last)
        labels = labels.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(images)
        logits = logits.float()
        c1, c5 = accuracy_counts(logits, labels)
        sums[:3] += torch.stack([F.cross_entropy(logits, labels, reduction="sum").double(), c1.double(), c5.double()])
        sums[3] += labels.numel()
    if state is not None:
        D.all_reduce_sum(sums, state)
    loss, c1, c5, n = sums.tolist()
    n = max(n, 1.0)
    return {"loss": loss / n, "top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n}


@dataclass
class EpochStats:
    """What :func:`train_one_epoch` measured (on this rank until the epoch is complete).

    Attributes:
        names: ``"loss"`` and then the method's term names (``"ce"``, ``"kd"``, ...).
        sums: float64 sums over the samples of each name's batch mean times the batch size.
        counts: float64 ``[top-1 hits, top-5 hits, samples]`` of the training batches.
        seconds: ``{"train": ..., "data": ...}`` (data: waiting for the loader).
        steps: batches of the epoch done so far (including those of a resumed position).
        stopped: True when ``should_stop`` ended the epoch early; the sums are then this rank's,
            not summed over the ranks.
    """

    names: list[str] = field(default_factory=list)
    sums: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    counts: torch.Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64))
    seconds: dict[str, float] = field(default_factory=lambda: {"train": 0.0, "data": 0.0})
    steps: int = 0
    stopped: bool = False

    @classmethod
    def from_partial(cls, partial: dict[str, Any], device: torch.device) -> "EpochStats":
        """The statistics saved in ``last.pt`` by an interrupted epoch (its ``partial`` entry)."""
        return cls(names=list(partial["terms"]), sums=torch.tensor(partial["sums"], dtype=torch.float64, device=device),
                   counts=torch.tensor(partial["counts"], dtype=torch.float64, device=device),
                   seconds=dict(partial["seconds"]), steps=int(partial["batches_done"]))

    def partial(self, epoch: int, *, world_size: int, batch: int) -> dict[str, Any]:
        """The ``partial`` entry of ``last.pt`` for a stop inside ``epoch``."""
        return {"epoch": epoch, "batches_done": self.steps, "terms": self.names, "sums": self.sums.tolist(),
                "counts": self.counts.tolist(), "seconds": self.seconds, "world_size": world_size, "batch": batch}


def train_one_epoch(model: nn.Module, teacher: nn.Module | None, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, loader: DataLoader, *, device: torch.device, epoch: int,
                    views: int = 1, amp: str = "off", channels_last: bool = False,
                    state: D.DistState | None = None, start: EpochStats | None = None, progress: bool = False,
                    desc: str = "", should_stop: Callable[[], bool] | None = None) -> EpochStats:
    """One pass over ``loader`` with :func:`train_step`: the epoch's loss terms and accuracy.

    The model is put in train mode and the teacher in eval mode. The caller sets the learning
    rate, the seeds and the sampler's position first (as :func:`train` does).

    Args:
        model: a :class:`StudentWithLoss` (possibly wrapped in DDP).
        teacher: the frozen teacher, or None.
        optimizer, scaler: as for :func:`train_step`.
        loader: the training batches ``(images..., labels)``.
        device: where the batches go.
        epoch: the 1-based epoch (for messages).
        views, amp, channels_last: as for :func:`train_step` and :func:`evaluate`.
        state: the :class:`.distributed.DistState` (None: one process).
        start: statistics of an interrupted epoch to continue (:meth:`EpochStats.from_partial`).
        progress: draw a tqdm bar on stderr (labelled ``desc``).
        should_stop: asked after each step (every 20 steps under DDP, agreed by all ranks);
            True ends the epoch early with ``stopped`` set.

    Returns:
        The :class:`EpochStats`, summed over the ranks unless stopped early.

    Raises:
        TrainingError: the loss is not finite (checked every step on CPU, every 50 elsewhere).
    """
    state = state or D.DistState(rank=0, world_size=1, local_rank=0, device=device, distributed=False)
    model.train()
    if teacher is not None:
        teacher.eval()
    stats = start or EpochStats(sums=torch.zeros(0, dtype=torch.float64, device=device),
                                counts=torch.zeros(3, dtype=torch.float64, device=device))
    stats.counts = stats.counts.to(device)
    names, sums, counts, seconds = stats.names, stats.sums.to(device), stats.counts, stats.seconds
    done = stats.steps
    total_steps = len(loader) + done
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=done, desc=desc, unit="it", leave=False, dynamic_ncols=True,
                   file=sys.stderr)
    step = done
    t0 = time.perf_counter()
    shown = t0
    it: Iterator = iter(loader)
    try:
        while True:
            t_data = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            seconds["data"] += time.perf_counter() - t_data
            *images, labels = batch
            images = images[0] if len(images) == 1 else tuple(images)
            images = _to_device(images, device, channels_last)
            labels = labels.to(device, non_blocking=True)
            loss, terms, out = train_step(model, teacher, optimizer, scaler, images, labels, views=views, amp=amp)
            step += 1

            with torch.no_grad():
                if not names:
                    names = ["loss", *terms]
                    sums = torch.zeros(len(names), dtype=torch.float64, device=device)
                n = labels.numel()
                vals = torch.stack([loss.detach().double(), *(terms[k].detach().double() for k in names[1:])])
                sums += vals * n
                weak = out[0] if isinstance(out, tuple) else out
                c1, c5 = accuracy_counts(weak.detach(), labels)
                counts[:2] += torch.stack([c1.double(), c5.double()])
                counts[2] += n
            now = time.perf_counter()
            if bar is not None:
                bar.update(1)
                if now - shown > 0.5 or step == total_steps:
                    shown = now
                    c = counts.tolist()
                    bar.set_postfix(loss=f"{sums[0].item() / max(c[2], 1):.4f}",
                                    acc=f"{100 * c[0] / max(c[2], 1):.2f}",
                                    img_s=f"{c[2] * state.world_size / max(seconds['train'] + now - t0, 1e-9):.0f}")
            if device.type == "cpu" or step % 50 == 0:  # on an accelerator, sync only now and then
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise TrainingError(
                        f"the loss became {value} at epoch {epoch}, iteration {step}: training diverged "
                        "(lower optimizer.lr, or check the data and the teacher checkpoint)")
            # a stop request ends every rank at the same step (checked every 20 steps under DDP: one sync)
            if should_stop is not None and (not state.distributed or step % 20 == 0) \
                    and D.any_rank(should_stop(), state):
                seconds["train"] += time.perf_counter() - t0
                return EpochStats(names, sums, counts, seconds, step, stopped=True)
        seconds["train"] += time.perf_counter() - t0
    finally:
        if bar is not None:
            bar.close()
    D.all_reduce_sum(sums, state)
    D.all_reduce_sum(counts, state)
    return EpochStats(names, sums, counts, seconds, step)


class _SignalFlag:
    """Remember SIGTERM/SIGINT instead of dying; restore the previous handlers on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_SignalFlag":
        if _threading_main():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in history), encoding="utf-8")
    os.replace(tmp, path)


def _fmt_terms(terms: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in terms.items())


# ------------------------------------------------------------------------------------ the run
class _Run:
    """State of one training run (built by :func:`train`)."""

    def __init__(self, cfg: dict[str, Any], output: Path, state: D.DistState, *, quiet: bool, resume: bool,
                 log: Callable[[str], None], callbacks: Sequence[Callback] = (), epoch_lines: bool = True) -> None:
        self.cfg, self.output, self.state, self.quiet, self.log = cfg, output, state, quiet, log
        self.callbacks: list[Callback] = list(callbacks) if state.is_main else []  # rank 0 only
        self.epoch_lines = epoch_lines
        self.device = state.device
        t = cfg["train"]
        self.amp = t["amp"]
        if self.amp == "fp16" and self.device.type != "cuda":
            raise TrainingError("train.amp=fp16 needs CUDA (float16 autocast with a GradScaler); on CPU use bf16")
        self.channels_last = bool(t["channels_last"])
        self.seed = int(t["seed"])
        self.epochs = int(cfg["schedule"]["epochs"])

        if t["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        seed_everything(self.seed)
        self.method = build_method(cfg["method"])
        self._build_data()
        self._build_models()
        self._resume_state = self._load_resume() if resume else None

    # -------------------------------------------------------------------------------- setup
    def _build_data(self) -> None:
        from .data import build_datasets

        cfg, d = self.cfg, self.cfg["data"]
        kwargs = dict(mlkd_views=self.method.views == 2, download=bool(d["download"]), augment=bool(d["augment"]),
                      reference_cutout_quirk=bool(d["cutout_quirk"]), val_fraction=d.get("val_fraction"),
                      val_seed=int(d.get("val_seed") or 0))
        if cfg["dataset"] == "imagefolder":  # your own images: size and normalization from the recipe
            kwargs.update(image_size=d["image_size"], mean=d["mean"], std=d["std"])
        if d["download"] and self.state.distributed:  # rank 0 downloads, the others wait
            if self.state.is_main:
                build_datasets(cfg["dataset"], d["root"], **kwargs)
            D.barrier(self.state)
            kwargs["download"] = False
        try:
            bundle = build_datasets(cfg["dataset"], d["root"], **kwargs)
        except FileNotFoundError as exc:  # DatasetNotFoundError: the message says what and where
            raise TrainingError(f"{exc} (set the directory with --data-root)") from None
        except ValueError as exc:
            if d.get("val_fraction") is None:
                raise
            raise TrainingError(str(exc)) from None
        self.num_classes = int(bundle.num_classes)
        self.data_info = bundle.info
        self.data_desc = (f"the {self.num_classes} class folders of {str(bundle.root / 'train')!r}"
                          if cfg["dataset"] == "imagefolder" else f"dataset {cfg['dataset']!r}")
        self.train_set = _subset(bundle.train, d["train_subset"], 0)
        self.test_set = _subset(bundle.test, d["test_subset"], 1)
        world = self.state.world_size
        for key in ("batch_size", "test_batch_size"):
            if d[key] % world:
                raise TrainingError(
                    f"data.{key} = {d[key]} is the global batch and must be divisible by the {world} processes")
        self.batch = d["batch_size"] // world
        self.test_batch = d["test_batch_size"] // world
        self.sampler = D.EpochSampler(self.train_set, num_replicas=world, rank=self.state.rank, shuffle=True,
                                      seed=self.seed, drop_last=False)
        workers = int(d["num_workers"])
        cuda = self.device.type == "cuda"
        from .data import seed_worker

        self.loader_generator = torch.Generator()
        common = dict(num_workers=workers, pin_memory=bool(d["pin_memory"]) and cuda, worker_init_fn=seed_worker)
        if workers > 0:
            common["prefetch_factor"] = int(d["prefetch_factor"])
            common["persistent_workers"] = bool(d["persistent_workers"])
        self.train_loader = DataLoader(self.train_set, batch_size=self.batch, sampler=self.sampler,
                                       generator=self.loader_generator, drop_last=False, **common)
        self.test_loader = DataLoader(
            self.test_set, batch_size=self.test_batch, shuffle=False,
            sampler=D.ShardSampler(len(self.test_set), rank=self.state.rank, world_size=world), **common)

    def _build_models(self) -> None:
        from .models import create_model

        cfg = self.cfg
        self.student_arch = cfg["student"]["arch"]
        self.student = create_model(self.student_arch, dataset=cfg["dataset"], num_classes=self.num_classes)
        if cfg["student"].get("checkpoint"):  # initial weights from a local file
            load_checked_weights(self.student, cfg["student"]["checkpoint"], arch=self.student_arch,
                                 num_classes=self.num_classes, what="student checkpoint", data=self.data_desc)
        self.teacher: nn.Module | None = None
        self.teacher_meta: dict[str, Any] = {}
        if self.method.needs_teacher:
            arch, path = cfg["teacher"]["arch"], cfg["teacher"]["checkpoint"]
            if not path:
                hint = (f"the best.pt or student.pt of a `lskd-train {cfg['dataset']}/teacher/{arch}` run, "
                        if cfg["dataset"] == "cifar100" else "the best.pt or student.pt of a teacher run, ")
                raise TrainingError(
                    f"recipe {cfg['name']!r} distils from a {arch} teacher: pass --teacher PATH ({hint}"
                    "or a reference checkpoint {'model': state_dict} / plain state dict)")
            self.teacher = create_model(arch, dataset=cfg["dataset"], num_classes=self.num_classes)
            self.teacher_meta = load_checked_weights(self.teacher, path, arch=arch, num_classes=self.num_classes,
                                                     what="teacher checkpoint", data=self.data_desc)
            self.teacher.requires_grad_(False)
            self.teacher.eval()
            self.teacher.to(self.device)
            if self.channels_last:
                self.teacher.to(memory_format=torch.channels_last)
        if cfg["train"]["sync_bn"] and self.state.distributed:
            self.student = nn.SyncBatchNorm.convert_sync_batchnorm(self.student)
        self.student.to(self.device)
        self.method.to(self.device)
        if self.channels_last:
            self.student.to(memory_format=torch.channels_last)
        student_fn = torch.compile(self.student) if cfg["train"]["compile"] else None
        self.distiller = StudentWithLoss(self.student, self.method, device=self.device, amp=self.amp,
                                         student_fn=student_fn)
        self.model: nn.Module = self.distiller
        if self.state.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DDP(self.distiller, device_ids=ids)
        o = cfg["optimizer"]
        params = list(self.student.parameters()) + list(self.method.parameters())
        self.optimizer = torch.optim.SGD(params, lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"],
                                         nesterov=o["nesterov"])
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")

    def _load_resume(self) -> dict[str, Any] | None:
        path = self.output / "last.pt"
        if not path.is_file():
            self.log(f"--resume: no {path} yet, starting from epoch 1")
            return None
        ckpt = load_checkpoint(path, what="resume checkpoint")
        validate_resume_checkpoint(ckpt, path, epochs=self.epochs, student=self.student, method=self.method,
                                   optimizer=self.optimizer, student_arch=self.student_arch)
        changes = _config_changes(ckpt["config"], self.cfg)
        if changes:
            raise TrainingError(
                f"cannot resume {str(self.output)!r}: the run was started with other settings ("
                + "; ".join(changes) + "). Use the original settings or another --output.")
        partial = ckpt.get("partial")
        if partial and (partial["world_size"] != self.state.world_size or partial["batch"] != self.batch):
            raise TrainingError(
                f"cannot resume {str(self.output)!r} inside epoch {partial['epoch']}: it was interrupted with "
                f"{partial['world_size']} processes of batch {partial['batch']}, now {self.state.world_size} x "
                f"{self.batch}; resume with the same number of processes")
        for field, load in (("student", lambda: self.student.load_state_dict(ckpt["student"]["state_dict"])),
                            ("method", lambda: self.method.load_state_dict(ckpt["method"])),
                            ("optimizer", lambda: self.optimizer.load_state_dict(ckpt["optimizer"])),
                            ("scaler", lambda: ckpt["scaler"] and self.scaler.load_state_dict(ckpt["scaler"]))):
            try:
                load()
            except (RuntimeError, ValueError, KeyError, TypeError) as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise CheckpointError(f"resume checkpoint {str(path)!r}: field {field!r} cannot be loaded "
                                      f"({type(exc).__name__}: {reason})") from None
        return ckpt

    # ------------------------------------------------------------------------------ writing
    def _payload(self) -> dict[str, Any]:
        return run_payload(self.student, arch=self.student_arch, dataset=self.cfg["dataset"],
                           num_classes=self.num_classes, info=self.data_info)

    def _save_last(self, epoch: int, partial: dict[str, Any] | None = None) -> None:
        if not self.state.is_main:
            return
        save_atomic({
            "kind": "last",
            "epoch": epoch,
            "student": self._payload(),
            "method": {k: v.detach().cpu() for k, v in self.method.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "best": dict(self.best),
            "teacher_eval": dict(self.teacher_eval),
            "history": list(self.history),
            "partial": partial,
            "config": self.cfg,
        }, self.output / "last.pt")

    # ------------------------------------------------------------------------------ running
    def run(self) -> dict[str, Any]:
        out, state = self.output, self.state
        ck = self._resume_state
        self.history: list[dict[str, Any]] = list(ck["history"]) if ck else []
        self.best: dict[str, Any] = dict(ck["best"]) if ck else {"epoch": 0, "top1": -1.0, "top5": 0.0}
        self.teacher_eval: dict[str, Any] = dict(ck.get("teacher_eval") or {}) if ck else {}
        start = int(ck["epoch"]) + 1 if ck else 1
        partial = ck.get("partial") if ck else None
        if state.is_main:
            out.mkdir(parents=True, exist_ok=True)
            _write_metrics(out / "metrics.jsonl", self.history)
        if ck:
            where = f"epoch {partial['epoch']}, batch {partial['batches_done']}" if partial else f"epoch {start}"
            self.log(f"resuming {out} at {where}")

        if self.teacher is not None and self.cfg["train"]["eval_teacher"] and not self.teacher_eval:
            self.teacher_eval = evaluate(self.teacher, self.test_loader, device=self.device, amp=self.amp,
                                         channels_last=self.channels_last, state=state)
            self.log(f"teacher {self.cfg['teacher']['arch']}: test top-1 {self.teacher_eval['top1']:.2f}, "
                     f"top-5 {self.teacher_eval['top5']:.2f}")
            self.teacher.eval()

        begun = False
        try:
            begun = True  # from here on, an exception reaches every callback's on_exception
            self._call("on_train_begin", self._info(start, resumed=ck is not None))
            t_run = time.perf_counter()
            with _SignalFlag() as flag:
                for epoch in range(start, self.epochs + 1):
                    self._call("on_epoch_begin", epoch)
                    skip = partial if partial and partial["epoch"] == epoch else None
                    record = self._epoch(epoch, skip, flag)
                    partial = None
                    self.history.append(record)
                    improved = record["test_top1"] > self.best["top1"]
                    if improved:
                        self.best = {"epoch": epoch, "top1": record["test_top1"], "top5": record["test_top5"]}
                    if state.is_main:
                        with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
                            f.write(json.dumps(record) + "\n")
                        if improved:
                            save_atomic({"kind": "best", "epoch": epoch, "top1": record["test_top1"],
                                         "top5": record["test_top5"], "student": self._payload()}, out / "best.pt")
                        if epoch % self.cfg["train"]["save_every"] == 0 or epoch == self.epochs:
                            self._save_last(epoch)
                    if self.epoch_lines:
                        self._log_epoch(record)
                    self._call("on_epoch_end", dict(record))
            seconds = time.perf_counter() - t_run
            summary = self._summary(seconds)
            if state.is_main:
                save_student(self._payload(), out)  # student.pt and student.safetensors
                _write_json(out / "summary.json", summary)
            self._call("on_train_end", copy.deepcopy(summary))
        except BaseException as exc:
            if begun:
                for cb in self.callbacks:
                    try:
                        cb.on_exception(exc)
                    except Exception as cb_exc:  # the training error is the one to report
                        self.log(f"callback {type(cb).__name__}.on_exception failed: {type(cb_exc).__name__}: "
                                 f"{cb_exc}")
            raise
        self._log_final(summary)
        return summary

    def _call(self, hook: str, arg: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(arg)

    def _info(self, start: int, *, resumed: bool) -> dict[str, Any]:
        return {
            "output": self.output, "config": self.cfg, "recipe": self.cfg["name"], "seed": self.seed,
            "world_size": self.state.world_size, "device": str(self.device), "epochs": self.epochs,
            "start_epoch": start, "resumed": resumed, "history": [dict(r) for r in self.history],
            "best": dict(self.best), "teacher": dict(self.teacher_eval) if self.teacher_eval else None,
            "student_arch": self.student_arch, "num_classes": self.num_classes,
        }

    def _epoch(self, epoch: int, partial: dict[str, Any] | None, flag: _SignalFlag) -> dict[str, Any]:
        state = self.state
        lr = lr_at(epoch, self.cfg["optimizer"], self.cfg["schedule"])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        extras = self.method.start_epoch(epoch)
        seed_everything(_epoch_seed(self.seed, epoch, state.rank))
        self.loader_generator.manual_seed(_epoch_seed(self.seed, epoch, state.rank) + 1)
        done = int(partial["batches_done"]) if partial else 0
        self.sampler.set_position(epoch, skip=done * self.batch)

        stats = train_one_epoch(
            self.model, self.teacher, self.optimizer, self.scaler, self.train_loader, device=self.device,
            epoch=epoch, views=self.method.views, amp=self.amp, channels_last=self.channels_last, state=state,
            start=EpochStats.from_partial(partial, self.device) if partial else None,
            progress=state.is_main and not self.quiet and sys.stderr.isatty(),  # plain epoch lines otherwise
            desc=f"epoch {epoch}/{self.epochs}", should_stop=lambda: flag.signum is not None)
        if stats.stopped:
            self._interrupt(epoch, stats, flag.signum or signal.SIGTERM)

        c1, c5, n = stats.counts.tolist()
        n = max(n, 1.0)
        seconds = stats.seconds
        t_eval = time.perf_counter()
        test = evaluate(self.student, self.test_loader, device=self.device, amp=self.amp,
                        channels_last=self.channels_last, state=state)
        eval_seconds = time.perf_counter() - t_eval
        record: dict[str, Any] = {"epoch": epoch, "lr": lr}
        for name, value in zip(stats.names, stats.sums.tolist()):
            record["train_loss" if name == "loss" else f"train_loss_{name}"] = value / n
        record.update({
            "train_top1": 100.0 * c1 / n, "train_top5": 100.0 * c5 / n,
            "test_loss": test["loss"], "test_top1": test["top1"], "test_top5": test["top5"],
        })
        record.update(extras)
        record.update(self.method.log_values())
        record.update({
            "seconds": seconds["train"] + eval_seconds, "train_seconds": seconds["train"],
            "data_seconds": seconds["data"], "eval_seconds": eval_seconds,
            "images_per_s": n / max(seconds["train"], 1e-9),
        })
        return record

    def _interrupt(self, epoch: int, stats: EpochStats, signum: int) -> None:
        self._save_last(epoch - 1, stats.partial(epoch, world_size=self.state.world_size, batch=self.batch))
        D.barrier(self.state)
        name = signal.Signals(signum).name
        raise TrainingInterrupted(signum, f"{name} received: saved {self.output / 'last.pt'} at epoch {epoch}, "
                                          f"iteration {stats.steps}; continue with --resume")

    # ------------------------------------------------------------------------------ reports
    def _log_epoch(self, r: dict[str, Any]) -> None:
        terms = {k[len("train_loss_"):]: v for k, v in r.items() if k.startswith("train_loss_")}
        extra = ""
        if "temperature" in r:
            extra += f" | T {r['temperature']:.3f} lambda {r['ctkd_lambda']:.3f}"
        if "dkd_warmup" in r and r["dkd_warmup"] < 1:
            extra += f" | warm-up {r['dkd_warmup']:.2f}"
        self.log(f"epoch {r['epoch']}/{self.epochs} lr {r['lr']:.4g} | loss {r['train_loss']:.4f} ({_fmt_terms(terms)})"
                 f" | train top-1 {r['train_top1']:.2f} | test top-1 {r['test_top1']:.2f} top-5 {r['test_top5']:.2f}"
                 f" | best {self.best['top1']:.2f} (epoch {self.best['epoch']}){extra}"
                 f" | {r['seconds']:.1f} s, {r['images_per_s']:.0f} img/s")

    def _summary(self, seconds: float) -> dict[str, Any]:
        last = self.history[-1]
        cfg = self.cfg
        return {
            "recipe": cfg["name"],
            "paper_top1": cfg["paper"],
            "paper_top5": cfg["paper_top5"],
            "best": dict(self.best),
            "last": {"epoch": last["epoch"], "top1": last["test_top1"], "top5": last["test_top5"]},
            "accuracy_note": "best: the epoch of highest test top-1 (what the reference code and the paper report, "
                             "i.e. model selection on the test set); last: the final epoch (student.pt)",
            "teacher": ({"arch": cfg["teacher"]["arch"], "checkpoint": cfg["teacher"]["checkpoint"],
                         **{k: self.teacher_eval.get(k) for k in ("top1", "top5")}}
                        if self.teacher is not None else None),
            "student": {"arch": self.student_arch, "num_classes": self.num_classes,
                        "parameters": sum(p.numel() for p in self.student.parameters())},
            "seed": self.seed,
            "world_size": self.state.world_size,
            "device": str(self.device),
            "epochs": self.epochs,
            "seconds": seconds,
            "versions": _versions(),
            "config": cfg,
        }

    def _log_final(self, s: dict[str, Any]) -> None:
        paper = f"paper: {s['paper_top1']:.2f}, " if s["paper_top1"] is not None else ""
        self.log(f"{s['recipe']}: {paper}this run: best {s['best']['top1']:.2f} (epoch {s['best']['epoch']}), "
                 f"last {s['last']['top1']:.2f} (epoch {s['last']['epoch']}) top-1 [{self.output}]")


def _default_log(state: D.DistState) -> Callable[[str], None]:
    def log(msg: str) -> None:
        if state.is_main:
            print(msg, flush=True)

    return log


def train(cfg: dict[str, Any], output: str | Path, *, device: str = "auto", resume: bool = False,
          quiet: bool = False, state: D.DistState | None = None, log: Callable[[str], None] | None = None,
          callbacks: Sequence[Callback] | None = None, epoch_lines: bool = True) -> dict[str, Any]:
    """Run a resolved recipe and write its outputs; return the summary (also ``summary.json``).

    The run: set-up (data, networks, method, optimizer, the resume state), then per epoch
    :func:`train_one_epoch` and :func:`evaluate`, the epoch's record (``metrics.jsonl``) and
    checkpoints, and the callbacks (:class:`.callbacks.Callback`).

    Args:
        cfg: a resolved recipe (:func:`.recipes.load_recipe`); ``teacher.checkpoint`` must be
            set for distillation methods.
        output: run directory.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (ignored when ``state`` is given).
        resume: continue from ``output/last.pt`` if it exists (else start at epoch 1).
        quiet: no progress bars (one log line per epoch is still printed).
        state: an already initialised :class:`.distributed.DistState` (default: from the
            environment, i.e. torchrun's variables, which also initialises the process group).
        log: where messages go (default: ``print`` on rank 0).
        callbacks: :class:`.callbacks.Callback` objects, called in order on rank 0 only, after
            the :class:`.callbacks.CSVLogger` that is always on (``metrics.csv``).
        epoch_lines: send one line per epoch to ``log`` (False: the callbacks report epochs).

    Returns:
        The summary dict (see ``summary.json``).

    Raises:
        TrainingError: bad setup (missing data or teacher, unfit checkpoint, an existing run
            without ``resume``, a diverging loss).
        TrainingInterrupted: SIGTERM/SIGINT arrived; ``last.pt`` holds the position.
    """
    own_state = state is None
    state = state or D.setup(device)
    log = log or _default_log(state)
    output = Path(output)
    try:
        if not resume and (output / "last.pt").exists():
            raise TrainingError(f"{str(output)!r} already holds a run (last.pt): pass --resume to continue it, "
                                "or choose another --output")
        if state.is_main:
            for stale in remove_stale_temp_files(output):
                log(f"removed the stale temporary file {stale} (an interrupted checkpoint write)")
        return _Run(cfg, output, state, quiet=quiet, resume=resume, log=log,
                    callbacks=[CSVLogger(), *(callbacks or [])], epoch_lines=epoch_lines).run()
    finally:
        if own_state:
            D.teardown(state)
