"""Load a trained student safely and rebuild it: PyTorch checkpoints, safetensors and Keras ``.keras`` files.

PyTorch and safetensors files are read by the library's one checkpoint reader
(:func:`logit_standardization.training.checkpoint.read_checkpoint`, shared with
``lskd-train --teacher`` and ``lskd-plot``): the file's ``.sha256`` is checked when there is
one; ``.safetensors`` files go through the safetensors loader, and pickles through
``torch.load(..., weights_only=True)`` only, whose restricted unpickler accepts tensors,
numbers, strings and containers and refuses any file whose pickle names a function or class
to call. The architecture is looked up *by name* in the model zoo
(:mod:`logit_standardization.training.models`); nothing stored in a checkpoint is ever
imported or executed. Keras files are opened with ``safe_mode=True``, which refuses
serialized Python code (``Lambda`` layers).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import (
    CheckpointFormatError,
    ExportError,
    CheckpointNotFoundError,
    StateDictMismatchError,
    UnknownArchitectureError,
    UnsafeCheckpointError,
)

__all__ = ["Student", "load_student", "safe_torch_load"]


@dataclass
class Student:
    """A rebuilt, ready-to-run student network and what is known about it.

    Attributes:
        model: a ``torch.nn.Module`` in eval mode on the CPU, or a ``keras.Model``.
        framework: ``"torch"`` or ``"keras"``.
        arch: architecture name (zoo name for PyTorch, the model's name for Keras).
        dataset: dataset key of the zoo (``"cifar100"``, ``"imagenet"``, ...) or None.
        num_classes: size of the logits.
        input_size: shape of one input without the batch axis, in the model's layout.
        layout: ``"NCHW"`` (PyTorch) or ``"NHWC"`` (Keras ``channels_last``).
        normalization: ``{"mean": [...], "std": [...]}`` applied to ``[0, 1]`` pixels before
            the network, or None when unknown.
        source: the checkpoint path.
        source_format: a short description of the layout that was recognised.
        notes: remarks for the user (e.g. a stripped key prefix).
    """

    model: Any
    framework: str
    arch: str
    dataset: str | None
    num_classes: int
    input_size: tuple[int, ...]
    layout: str
    normalization: dict[str, list[float]] | None
    source: Path
    source_format: str
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# safe loading: the one checkpoint reader of logit_standardization.training.checkpoint


def _export_error(exc) -> ExportError:
    """The export error (and so the exit status) of a ``CheckpointError`` of the shared reader."""
    kind = getattr(exc, "kind", "")
    if kind == "missing":
        return CheckpointNotFoundError(str(exc))
    if kind == "unsafe":
        return UnsafeCheckpointError(str(exc))
    return CheckpointFormatError(str(exc))


def safe_torch_load(path: str | Path) -> Any:
    """Read a PyTorch file with ``torch.load(path, map_location="cpu", weights_only=True)``.

    The file's ``<path>.sha256``, when present, is checked first
    (:func:`logit_standardization.training.checkpoint.load_checkpoint` does the reading).

    Args:
        path: the file.

    Returns:
        The unpickled object (tensors, numbers, strings, lists, tuples and dicts only).

    Raises:
        CheckpointNotFoundError: ``path`` does not exist or is not a file.
        UnsafeCheckpointError: the file needs arbitrary code to unpickle; it was refused and
            nothing from it ran.
        CheckpointFormatError: the file is truncated, corrupt (SHA-256 mismatch) or not a
            PyTorch file.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> p = Path(tempfile.mkdtemp()) / "w.pt"
        >>> torch.save({"fc.weight": torch.ones(2, 3)}, p)
        >>> safe_torch_load(p)["fc.weight"].shape
        torch.Size([2, 3])
    """
    from ..training.checkpoint import CheckpointError, load_checkpoint

    try:
        return load_checkpoint(path, what="checkpoint")
    except CheckpointError as exc:
        raise _export_error(exc) from None


# --------------------------------------------------------------------------------------------
# PyTorch checkpoints (.pt, .pth, .safetensors)


def _zoo():
    from ..training import models

    return models


def _strip_common_prefix(model, state: dict) -> tuple[dict, str | None]:
    """If every model key appears in ``state`` under one extra prefix (``student.``, ``model.``), use it."""
    own = set(model.state_dict())
    if set(state) >= own:
        return state, None
    for prefix in sorted({k.split(".", 1)[0] + "." for k in state if "." in k}):
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if own <= set(sub) | {k for k in own if k.endswith("num_batches_tracked")} and set(sub) <= own:
            return sub, prefix
    return state, None


def _build(arch: str, dataset: str, num_classes: int | None):
    models = _zoo()
    try:
        return models.create_model(arch, dataset=dataset, num_classes=num_classes)
    except (TypeError, ValueError) as exc:
        raise UnknownArchitectureError(str(exc)) from None


def _known_archs(dataset: str | None) -> str:
    models = _zoo()
    datasets = [dataset] if dataset else models.list_datasets()
    return "Known architectures:\n" + "\n".join(f"  {d}: {', '.join(models.list_models(d))}" for d in datasets)


def _unknown_arch(arch: str, dataset: str | None) -> UnknownArchitectureError:
    where = f"for dataset {dataset!r}" if dataset else "in the model zoo"
    elsewhere = [d for d in _zoo().list_datasets() if dataset and arch in _zoo().list_models(d)]
    hint = f" ({arch!r} exists for dataset {', '.join(map(repr, elsewhere))})" if elsewhere else ""
    return UnknownArchitectureError(f"unknown architecture {arch!r} {where}{hint}. {_known_archs(None)}")


def _load_torch_student(
    path: Path, *, arch: str | None, dataset: str | None, num_classes: int | None
) -> Student:
    from ..training.checkpoint import CheckpointError, describe_mismatch, read_checkpoint, state_dict_mismatch

    models = _zoo()
    try:
        loaded = read_checkpoint(path, what="checkpoint")
    except CheckpointError as exc:
        raise _export_error(exc) from None
    state, meta = loaded.state_dict, dict(loaded.meta)
    notes: list[str] = []

    if dataset is not None and dataset not in (*models.list_datasets(), models.IMAGEFOLDER):
        raise UnknownArchitectureError(
            f"unknown dataset {dataset!r}; known datasets: {', '.join(models.list_datasets())}, {models.IMAGEFOLDER}"
        )
    declared = meta.get("arch")
    if arch is not None and declared not in (None, arch):
        notes.append(f"the checkpoint declares arch {declared!r}; using {arch!r} as requested")
    arch = arch or declared
    if not arch:
        raise CheckpointFormatError(
            f"{str(path)!r} is a {loaded.format} and does not say which architecture it holds; "
            "pass --arch NAME (and --dataset if the name exists for several datasets). " + _known_archs(dataset)
        )
    dataset = dataset or meta.get("dataset")
    num_classes = num_classes if num_classes is not None else meta.get("num_classes")
    if num_classes is not None:
        num_classes = int(num_classes)

    # a timm architecture or an image-folder student: the file says what to build and how to feed it
    described = models.is_timm_name(arch) or dataset == models.IMAGEFOLDER
    if described:
        if dataset is None:
            raise CheckpointFormatError(f"{str(path)!r} does not say which dataset {arch!r} was trained on; pass --dataset")
        if dataset not in models.DATASET_INFO and (num_classes is None or not meta.get("input_size")
                                                   or not meta.get("normalization")):
            raise CheckpointFormatError(
                f"{str(path)!r} is a {dataset} student without its class count, input size and normalization "
                "(the student.pt or student.safetensors of an lskd-train run has them)")
        candidates = [dataset]
    elif dataset is None:
        candidates = [d for d in models.list_datasets() if arch in models.list_models(d)]
    else:
        candidates = [dataset] if arch in models.list_models(dataset) else []
    if not candidates:
        raise _unknown_arch(arch, dataset)

    # an architecture name shared by several datasets (ResNet18, ResNet50): the weights decide
    failures: list[tuple[str, tuple]] = []
    for ds in candidates:
        model = _build(arch, ds, num_classes)
        fitted, prefix = _strip_common_prefix(model, state)
        report = state_dict_mismatch(model, fitted)
        if not any(report):
            dataset = ds
            break
        failures.append((ds, report))
    else:
        ds, (missing, unexpected, shapes) = failures[0]
        n_cls = num_classes if num_classes is not None else models.DATASET_INFO[ds].num_classes
        hint = (
            " If the network was trained with another number of classes, pass --num-classes."
            if shapes and not missing and not unexpected
            else ""
        )
        tried = f" (tried datasets {', '.join(candidates)})" if len(candidates) > 1 else ""
        if declared not in (None, arch):
            tried += f" (the checkpoint declares arch {declared!r})"
        raise StateDictMismatchError(
            f"the weights in {str(path)!r} do not fit {arch!r} ({ds}, {n_cls} classes){tried}: "
            + describe_mismatch(missing, unexpected, shapes)
            + "."
            + hint
        )
    if prefix:
        notes.append(f"weights taken from the {prefix!r} entries of the state dict")
    if len(candidates) > 1:
        notes.append(f"dataset {dataset!r} inferred from the weights ({arch!r} exists for {', '.join(candidates)})")
    model.load_state_dict(fitted, strict=False)  # strictness checked above (num_batches_tracked may be absent)
    model.eval()

    info = models.DATASET_INFO.get(dataset)  # None for imagefolder: the metadata holds all of it (checked above)
    out_features = int(num_classes if num_classes is not None else info.num_classes)
    input_size = tuple(meta.get("input_size") or info.input_size)
    normalization = meta.get("normalization") or {"mean": list(info.mean), "std": list(info.std)}
    return Student(
        model=model,
        framework="torch",
        arch=arch,
        dataset=dataset,
        num_classes=out_features,
        input_size=input_size,
        layout="NCHW",
        normalization=normalization,
        source=path,
        source_format=loaded.format,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# Keras


def _load_keras_student(
    path: Path, *, arch: str | None, dataset: str | None, num_classes: int | None
) -> Student:
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint {str(path)!r} is not a file")
    try:
        import keras
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "exporting a .keras model needs Keras 3 and TensorFlow: pip install 'logit-standardization[keras]' "
            "tensorflow tf2onnx"
        ) from exc
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as exc:
        text = str(exc)
        if "safe_mode" in text or "unsafe" in text.lower():
            raise UnsafeCheckpointError(
                f"refusing to load {str(path)!r}: it contains serialized Python code (e.g. a Lambda layer), "
                "which Keras only deserializes with safe_mode=False, i.e. by running code from the file. "
                "Rebuild the model without Lambda layers to export it."
            ) from None
        raise CheckpointFormatError(f"cannot load Keras model {str(path)!r}: {text.splitlines()[0]}") from None
    except (OSError, zipfile.BadZipFile, TypeError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointFormatError(
            f"cannot load Keras model {str(path)!r} ({type(exc).__name__}: {reason}); "
            "expected a Keras 3 .keras archive"
        ) from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise CheckpointFormatError(
            f"Keras model {str(path)!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            "a classifier with one image input and one logits output is expected"
        )
    in_shape = tuple(model.inputs[0].shape)[1:]
    out_shape = tuple(model.outputs[0].shape)
    if any(d is None for d in in_shape) or len(out_shape) != 2 or out_shape[-1] is None:
        raise CheckpointFormatError(
            f"Keras model {str(path)!r} must map a fixed-size input to (batch, classes) logits; "
            f"input {(None, *in_shape)}, output {out_shape}"
        )
    if num_classes is not None and int(num_classes) != int(out_shape[-1]):
        raise StateDictMismatchError(
            f"--num-classes {num_classes} does not match the Keras model's output size {out_shape[-1]}"
        )
    normalization = None
    notes: list[str] = []
    if dataset is not None:
        models = _zoo()
        if dataset not in models.DATASET_INFO:
            raise UnknownArchitectureError(
                f"unknown dataset {dataset!r}; known datasets: {', '.join(sorted(models.DATASET_INFO))}"
            )
        info = models.DATASET_INFO[dataset]
        normalization = {"mean": list(info.mean), "std": list(info.std)}
    else:
        notes.append("no normalization recorded (pass --dataset to record the dataset's mean/std)")
    layout = "NHWC" if keras.config.image_data_format() == "channels_last" else "NCHW"
    return Student(
        model=model,
        framework="keras",
        arch=arch or model.name,
        dataset=dataset,
        num_classes=int(out_shape[-1]),
        input_size=tuple(int(d) for d in in_shape),
        layout=layout,
        normalization=normalization,
        source=path,
        source_format=f"Keras model ({keras.backend.backend()} backend)",
        notes=notes,
    )


# --------------------------------------------------------------------------------------------


def load_student(
    path: str | Path,
    *,
    arch: str | None = None,
    dataset: str | None = None,
    num_classes: int | None = None,
) -> Student:
    """Load a checkpoint safely and rebuild the student network it holds.

    Accepted inputs: ``student.pt`` or ``student.safetensors`` of ``lskd-train``; its
    ``best.pt``/``last.pt`` (the student is extracted); reference-zoo files
    ``{"model": state_dict}``, plain state dicts and safetensors files without ``lskd-train``
    metadata (these need ``arch``); Keras 3 ``.keras`` files. A DataParallel ``module.`` prefix, or any single
    prefix under which the whole network sits (``student.``), is stripped.

    Args:
        path: the checkpoint.
        arch: zoo architecture name; overrides the checkpoint's ``arch``.
        dataset: zoo dataset key; when omitted it comes from the checkpoint, or from the zoo
            if the name exists for one dataset only, or from the weights otherwise.
        num_classes: output size; overrides the checkpoint's ``num_classes``.

    Returns:
        A :class:`Student` whose ``model`` is in eval mode.

    Raises:
        CheckpointNotFoundError: ``path`` does not exist.
        UnsafeCheckpointError: the file needs arbitrary code to unpickle (or, for Keras, holds
            serialized Python code).
        CheckpointFormatError: unreadable or truncated file, a SHA-256 mismatch with its
            ``.sha256`` file, a missing or malformed safetensors metadata field, no weights
            found, or no architecture known.
        UnknownArchitectureError: ``arch`` or ``dataset`` is not in the model zoo.
        StateDictMismatchError: the weights do not fit the architecture.
    """
    path = Path(path)
    if path.suffix == ".keras":
        return _load_keras_student(path, arch=arch, dataset=dataset, num_classes=num_classes)
    return _load_torch_student(path, arch=arch, dataset=dataset, num_classes=num_classes)
