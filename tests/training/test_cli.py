"""The ``lskd-train`` command line: listing, resolution of options, errors, the module entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import _train_helpers as H  # noqa: E402

from logit_standardization.training.cli import main  # noqa: E402
from logit_standardization.training.recipes import list_recipes, load_recipe  # noqa: E402


def test_list_prints_every_recipe_with_its_paper_number(capsys):
    assert main(["--list", "cifar100/kd_ls/"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("cifar100/")]
    assert len(lines) == 14
    assert any(line.startswith("cifar100/kd_ls/resnet32x4-resnet8x4") and "76.62" in line for line in lines)
    assert main(["--list"]) == 0
    assert f"{len(list_recipes())} recipes" in capsys.readouterr().out


def test_show_resolves_command_line_options(capsys, tmp_path):
    teacher = tmp_path / "t" / "best.pt"
    argv = ["cifar100/dkd_ls/resnet32x4-resnet8x4", "--show", "--epochs", "3", "--batch-size", "128", "--seed", "9",
            "--amp", "bf16", "--workers", "0", "--data-root", "some/dir", "--channels-last", "--teacher", str(teacher),
            "--set", "method.beta=2", "optimizer.lr=1e-2"]
    assert main(argv) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    expected = load_recipe("cifar100/dkd_ls/resnet32x4-resnet8x4", [
        "schedule.epochs=3", "data.batch_size=128", "train.seed=9", "train.amp=bf16", "data.num_workers=0",
        "data.root=some/dir", "train.channels_last=true", f"teacher.checkpoint={teacher.resolve()}",
        "method.beta=2", "optimizer.lr=0.01"])
    assert cfg == expected
    assert cfg["teacher"]["checkpoint"] == str(teacher.resolve()) and cfg["method"]["beta"] == 2.0


def test_unknown_recipe_and_key_exit_2_with_suggestions(capsys):
    assert main(["cifar100/kd_ls/resnet32x4-resnet8x44"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lskd-train: error: unknown recipe") and "cifar100/kd_ls/resnet32x4-resnet8x4" in err
    assert main(["demo/kd_ls", "--show", "--set", "method.kd_wieght=3"]) == 2
    assert "did you mean 'kd_weight'" in capsys.readouterr().err


def test_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2 and "RECIPE is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo/kd_ls", "--runs", "2", "--seeds", "1", "2"])  # mutually exclusive
    with pytest.raises(SystemExit):
        main(["demo/kd_ls", "--device", "tpu"])


def test_module_entry_point():
    result = H.lskd_train("--list", "demo/")
    assert result.returncode == 0 and "demo/kd_ls" in result.stdout
    result = H.lskd_train("fashion_mnist/kd_ls", "--data-root", "/nonexistent/fmnist", "--quiet", "--teacher",
                          "/nonexistent/t.pt")
    assert result.returncode == 2
    assert "Fashion-MNIST not found" in result.stderr and "train-images-idx3-ubyte.gz" in result.stderr
