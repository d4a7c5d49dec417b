"""torchrun / DDP helpers: process-group setup from the environment, reductions, samplers.

``lskd-train`` detects a torchrun launch from the environment variables torchrun sets
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). With CUDA every
process drives ``cuda:LOCAL_RANK`` over NCCL; on CPU the processes talk over gloo. Without
those variables everything runs in one process and the helpers below are no-ops.
"""

from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler

from ._errors import TrainingError

__all__ = ["DistState", "setup", "teardown", "all_reduce_sum", "any_rank", "barrier", "EpochSampler", "ShardSampler"]


@dataclass(frozen=True)
class DistState:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 writes files).
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU).
        device: the device this process computes on.
        distributed: whether a process group is initialised.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    distributed: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _resolve_device(preference: str, local_rank: int) -> torch.device:
    if preference not in ("auto", "cpu", "cuda"):
        raise TrainingError(f"--device must be auto, cpu or cuda; got {preference!r}")
    if preference == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was requested but torch.cuda.is_available() is False")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def setup(device: str = "auto") -> DistState:
    """Initialise the process group when launched by torchrun; pick this process's device.

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    distributed = dist.is_available() and dist.is_initialized()
    if distributed:
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistState(rank=rank, world_size=world, local_rank=local_rank, device=dev, distributed=distributed)


def teardown(state: DistState) -> None:
    """Wait for every rank, then destroy the process group if :func:`setup` created one.

    Rank 0 does work of its own after the last collective (checkpoints, figures); a rank that
    tore its process group down meanwhile could abort at exit on gloo ("terminate called
    without an active exception"), so every rank waits here first. On gloo the wait is bounded
    (a peer that died must not hang this one).
    """
    if state.distributed and dist.is_initialized():
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=datetime.timedelta(minutes=10))
            else:
                barrier(state)
        except RuntimeError:  # a peer is gone: nothing left to wait for
            pass
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, state: DistState) -> torch.Tensor:
    """Sum ``tensor`` over all ranks (in place, also returned); identity in one process."""
    if state.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, state: DistState) -> bool:
    """True on every rank when ``flag`` is true on at least one rank."""
    if not state.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=state.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(state: DistState) -> None:
    """Wait for every rank (no-op in one process)."""
    if state.distributed:
        if state.device.type == "cuda":
            dist.barrier(device_ids=[state.device.index])
        else:
            dist.barrier()


class EpochSampler(DistributedSampler):
    """``DistributedSampler`` that can start inside an epoch.

    The order of an epoch depends only on ``(seed, epoch)`` (as in ``DistributedSampler``:
    a permutation drawn from ``seed + epoch``, padded to a multiple of the world size and
    dealt round-robin to the ranks). :meth:`set_position` selects the epoch and the number
    of this rank's samples to skip, which is how an interrupted epoch resumes.

    Example:
        >>> s = EpochSampler(range(10), num_replicas=1, rank=0, shuffle=True, seed=0)
        >>> s.set_position(3, skip=4)
        >>> full = EpochSampler(range(10), num_replicas=1, rank=0, shuffle=True, seed=0)
        >>> full.set_position(3)
        >>> list(s) == list(full)[4:]
        True
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.skip = 0

    def set_position(self, epoch: int, skip: int = 0) -> None:
        self.set_epoch(epoch)
        self.skip = int(skip)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


class ShardSampler(Sampler[int]):
    """Rank ``r`` of ``w`` gets indices ``r, r + w, r + 2w, ...`` in order, without padding,
    so that summed counts over ranks cover every test sample exactly once.

    Example:
        >>> list(ShardSampler(7, rank=1, world_size=3))
        [1, 4]
    """

    def __init__(self, n: int, *, rank: int, world_size: int) -> None:
        self.n, self.rank, self.world_size = int(n), int(rank), int(world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return max(0, math.ceil((self.n - self.rank) / self.world_size))
