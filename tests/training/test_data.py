"""Data layer: standard-format readers, transforms, MLKD views, seeding, error messages."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from collections import Counter
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

from logit_standardization.training import data as D
from logit_standardization.training.models import DATASET_INFO

CIFAR_MEAN = np.array([0.5071, 0.4867, 0.4408])
CIFAR_STD = np.array([0.2675, 0.2565, 0.2761])


# --------------------------------------------------------------------------------------------
# writers of the standard formats (independent of the code under test)


def write_cifar100(root, n_train=12, n_test=5, seed=0, protocol=2, with_meta=True):
    """Write <root>/cifar-100-python/{train,test,meta} exactly as the official archive lays them out."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        d = {
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
            b"batch_label": f"{split} batch".encode(),
            b"fine_labels": [int(v) for v in rng.integers(0, 100, n)],
            b"coarse_labels": [int(v) for v in rng.integers(0, 20, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }
        with open(base / split, "wb") as f:
            pickle.dump(d, f, protocol=protocol)
        out[split] = d
    if with_meta:
        meta = {b"fine_label_names": [f"class{i}".encode() for i in range(100)],
                b"coarse_label_names": [f"super{i}".encode() for i in range(20)]}  # fmt: skip
        with open(base / "meta", "wb") as f:
            pickle.dump(meta, f, protocol=protocol)
    return out


def idx_bytes(array: np.ndarray, type_code: int = 0x08, dtype: str = ">u1") -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def write_fashion_mnist(folder, n_train=9, n_test=4, seed=0, gz=True):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for name, a in arrays.items():
        raw = idx_bytes(a)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return arrays


# --------------------------------------------------------------------------------------------
# CIFAR-100


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar100_pickles_read_back_exactly(tmp_path, protocol):
    written = write_cifar100(tmp_path, protocol=protocol)
    for split in ("train", "test"):
        images, labels, classes = D.read_cifar100(tmp_path, split)
        raw = written[split][b"data"]
        assert images.shape == (len(raw), 32, 32, 3) and images.dtype == np.uint8
        # row layout: 1024 red, 1024 green, 1024 blue values, each row-major 32x32
        np.testing.assert_array_equal(images[:, :, :, 0].reshape(len(raw), -1), raw[:, :1024])
        np.testing.assert_array_equal(images[:, :, :, 2].reshape(len(raw), -1), raw[:, 2048:])
        assert labels.tolist() == written[split][b"fine_labels"]
        assert classes == [f"class{i}" for i in range(100)]
    ds = D.CIFAR100(tmp_path, train=True)
    image, label = ds[3]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (32, 32)
    np.testing.assert_array_equal(np.asarray(image), written["train"][b"data"][3].reshape(3, 32, 32).transpose(1, 2, 0))
    assert label == written["train"][b"fine_labels"][3]
    assert len(ds) == 12 and len(D.CIFAR100(tmp_path, train=False)) == 5


def test_cifar100_without_meta_uses_numbered_classes(tmp_path):
    write_cifar100(tmp_path, with_meta=False)
    _, _, classes = D.read_cifar100(tmp_path, "train")
    assert classes == [str(i) for i in range(100)]


def test_cifar100_pickles_with_numpy1_module_names(tmp_path):
    """The official files (NumPy 1, Python 2) name numpy.core.multiarray._reconstruct."""
    written = write_cifar100(tmp_path, protocol=2)
    path = tmp_path / "cifar-100-python" / "train"
    raw = path.read_bytes()
    assert b"numpy._core.multiarray" in raw or b"numpy.core.multiarray" in raw
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    images, labels, _ = D.read_cifar100(tmp_path, "train")
    np.testing.assert_array_equal(images.transpose(0, 3, 1, 2).reshape(len(images), -1), written["train"][b"data"])


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar100_reader_refuses_code_in_pickles(tmp_path):
    write_cifar100(tmp_path)
    with open(tmp_path / "cifar-100-python" / "train", "wb") as f:
        pickle.dump({b"data": _Evil(), b"fine_labels": []}, f)
    with pytest.raises(ValueError, match=r"not a CIFAR-100 python pickle.*refusing to load \w+\.getcwd"):
        D.read_cifar100(tmp_path, "train")


def test_cifar100_bad_format_errors(tmp_path):
    write_cifar100(tmp_path)
    path = tmp_path / "cifar-100-python" / "test"
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((3, 100), np.uint8), b"fine_labels": [0, 1, 2]}, f)
    with pytest.raises(ValueError, match=r"'data' must be uint8 of shape \(N, 3072\), got uint8 \(3, 100\)"):
        D.read_cifar100(tmp_path, "test")
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((3, 3072), np.uint8), b"fine_labels": [0, 1]}, f)
    with pytest.raises(ValueError, match="3 images but 2 fine_labels"):
        D.read_cifar100(tmp_path, "test")
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 100]}, f)
    with pytest.raises(ValueError, match=r"fine_labels must lie in \[0, 100\), got \[0, 100\]"):
        D.read_cifar100(tmp_path, "test")


def test_cifar100_missing_files_error(tmp_path):
    with pytest.raises(D.DatasetNotFoundError) as e:
        D.build_datasets("cifar100", tmp_path)
    msg = str(e.value)
    for expected in (str(tmp_path / "cifar-100-python" / "train"), str(tmp_path / "cifar-100-python" / "meta"),
                     "missing: train, test, meta", "--download", D.CIFAR100_URL):  # fmt: skip
        assert expected in msg
    assert isinstance(e.value, FileNotFoundError)


def test_cifar100_download_goes_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    def fake_download(root, train, download):
        calls.append((root, train, download))
        if not (tmp_path / "cifar-100-python" / "meta").exists():
            write_cifar100(tmp_path, n_train=6, n_test=3)

    monkeypatch.setattr(tvd, "CIFAR100", fake_download)
    bundle = D.build_datasets("cifar100", tmp_path, download=True)
    assert calls[0] == (str(tmp_path), True, True)
    assert len(bundle.train) == 6 and len(bundle.test) == 3


def test_cifar100_failed_download_is_reported(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(root, train, download):
        raise URLError("network is unreachable")

    monkeypatch.setattr(tvd, "CIFAR100", offline)
    with pytest.raises(D.DatasetNotFoundError, match=r"(?s)CIFAR-100 not found.*download failed.*unreachable"):
        D.build_datasets("cifar100", tmp_path, download=True)


def test_cifar100_bundle_transforms_and_normalization(tmp_path):
    write_cifar100(tmp_path)
    bundle = D.build_datasets("cifar100", tmp_path)
    assert bundle.num_classes == 100 and bundle.info.input_size == (3, 32, 32)
    assert bundle.classes[:2] == ["class0", "class1"]
    x, y = bundle.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    # test transform = ToTensor + Normalize, exactly
    raw = D.read_cifar100(tmp_path, "test")[0][1].astype(np.float64) / 255.0
    expected = ((raw - CIFAR_MEAN) / CIFAR_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(bundle.test[1][0].numpy(), expected, rtol=0, atol=1e-5)


def test_cifar100_train_view_is_a_padded_crop(tmp_path):
    write_cifar100(tmp_path)
    tf = D.build_transform("cifar100", train=True)
    image = Image.new("RGB", (32, 32), (255, 255, 255))
    torch.manual_seed(0)
    shifted = 0
    for _ in range(20):
        x = tf(image) * torch.tensor(CIFAR_STD, dtype=torch.float32).view(3, 1, 1) + torch.tensor(
            CIFAR_MEAN, dtype=torch.float32
        ).view(3, 1, 1)
        assert x.shape == (3, 32, 32)
        values = set(np.round(x.numpy().ravel(), 4).tolist())
        assert values <= {0.0, 1.0}  # white image, zero padding
        shifted += 0.0 in values
    assert shifted > 10  # padding 4: a zero border unless both offsets are exactly 4


def test_mlkd_views(tmp_path):
    write_cifar100(tmp_path)
    bundle = D.build_datasets("cifar100", tmp_path, mlkd_views=True, reference_cutout_quirk=True)
    weak, strong, label = bundle.train[2]
    assert weak.shape == strong.shape == (3, 32, 32)
    assert not torch.equal(weak, strong)
    assert label == D.read_cifar100(tmp_path, "train")[1][2]
    x, y = bundle.test[0]
    assert x.shape == (3, 32, 32)
    strong_tf = bundle.train.strong
    cutout = [t for t in strong_tf.transforms if isinstance(t, D.Cutout)][0]
    assert cutout.reference_quirk and cutout.fill == (125, 123, 114)
    assert any(isinstance(t, D.RandAugment) and t.n == 2 for t in strong_tf.transforms)
    with pytest.raises(ValueError, match="base dataset must have transform=None"):
        D.TwoViewDataset(D.CIFAR100(tmp_path, transform=lambda im: im), strong_tf, strong_tf)


# --------------------------------------------------------------------------------------------
# IDX / Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (3, 5, 7), dtype=np.uint8)
    raw = idx_bytes(a)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    out = D.read_idx(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, a)


def test_idx_other_types_are_big_endian(tmp_path):
    a = np.array([[1, -2, 70000], [3, 4, -5]], dtype=np.int32)
    (tmp_path / "i").write_bytes(idx_bytes(a, 0x0C, ">i4"))
    out = D.read_idx(tmp_path / "i")
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, a)
    f = np.array([0.5, -1.25], dtype=np.float32)
    (tmp_path / "f").write_bytes(idx_bytes(f, 0x0D, ">f4"))
    np.testing.assert_array_equal(D.read_idx(tmp_path / "f"), f)


def test_idx_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + b"\0" * 8)
    with pytest.raises(ValueError, match="is not an IDX file"):
        D.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(idx_bytes(np.zeros((4, 2), np.uint8))[:-1])
    with pytest.raises(ValueError, match=r"promises shape \(4, 2\) \(8 bytes of data\), found 7 bytes"):
        D.read_idx(tmp_path / "short")


def test_fashion_mnist_reads_gz_files(tmp_path):
    arrays = write_fashion_mnist(tmp_path, gz=True)
    ds = D.FashionMNIST(tmp_path, train=True)
    np.testing.assert_array_equal(ds.data, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.targets, arrays["train-labels-idx1-ubyte"])
    image, label = ds[4]
    assert image.mode == "L" and image.size == (28, 28)
    np.testing.assert_array_equal(np.asarray(image), arrays["train-images-idx3-ubyte"][4])
    test = D.FashionMNIST(tmp_path, train=False)
    np.testing.assert_array_equal(test.data, arrays["t10k-images-idx3-ubyte"])
    assert ds.classes[0] == "T-shirt/top" and len(ds.classes) == 10


def test_fashion_mnist_plain_files_in_torchvision_layout(tmp_path):
    arrays = write_fashion_mnist(tmp_path / "FashionMNIST" / "raw", gz=False)
    bundle = D.build_datasets("fashion_mnist", tmp_path, mlkd_views=True)
    assert len(bundle.train) == 9 and len(bundle.test) == 4
    weak, strong, label = bundle.train[0]
    assert weak.shape == strong.shape == (1, 28, 28)
    assert label == arrays["train-labels-idx1-ubyte"][0]
    x, _ = bundle.test[3]
    expected = (arrays["t10k-images-idx3-ubyte"][3] / 255.0 - 0.2860) / 0.3530
    np.testing.assert_allclose(x[0].numpy(), expected, atol=1e-5)


def test_fashion_mnist_default_root(tmp_path, monkeypatch):
    write_fashion_mnist(tmp_path, n_train=3)
    monkeypatch.setitem(D.DEFAULT_ROOTS, "fashion_mnist", str(tmp_path))
    assert len(D.build_datasets("fashion_mnist").train) == 3
    assert D.FashionMNIST().root == tmp_path


def test_fashion_mnist_missing_files_error(tmp_path):
    write_fashion_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    D.FashionMNIST(tmp_path, train=True)  # the training split is complete
    with pytest.raises(D.DatasetNotFoundError) as e:
        D.FashionMNIST(tmp_path, train=False)
    msg = str(e.value)
    for expected in ("t10k-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz", str(tmp_path), "apt-get install dataset-fashion-mnist",
                     "/usr/share/datasets/fashion-mnist", "--download", "zalandoresearch/fashion-mnist"):  # fmt: skip
        assert expected in msg


def test_fashion_mnist_mismatched_labels(tmp_path):
    write_fashion_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(5, np.uint8))))
    with pytest.raises(ValueError, match=r"holds \(5,\) labels for 9 images"):
        D.FashionMNIST(tmp_path)


# --------------------------------------------------------------------------------------------
# digits


def test_digits_split_is_fixed_disjoint_and_exact():
    from sklearn.datasets import load_digits

    ref = load_digits()
    train, test = D.Digits(True), D.Digits(False)
    assert len(train) + len(test) == 1797 and len(test) == 360
    assert not set(train.indices) & set(test.indices)
    np.testing.assert_array_equal(train.values, ref.images[train.indices])
    np.testing.assert_array_equal(test.targets, ref.target[test.indices])
    np.testing.assert_array_equal(train.data, np.rint(ref.images[train.indices] * 255 / 16))
    assert sorted(Counter(test.targets.tolist()).values())[0] >= 35  # stratified: ~36 per class
    np.testing.assert_array_equal(D.Digits(False).indices, test.indices)
    assert not np.array_equal(D.Digits(False, split_seed=1).indices, test.indices)
    image, label = D.Digits(False, D.build_transform("digits", train=False))[0]
    assert image.shape == (1, 8, 8) and label == ref.target[test.indices[0]]


def test_digits_normalization_statistics():
    from sklearn.datasets import load_digits

    pixels = np.rint(load_digits().images * 255 / 16) / 255
    info = DATASET_INFO["digits"]
    assert abs(pixels.mean() - info.mean[0]) < 1e-4 and abs(pixels.std() - info.std[0]) < 1e-4


# --------------------------------------------------------------------------------------------
# ImageNet folders


def test_imagenet_folder(tmp_path):
    for split in ("train", "val"):
        for cls, colour in (("n01", (255, 0, 0)), ("n02", (0, 0, 255))):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", (60, 40), colour).save(tmp_path / split / cls / "a.png")
    bundle = D.build_datasets("imagenet", tmp_path)
    assert bundle.classes == ["n01", "n02"] and len(bundle.train) == 2
    x, y = bundle.test[1]
    assert x.shape == (3, 224, 224) and y == 1
    expected_blue = (1.0 - 0.406) / 0.225
    assert torch.allclose(x[2], torch.full((224, 224), expected_blue), atol=1e-5)
    weak, strong, _ = D.build_datasets("imagenet", tmp_path, mlkd_views=True).train[0]
    assert weak.shape == strong.shape == (3, 224, 224)


def test_imagenet_missing(tmp_path):
    with pytest.raises(D.DatasetNotFoundError, match=r"(?s)expected .*train and .*val.*one sub-folder.*train is missing"):
        D.build_datasets("imagenet", tmp_path)
    (tmp_path / "train" / "n01").mkdir(parents=True)
    with pytest.raises(D.DatasetNotFoundError, match=r"(?s)train: Found no valid file for the classes n01"):
        D.build_datasets("imagenet", tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "n01" / "a.png")
    with pytest.raises(D.DatasetNotFoundError, match=r"val is missing or has no class folders"):
        D.build_datasets("imagenet", tmp_path)
    with pytest.raises(D.DatasetNotFoundError, match="cannot be downloaded automatically"):
        D.build_datasets("imagenet", tmp_path, download=True)


# --------------------------------------------------------------------------------------------
# RandAugment and Cutout


def test_randaugment_op_set_and_ranges():
    expected = {
        "AutoContrast": (0, 1), "Brightness": (0.05, 0.95), "Color": (0.05, 0.95), "Contrast": (0.05, 0.95),
        "Equalize": (0, 1), "Identity": (0, 1), "Posterize": (4, 8), "Rotate": (-30, 30),
        "Sharpness": (0.05, 0.95), "ShearX": (-0.3, 0.3), "ShearY": (-0.3, 0.3), "Solarize": (0, 256),
        "TranslateX": (-0.3, 0.3), "TranslateY": (-0.3, 0.3),
    }  # fmt: skip
    assert {n: (lo, hi) for n, lo, hi in D.RANDAUGMENT_OPS} == expected


def _gradient(mode):
    a = np.add.outer(np.arange(16), np.arange(16)).astype(np.uint8) * 8
    return Image.fromarray(np.stack([a, 255 - a, a // 2], -1) if mode == "RGB" else a, mode)


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("name,low,high", D.RANDAUGMENT_OPS)
def test_each_op_runs(mode, name, low, high):
    img = _gradient(mode)
    for v in (low, (low + high) / 2, high):
        out = D.apply_op(img, name, v)
        assert out.size == img.size and out.mode == mode


def test_op_semantics():
    img = _gradient("RGB")
    a = np.asarray(img).astype(int)
    assert D.apply_op(img, "Identity", 0.3) is img
    np.testing.assert_array_equal(np.asarray(D.apply_op(img, "Solarize", 0)), 255 - a)
    np.testing.assert_array_equal(np.asarray(D.apply_op(img, "Solarize", 256)), a)
    np.testing.assert_array_equal(np.asarray(D.apply_op(img, "Posterize", 4.9)), a & 0xF0)
    assert np.asarray(D.apply_op(img, "Brightness", 0.05)).mean() < 0.1 * a.mean()
    # TranslateX by +0.25 of the width samples from 4 pixels to the right
    shifted = np.asarray(D.apply_op(img, "TranslateX", 0.25)).astype(int)
    np.testing.assert_array_equal(shifted[:, :12], a[:, 4:])
    assert (shifted[:, 12:] == 0).all()
    np.testing.assert_array_equal(np.asarray(D.apply_op(img, "ShearX", 0.0)), a)
    with pytest.raises(ValueError, match="unknown operation 'Invert'"):
        D.apply_op(img, "Invert", 0)


def test_randaugment_draws(monkeypatch):
    seen = []
    real = D.apply_op
    monkeypatch.setattr(D, "apply_op", lambda img, name, v: (seen.append((name, v)), real(img, name, v))[1])
    ra = D.RandAugment(2)
    img = _gradient("RGB")
    torch.manual_seed(0)
    for _ in range(700):
        ra(img)
    assert len(seen) == 1400
    ranges = {n: (lo, hi) for n, lo, hi in D.RANDAUGMENT_OPS}
    assert all(ranges[n][0] <= v < ranges[n][1] or ranges[n][0] == v for n, v in seen)
    counts = Counter(n for n, _ in seen)
    assert set(counts) == set(ranges)
    assert all(60 <= c <= 140 for c in counts.values())  # 100 expected each
    rot = [v for n, v in seen if n == "Rotate"]
    assert min(rot) < -20 and max(rot) > 20
    # reproducible from torch's seed
    seen.clear()
    torch.manual_seed(5)
    first = [ra(img).tobytes() for _ in range(5)]
    torch.manual_seed(5)
    assert [ra(img).tobytes() for _ in range(5)] == first


def test_cutout_corner_quirk_vs_uniform():
    w = 8
    g = torch.Generator().manual_seed(0)
    correct = np.array([D.cutout_box(w, w, 1e-6, generator=g)[:2] for _ in range(4000)])
    quirk = np.array([D.cutout_box(w, w, 1e-6, reference_quirk=True, generator=g)[:2] for _ in range(4000)])
    # correct: centre ~ U[0, w), so the corner is uniform on 0..w-1
    assert set(correct[:, 0].tolist()) == set(range(w))
    assert abs((correct[:, 0] == 0).mean() - 1 / w) < 0.03
    # reference: centre ~ U(1, w] (np.random.uniform(w) has low=w, high=1): row/column 0 never hit
    assert (quirk >= 1).all() and set(quirk[:, 0].tolist()) == set(range(1, w))
    assert quirk.mean() > correct.mean() + 0.4  # (w/2) vs (w-1)/2
    # the box: side clipped at the border, corner at max(0, centre - side/2)
    torch.manual_seed(1)
    for _ in range(100):
        x0, y0, x1, y1 = D.cutout_box(32, 32, 10.0)
        assert 0 <= x0 < 32 and x1 == min(32, x0 + 10.0) and y1 == min(32, y0 + 10.0)


def test_cutout_paints_fill_colour():
    black = Image.new("RGB", (32, 32))
    cut = D.Cutout()
    torch.manual_seed(0)
    painted_sizes = []
    for _ in range(50):
        a = np.asarray(cut(black))
        painted = (a != 0).any(-1)
        assert (a[painted] == (125, 123, 114)).all()
        painted_sizes.append(int(painted.sum()))
    assert max(painted_sizes) <= 17 * 17  # side < 0.5 * 32, inclusive corners
    assert max(painted_sizes) > 50 and min(painted_sizes) < max(painted_sizes)
    gray = D.Cutout(fill=73)(Image.new("L", (28, 28)))
    assert set(np.unique(np.asarray(gray)).tolist()) <= {0, 73}
    assert np.asarray(black).max() == 0  # the input is not modified


def test_transform_argument_errors():
    with pytest.raises(ValueError, match="strong=True needs train=True"):
        D.build_transform("cifar100", train=False, strong=True)
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        D.build_transform("svhn", train=True)
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        D.build_datasets("svhn")
    with pytest.raises(ValueError, match="max_fraction must be in"):
        D.Cutout(max_fraction=2)
    with pytest.raises(ValueError, match="n must be a non-negative int"):
        D.RandAugment(-1)


@pytest.mark.parametrize("dataset", ["cifar100", "imagenet", "fashion_mnist", "digits"])
def test_transform_output_shapes(dataset):
    info = DATASET_INFO[dataset]
    c, h, w = info.input_size
    img = Image.new("RGB" if c == 3 else "L", (h + 20, w + 20) if dataset == "imagenet" else (w, h), 128)
    for kwargs in ({"train": False}, {"train": True}, {"train": True, "strong": True}, {"train": True, "augment": False}):
        assert D.build_transform(dataset, **kwargs)(img).shape == (c, h, w)


# --------------------------------------------------------------------------------------------
# loaders


def _batches(dataset, seed, workers):
    loader = D.make_loader(dataset, batch_size=4, shuffle=True, seed=seed, num_workers=workers)
    return [(torch.cat([w.flatten(), s.flatten()]), y) for w, s, y in loader]


def test_worker_seeded_loader_is_reproducible(tmp_path):
    write_cifar100(tmp_path, n_train=8)
    ds = D.build_datasets("cifar100", tmp_path, mlkd_views=True).train
    a, b, c = _batches(ds, 3, 2), _batches(ds, 3, 2), _batches(ds, 4, 2)
    assert len(a) == 2
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a, c))
    torch.manual_seed(0)
    d = _batches(ds, 3, 0)
    torch.manual_seed(0)
    e = _batches(ds, 3, 0)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(d, e))
    assert [y.tolist() for _, y in d] == [y.tolist() for _, y in a]  # order depends on the seed only


def test_seed_worker_seeds_python_and_numpy():
    import random

    torch.manual_seed(1234)
    D.seed_worker(0)
    first = (random.random(), np.random.rand())
    torch.manual_seed(1234)
    D.seed_worker(0)
    assert (random.random(), np.random.rand()) == first
