"""Model zoo: the reference CIFAR-100 and ImageNet architectures plus small CPU-scale pairs.

Every model maps a normalized image batch ``(N, C, H, W)`` to logits ``(N, num_classes)``.
The CIFAR-100 networks are structurally identical to the reference zoo (same state-dict names
and shapes, same parameter counts), so reference teacher checkpoints load with
``strict=True``; the ImageNet ResNets are torchvision's, created without weights.

Example:
    >>> import torch
    >>> from logit_standardization.training.models import create_model, DATASET_INFO
    >>> net = create_model("resnet8x4", dataset="cifar100")
    >>> info = DATASET_INFO["cifar100"]
    >>> info.num_classes, info.input_size
    (100, (3, 32, 32))
    >>> net.eval()(torch.zeros(2, *info.input_size)).shape
    torch.Size([2, 100])
    >>> "wrn_40_2" in list_models("cifar100")
    True
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .cifar import CIFAR_BUILDERS
from .imagenet import IMAGENET_BUILDERS
from ._timm import TIMM_PREFIX, create_timm_model, is_timm_name
from .small import DIGITS_BUILDERS, FASHION_MNIST_BUILDERS

__all__ = ["DatasetInfo", "DATASET_INFO", "IMAGEFOLDER", "create_model", "list_models", "list_datasets",
           "TIMM_PREFIX", "is_timm_name"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and its data pipeline need to know about a dataset.

    Attributes:
        name: dataset key (``"cifar100"``, ``"imagenet"``, ``"fashion_mnist"``, ``"digits"``).
        num_classes: number of classes (the default output size of ``create_model``).
        input_size: ``(C, H, W)`` of one network input after the test transform.
        mean: per-channel normalization mean (inputs are ``(x - mean) / std`` with ``x`` in [0, 1]).
        std: per-channel normalization standard deviation.
    """

    name: str
    num_classes: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]


DATASET_INFO: dict[str, DatasetInfo] = {
    "cifar100": DatasetInfo("cifar100", 100, (3, 32, 32), (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "imagenet": DatasetInfo("imagenet", 1000, (3, 224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # pixel statistics of the 60000 training images
    "fashion_mnist": DatasetInfo("fashion_mnist", 10, (1, 28, 28), (0.2860,), (0.3530,)),
    # statistics of all 1797 images after scaling the 0..16 values to 0..255 bytes
    "digits": DatasetInfo("digits", 10, (1, 8, 8), (0.3053,), (0.3759,)),
}
"""Per-dataset metadata, keyed by dataset name."""

IMAGEFOLDER = "imagefolder"
"""The dataset of your own images (``train/<class>/...``, ``val/<class>/...``): its class count,
image size and normalization come from the folder and the recipe, so it has no ``DATASET_INFO``
entry; ``create_model`` builds timm architectures and the ImageNet zoo for it, and needs
``num_classes``."""

_BUILDERS: dict[str, dict[str, Callable[[int], nn.Module]]] = {
    "cifar100": CIFAR_BUILDERS,
    "imagenet": IMAGENET_BUILDERS,
    "fashion_mnist": FASHION_MNIST_BUILDERS,
    "digits": DIGITS_BUILDERS,
}


def _suggest(name: str, known: list[str]) -> str:
    lowered = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(lowered[c]) for c in close)}?" if close else ""


def list_datasets() -> list[str]:
    """Names of the datasets the zoo knows, e.g. ``["cifar100", "digits", ...]`` (sorted)."""
    return sorted(_BUILDERS)


def _check_dataset(fn: str, dataset: object) -> str:
    if not isinstance(dataset, str):
        raise TypeError(f"{fn}: dataset must be a string, got {type(dataset).__name__}")
    if dataset not in _BUILDERS:
        raise ValueError(
            f"{fn}: unknown dataset {dataset!r}.{_suggest(dataset, list_datasets())} "
            f"Known datasets: {', '.join(list_datasets())}"
        )
    return dataset


def list_models(dataset: str | None = None) -> list[str]:
    """Model names of one dataset, or of all datasets when ``dataset`` is None (sorted).

    Args:
        dataset: a key of :data:`DATASET_INFO`, or None.

    Returns:
        The names accepted by :func:`create_model` for that dataset.

    Example:
        >>> list_models("digits")
        ['mlp_digits', 'mlp_digits_small']
    """
    if dataset is None:
        return sorted({n for builders in _BUILDERS.values() for n in builders})
    return sorted(_BUILDERS[_check_dataset("list_models", dataset)])


def create_model(name: str, *, dataset: str, num_classes: int | None = None) -> nn.Module:
    """Build an untrained model of the zoo.

    Args:
        name: architecture name as in the reference code, e.g. ``"resnet32x4"``, ``"wrn_40_2"``,
            ``"MobileNetV2"`` (CIFAR) or ``"ResNet34"``, ``"MobileNetV1"`` (ImageNet); see
            :func:`list_models`. ``"timm:<name>"`` is ``timm.create_model(<name>,
            pretrained=False, num_classes=num_classes)`` (randomly initialised; needs timm).
        dataset: ``"cifar100"``, ``"imagenet"``, ``"fashion_mnist"``, ``"digits"`` or
            ``"imagefolder"`` (your own images: timm or the ImageNet zoo; ``num_classes`` required).
        num_classes: output size; defaults to the dataset's class count.

    Returns:
        A ``torch.nn.Module`` mapping ``(N, *DATASET_INFO[dataset].input_size)`` to
        ``(N, num_classes)`` logits, in training mode, on the CPU.

    Raises:
        ValueError: unknown dataset or name (with close matches), or ``num_classes < 1``; for
            ``timm:`` names, a ``TrainingError`` (a ``ValueError``) when timm is missing or has no such architecture.
        TypeError: ``num_classes`` is not an integer.
    """
    if dataset == IMAGEFOLDER:
        builders = IMAGENET_BUILDERS  # the ResNets pool adaptively (any image size); MobileNetV1 needs 224
    else:
        builders = _BUILDERS[_check_dataset("create_model", dataset)]
    if not isinstance(name, str):
        raise TypeError(f"create_model: name must be a string, got {type(name).__name__}")
    if name not in builders and not is_timm_name(name):
        elsewhere = [d for d, b in _BUILDERS.items() if name in b]
        hint = f" ({name!r} exists for dataset {', '.join(map(repr, elsewhere))})" if elsewhere else ""
        raise ValueError(
            f"create_model: unknown model {name!r} for dataset {dataset!r}{hint}.{_suggest(name, list(builders))} "
            f"Known models for {dataset!r}: {', '.join(sorted(builders))}, or timm architectures as "
            f"'{TIMM_PREFIX}<name>'"
        )
    if num_classes is None:
        if dataset == IMAGEFOLDER:
            raise ValueError("create_model: dataset 'imagefolder' needs num_classes (the number of class folders)")
        num_classes = DATASET_INFO[dataset].num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"create_model: num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 1:
        raise ValueError(f"create_model: num_classes must be >= 1, got {num_classes}")
    if is_timm_name(name):
        return create_timm_model(name, num_classes)
    return builders[name](num_classes)
