"""Shared helpers of the lskd-train tests: tiny standard-format data, subprocess runs, comparisons."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
TIMING_KEYS = {"seconds", "train_seconds", "data_seconds", "eval_seconds", "images_per_s"}


def write_cifar100(root: Path, n_train: int = 48, n_test: int = 24, seed: int = 0) -> Path:
    """Write CIFAR-100 python-pickle files (``cifar-100-python/{train,test,meta}``) of any size.

    Same layout and keys as the official archive: dicts with ``data`` (uint8 N x 3072, the
    three 1024-byte colour planes of each image), ``fine_labels``, ``coarse_labels``,
    ``filenames`` and ``batch_label``; ``meta`` lists the class names.
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, size=n)
        # a little signal: the mean colour depends on the label
        data = rng.integers(0, 200, size=(n, 3072)).astype(np.int64) + (fine[:, None] % 8) * 7
        entry = {
            "batch_label": f"{split} batch",
            "filenames": [f"img_{split}_{i}.png" for i in range(n)],
            "fine_labels": fine.tolist(),
            "coarse_labels": (fine // 5).tolist(),
            "data": data.clip(0, 255).astype(np.uint8),
        }
        with open(base / split, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(base / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class_{i}" for i in range(100)],
                     "coarse_label_names": [f"super_{i}" for i in range(20)]}, f, protocol=2)
    return Path(root)


def env(threads: int = 1) -> dict[str, str]:
    """Environment for a training subprocess: one BLAS thread (the CPU is shared), the repo importable."""
    e = dict(os.environ)
    e.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def lskd_train(*args: str, timeout: float = 240, **kw) -> subprocess.CompletedProcess:
    """Run ``python -m logit_standardization.training ARGS`` and capture its output."""
    return subprocess.run([sys.executable, "-m", "logit_standardization.training", *args], env=env(),
                          capture_output=True, text=True, timeout=timeout, **kw)


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def student_state(run: Path, name: str = "student.pt") -> dict[str, torch.Tensor]:
    return torch.load(Path(run) / name, weights_only=True)["state_dict"]


def random_teacher(path: Path, arch: str, dataset: str, seed: int = 0) -> Path:
    """A teacher file in ``student.pt`` format with freshly initialised weights."""
    from logit_standardization.training.checkpoint import save_atomic, student_payload
    from logit_standardization.training.models import DATASET_INFO, create_model

    torch.manual_seed(seed)
    model = create_model(arch, dataset=dataset)
    save_atomic(student_payload(model, arch=arch, dataset=dataset, num_classes=DATASET_INFO[dataset].num_classes),
                path)
    return path


def write_fashion_mnist(root: Path, n_train: int = 48, n_test: int = 24, seed: int = 0) -> Path:
    """Write the four gzipped IDX files of Fashion-MNIST (any size) into ``root``."""
    import gzip
    import struct

    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 256, size=(n, 28, 28)).astype(np.uint8)
        with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">BBBBIII", 0, 0, 0x08, 3, n, 28, 28) + images.tobytes())
        with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">BBBBI", 0, 0, 0x08, 1, n) + labels.tobytes())
    return root
