"""Checkpoints: atomic writes, the one safe loader, the ``student.pt``/``student.safetensors`` formats.

Files written by ``lskd-train`` in the output directory:

* ``student.pt`` -- the trained network (last epoch), all that ``lskd-export`` needs::

      {"arch": str, "dataset": str, "num_classes": int, "state_dict": {name: tensor},
       "normalization": {"mean": [float, ...], "std": [float, ...]}, "input_size": [C, H, W]}

* ``student.safetensors`` -- the same network in the `safetensors` format (no pickle at all):
  the tensors of the state dict as they are (float weights in their dtype, BatchNorm's
  ``num_batches_tracked`` counters included) and string metadata (:data:`SAFETENSORS_FIELDS`):
  ``lskd_format`` (``"1"``), ``arch``, ``dataset``, ``num_classes`` (decimal), ``normalization``
  (JSON ``{"mean": [...], "std": [...]}``), ``input_size`` (JSON ``[C, H, W]``) and
  ``library_version``;
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
checkpoint); every loader here verifies it first, so a file damaged on disk (even one
flipped bit) is refused instead of loaded. A file without a checksum file (written
elsewhere, or by an older version) is loaded unverified.

:func:`read_checkpoint` is the one loader of network weights, shared by ``lskd-train``
(``--teacher``), ``lskd-export`` and ``lskd-plot``. It reads

* ``.safetensors`` files with the `safetensors` library's own loader (no code can run);
  metadata written by ``lskd-train`` is parsed and checked field by field, and a file without
  any of it is a plain state dict;
* any other file (``.pt``, ``.pth``) with ``torch.load(..., weights_only=True)``: only
  tensors, numbers, strings and containers are accepted, never arbitrary Python objects; a
  refused file is named with what it asked to call (read with ``pickletools``, nothing runs).

Teachers (``--teacher``) may be any of: ``student.pt``/``student.safetensors``, ``best.pt``
or ``last.pt`` of a run, a reference-zoo file ``{"model": state_dict, ...}`` (a DataParallel
``module.`` prefix is stripped), or a bare state dict (the torchvision ImageNet files, or a
safetensors file of one).

``--resume`` checks every field of ``last.pt`` (:func:`validate_resume_checkpoint`) before
anything is loaded into the model or the optimizer.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import pickle
import pickletools
import re
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ._errors import TrainingError

__all__ = [
    "CheckpointError",
    "LoadedCheckpoint",
    "SAFETENSORS_FIELDS",
    "save_atomic",
    "save_safetensors",
    "save_student",
    "safetensors_metadata",
    "read_checkpoint",
    "is_safetensors",
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
    """A checkpoint is missing, unreadable, refused by the safe loader, or does not fit a model.

    Attributes:
        kind: what went wrong, for callers that map failures to their own errors:
            ``"missing"`` (no such file), ``"unsafe"`` (a pickle that would run code),
            ``"unreadable"`` (truncated or not a checkpoint), ``"corrupt"`` (SHA-256 mismatch
            or a bad checksum file), ``"metadata"`` (a missing or malformed metadata field),
            ``"weights"`` (no weights, or weights that do not fit), ``"write"`` (a failed write).
    """

    def __init__(self, message: str, *, kind: str = "unreadable"):
        super().__init__(message)
        self.kind = kind


CHECKSUM_SUFFIX = ".sha256"
SAFETENSORS_SUFFIX = ".safetensors"
SAFETENSORS_FORMAT = "1"
SAFETENSORS_FIELDS = ("lskd_format", "arch", "dataset", "num_classes", "normalization", "input_size",
                      "library_version")
"""Metadata keys of a ``student.safetensors`` written by ``lskd-train`` (all required when any is present)."""


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
                           "the previous file, if any, is kept", kind="write")


def _unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _write_atomic(path: str | Path, write: Callable[[Any], None]) -> Path:
    """``write(file)`` to a temporary file next to ``path``, fsync, rename; the same for its SHA-256 file."""
    path = Path(path)
    side = checksum_path(path)
    tmp = side_tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
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
    return _write_atomic(path, lambda f: torch.save(obj, f))


def safetensors_metadata(payload: dict[str, Any]) -> dict[str, str]:
    """The string metadata of ``student.safetensors`` for a ``student.pt`` payload.

    Example:
        >>> p = {"arch": "mlp_digits_small", "dataset": "digits", "num_classes": 10, "state_dict": {},
        ...      "normalization": {"mean": [0.3053], "std": [0.3015]}, "input_size": [1, 8, 8]}
        >>> m = safetensors_metadata(p)
        >>> m["num_classes"], m["normalization"], m["input_size"]
        ('10', '{"mean": [0.3053], "std": [0.3015]}', '[1, 8, 8]')
    """
    from .. import __version__

    norm = payload["normalization"]
    return {
        "lskd_format": SAFETENSORS_FORMAT,
        "arch": str(payload["arch"]),
        "dataset": str(payload["dataset"]),
        "num_classes": str(int(payload["num_classes"])),
        "normalization": json.dumps({"mean": [float(v) for v in norm["mean"]],
                                     "std": [float(v) for v in norm["std"]]}),
        "input_size": json.dumps([int(v) for v in payload["input_size"]]),
        "library_version": str(__version__),
    }


def save_safetensors(payload: dict[str, Any], path: str | Path) -> Path:
    """Write a ``student.pt`` payload as a safetensors file, atomically, with its ``.sha256`` file.

    The tensors are stored as they are (dtype kept, made contiguous); the metadata is
    :func:`safetensors_metadata`.

    Raises:
        CheckpointError: the file could not be written; the previous file is kept.
        ImportError: the ``safetensors`` package is not installed.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from logit_standardization.training.models import create_model
        >>> net = create_model("mlp_digits_small", dataset="digits")
        >>> p = student_payload(net, arch="mlp_digits_small", dataset="digits", num_classes=10)
        >>> path = save_safetensors(p, Path(tempfile.mkdtemp()) / "student.safetensors")
        >>> ck = read_checkpoint(path)
        >>> ck.format, ck.verified, ck.meta["arch"], ck.meta["input_size"]
        ('student.safetensors', True, 'mlp_digits_small', [1, 8, 8])
    """
    from safetensors.torch import save as safetensors_save

    tensors = {str(k): v.detach().to("cpu").contiguous() for k, v in payload["state_dict"].items()}
    data = safetensors_save(tensors, metadata=safetensors_metadata(payload))
    return _write_atomic(path, lambda f: f.write(data))


def save_student(payload: dict[str, Any], directory: str | Path) -> tuple[Path, Path]:
    """Write the final network of a run: ``student.pt`` and ``student.safetensors`` in ``directory``.

    Both are written atomically with their ``.sha256`` files, ``student.pt`` first.

    Returns:
        The two paths.

    Raises:
        CheckpointError: a write failed (the previous files are kept), or ``safetensors`` is
            not installed (``student.pt`` is written then).
    """
    directory = Path(directory)
    pt = save_atomic(payload, directory / "student.pt")
    try:
        st = save_safetensors(payload, directory / "student.safetensors")
    except ImportError:
        raise CheckpointError(
            f"wrote {str(pt)!r} but not student.safetensors: the Python package 'safetensors' is not installed "
            "(pip install 'logit-standardization[train]')", kind="write") from None
    return pt, st


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
        raise CheckpointError(f"checksum file {str(side)!r} of {what} {str(path)!r} cannot be read: {exc}",
                              kind="corrupt") from None
    recorded = fields[0].lower() if fields else ""
    if len(recorded) != 64 or any(c not in "0123456789abcdef" for c in recorded):
        raise CheckpointError(f"checksum file {str(side)!r} of {what} {str(path)!r} holds no SHA-256; "
                              "remove it to load the file unverified", kind="corrupt")
    actual = file_sha256(path)
    if actual != recorded:
        raise CheckpointError(
            f"{what} {str(path)!r} is corrupt: its SHA-256 {actual[:16]}... differs from the one recorded in "
            f"{side.name} when it was written ({recorded[:16]}...)", kind="corrupt")
    return True


_TEMP_PATTERNS = (".*.pt.*.tmp", ".*.pt.sha256.*.tmp", ".*.safetensors.*.tmp", ".*.safetensors.sha256.*.tmp")


def remove_stale_temp_files(directory: str | Path) -> list[Path]:
    """Delete the temporary files an interrupted :func:`save_atomic` left in ``directory``.

    Only names of the form ``.<name>.pt.XXXX.tmp``, ``.<name>.safetensors.XXXX.tmp`` and
    their ``.sha256`` counterparts are removed. Returns the removed paths.

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


# ------------------------------------------------------------------------------- safe reading
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_file(path: Path, what: str) -> bool:
    """Existence, then the SHA-256 file; returns whether the file was verified."""
    if not path.exists():
        raise CheckpointError(f"{what} {str(path)!r} does not exist", kind="missing")
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} is not a file", kind="missing")
    try:
        return verify_checksum(path, what=what)
    except OSError as exc:
        raise CheckpointError(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None


def _pickle_bytes(path: Path) -> bytes:
    """The pickle stream of a file: ``data.pkl`` of a torch zip archive, or the file itself."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("data.pkl")]
            return archive.read(names[0]) if names else b""
    return path.read_bytes()


def _pickle_globals(data: bytes) -> list[str] | None:
    """Callables a pickle stream names (read with ``pickletools``, nothing is executed).

    Returns None when ``data`` is not a well-formed pickle.
    """
    found: list[str] = []
    strings: list[str] = []
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            if opcode.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL":
                found.append(".".join(strings[-2:]) if len(strings) >= 2 else "?")
            elif opcode.name in ("INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "REDUCE") and not found:
                found.append("?")
            if isinstance(arg, str):
                strings.append(arg)
            if opcode.name == "STOP":
                break
    except (ValueError, EOFError, UnicodeDecodeError, pickle.UnpicklingError):
        return None
    return found


_SAFE_PREFIXES = ("torch.", "collections.OrderedDict", "_codecs.encode", "numpy.core.multiarray._reconstruct")


def _unsafe_reason(message: str, path: Path) -> str | None:
    """Why the safe loader refused ``path``, or None if the file is simply not a pickle."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return f"it asks to import and call {found.group(1)!r}"
    try:
        names = _pickle_globals(_pickle_bytes(path))
    except (OSError, zipfile.BadZipFile, KeyError):
        return None
    if names is None:
        return None
    # names the safe loader itself accepts (tensor rebuilding) are not the problem
    named = sorted({n for n in names if n != "?" and not n.startswith(_SAFE_PREFIXES)})
    if named:
        return f"it asks to import and call {', '.join(map(repr, named))}"
    return "it uses pickle instructions outside the safe subset (the safe loader reads only what torch.save writes)"


def _torch_load(path: Path, what: str) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        reason = _unsafe_reason(text, path) if "weights only load failed" in text.lower() else None
        if reason:
            raise CheckpointError(
                f"refusing to load {what} {str(path)!r}: it was refused by the safe loader (torch.load "
                f"weights_only=True) because {reason}. Unpickling such a file can run arbitrary code, so it was not "
                "loaded and nothing from it was executed. If you trust the file, re-save only its weights "
                "(torch.save(model.state_dict(), 'weights.pt')) and load that.", kind="unsafe") from None
        raise _unreadable(path, what, exc, "a PyTorch checkpoint") from None
    except (RuntimeError, EOFError, KeyError, zipfile.BadZipFile, OSError, ValueError, IndexError) as exc:
        raise _unreadable(path, what, exc, "a PyTorch checkpoint") from None


def _unreadable(path: Path, what: str, exc: BaseException, kind: str) -> CheckpointError:
    line = _first_line(exc)
    if line.lower().startswith("weights only load failed"):
        reason = "not a valid pickle stream"
    else:
        reason = f"{type(exc).__name__}: {line}"
    return CheckpointError(f"{what} {str(path)!r} cannot be read ({reason}); the file is truncated, corrupt or "
                           f"not {kind}")


def load_checkpoint(path: str | Path, *, what: str = "checkpoint") -> Any:
    """Load a pickle file with ``torch.load(path, map_location="cpu", weights_only=True)``.

    The whole object is returned (``last.pt`` for ``--resume``); for network weights in any
    layout, including ``.safetensors``, use :func:`read_checkpoint`.

    Args:
        path: the file.
        what: how to call the file in error messages (e.g. ``"teacher checkpoint"``).

    Raises:
        CheckpointError: the file does not exist, differs from its recorded SHA-256
            (:func:`verify_checksum`), is not a torch checkpoint or is truncated, or holds
            Python objects the safe loader refuses -- the message names the file and the reason
            (for a refused file: what it asked to call).
    """
    path = Path(path)
    _check_file(path, what)
    return _torch_load(path, what)


def is_safetensors(path: str | Path) -> bool:
    """Whether ``path`` is a safetensors file: by its suffix, or (for other names) by its first bytes.

    A safetensors file starts with the 8-byte little-endian length of its JSON header, then ``{``.
    """
    path = Path(path)
    if path.suffix == SAFETENSORS_SUFFIX:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 32)


@dataclass
class LoadedCheckpoint:
    """Network weights and what the file says about them, as :func:`read_checkpoint` returns them.

    Attributes:
        path: the file.
        state_dict: ``{name: tensor}`` on the CPU (a DataParallel ``module.`` prefix removed).
        meta: what the file declares, among ``arch``, ``dataset``, ``num_classes`` (int),
            ``normalization`` (``{"mean": [...], "std": [...]}``), ``input_size`` (list of ints)
            and, for safetensors files, ``library_version``. Empty for a plain state dict.
        format: the layout recognised: ``"student.pt"``, ``"best.pt training checkpoint"``,
            ``"last.pt training checkpoint"``, ``"reference-zoo file {'model': state_dict}"``,
            ``"plain state dict"``, ``"student.safetensors"`` or ``"plain safetensors state dict"``.
        verified: a ``.sha256`` file was found and matched.
        payload: the whole unpickled object of a ``.pt`` file (None for safetensors).
    """

    path: Path
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    format: str = "plain state dict"
    verified: bool = False
    payload: Any = None


def _as_floats(values: Any) -> list[float] | None:
    if isinstance(values, (str, bytes)):
        return None
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return out if out and all(math.isfinite(v) for v in out) else None


def _payload_extras(payload: Any) -> dict[str, Any]:
    """``normalization`` and ``input_size`` of a student.pt payload (also nested in best/last.pt)."""
    candidates = [payload]
    if isinstance(payload, dict) and isinstance(payload.get("student"), dict):
        candidates.insert(0, payload["student"])
    out: dict[str, Any] = {}
    for obj in candidates:
        if not isinstance(obj, dict):
            continue
        norm = obj.get("normalization")
        if "normalization" not in out and isinstance(norm, dict):
            mean, std = _as_floats(norm.get("mean", ())), _as_floats(norm.get("std", ()))
            if mean and std:
                out["normalization"] = {"mean": mean, "std": std}
        size = obj.get("input_size")
        if "input_size" not in out and isinstance(size, (list, tuple)) and size:
            try:
                out["input_size"] = [int(v) for v in size]
            except (TypeError, ValueError):
                pass
    return out


def describe_layout(payload: Any) -> str:
    """A short name of the layout of an unpickled checkpoint (see :attr:`LoadedCheckpoint.format`)."""
    if isinstance(payload, dict):
        if isinstance(payload.get("student"), dict):
            kind = payload.get("kind")
            return f"{kind}.pt training checkpoint" if kind in ("best", "last") else "training checkpoint"
        if isinstance(payload.get("state_dict"), dict):
            return "student.pt"
        if isinstance(payload.get("model"), dict):
            return "reference-zoo file {'model': state_dict}"
    return "plain state dict"


def _parse_metadata(raw: dict[str, str] | None, path: Path, what: str) -> dict[str, Any]:
    """Check the ``lskd-train`` metadata of a safetensors file; ``{}`` when it has none of it."""
    raw = dict(raw or {})
    if not any(k in raw for k in SAFETENSORS_FIELDS):
        return {}

    def bad(key: str, problem: str) -> CheckpointError:
        return CheckpointError(
            f"{what} {str(path)!r}: safetensors metadata field {key!r} {problem}; a student.safetensors of "
            f"lskd-train has the fields {', '.join(SAFETENSORS_FIELDS)}", kind="metadata")

    for key in SAFETENSORS_FIELDS:
        if key not in raw:
            raise bad(key, "is missing")
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise bad(key, "is empty")
    if raw["lskd_format"] != SAFETENSORS_FORMAT:
        raise bad("lskd_format", f"is {raw['lskd_format']!r}; this version reads format {SAFETENSORS_FORMAT!r} "
                  "(upgrade logit-standardization)")
    meta: dict[str, Any] = {"arch": raw["arch"], "dataset": raw["dataset"], "library_version": raw["library_version"]}
    text = raw["num_classes"].strip()
    if not text.isdigit() or int(text) < 1:
        raise bad("num_classes", f"is {raw['num_classes']!r}, not a positive integer")
    meta["num_classes"] = int(text)
    try:
        size = json.loads(raw["input_size"])
    except ValueError:
        size = None
    if not (isinstance(size, list) and size and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                    for v in size)):
        raise bad("input_size", f"is {raw['input_size']!r}, not a JSON list of positive integers like [3, 32, 32]")
    meta["input_size"] = size
    try:
        norm = json.loads(raw["normalization"])
    except ValueError:
        norm = None
    mean = _as_floats(norm.get("mean")) if isinstance(norm, dict) else None
    std = _as_floats(norm.get("std")) if isinstance(norm, dict) else None
    if mean is None or std is None or len(mean) != len(std) or min(std) <= 0:
        raise bad("normalization", f"is {raw['normalization']!r}, not JSON {{\"mean\": [...], \"std\": [...]}} "
                  "with one finite mean and one positive std per channel")
    if len(mean) != size[0]:
        raise bad("normalization", f"has {len(mean)} channels, input_size {size} has {size[0]}")
    meta["normalization"] = {"mean": mean, "std": std}
    return meta


def _read_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = f.metadata()
            meta = _parse_metadata(raw, path, what)
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise _unreadable(path, what, exc, "a safetensors file") from None
    if not state:
        raise CheckpointError(f"{what} {str(path)!r} holds no tensors", kind="weights")
    state, _ = extract_state_dict(state, path=path, what=what)  # strips a DataParallel prefix
    return state, meta, ("student.safetensors" if meta else "plain safetensors state dict")


def read_checkpoint(path: str | Path, *, what: str = "checkpoint") -> LoadedCheckpoint:
    """Read network weights and their metadata from any supported file, safely.

    The one loader of ``lskd-train --teacher``, ``lskd-export`` and ``lskd-plot``. In order:
    the file must exist; its ``<path>.sha256``, when present, must match
    (:func:`verify_checksum`); then

    * a ``.safetensors`` file (by suffix, or by its header for other names) is read with
      ``safetensors.safe_open``; ``lskd-train`` metadata (:data:`SAFETENSORS_FIELDS`), if
      any of it is present, must be complete and well-formed;
    * any other file is read with ``torch.load(weights_only=True)`` and the weights are found
      in any layout :func:`extract_state_dict` accepts.

    Args:
        path: the file.
        what: how to call the file in error messages (``"teacher checkpoint"``, ...).

    Returns:
        A :class:`LoadedCheckpoint`.

    Raises:
        CheckpointError: one line naming the file and the reason; its ``kind`` says which
            (``missing``, ``corrupt``, ``unsafe``, ``unreadable``, ``metadata``, ``weights``).
        ImportError: a safetensors file and no ``safetensors`` package.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> p = Path(tempfile.mkdtemp()) / "w.pt"
        >>> _ = save_atomic({"model": {"module.fc.weight": torch.zeros(2, 3)}}, p)
        >>> ck = read_checkpoint(p)
        >>> list(ck.state_dict), ck.meta, ck.format, ck.verified
        (['fc.weight'], {}, "reference-zoo file {'model': state_dict}", True)
    """
    path = Path(path)
    verified = _check_file(path, what)
    if is_safetensors(path):
        state, meta, fmt = _read_safetensors(path, what)
        return LoadedCheckpoint(path=path, state_dict=state, meta=meta, format=fmt, verified=verified)
    payload = _torch_load(path, what)
    state, meta = extract_state_dict(payload, path=path, what=what)
    meta.update(_payload_extras(payload))
    if "num_classes" in meta:
        try:
            meta["num_classes"] = int(meta["num_classes"])
        except (TypeError, ValueError):
            raise CheckpointError(f"{what} {str(path)!r}: 'num_classes' is {meta['num_classes']!r}, not an integer",
                                  kind="metadata") from None
    return LoadedCheckpoint(path=path, state_dict=state, meta=meta, format=describe_layout(payload),
                            verified=verified, payload=payload)


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
            f"lskd-train, a reference file {{'model': state_dict}} or a plain state dict; top-level keys: {keys}",
            kind="weights")
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


def load_weights(model: nn.Module, source: str | Path | LoadedCheckpoint, *, arch: str,
                 what: str = "checkpoint") -> dict[str, Any]:
    """Load weights into ``model`` strictly, explaining any mismatch.

    Args:
        model: the freshly built network.
        source: a checkpoint file in any layout :func:`read_checkpoint` accepts, or what
            :func:`read_checkpoint` returned.
        arch: the architecture name ``model`` was built as (for messages).
        what: how to call the file in messages.

    Returns:
        The file's metadata (:attr:`LoadedCheckpoint.meta`).

    Raises:
        CheckpointError: unreadable file, or weights that do not fit -- the message names the
            architecture the file declares, and the missing, unexpected and mis-shaped keys.
    """
    ck = source if isinstance(source, LoadedCheckpoint) else read_checkpoint(source, what=what)
    problems = describe_mismatch(*state_dict_mismatch(model, ck.state_dict))
    if problems:
        declared = f" (the file declares arch {ck.meta['arch']!r})" if ck.meta.get("arch") else ""
        raise CheckpointError(f"{what} {str(ck.path)!r} does not fit architecture {arch!r}{declared}: {problems}",
                              kind="weights")
    model.load_state_dict(ck.state_dict, strict=False)  # checked above; only BatchNorm counters may be absent
    return ck.meta


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
