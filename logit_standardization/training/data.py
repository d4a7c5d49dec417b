"""Datasets, transforms and loaders for the training recipes.

Datasets (all yield ``(image, label)`` with a PIL image passed through ``transform``):

* :class:`CIFAR100` -- the standard python-pickle files ``<root>/cifar-100-python/{train,test,meta}``
  (dicts with ``data`` uint8 ``N x 3072`` and ``fine_labels``), of any size.
* ImageNet -- :func:`imagenet_folder`, torchvision's ``ImageFolder`` on ``<root>/train`` and
  ``<root>/val`` (one sub-folder per class).
* Your own images (dataset ``"imagefolder"``) -- :func:`image_folder`, the same layout, with the
  image size and normalization of the recipe (:func:`imagefolder_info`) and the ImageNet
  transforms at that size; the class count is the number of class folders.
* :class:`FashionMNIST` -- the IDX files (``train-images-idx3-ubyte.gz`` ...), gzipped or plain,
  by default from ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
* :class:`Digits` -- scikit-learn's 8x8 digits with a fixed, seeded, stratified train/test split.

Transforms follow the reference pipeline: CIFAR-100 training uses RandomCrop(32, padding=4) and
a horizontal flip, ImageNet uses RandomResizedCrop(224) and a flip (Resize(256) + CenterCrop(224)
for validation), then ToTensor and per-channel normalization. MLKD's strong view adds
:class:`RandAugment` (two of fourteen operations drawn with replacement, magnitudes uniform in
each operation's range) and :class:`Cutout`; :class:`TwoViewDataset` yields
``(weak, strong, label)``.

Randomness comes from torch's generator only, so a ``DataLoader`` built by :func:`make_loader`
is reproducible: workers are seeded by the loader's generator and :func:`seed_worker` also seeds
``random`` and NumPy in each worker. With ``num_workers=0`` the transforms draw from torch's
global generator, so call ``torch.manual_seed`` first.

Example:
    >>> from logit_standardization.training.data import build_datasets
    >>> bundle = build_datasets("digits")
    >>> len(bundle.train), len(bundle.test), bundle.info.input_size
    (1437, 360, (1, 8, 8))
    >>> image, label = bundle.test[0]
    >>> tuple(image.shape), label in range(10)
    ((1, 8, 8), True)
"""

from __future__ import annotations

import copy
import gzip
import os
import pickle
import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms as T

from .models import DATASET_INFO, IMAGEFOLDER, DatasetInfo

__all__ = [
    "DatasetNotFoundError",
    "holdout_indices",
    "CIFAR100",
    "FashionMNIST",
    "Digits",
    "imagenet_folder",
    "image_folder",
    "imagefolder_info",
    "IMAGEFOLDER_DEFAULTS",
    "read_cifar100",
    "read_idx",
    "RANDAUGMENT_OPS",
    "apply_op",
    "RandAugment",
    "Cutout",
    "cutout_box",
    "build_transform",
    "TwoViewDataset",
    "DataBundle",
    "build_datasets",
    "seed_worker",
    "make_loader",
    "DEFAULT_ROOTS",
    "CIFAR100_URL",
    "FASHION_MNIST_URL",
]

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
FASHION_MNIST_URL = "https://github.com/zalandoresearch/fashion-mnist (files under data/fashion/)"

DEFAULT_ROOTS: dict[str, str | None] = {
    "cifar100": "data",
    "imagenet": "data/imagenet",
    "fashion_mnist": "/usr/share/datasets/fashion-mnist",
    "digits": None,
    "imagefolder": None,  # no default: --data-root (data.root) names the folder
}
"""Where :func:`build_datasets` looks when ``root`` is None (relative paths: the working directory)."""

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are missing; the message says which files, where, and how to get them."""


# --------------------------------------------------------------------------------------------
# readers


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds NumPy arrays (and plain containers): no arbitrary code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only NumPy arrays are expected")


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise ValueError(f"read_cifar100: {path} is not a CIFAR-100 python pickle ({e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"read_cifar100: {path} should hold a dict, found {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_paths(root: str | os.PathLike) -> dict[str, Path]:
    base = Path(root) / "cifar-100-python"
    return {name: base / name for name in ("train", "test", "meta")}


def read_cifar100(root: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read one split of the CIFAR-100 python-pickle files.

    Args:
        root: directory containing ``cifar-100-python/``.
        split: ``"train"`` or ``"test"``.

    Returns:
        ``(images, labels, classes)``: uint8 ``(N, 32, 32, 3)`` (HWC, RGB), int64 ``(N,)`` fine
        labels, and the fine class names from ``meta`` (``"0" ... "99"`` when ``meta`` is absent).

    Raises:
        DatasetNotFoundError: the split file is missing.
        ValueError: a file is not in the standard format.
    """
    if split not in ("train", "test"):
        raise ValueError(f"read_cifar100: split must be 'train' or 'test', got {split!r}")
    paths = _cifar_paths(root)
    if not paths[split].is_file():
        raise DatasetNotFoundError(_cifar_missing_message(root))
    d = _load_pickle(paths[split])
    if "data" not in d or "fine_labels" not in d:
        raise ValueError(f"read_cifar100: {paths[split]} lacks 'data' or 'fine_labels' (keys: {sorted(map(str, d))})")
    data = np.asarray(d["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(
            f"read_cifar100: {paths[split]}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}"
        )
    labels = np.asarray(d["fine_labels"], dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise ValueError(f"read_cifar100: {paths[split]}: {data.shape[0]} images but {labels.size} fine_labels")
    if paths["meta"].is_file():
        meta = _load_pickle(paths["meta"])
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get("fine_label_names", [])]
    else:
        classes = []
    if not classes:
        classes = [str(i) for i in range(DATASET_INFO["cifar100"].num_classes)]
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(
            f"read_cifar100: {paths[split]}: fine_labels must lie in [0, {len(classes)}), "
            f"got [{labels.min()}, {labels.max()}]"
        )
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels, classes


def _cifar_missing_message(root: str | os.PathLike) -> str:
    paths = _cifar_paths(root)
    missing = [n for n, p in paths.items() if not p.is_file()]
    return (
        f"CIFAR-100 not found: expected the python-pickle files {paths['train']}, {paths['test']} and "
        f"{paths['meta']} (missing: {', '.join(missing)}). Get them with --download (download=True, needs "
        f"internet), or download {CIFAR100_URL} and extract it into {Path(root)}."
    )


_IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST/Fashion-MNIST format), gzipped or plain.

    The format: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a big-endian
    uint32, then the big-endian values in C order. Gzip is detected from the content.

    Args:
        path: file path.

    Returns:
        The array, in native byte order.

    Raises:
        ValueError: the file is not a valid IDX file (bad header or wrong length).
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"read_idx: {path} is not an IDX file (header {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"read_idx: {path} is truncated inside its header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"read_idx: {path}: header promises shape {dims} ({expected} bytes of data), found {len(raw) - header} bytes"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_fashion_mnist(root: Path, split: str) -> tuple[Path, Path] | None:
    for folder in (root, root / "FashionMNIST" / "raw", root / "fashion-mnist"):
        found = []
        for stem in _FASHION_MNIST_FILES[split]:
            candidates = [folder / (stem + ".gz"), folder / stem]
            found.append(next((c for c in candidates if c.is_file()), None))
        if all(found):
            return found[0], found[1]
    return None


def _fashion_mnist_missing_message(root: Path) -> str:
    names = [n + ".gz" for pair in _FASHION_MNIST_FILES.values() for n in pair]
    return (
        f"Fashion-MNIST not found under {root}: expected the IDX files {', '.join(names)} (gzipped or "
        f"not) in {root}, {root / 'FashionMNIST' / 'raw'} or {root / 'fashion-mnist'}. Get them with "
        f"`apt-get install dataset-fashion-mnist` (installs {DEFAULT_ROOTS['fashion_mnist']}), with "
        f"--download (download=True, needs internet), or from {FASHION_MNIST_URL}."
    )


# --------------------------------------------------------------------------------------------
# datasets


class _ImageArrayDataset(Dataset):
    """``data[i]`` (uint8 HW or HWC) as a PIL image through ``transform``, with ``targets[i]``."""

    data: np.ndarray
    targets: np.ndarray
    classes: list[str]

    def __init__(self, transform: Callable | None):
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.fromarray(self.data[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


class CIFAR100(_ImageArrayDataset):
    """CIFAR-100 from the standard python-pickle files (any number of images).

    Args:
        root: directory containing ``cifar-100-python/`` (created there by ``download=True``).
        train: training split if True, else the test split.
        transform: applied to the PIL RGB image.
        download: fetch and extract the official archive with torchvision when files are missing.

    Attributes:
        data: uint8 ``(N, 32, 32, 3)`` images. targets: int64 ``(N,)`` fine labels.
        classes: fine class names.
    """

    def __init__(
        self, root: str | os.PathLike, train: bool = True, transform: Callable | None = None, download: bool = False
    ):
        super().__init__(transform)
        self.root = Path(root)
        missing = [p for p in _cifar_paths(root).values() if not p.is_file()]
        if download and any(p.name in ("train", "test") for p in missing):
            _torchvision_download("CIFAR100", self.root, _cifar_missing_message(root))
        self.data, self.targets, self.classes = read_cifar100(root, "train" if train else "test")


class FashionMNIST(_ImageArrayDataset):
    """Fashion-MNIST from the standard IDX files (gzipped or plain).

    Args:
        root: directory with the four IDX files (also searched: ``root/FashionMNIST/raw`` as
            written by torchvision, and ``root/fashion-mnist``); default
            ``/usr/share/datasets/fashion-mnist``.
        train: training split if True, else the test split.
        transform: applied to the PIL grayscale (mode ``"L"``) image.
        download: fetch the files with torchvision into ``root`` when they are missing.

    Attributes:
        data: uint8 ``(N, 28, 28)`` images. targets: int64 ``(N,)``. classes: the ten names.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        train: bool = True,
        transform: Callable | None = None,
        download: bool = False,
    ):
        super().__init__(transform)
        self.root = Path(root if root is not None else DEFAULT_ROOTS["fashion_mnist"])
        split = "train" if train else "test"
        files = _find_fashion_mnist(self.root, split)
        if files is None and download:
            _torchvision_download("FashionMNIST", self.root, _fashion_mnist_missing_message(self.root))
            files = _find_fashion_mnist(self.root, split)
        if files is None:
            raise DatasetNotFoundError(_fashion_mnist_missing_message(self.root))
        images, labels = read_idx(files[0]), read_idx(files[1])
        if images.dtype != np.uint8 or images.ndim != 3:
            raise ValueError(f"FashionMNIST: {files[0]} must hold uint8 images (N, H, W), got {images.dtype} {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"FashionMNIST: {files[1]} holds {labels.shape} labels for {len(images)} images in {files[0]}")
        self.files = files
        self.data, self.targets = images, labels.astype(np.int64)
        self.classes = list(FASHION_MNIST_CLASSES)


class Digits(_ImageArrayDataset):
    """scikit-learn's 8x8 handwritten digits (1797 images, values 0..16) with a fixed split.

    The split is stratified and seeded (``sklearn.model_selection.train_test_split`` with
    ``random_state=split_seed``), so train and test are disjoint and the same on every machine.
    Images become 8-bit grayscale by ``round(value * 255 / 16)``.

    Args:
        train: training part if True, else the test part.
        transform: applied to the PIL grayscale image.
        split_seed: seed of the split.
        test_fraction: fraction of images held out for testing.

    Attributes:
        values: ``(N, 8, 8)`` original values 0..16. data: the uint8 images. targets: labels.
        indices: positions of the images in ``sklearn.datasets.load_digits()``.
    """

    def __init__(
        self, train: bool = True, transform: Callable | None = None, *, split_seed: int = 0, test_fraction: float = 0.2
    ):
        super().__init__(transform)
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"Digits: test_fraction must be in (0, 1), got {test_fraction}")
        digits = load_digits()
        all_idx = np.arange(len(digits.target))
        train_idx, test_idx = train_test_split(
            all_idx, test_size=test_fraction, random_state=split_seed, stratify=digits.target
        )
        self.indices = np.sort(train_idx if train else test_idx)
        self.values = digits.images[self.indices].astype(np.uint8)
        self.data = np.rint(self.values.astype(np.float64) * (255.0 / 16.0)).astype(np.uint8)
        self.targets = digits.target[self.indices].astype(np.int64)
        self.classes = [str(i) for i in range(10)]


def imagenet_folder(root: str | os.PathLike, split: str, transform: Callable | None = None) -> Dataset:
    """ImageNet (or any class-per-folder image set) as torchvision ``ImageFolder``.

    Args:
        root: directory with ``train/`` and ``val/``, each holding one folder per class
            (e.g. ``train/n01440764/*.JPEG``).
        split: ``"train"`` or ``"val"``.
        transform: applied to the PIL RGB image.

    Raises:
        DatasetNotFoundError: the split folder is missing or holds no class folders.
    """
    from torchvision.datasets import ImageFolder

    folder = Path(root) / split
    expected = (
        f"ImageNet not found: expected {Path(root) / 'train'} and {Path(root) / 'val'}, each with one "
        f"sub-folder of images per class (e.g. {folder / 'n01440764'}/*.JPEG)"
    )
    how = (
        "ImageNet cannot be downloaded automatically: get ILSVRC2012 from https://image-net.org and sort "
        "the validation images into class folders."
    )
    if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
        raise DatasetNotFoundError(f"{expected}; {folder} is missing or has no class folders. {how}")
    try:
        return ImageFolder(str(folder), transform=transform)
    except FileNotFoundError as e:
        raise DatasetNotFoundError(f"{expected}; {folder}: {e} {how}") from e


IMAGEFOLDER_DEFAULTS: dict[str, Any] = {
    "image_size": DATASET_INFO["imagenet"].input_size[1],
    "mean": DATASET_INFO["imagenet"].mean,
    "std": DATASET_INFO["imagenet"].std,
}
"""``data.image_size``, ``data.mean`` and ``data.std`` of dataset ``imagefolder`` when the recipe
leaves them unset: ImageNet's (224, and its per-channel statistics)."""


def imagefolder_info(image_size: int | None = None, mean: Sequence[float] | None = None,
                     std: Sequence[float] | None = None, num_classes: int = 0) -> DatasetInfo:
    """The :class:`DatasetInfo` of an image folder: RGB images of ``image_size`` x ``image_size``.

    Unset values take :data:`IMAGEFOLDER_DEFAULTS` (ImageNet's).

    Example:
        >>> info = imagefolder_info(32, num_classes=3)
        >>> info.input_size, info.mean
        ((3, 32, 32), (0.485, 0.456, 0.406))
    """
    d = IMAGEFOLDER_DEFAULTS
    size = int(image_size if image_size is not None else d["image_size"])
    mean = tuple(float(m) for m in (mean if mean is not None else d["mean"]))
    std = tuple(float(v) for v in (std if std is not None else d["std"]))
    if size < 1:
        raise ValueError(f"imagefolder_info: image_size must be >= 1, got {size}")
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"imagefolder_info: mean and std need 3 values (RGB), std > 0; got {mean} and {std}")
    return DatasetInfo(IMAGEFOLDER, int(num_classes), (3, size, size), mean, std)


def image_folder(root: str | os.PathLike | None, split: str, transform: Callable | None = None) -> Dataset:
    """One split of your own image set: torchvision ``ImageFolder`` on ``<root>/<split>``.

    ``<root>/train`` and ``<root>/val`` each hold one sub-folder per class
    (``train/cat/0001.png`` ...); the images (any format PIL reads, with the usual extensions)
    are loaded as RGB and classes are numbered in sorted folder order.

    Args:
        root: the folder holding ``train/`` and ``val/`` (``--data-root``).
        split: ``"train"`` or ``"val"``.
        transform: applied to the PIL RGB image.

    Raises:
        DatasetNotFoundError: no root, or ``<root>/<split>`` is missing or has no class folders.
        ValueError: a class folder holds no images.
    """
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    layout = "train/ and val/, each with one sub-folder of images per class (train/<class>/*.jpg ...)"
    if root is None:
        raise DatasetNotFoundError(f"dataset 'imagefolder' needs the folder of your images holding {layout}")
    folder = Path(root) / split
    if not folder.is_dir():
        raise DatasetNotFoundError(f"image folder {str(folder)!r} is missing: {str(Path(root))!r} must hold {layout}")
    if not any(p.is_dir() for p in folder.iterdir()):
        raise DatasetNotFoundError(f"image folder {str(folder)!r} has no class folders: {str(Path(root))!r} must "
                                   f"hold {layout}")
    dataset = ImageFolder(str(folder), transform=transform, allow_empty=True)
    counts = np.bincount(np.asarray(dataset.targets, dtype=np.int64), minlength=len(dataset.classes))
    empty = [c for c, n in zip(dataset.classes, counts) if n == 0]
    if empty:
        names = ", ".join(repr(c) for c in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise ValueError(f"image folder {str(folder)!r}: class folder {names} holds no images (image files end "
                         f"in {', '.join(IMG_EXTENSIONS)}); add images or remove the folder")
    return dataset


def _check_same_classes(root: Path, train: Any, val: Any) -> None:
    if list(train.classes) == list(val.classes):
        return
    only_train = sorted(set(train.classes) - set(val.classes))
    only_val = sorted(set(val.classes) - set(train.classes))
    parts = [f"only in train/: {', '.join(only_train[:5])}" if only_train else "",
             f"only in val/: {', '.join(only_val[:5])}" if only_val else ""]
    raise ValueError(f"image folders {str(root / 'train')!r} and {str(root / 'val')!r} have different class "
                     f"folders ({'; '.join(p for p in parts if p)}); both need the same classes")


def _torchvision_download(cls_name: str, root: Path, missing_message: str) -> None:
    import torchvision.datasets as tvd

    root.mkdir(parents=True, exist_ok=True)
    try:
        for train in (True, False):
            getattr(tvd, cls_name)(str(root), train=train, download=True)
    except Exception as e:  # network errors come in many types (URLError, OSError, RuntimeError)
        raise DatasetNotFoundError(f"{missing_message} The download failed: {e}") from e


# --------------------------------------------------------------------------------------------
# RandAugment (the 14-operation set of the reference strong view) and Cutout


def _affine(img: Image.Image, coeffs: tuple[float, ...]) -> Image.Image:
    return img.transform(img.size, Image.Transform.AFFINE, coeffs)


_OP_FUNCTIONS: dict[str, Callable[[Image.Image, float], Image.Image]] = {
    "AutoContrast": lambda img, v: ImageOps.autocontrast(img),
    "Brightness": lambda img, v: ImageEnhance.Brightness(img).enhance(v),
    "Color": lambda img, v: ImageEnhance.Color(img).enhance(v),
    "Contrast": lambda img, v: ImageEnhance.Contrast(img).enhance(v),
    "Equalize": lambda img, v: ImageOps.equalize(img),
    "Identity": lambda img, v: img,
    "Posterize": lambda img, v: ImageOps.posterize(img, max(1, int(v))),
    "Rotate": lambda img, v: img.rotate(v),
    "Sharpness": lambda img, v: ImageEnhance.Sharpness(img).enhance(v),
    "ShearX": lambda img, v: _affine(img, (1, v, 0, 0, 1, 0)),
    "ShearY": lambda img, v: _affine(img, (1, 0, 0, v, 1, 0)),
    "Solarize": lambda img, v: ImageOps.solarize(img, v),
    "TranslateX": lambda img, v: _affine(img, (1, 0, v * img.size[0], 0, 1, 0)),
    "TranslateY": lambda img, v: _affine(img, (1, 0, 0, 0, 1, v * img.size[1])),
}

RANDAUGMENT_OPS: tuple[tuple[str, float, float], ...] = (
    ("AutoContrast", 0.0, 1.0),
    ("Brightness", 0.05, 0.95),
    ("Color", 0.05, 0.95),
    ("Contrast", 0.05, 0.95),
    ("Equalize", 0.0, 1.0),
    ("Identity", 0.0, 1.0),
    ("Posterize", 4.0, 8.0),
    ("Rotate", -30.0, 30.0),
    ("Sharpness", 0.05, 0.95),
    ("ShearX", -0.3, 0.3),
    ("ShearY", -0.3, 0.3),
    ("Solarize", 0.0, 256.0),
    ("TranslateX", -0.3, 0.3),
    ("TranslateY", -0.3, 0.3),
)
"""``(name, low, high)`` of each operation; magnitudes are drawn uniformly in ``[low, high)``.

Rotate is in degrees, Shear is the affine shear coefficient, Translate is a fraction of the
image side, Posterize is the number of kept bits (truncated to an int), Solarize is the
threshold; the enhancement factors are those of ``PIL.ImageEnhance`` (1 = unchanged). Affine
operations use nearest-neighbour sampling and fill with black, as in the reference.
"""


def apply_op(img: Image.Image, name: str, value: float) -> Image.Image:
    """Apply one RandAugment operation of :data:`RANDAUGMENT_OPS` with magnitude ``value``.

    Example:
        >>> from PIL import Image
        >>> apply_op(Image.new("RGB", (4, 4), (10, 20, 30)), "Solarize", 0.0).getpixel((0, 0))
        (245, 235, 225)
    """
    if name not in _OP_FUNCTIONS:
        raise ValueError(f"apply_op: unknown operation {name!r}; known: {', '.join(_OP_FUNCTIONS)}")
    return _OP_FUNCTIONS[name](img, value)


class RandAugment:
    """Apply ``n`` operations drawn uniformly with replacement from :data:`RANDAUGMENT_OPS`,
    each with a magnitude drawn uniformly in its range (the reference's "m" is not used).

    Args:
        n: operations per image (2 in the reference).
    """

    def __init__(self, n: int = 2):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"RandAugment: n must be a non-negative int, got {n!r}")
        self.n = n

    def __call__(self, img: Image.Image) -> Image.Image:
        for i in torch.randint(len(RANDAUGMENT_OPS), (self.n,)).tolist():
            name, low, high = RANDAUGMENT_OPS[i]
            img = apply_op(img, name, low + (high - low) * torch.rand(()).item())
        return img

    def __repr__(self) -> str:
        return f"RandAugment(n={self.n})"


def cutout_box(
    width: int, height: int, side: float, *, reference_quirk: bool = False, generator: torch.Generator | None = None
) -> tuple[int, int, float, float]:
    """Draw the square that :class:`Cutout` paints, as a PIL rectangle ``(x0, y0, x1, y1)``.

    A center ``(cx, cy)`` is drawn, then ``x0 = int(max(0, cx - side/2))``,
    ``x1 = min(width, x0 + side)`` (same for y). Correctly ``cx ~ U[0, width)``. The
    reference draws ``np.random.uniform(width)``, i.e. ``low=width, high=1``, so
    ``cx ~ U(1, width]``; ``reference_quirk=True`` reproduces that.

    Args:
        width, height: image size in pixels.
        side: square side in pixels.
        reference_quirk: draw the center as the reference code does.
        generator: torch generator (default: the global one).

    Returns:
        The rectangle corners (inclusive, as ``ImageDraw.rectangle`` takes them).
    """
    u = torch.rand(2, generator=generator).tolist()
    if reference_quirk:
        cx, cy = width + (1.0 - width) * u[0], height + (1.0 - height) * u[1]
    else:
        cx, cy = width * u[0], height * u[1]
    x0 = int(max(0.0, cx - side / 2.0))
    y0 = int(max(0.0, cy - side / 2.0))
    return x0, y0, min(width, x0 + side), min(height, y0 + side)


class Cutout:
    """Paint a square of side ``v * width``, ``v ~ U[0, max_fraction)``, with a constant colour.

    Args:
        max_fraction: upper bound of the side as a fraction of the image width (0.5 in the
            reference).
        fill: colour: an RGB tuple for RGB images (reference: ``(125, 123, 114)``), an int
            for grayscale images.
        reference_quirk: place the square as the reference code does (see :func:`cutout_box`);
            by default the center is uniform over the image.
    """

    def __init__(self, max_fraction: float = 0.5, fill: int | Sequence[int] = (125, 123, 114), reference_quirk: bool = False):
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"Cutout: max_fraction must be in [0, 1], got {max_fraction}")
        self.max_fraction = max_fraction
        self.fill = fill if isinstance(fill, int) else tuple(int(c) for c in fill)
        self.reference_quirk = reference_quirk

    def __call__(self, img: Image.Image) -> Image.Image:
        v = torch.rand(()).item() * self.max_fraction
        if v <= 0.0:
            return img
        box = cutout_box(img.size[0], img.size[1], v * img.size[0], reference_quirk=self.reference_quirk)
        img = img.copy()
        ImageDraw.Draw(img).rectangle(box, fill=self.fill)
        return img

    def __repr__(self) -> str:
        return f"Cutout(max_fraction={self.max_fraction}, fill={self.fill}, reference_quirk={self.reference_quirk})"


# --------------------------------------------------------------------------------------------
# transforms

# Cutout colour: the reference's for RGB data; the mean grey level for the grayscale sets.
_CUTOUT_FILL: dict[str, int | tuple[int, ...]] = {
    "cifar100": (125, 123, 114),
    "imagenet": (125, 123, 114),
    "fashion_mnist": round(DATASET_INFO["fashion_mnist"].mean[0] * 255),
    "digits": round(DATASET_INFO["digits"].mean[0] * 255),
    "imagefolder": (125, 123, 114),
}


def _geometric(dataset: str, side: int) -> list[Callable]:
    if dataset in ("imagenet", IMAGEFOLDER):
        return [T.RandomResizedCrop(side), T.RandomHorizontalFlip()]
    if dataset == "cifar100":
        return [T.RandomCrop(side, padding=4), T.RandomHorizontalFlip()]
    if dataset == "fashion_mnist":
        return [T.RandomCrop(side, padding=2), T.RandomHorizontalFlip()]
    return [T.RandomCrop(side, padding=1)]  # digits: shifts only, digits are not mirror-symmetric


def build_transform(
    dataset: str,
    *,
    train: bool,
    strong: bool = False,
    augment: bool = True,
    reference_cutout_quirk: bool = False,
    info: DatasetInfo | None = None,
) -> Callable[[Image.Image], torch.Tensor]:
    """The image -> normalized tensor transform of a dataset.

    * test (``train=False``): ToTensor + Normalize (ImageNet: Resize(256), CenterCrop(224) first);
    * train: the dataset's crop/flip, then ToTensor + Normalize (``augment=False`` drops the
      crop/flip; ImageNet then uses the test resizing);
    * strong (MLKD's second view): crop/flip, ``RandAugment(2)``, ``Cutout`` (fill
      ``(125, 123, 114)`` for RGB data), ToTensor + Normalize.

    Crops and flips per dataset: CIFAR-100 RandomCrop(32, padding=4) + flip; ImageNet
    RandomResizedCrop(224) + flip; Fashion-MNIST RandomCrop(28, padding=2) + flip; digits
    RandomCrop(8, padding=1). An image folder (``"imagefolder"``) uses ImageNet's transforms at
    its own side ``S`` (RandomResizedCrop(S) + flip; Resize(round(S * 256 / 224)) +
    CenterCrop(S) for evaluation) and its own normalization.

    Args:
        dataset: a key of ``DATASET_INFO``.
        train: training (random) or evaluation (deterministic) transform.
        strong: the strong view (requires ``train=True``).
        augment: apply the crop/flip of the training view.
        reference_cutout_quirk: Cutout places its square as the reference code does.
        info: size and normalization in place of ``DATASET_INFO[dataset]`` (required for
            ``"imagefolder"``: :func:`imagefolder_info`).
    """
    if dataset not in DATASET_INFO and not (dataset == IMAGEFOLDER and info is not None):
        raise ValueError(f"build_transform: unknown dataset {dataset!r}; known: {', '.join(sorted(DATASET_INFO))}"
                         + (" (imagefolder needs info=imagefolder_info(...))" if dataset == IMAGEFOLDER else ""))
    if strong and not train:
        raise ValueError("build_transform: strong=True needs train=True (the strong view is a training view)")
    info = info if info is not None else DATASET_INFO[dataset]
    side = info.input_size[1]
    tail = [T.ToTensor(), T.Normalize(info.mean, info.std)]
    # ImageNet's evaluation resize: 256 for 224 crops, the same ratio at other sizes
    eval_head = [T.Resize(round(side * 256 / 224)), T.CenterCrop(side)] if dataset in ("imagenet", IMAGEFOLDER) else []
    if not train:
        return T.Compose(eval_head + tail)
    if strong:
        cutout = Cutout(0.5, _CUTOUT_FILL[dataset], reference_quirk=reference_cutout_quirk)
        return T.Compose(_geometric(dataset, side) + [RandAugment(2), cutout] + tail)
    return T.Compose((_geometric(dataset, side) if augment else eval_head) + tail)


class TwoViewDataset(Dataset):
    """Wrap an ``(image, label)`` dataset (whose own transform is None) to yield
    ``(weak(image), strong(image), label)``: the two views of MLKD, drawn independently.

    Args:
        base: dataset returning untransformed (PIL) images.
        weak: transform of the first view.
        strong: transform of the second view.
    """

    def __init__(self, base: Dataset, weak: Callable, strong: Callable):
        if getattr(base, "transform", None) is not None:
            raise ValueError("TwoViewDataset: the base dataset must have transform=None (the views apply their own)")
        self.base, self.weak, self.strong = base, weak, strong

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        image, label = self.base[index]
        return self.weak(image), self.strong(image), label


# --------------------------------------------------------------------------------------------
# entry point


@dataclass
class DataBundle:
    """Datasets and metadata returned by :func:`build_datasets`.

    Attributes:
        train: training dataset; yields ``(image, label)``, or ``(weak, strong, label)`` with
            ``mlkd_views=True``.
        test: evaluation dataset yielding ``(image, label)``.
        info: ``DatasetInfo`` (num_classes, input_size, mean, std); ``num_classes`` follows the
            CIFAR-100 ``meta`` file when that lists another number of classes.
        classes: class names.
        root: the data directory used (None for digits).
        split: with ``val_fraction``, the held-out split (fraction, seed, sizes); else None.
    """

    train: Dataset
    test: Dataset
    info: DatasetInfo
    classes: list[str]
    root: Path | None
    split: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return self.info.num_classes


def build_datasets(
    dataset: str,
    root: str | os.PathLike | None = None,
    *,
    mlkd_views: bool = False,
    download: bool = False,
    augment: bool = True,
    reference_cutout_quirk: bool = False,
    split_seed: int = 0,
    val_fraction: float | None = None,
    val_seed: int = 0,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> DataBundle:
    """Build the train and test datasets of a recipe, with the reference transforms.

    Args:
        dataset: ``"cifar100"``, ``"imagenet"``, ``"fashion_mnist"``, ``"digits"`` or
            ``"imagefolder"`` (your own images in ``root/train/<class>/`` and ``root/val/<class>/``).
        root: data directory (see :data:`DEFAULT_ROOTS` for the defaults; ignored for digits).
            CIFAR-100: the directory containing ``cifar-100-python/``; ImageNet: the directory
            containing ``train/`` and ``val/``; Fashion-MNIST: the directory with the IDX files.
        mlkd_views: the training set yields ``(weak, strong, label)`` (MLKD); otherwise
            ``(image, label)``.
        download: fetch CIFAR-100 / Fashion-MNIST with torchvision when missing (needs
            internet; Fashion-MNIST then defaults to ``./data``).
        augment: crop/flip in the training (weak) view.
        reference_cutout_quirk: the strong view's Cutout places its square as the reference does.
        split_seed: seed of the digits train/test split.
        image_size, mean, std: ``"imagefolder"`` only: the side of the square network input and
            the per-channel normalization (None: ImageNet's, :data:`IMAGEFOLDER_DEFAULTS`).
        val_fraction: hold out this fraction of the training set (stratified by label, seeded
            by ``val_seed``: :func:`holdout_indices`) and return it, with the evaluation
            transform, in place of the test set; the training set keeps the rest. None: the
            ordinary train/test datasets. The recipe keys ``data.val_fraction`` and
            ``data.val_seed``; the test set is then not touched (hyperparameter tuning).
        val_seed: seed of that split.

    Returns:
        A :class:`DataBundle` (``bundle.split`` describes the held-out split, or is None).

    Raises:
        DatasetNotFoundError: data files are missing (the message says which, where, and how to
            get them).
        ValueError: unknown dataset, or files in the wrong format; an image folder with an empty
            class folder, or with other classes in ``val/`` than in ``train/``.
    """
    if dataset != IMAGEFOLDER and (image_size is not None or mean is not None or std is not None):
        raise ValueError(f"build_datasets: image_size, mean and std apply to dataset 'imagefolder', not {dataset!r}")
    if dataset not in DATASET_INFO and dataset != IMAGEFOLDER:
        raise ValueError(f"build_datasets: unknown dataset {dataset!r}; known: {', '.join(sorted(DATASET_INFO))}, "
                         f"{IMAGEFOLDER}")
    if root is None:
        default = DEFAULT_ROOTS[dataset]
        if dataset == "fashion_mnist" and download:
            default = "data"
        root = default
    path = Path(root) if root is not None else None
    info = imagefolder_info(image_size, mean, std) if dataset == IMAGEFOLDER else DATASET_INFO[dataset]
    weak = build_transform(dataset, train=True, augment=augment, info=info)
    test_tf = build_transform(dataset, train=False, info=info)
    train_tf = None if mlkd_views else weak

    if dataset == "cifar100":
        train = CIFAR100(path, train=True, transform=train_tf, download=download)
        test = CIFAR100(path, train=False, transform=test_tf)
        classes = train.classes
        if len(classes) != info.num_classes:
            info = replace(info, num_classes=len(classes))
    elif dataset == "imagenet":
        if download:
            raise DatasetNotFoundError(
                "build_datasets: ImageNet cannot be downloaded automatically; get ILSVRC2012 from "
                f"https://image-net.org and arrange it as {path}/train/<class>/... and {path}/val/<class>/..."
            )
        train = imagenet_folder(path, "train", train_tf)
        test = imagenet_folder(path, "val", test_tf)
        classes = list(train.classes)  # type: ignore[attr-defined]
    elif dataset == IMAGEFOLDER:
        if download:
            raise DatasetNotFoundError("build_datasets: dataset 'imagefolder' is your own folder of images; there is "
                                       "nothing to download (drop --download / data.download)")
        train = image_folder(path, "train", train_tf)
        test = image_folder(path, "val", test_tf)
        _check_same_classes(path, train, test)  # type: ignore[arg-type]  # image_folder refused None
        classes = list(train.classes)  # type: ignore[attr-defined]
        info = replace(info, num_classes=len(classes))
    elif dataset == "fashion_mnist":
        train = FashionMNIST(path, train=True, transform=train_tf, download=download)
        test = FashionMNIST(path, train=False, transform=test_tf)
        classes = train.classes
    else:
        train = Digits(True, train_tf, split_seed=split_seed)
        test = Digits(False, test_tf, split_seed=split_seed)
        classes = train.classes

    split = None
    if val_fraction is not None:
        train_idx, val_idx = holdout_indices(_targets(train), val_fraction, val_seed)
        held_out = copy.copy(train)  # the same images with the evaluation transform
        held_out.transform = test_tf  # type: ignore[attr-defined]
        train, test = Subset(train, train_idx.tolist()), Subset(held_out, val_idx.tolist())
        split = {"kind": "validation", "val_fraction": float(val_fraction), "val_seed": int(val_seed),
                 "stratified": True, "train_size": len(train_idx), "val_size": len(val_idx)}
    if mlkd_views:
        strong = build_transform(dataset, train=True, strong=True, reference_cutout_quirk=reference_cutout_quirk,
                                 info=info)
        train = TwoViewDataset(train, weak, strong)
    return DataBundle(train=train, test=test, info=info, classes=classes, root=path, split=split)


def _targets(dataset: Dataset) -> np.ndarray:
    targets = getattr(dataset, "targets", None)
    if targets is None:
        targets = [int(dataset[i][-1]) for i in range(len(dataset))]  # type: ignore[arg-type]
    return np.asarray(targets, dtype=np.int64)


def holdout_indices(targets: Sequence[int] | np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split sample positions into a training part and a held-out validation part.

    Stratified by label and seeded (``sklearn.model_selection.train_test_split`` with
    ``stratify=targets``, ``random_state=seed``): every class keeps its share in both parts,
    and the split is the same on every machine. Both parts are returned sorted.

    Raises:
        ValueError: ``fraction`` outside (0, 1), or too few samples of a class to split.

    Example:
        >>> train, val = holdout_indices([0, 1] * 10, 0.2, seed=0)
        >>> len(train), len(val), np.bincount(np.asarray([0, 1] * 10)[val]).tolist()
        (16, 4, [2, 2])
    """
    from sklearn.model_selection import train_test_split

    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
        raise ValueError(f"data.val_fraction must be a number in (0, 1); got {fraction!r}")
    targets = np.asarray(targets)
    positions = np.arange(len(targets))
    try:
        train_idx, val_idx = train_test_split(positions, test_size=fraction, random_state=int(seed), stratify=targets)
    except ValueError as exc:
        raise ValueError(f"data.val_fraction={fraction}: cannot hold out a stratified validation split of "
                         f"{len(targets)} samples ({exc})") from None
    return np.sort(train_idx), np.sort(val_idx)


# --------------------------------------------------------------------------------------------
# loaders


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` that seeds Python's ``random`` and NumPy from the worker's torch seed.

    The torch seed of each worker is already derived from the loader's generator; this extends
    it to the other generators any user transform might use.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    sampler: torch.utils.data.Sampler | None = None,
) -> DataLoader:
    """A ``DataLoader`` whose order and worker seeds follow ``seed``.

    Args:
        dataset: the dataset.
        batch_size: samples per batch.
        shuffle: reshuffle every epoch (ignored when ``sampler`` is given).
        seed: seed of the loader's generator (shuffling and worker seeds).
        num_workers: worker processes (0: load in the main process; seed torch globally then).
        drop_last: drop a last incomplete batch (the reference keeps it).
        pin_memory: pin batches for faster host-to-GPU copies.
        sampler: e.g. a ``DistributedSampler`` for DDP.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=generator,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )

