"""Your own pair and data: weights from local files checked against the data's class count,
and the ``student.pt`` payload of a run on an image folder (its own size and normalization).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ._errors import TrainingError
from .checkpoint import LoadedCheckpoint, load_weights, read_checkpoint, student_payload
from .models import DATASET_INFO, DatasetInfo

__all__ = ["checkpoint_num_classes", "load_checked_weights", "run_payload"]


def checkpoint_num_classes(model: nn.Module, ck: LoadedCheckpoint, num_classes: int) -> int | None:
    """The class count of a checkpoint, when it differs from ``num_classes``; else None.

    The count the file declares (``num_classes`` of a ``student.pt``/``.safetensors`` of
    lskd-train) wins; a plain state dict is judged by the classifier: the last weights of
    ``model`` whose first dimension is ``num_classes`` and that the file has with another
    first dimension and otherwise the same shape.
    """
    declared = ck.meta.get("num_classes")
    if isinstance(declared, int) and not isinstance(declared, bool):
        return declared if declared != num_classes else None
    own = [(k, v) for k, v in model.state_dict().items() if v.is_floating_point()]
    for key, tensor in reversed(own[-4:]):  # the head: classifier weight and bias come last
        theirs = ck.state_dict.get(key)
        if theirs is None or tensor.ndim == 0 or tensor.shape[0] != num_classes:
            continue
        if theirs.ndim == tensor.ndim and theirs.shape[0] != num_classes and theirs.shape[1:] == tensor.shape[1:]:
            return int(theirs.shape[0])
    return None


def load_checked_weights(model: nn.Module, path: str | Path, *, arch: str, num_classes: int, what: str,
                         data: str) -> dict[str, Any]:
    """Load a local checkpoint into ``model`` after checking its class count against the data's.

    Args:
        model: the freshly built network (``num_classes`` outputs).
        path: any file :func:`.checkpoint.read_checkpoint` reads (``.pt``/``.pth``/``.safetensors``).
        arch: the architecture name (for messages).
        num_classes: the data's class count.
        what: how to call the file (``"teacher checkpoint"``, ``"student checkpoint"``).
        data: how to name the data in messages (``"the 3 class folders of 'x/train'"``).

    Returns:
        The file's metadata.

    Raises:
        TrainingError: the file has another class count (one line naming both counts).
        CheckpointError: unreadable file, or weights that do not fit the architecture.
    """
    ck = read_checkpoint(path, what=what)
    found = checkpoint_num_classes(model, ck, num_classes)
    if found is not None:
        raise TrainingError(
            f"{what} {str(ck.path)!r} has {found} classes but the data has {num_classes} ({data}); use a "
            f"checkpoint trained on the same classes")
    return load_weights(model, ck, arch=arch, what=what)


def run_payload(model: nn.Module, *, arch: str, dataset: str, num_classes: int, info: DatasetInfo) -> dict[str, Any]:
    """The ``student.pt`` payload of a run, with the size and normalization of ``info``.

    For the datasets of ``DATASET_INFO`` this is :func:`.checkpoint.student_payload`; an image
    folder records its own ``input_size`` and ``normalization`` (from the recipe).
    """
    if dataset in DATASET_INFO:
        return student_payload(model, arch=arch, dataset=dataset, num_classes=num_classes)
    payload = student_payload(model, arch=arch, dataset="imagenet", num_classes=num_classes)
    payload.update(dataset=dataset, input_size=[int(v) for v in info.input_size],
                   normalization={"mean": [float(m) for m in info.mean], "std": [float(s) for s in info.std]})
    return payload
