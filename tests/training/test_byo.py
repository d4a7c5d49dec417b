"""Your own pair and data: timm architectures and image folders through ``lskd-train`` (CPU, in process)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from logit_standardization.training.cli import main
from logit_standardization.training.checkpoint import save_atomic, save_safetensors, student_payload
from logit_standardization.training.models import create_model

pytest.importorskip("timm")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEACHER, STUDENT = "timm:test_resnet", "timm:test_efficientnet"  # the smallest timm networks (~0.4M, 0.1M)
CLASSES = ["cat", "dog", "fox"]
TINY = ["--epochs", "1", "--batch-size", "8", "--quiet", "--device", "cpu", "--no-plots"]


def write_image_folder(root: Path, classes=CLASSES, n_train: int = 4, n_val: int = 2, side: int = 40) -> Path:
    """``root/train/<class>/*.png`` and ``root/val/<class>/*.png``: small RGB images, a colour per class."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 120, size=(side, side, 3)) + np.array([60 * c, 30, 90 - 30 * c])
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def write_recipe(path: Path, *, method: str = "kd", teacher: str | None = TEACHER, student: str = STUDENT,
                 extra: str = "") -> Path:
    teacher_block = f"teacher:\n  arch: '{teacher}'\n" if teacher else ""
    path.write_text(
        "dataset: imagefolder\n"
        "data:\n  image_size: 32\n  num_workers: 0\n  batch_size: 8\n  test_batch_size: 8\n"
        f"student:\n  arch: '{student}'\n{teacher_block}"
        f"method:\n  name: {method}\n"
        "optimizer:\n  lr: 0.01\n"
        "schedule:\n  epochs: 1\n  milestones: []\n" + extra)
    return path


def timm_weights(path: Path, arch: str = TEACHER, num_classes: int = 3, seed: int = 0) -> Path:
    """A plain state dict of a randomly initialised timm network (``.pt``/``.pth`` or ``.safetensors``)."""
    torch.manual_seed(seed)
    state = create_model(arch, dataset="imagefolder", num_classes=num_classes).state_dict()
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    return write_recipe(tmp_path_factory.mktemp("recipe") / "byo.yaml")


def run(recipe: Path, folder: Path, out: Path, *extra: str) -> int:
    return main([str(recipe), "--data-root", str(folder), "--output", str(out), *TINY, *extra])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("lskd-train: error: ")
    return err


# ------------------------------------------------------------------------------------ runs
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_teacher_distils_a_timm_student_on_an_image_folder(folder, recipe, tmp_path, suffix):
    teacher = timm_weights(tmp_path / f"teacher{suffix}")
    out = tmp_path / "run"
    assert run(recipe, folder, out, "--teacher", str(teacher)) == 0
    payload = torch.load(out / "student.pt", weights_only=True)
    assert payload["arch"] == STUDENT and payload["dataset"] == "imagefolder" and payload["num_classes"] == 3
    assert payload["input_size"] == [3, 32, 32]
    assert payload["normalization"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    net = create_model(STUDENT, dataset="imagefolder", num_classes=3)
    net.load_state_dict(payload["state_dict"])  # the weights fit the architecture the file names
    summary = json.loads((out / "summary.json").read_text())
    assert summary["student"]["num_classes"] == 3


def test_zoo_student_and_recipe_normalization(folder, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", student="ResNet18", teacher=None, method="ce")
    out = tmp_path / "run"
    assert run(recipe, folder, out, "--set", "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]",
               "data.image_size=24") == 0
    payload = torch.load(out / "student.pt", weights_only=True)
    assert payload["arch"] == "ResNet18" and payload["input_size"] == [3, 24, 24]
    assert payload["normalization"] == {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def test_student_checkpoint_gives_the_initial_weights(folder, recipe, tmp_path):
    start = timm_weights(tmp_path / "start.pt", arch=STUDENT, seed=3)
    out = tmp_path / "run"
    assert run(recipe, folder, out, "--teacher", str(timm_weights(tmp_path / "t.pt")),
               "--set", f"student.checkpoint={start}", "optimizer.lr=0", "optimizer.weight_decay=0") == 0
    trained = torch.load(out / "student.pt", weights_only=True)["state_dict"]
    initial = torch.load(start, weights_only=True)
    names = dict(create_model(STUDENT, dataset="imagefolder", num_classes=3).named_parameters())
    assert names and all(torch.equal(trained[k], initial[k]) for k in names)  # lr 0: the parameters stay


def test_mlkd_two_views_on_an_image_folder(folder, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", method="mlkd")
    out = tmp_path / "run"
    assert run(recipe, folder, out, "--teacher", str(timm_weights(tmp_path / "t.pt"))) == 0
    assert (out / "student.pt").is_file()


def test_held_out_validation_split_of_an_image_folder(folder, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", teacher=None, method="ce")
    out = tmp_path / "run"
    assert run(recipe, folder, out, "--set", "data.val_fraction=0.5") == 0  # 6 images train, 6 evaluate
    assert json.loads((out / "summary.json").read_text())["student"]["num_classes"] == 3


def test_show_lists_the_new_keys(recipe, capsys):
    assert main([str(recipe), "--show"]) == 0
    out = capsys.readouterr().out
    assert "image_size: 32" in out and "checkpoint: null" in out


# ---------------------------------------------------------------------------------- errors
def test_unknown_timm_name_suggests_close_ones(folder, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", student="timm:resnet10", teacher=None, method="ce")
    assert run(recipe, folder, tmp_path / "run") == 2
    err = one_error_line(capsys)
    assert "unknown timm architecture 'timm:resnet10'" in err and "did you mean" in err and "timm:resnet10t" in err


def test_timm_missing_says_install_timm(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    recipe = write_recipe(tmp_path / "r.yaml", teacher=None, method="ce")
    assert run(recipe, folder, tmp_path / "run") == 2
    err = one_error_line(capsys)
    assert "install timm" in err and "'timm:test_efficientnet'" in err


@pytest.mark.parametrize("layout", ["plain", "student.pt", "safetensors"])
def test_teacher_with_another_class_count_is_refused(folder, recipe, tmp_path, capsys, layout):
    if layout == "plain":
        teacher = timm_weights(tmp_path / "t.pth", num_classes=5)
    else:
        torch.manual_seed(0)
        net = create_model(TEACHER, dataset="imagefolder", num_classes=5)
        payload = student_payload(net, arch=TEACHER, dataset="imagenet", num_classes=5)
        teacher = tmp_path / ("student.pt" if layout == "student.pt" else "student.safetensors")
        (save_atomic if layout == "student.pt" else save_safetensors)(payload, teacher)
    assert run(recipe, folder, tmp_path / "run", "--teacher", str(teacher)) == 2
    err = one_error_line(capsys)
    assert "teacher checkpoint" in err and "has 5 classes but the data has 3" in err
    assert "the 3 class folders of" in err


def test_student_checkpoint_with_another_class_count_is_refused(folder, recipe, tmp_path, capsys):
    start = timm_weights(tmp_path / "start.pt", arch=STUDENT, num_classes=4)
    assert run(recipe, folder, tmp_path / "run", "--teacher", str(timm_weights(tmp_path / "t.pt")),
               "--set", f"student.checkpoint={start}") == 2
    assert "student checkpoint" in one_error_line(capsys)


@pytest.mark.parametrize("split", ["train", "val"])
def test_missing_split_folder(folder, recipe, tmp_path, capsys, split):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(folder, root)
    shutil.rmtree(root / split)
    assert run(recipe, root, tmp_path / "run", "--teacher", str(timm_weights(tmp_path / "t.pt"))) == 2
    err = one_error_line(capsys)
    assert f"image folder '{root / split}' is missing" in err and "train/ and val/" in err


def test_missing_data_root(recipe, tmp_path, capsys):
    assert main([str(recipe), "--output", str(tmp_path / "run"), *TINY]) == 2
    assert "needs the folder of your images" in one_error_line(capsys)


def test_download_is_refused(folder, recipe, tmp_path, capsys):
    assert run(recipe, folder, tmp_path / "run", "--download") == 2
    assert "nothing to download" in one_error_line(capsys)


def test_empty_class_folder(tmp_path, recipe, capsys):
    root = write_image_folder(tmp_path / "data")
    (root / "train" / "empty").mkdir()
    (root / "val" / "empty").mkdir()
    (root / "val" / "empty" / "notes.txt").write_text("not an image")
    assert run(recipe, root, tmp_path / "run", "--teacher", str(timm_weights(tmp_path / "t.pt"))) == 2
    err = one_error_line(capsys)
    assert "class folder 'empty' holds no images" in err


def test_train_and_val_classes_differ(tmp_path, recipe, capsys):
    root = write_image_folder(tmp_path / "data")
    (root / "val" / "fox").rename(root / "val" / "wolf")
    assert run(recipe, root, tmp_path / "run", "--teacher", str(timm_weights(tmp_path / "t.pt"))) == 2
    err = one_error_line(capsys)
    assert "different class folders" in err and "only in train/: fox" in err and "only in val/: wolf" in err


@pytest.mark.parametrize("override, words", [
    ("dataset=cifar100", "'data.image_size' applies to dataset 'imagefolder' only"),
    ("data.mean=[0.5,0.5]", "'data.mean' must be a list of 3 numbers"),
    ("data.std=[0.2,0,0.2]", "'data.std' must hold 3 positive numbers"),
    ("data.image_size=0", "'data.image_size' must be an integer >= 1"),
])
def test_recipe_keys_are_checked(recipe, capsys, override, words):
    assert main([str(recipe), "--show", "--set", override]) == 2
    assert words in one_error_line(capsys)


@pytest.mark.parametrize("student", [STUDENT, "ResNet18"])
def test_an_image_folder_student_exports_to_onnx(folder, tmp_path, capsys, student):
    from logit_standardization.export.cli import main as export_main

    recipe = write_recipe(tmp_path / "r.yaml", student=student, teacher=None, method="ce")
    out = tmp_path / "run"
    assert run(recipe, folder, out, "--set", "data.image_size=24") == 0
    for name in ("student.pt", "student.safetensors"):
        onnx_path = tmp_path / f"{name}.onnx"
        code = export_main([str(out / name), "--onnx", "-o", str(onnx_path), "--provider", "cpu",
                            "--exporter", "torchscript", "--verify-batches", "1,2"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert onnx_path.exists() and "top-1 agreement" in captured.out + captured.err
