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
target, so a crash at any moment leaves either the previous file or the new one; a failed
write (disk full, file too large, permission denied) raises :class:`CheckpointError` and
keeps the previous file. Next to each file, ``<name>.sha256`` records the SHA-256 of its
bytes (``sha256sum`` format, itself written atomically, renamed into place after the
checkpoint); :func:`load_checkpoint` verifies it before loading, so a file damaged on disk
(even one flipped bit) is refused instead of loaded. A file without a checksum file (written
elsewhere, or by an older version) is loaded unverified. Every file is read with
``torch.load(..., weights_only=True)``: only tensors, numbers, strings and containers are
accepted, never arbitrary Python objects.

``--resume`` checks every field of ``last.pt`` (:func:`validate_resume_checkpoint`) before
anything is loaded into the model or the optimizer.

Teachers (``--teacher``) may be any of: ``student.pt``, ``best.pt`` or ``last.pt`` of a run,
a reference-zoo file ``{"model": state_dict, ...}`` (a DataParallel ``module.`` prefix is
stripped), or a bare state dict (the torchvision ImageNet files).
"""

from __future__ import annotations

import errno
import hashlib
import math
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
    "checksum_path",
    "file_sha256",
    "verify_checksum",
    "remove_stale_temp_files",
    "validate_resume_checkpoint",
    "student_payload",
    "extract_state_dict",
    "load_weights",
]


class CheckpointError(TrainingError):
    """A checkpoint is missing, unreadable, refused by the safe loader, or does not fit a model."""


CHECKSUM_SUFFIX = ".sha256"


def checksum_path(path: str | Path) -> Path:
    """The checksum file of a checkpoint: ``<path>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_failure(path: Path, exc: OSError) -> "CheckpointError":
    code = errno.errorcode.get(exc.errno or 0, "")
    reason = exc.strerror or str(exc) or type(exc).__name__
    return CheckpointError(f"cannot write checkpoint {str(path)!r}: {reason}{f' ({code})' if code else ''}; "
                           "the previous file, if any, is kept")


def _unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file next to ``path``, flush it to disk, then rename;
    then record its SHA-256 in ``<path>.sha256`` (also written atomically).

    The checksum file is prepared before the checkpoint is renamed into place, and the old
    checksum file is removed just before, so a crash at any moment never leaves a checksum
    that does not belong to its checkpoint (at worst a checkpoint without one).

    Raises:
        CheckpointError: the file could not be written (no space, file too large, permission
            denied, ...); the previous file at ``path`` is kept and no temporary file is left.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = save_atomic({"x": torch.ones(2)}, d / "a.pt")
        >>> load_checkpoint(d / "a.pt")["x"]
        tensor([1., 1.])
        >>> sorted(p.name for p in d.iterdir())   # no temporary file is left behind
        ['a.pt', 'a.pt.sha256']
    """
    path = Path(path)
    side = checksum_path(path)
    tmp = side_tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        digest = file_sha256(tmp)
        fd, side_tmp = tempfile.mkstemp(prefix=f".{side.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{digest}  {path.name}\n")
            f.flush()
            os.fsync(f.fileno())
        _unlink_quietly(side)
        os.replace(tmp, path)
        tmp = None
        os.replace(side_tmp, side)
        side_tmp = None
        _fsync_dir(path.parent)
    except OSError as exc:
        raise _write_failure(path, exc) from None
    finally:
        for leftover in (tmp, side_tmp):
            if leftover is not None:
                _unlink_quietly(leftover)
    return path


def verify_checksum(path: str | Path, *, what: str = "checkpoint") -> bool:
    """Compare a file with its ``<path>.sha256``; return False when there is no checksum file.

    Raises:
        CheckpointError: the checksum file is unreadable or malformed, or the file's SHA-256
            differs from the recorded one (the file is corrupt).
    """
    path = Path(path)
    side = checksum_path(path)
    if not side.is_file():
        return False
    try:
        fields = side.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checksum file {str(side)!r} of {what} {str(path)!r} cannot be read: {exc}") from None
    recorded = fields[0].lower() if fields else ""
    if len(recorded) != 64 or any(c not in "0123456789abcdef" for c in recorded):
        raise CheckpointError(f"checksum file {str(side)!r} of {what} {str(path)!r} holds no SHA-256; "
                              "remove it to load the file unverified")
    actual = file_sha256(path)
    if actual != recorded:
        raise CheckpointError(
            f"{what} {str(path)!r} is corrupt: its SHA-256 {actual[:16]}... differs from the one recorded in "
            f"{side.name} when it was written ({recorded[:16]}...)")
    return True


_TEMP_PATTERNS = (".*.pt.*.tmp", ".*.pt.sha256.*.tmp")


def remove_stale_temp_files(directory: str | Path) -> list[Path]:
    """Delete the temporary files an interrupted :func:`save_atomic` left in ``directory``.

    Only names of the form ``.<name>.pt.XXXX.tmp`` and ``.<name>.pt.sha256.XXXX.tmp`` are
    removed. Returns the removed paths.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / ".last.pt.k2j3.tmp").write_bytes(b"half"); _ = (d / "keep.txt").write_text("x")
        >>> [p.name for p in remove_stale_temp_files(d)], sorted(p.name for p in d.iterdir())
        (['.last.pt.k2j3.tmp'], ['keep.txt'])
    """
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for pattern in _TEMP_PATTERNS:
        for p in sorted(directory.glob(pattern)):
            if p.is_file() and p not in removed:
                try:
                    p.unlink()
                    removed.append(p)
                except OSError:
                    pass
    return removed


def load_checkpoint(path: str | Path, *, what: str = "checkpoint") -> Any:
    """Load a file with ``torch.load(path, map_location="cpu", weights_only=True)``.

    Args:
        path: the file.
        what: how to call the file in error messages (e.g. ``"teacher checkpoint"``).

    Raises:
        CheckpointError: the file does not exist, differs from its recorded SHA-256
            (:func:`verify_checksum`), is not a torch checkpoint or is truncated, or holds
            Python objects the safe loader refuses -- the message names the file and the reason.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} does not exist")
    try:
        verify_checksum(path, what=what)
    except OSError as exc:
        raise CheckpointError(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None
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


# ------------------------------------------------------------------------------- resume checks
RESUME_REQUIRED_KEYS = ("kind", "epoch", "student", "method", "optimizer", "scaler", "best", "history", "config")
"""Top-level keys every ``last.pt`` holds (``teacher_eval`` and ``partial`` are optional)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _tensor_dict_problem(saved: Any, own: dict[str, torch.Tensor]) -> str | None:
    if not isinstance(saved, dict):
        return f"is a {type(saved).__name__}, not a dict of tensors"
    bad = [k for k, v in saved.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        return f"holds non-tensor entries: {_list([str(k) for k in bad])}"
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    shapes = [f"{k}: file {tuple(saved[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in saved and tuple(saved[k].shape) != tuple(own[k].shape)]
    return describe_mismatch(missing, unexpected, shapes) or None


def _optimizer_problem(saved: Any, optimizer: torch.optim.Optimizer) -> tuple[str, str] | None:
    """``(subfield, problem)`` of an optimizer state dict that does not fit ``optimizer``."""
    if not isinstance(saved, dict):
        return "", f"is a {type(saved).__name__}, not an optimizer state dict"
    for key, kind in (("state", dict), ("param_groups", list)):
        if not isinstance(saved.get(key), kind):
            return f".{key}", "is missing" if key not in saved else f"is a {type(saved[key]).__name__}, not a {kind.__name__}"
    groups, own_groups = saved["param_groups"], optimizer.param_groups
    if len(groups) != len(own_groups):
        return ".param_groups", f"has {len(groups)} groups, the optimizer {len(own_groups)}"
    params: dict[Any, torch.Tensor] = {}
    for i, (g, own) in enumerate(zip(groups, own_groups)):
        if not isinstance(g, dict) or not isinstance(g.get("params"), list):
            return f".param_groups[{i}]", "has no 'params' list"
        if len(g["params"]) != len(own["params"]):
            return f".param_groups[{i}]", f"has {len(g['params'])} parameters, the model {len(own['params'])}"
        for key in ("lr", "momentum", "weight_decay"):
            if key in g and not _is_number(g[key]):
                return f".param_groups[{i}].{key}", f"is {g[key]!r}, not a finite number"
        params.update(zip(g["params"], own["params"]))
    for pid, entry in saved["state"].items():
        if pid not in params:
            return ".state", f"holds an entry for parameter {pid!r}, which no parameter group lists"
        if not isinstance(entry, dict):
            return f".state[{pid!r}]", f"is a {type(entry).__name__}, not a dict"
        for key, value in entry.items():
            if value is None or key == "step":
                continue
            if not isinstance(value, torch.Tensor):
                return f".state[{pid!r}].{key}", f"is a {type(value).__name__}, not a tensor"
            if tuple(value.shape) != tuple(params[pid].shape):
                return (f".state[{pid!r}].{key}",
                        f"has shape {tuple(value.shape)}, the parameter {tuple(params[pid].shape)}")
    return None


def _history_problem(history: Any, epoch: int) -> str | None:
    if not isinstance(history, list):
        return f"is a {type(history).__name__}, not a list of per-epoch records"
    for i, record in enumerate(history):
        if not isinstance(record, dict):
            return f"record {i} is a {type(record).__name__}, not a dict"
        for key in ("epoch", "test_top1", "test_top5"):
            if key not in record:
                return f"record {i} has no {key!r}"
        if not _is_int(record["epoch"]) or record["epoch"] != i + 1:
            return f"record {i} is for epoch {record['epoch']!r}, expected {i + 1}"
        for key in ("test_top1", "test_top5"):
            if not _is_number(record[key]):
                return f"record {i} has {key} = {record[key]!r}, not a finite number"
    if len(history) != epoch:
        return f"holds {len(history)} records for {epoch} finished epochs"
    return None


def _partial_problem(partial: Any, epoch: int) -> str | None:
    if partial is None:
        return None
    if not isinstance(partial, dict):
        return f"is a {type(partial).__name__}, not a dict or None"
    need = ("epoch", "batches_done", "terms", "sums", "counts", "seconds", "world_size", "batch")
    missing = [k for k in need if k not in partial]
    if missing:
        return f"lacks {', '.join(missing)}"
    if partial["epoch"] != epoch + 1:
        return f"is inside epoch {partial['epoch']!r}, expected {epoch + 1} (the epoch after 'epoch')"
    for key in ("batches_done", "world_size", "batch"):
        if not _is_int(partial[key]) or partial[key] < (0 if key == "batches_done" else 1):
            return f"has {key} = {partial[key]!r}"
    terms, sums, counts = partial["terms"], partial["sums"], partial["counts"]
    if not (isinstance(terms, list) and all(isinstance(t, str) for t in terms)):
        return "has terms that are not a list of names"
    if not (isinstance(sums, list) and len(sums) == len(terms) and all(_is_number(v) for v in sums)):
        return f"has sums that are not {len(terms)} finite numbers"
    if not (isinstance(counts, list) and len(counts) == 3 and all(_is_number(v) for v in counts)):
        return "has counts that are not 3 finite numbers"
    seconds = partial["seconds"]
    if not (isinstance(seconds, dict) and all(_is_number(seconds.get(k)) for k in ("train", "data"))):
        return "has seconds without finite 'train' and 'data'"
    return None


def validate_resume_checkpoint(ckpt: Any, path: str | Path, *, epochs: int, student: nn.Module, method: nn.Module,
                               optimizer: torch.optim.Optimizer, student_arch: str | None = None) -> None:
    """Check every field of a ``last.pt`` against the run about to continue it.

    Checked: ``kind`` is ``"last"``; every key of :data:`RESUME_REQUIRED_KEYS` is present;
    ``epoch`` is an int in ``[0, epochs]``; ``history`` is a list of one dict record per
    finished epoch (``epoch`` 1, 2, ..., with numeric ``test_top1``/``test_top5``); the
    student's weights and the method's state have the model's keys and shapes; the optimizer
    state has the optimizer's parameter groups and tensors shaped like the parameters;
    ``best``, ``scaler``, ``teacher_eval``, ``partial`` and ``config`` have their types.
    (Whether ``config`` is compatible with the command is checked by the engine.)

    Raises:
        CheckpointError: one line naming the file and the first field that is wrong.
    """
    def fail(field: str, problem: str) -> CheckpointError:
        return CheckpointError(f"resume checkpoint {str(path)!r}: field {field!r} {problem}; it is not a usable "
                               "last.pt (restore it, or start a new run with another --output)")

    if not isinstance(ckpt, dict):
        raise CheckpointError(f"resume checkpoint {str(path)!r} holds a {type(ckpt).__name__}, not a last.pt "
                              "written by lskd-train")
    missing = [k for k in RESUME_REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise fail(missing[0], f"is missing (required keys: {', '.join(RESUME_REQUIRED_KEYS)})")
    if ckpt["kind"] != "last":
        raise fail("kind", f"is {ckpt['kind']!r}, expected 'last'")
    epoch = ckpt["epoch"]
    if not _is_int(epoch):
        raise fail("epoch", f"is {epoch!r}, not an int")
    if not 0 <= epoch <= epochs:
        raise fail("epoch", f"is {epoch}, outside [0, {epochs}] (schedule.epochs is {epochs})")
    problem = _history_problem(ckpt["history"], epoch)
    if problem:
        raise fail("history", problem)
    payload = ckpt["student"]
    if not isinstance(payload, dict):
        raise fail("student", f"is a {type(payload).__name__}, not a student.pt payload")
    if "state_dict" not in payload:
        raise fail("student.state_dict", "is missing")
    if student_arch is not None and payload.get("arch", student_arch) != student_arch:
        raise fail("student.arch", f"is {payload['arch']!r}, the recipe trains {student_arch!r}")
    own = {k: v for k, v in student.state_dict().items()}
    problem = _tensor_dict_problem(payload["state_dict"], own)
    if problem:
        raise fail("student.state_dict", f"does not fit the model: {problem}")
    problem = _tensor_dict_problem(ckpt["method"], method.state_dict())
    if problem:
        raise fail("method", f"does not fit the method: {problem}")
    found = _optimizer_problem(ckpt["optimizer"], optimizer)
    if found:
        raise fail("optimizer" + found[0], found[1])
    if not isinstance(ckpt["scaler"], dict):
        raise fail("scaler", f"is a {type(ckpt['scaler']).__name__}, not a dict")
    best = ckpt["best"]
    if not isinstance(best, dict) or not all(k in best for k in ("epoch", "top1", "top5")):
        raise fail("best", "is not a dict with 'epoch', 'top1' and 'top5'")
    if not _is_int(best["epoch"]) or not 0 <= best["epoch"] <= epoch:
        raise fail("best.epoch", f"is {best['epoch']!r}, outside [0, {epoch}]")
    if not (_is_number(best["top1"]) and _is_number(best["top5"])):
        raise fail("best", f"has top1 {best['top1']!r} / top5 {best['top5']!r}, not finite numbers")
    if ckpt.get("teacher_eval") is not None and not isinstance(ckpt["teacher_eval"], dict):
        raise fail("teacher_eval", f"is a {type(ckpt['teacher_eval']).__name__}, not a dict")
    problem = _partial_problem(ckpt.get("partial"), epoch)
    if problem:
        raise fail("partial", problem)
    if not isinstance(ckpt["config"], dict):
        raise fail("config", f"is a {type(ckpt['config']).__name__}, not the resolved recipe")
