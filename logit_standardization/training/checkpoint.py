"""Checkpoints: atomic writes, safe loading, the ``student.pt`` format, teacher loading.

Files written by ``lskd-train`` in the output directory:

* ``student.pt`` -- the trained network (last epoch), all that ``lskd-export`` needs::

      {"arch": str, "dataset": str, "num_classes": int, "state_dict": {name: tensor},
       "normalization": {"mean": [float, ...], "std": [float, ...]}, "input_size": [C, H, W]}

* ``best.pt`` -- ``{"kind": "best", "epoch", "top1", "top5", "student": <student.pt payload>}``
  with the weights of the epoch of best test top-1;
* ``last.pt`` -- everything needed to resume (``"kind": "last"``): the student payload, the
  optimizer, the method's state (CTKD's temperature), the AMP scaler, the best result so
  far, the resolved config, and the position inside an interrupted epoch.

Every file is written to a temporary file in the same directory and renamed over the
target, so a crash at any moment leaves either the previous file or the new one. Every file
is read with ``torch.load(..., weights_only=True)``: only tensors, numbers, strings and
containers are accepted, never arbitrary Python objects.

Teachers (``--teacher``) may be any of: ``student.pt``, ``best.pt`` or ``last.pt`` of a run,
a reference-zoo file ``{"model": state_dict, ...}`` (a DataParallel ``module.`` prefix is
stripped), or a bare state dict (the torchvision ImageNet files).
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._errors import TrainingError

__all__ = [
    "CheckpointError",
    "save_atomic",
    "load_checkpoint",
    "student_payload",
    "extract_state_dict",
    "load_weights",
]


class CheckpointError(TrainingError):
    """A checkpoint is missing, unreadable, refused by the safe loader, or does not fit a model."""


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file next to ``path``, flush it to disk, then rename.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = save_atomic({"x": torch.ones(2)}, d / "a.pt")
        >>> load_checkpoint(d / "a.pt")["x"]
        tensor([1., 1.])
        >>> sorted(p.name for p in d.iterdir())   # no temporary file is left behind
        ['a.pt']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def load_checkpoint(path: str | Path, *, what: str = "checkpoint") -> Any:
    """Load a file with ``torch.load(path, map_location="cpu", weights_only=True)``.

    Args:
        path: the file.
        what: how to call the file in error messages (e.g. ``"teacher checkpoint"``).

    Raises:
        CheckpointError: the file does not exist, is not a torch checkpoint or is truncated,
            or holds Python objects the safe loader refuses -- the message names the file and
            the reason.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{what} {str(path)!r} was refused by the safe loader (torch.load weights_only=True): {reason}. "
            "Only tensors, numbers, strings, lists and dicts are loaded; a file that holds other Python objects "
            "is not trusted. Re-save it as a plain state dict."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{what} {str(path)!r} cannot be read ({type(exc).__name__}: {reason}); the file is truncated, "
            "corrupt or not a PyTorch checkpoint"
        ) from None


def student_payload(model: nn.Module, *, arch: str, dataset: str, num_classes: int) -> dict[str, Any]:
    """The ``student.pt`` dictionary of a model (weights copied to the CPU).

    Example:
        >>> from logit_standardization.training.models import create_model
        >>> p = student_payload(create_model("mlp_digits_small", dataset="digits"), arch="mlp_digits_small",
        ...                     dataset="digits", num_classes=10)
        >>> sorted(p), p["input_size"], p["normalization"]["mean"]
        (['arch', 'dataset', 'input_size', 'normalization', 'num_classes', 'state_dict'], [1, 8, 8], [0.3053])
    """
    from .models import DATASET_INFO

    info = DATASET_INFO[dataset]
    module = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    module = getattr(module, "module", module)  # DDP wrapper
    state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
    return {
        "arch": arch,
        "dataset": dataset,
        "num_classes": int(num_classes),
        "state_dict": state,
        "normalization": {"mean": [float(m) for m in info.mean], "std": [float(s) for s in info.std]},
        "input_size": [int(v) for v in info.input_size],
    }


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def extract_state_dict(payload: Any, *, path: str | Path = "?", what: str = "checkpoint") -> tuple[dict, dict]:
    """Find the network weights in any supported checkpoint layout.

    Returns:
        ``(state_dict, meta)``: the weights (a DataParallel ``module.`` prefix removed) and
        what the file says about them (``arch``, ``dataset``, ``num_classes`` when known).

    Raises:
        CheckpointError: no weights found; the message lists the file's top-level keys.

    Example:
        >>> import torch
        >>> sd, meta = extract_state_dict({"model": {"module.fc.weight": torch.zeros(2, 3)}})
        >>> list(sd), meta
        (['fc.weight'], {})
    """
    meta: dict[str, Any] = {}
    obj = payload
    if isinstance(obj, dict) and isinstance(obj.get("student"), dict):  # best.pt / last.pt
        obj = obj["student"]
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # student.pt
        meta = {k: obj[k] for k in ("arch", "dataset", "num_classes") if k in obj}
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):  # reference zoo
        obj = obj["model"]
    if not _is_state_dict(obj):
        keys = sorted(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{what} {str(path)!r} holds no network weights: expected a student.pt/best.pt/last.pt file of "
            f"lskd-train, a reference file {{'model': state_dict}} or a plain state dict; top-level keys: {keys}"
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj, meta


def _list(items: list[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def state_dict_mismatch(model: nn.Module, state: dict) -> tuple[list[str], list[str], list[str]]:
    """Missing keys, unexpected keys and shape mismatches of ``state`` against ``model``.

    BatchNorm's ``num_batches_tracked`` counters may be absent (files from old PyTorch
    versions lack them; they do not change inference): they are not reported as missing.
    All three lists empty means ``state`` fits ``model`` exactly.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    return missing, unexpected, shapes


def describe_mismatch(missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    """One line naming the missing, unexpected and mis-shaped keys ("" when there are none)."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {_list(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {_list(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches: {_list(shapes, 4)}")
    return "; ".join(parts)


def load_weights(model: nn.Module, path: str | Path, *, arch: str, what: str = "checkpoint") -> dict[str, Any]:
    """Load weights from ``path`` into ``model`` strictly, explaining any mismatch.

    Args:
        model: the freshly built network.
        path: a checkpoint in any layout :func:`extract_state_dict` accepts.
        arch: the architecture name ``model`` was built as (for messages).
        what: how to call the file in messages.

    Returns:
        The file's metadata (see :func:`extract_state_dict`).

    Raises:
        CheckpointError: unreadable file, or weights that do not fit -- the message names the
            architecture the file declares, and the missing, unexpected and mis-shaped keys.
    """
    state, meta = extract_state_dict(load_checkpoint(path, what=what), path=path, what=what)
    problems = describe_mismatch(*state_dict_mismatch(model, state))
    if problems:
        declared = f" (the file declares arch {meta['arch']!r})" if meta.get("arch") else ""
        raise CheckpointError(f"{what} {str(path)!r} does not fit architecture {arch!r}{declared}: {problems}")
    model.load_state_dict(state, strict=False)  # checked above; only BatchNorm counters may be absent
    return meta
