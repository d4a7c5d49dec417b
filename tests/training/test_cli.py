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


# ------------------------------------------------------------------ the exit-code contract of the three commands
import os  # noqa: E402
import pickle  # noqa: E402
import subprocess  # noqa: E402

from logit_standardization import __version__  # noqa: E402
from logit_standardization.export.cli import main as export_main  # noqa: E402
from logit_standardization.training.plots import main as plot_main  # noqa: E402

MAINS = {"lskd-train": main, "lskd-export": export_main, "lskd-plot": plot_main}


def _one_line_error(err: str, prog: str) -> None:
    assert err.startswith(f"{prog}: error: ") and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("prog", sorted(MAINS))
def test_version_on_every_command(prog, capsys):
    with pytest.raises(SystemExit) as exc:
        MAINS[prog](["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"{prog} {__version__}"


@pytest.mark.parametrize("prog, argv, refused", [
    ("lskd-train", ["demo/teacher", "--show", "--epoch", "3"], "--epoch 3"),
    ("lskd-train", ["demo/teacher", "--show", "--batch", "8"], "--batch 8"),
    ("lskd-export", ["x.pt", "--onnx", "--forc"], "--forc"),
    ("lskd-plot", ["run", "--max", "3"], "--max 3"),
])
def test_abbreviated_options_are_refused(prog, argv, refused, capsys):
    with pytest.raises(SystemExit) as exc:
        MAINS[prog](argv)
    assert exc.value.code == 2 and f"unrecognized arguments: {refused}" in capsys.readouterr().err


def test_list_of_a_prefix_without_recipes_exits_2(capsys):
    assert main(["--list", "nosuchprefix/"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "no shipped recipe starts with 'nosuchprefix/'" in err
    _one_line_error(err, "lskd-train")


def _train_args(out, *extra):
    return ["demo/teacher", "--output", str(out), "--epochs", "1", "--quiet", "--device", "cpu", "--no-plots", *extra]


def test_output_whose_parent_is_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(_train_args(tmp_path / "afile" / "run")) == 2
    err = capsys.readouterr().err
    _one_line_error(err, "lskd-train")
    assert f"'{tmp_path / 'afile'}' is a file, not a directory" in err and "--output" in err
    assert main(_train_args(tmp_path / "afile")) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    assert plot_main([str(run), "-o", str(tmp_path / "afile" / "plots")]) == 2
    err = capsys.readouterr().err
    _one_line_error(err, "lskd-plot")
    assert "is a file, not a directory" in err


def _deny_writes_to(monkeypatch, denied):
    real = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path) == denied and mode & os.W_OK:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_unwritable_output_directory(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    _deny_writes_to(monkeypatch, locked)
    assert main(_train_args(locked / "run")) == 2
    err = capsys.readouterr().err
    _one_line_error(err, "lskd-train")
    assert "is not writable" in err and str(locked) in err and not (locked / "run").exists()
    assert plot_main([str(tmp_path), "-o", str(locked / "plots")]) == 2
    _one_line_error(capsys.readouterr().err, "lskd-plot")


class _Evil:
    def __reduce__(self):
        return (print, ("code ran while loading the dataset",))


def test_malicious_cifar_pickle_is_refused_in_one_line(tmp_path, capsys):
    root = H.write_cifar100(tmp_path / "data", n_train=8, n_test=8)
    with open(root / "cifar-100-python" / "train", "wb") as f:
        pickle.dump({"data": _Evil(), "fine_labels": [0]}, f, protocol=2)
    argv = ["cifar100/teacher/resnet32x4", "--data-root", str(root), "--output", str(tmp_path / "run"),
            "--epochs", "1", "--quiet", "--device", "cpu", "--no-plots"]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    _one_line_error(err, "lskd-train")
    assert "is not a CIFAR-100 python pickle (refusing to load __builtin__.print" in err and "--data-root" in err
    assert "code ran" not in out


def _without(module: str, code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where importing ``module`` fails (as in a core-only install)."""
    script = f"import sys\nsys.modules[{module!r}] = None\n{code}"
    return subprocess.run([sys.executable, "-c", script], env=H.env(), capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("module, argv", [
    ("torch", ["demo/teacher", "--epochs", "1", "--device", "cpu"]),
    ("yaml", ["--list"]),
    ("tqdm", ["demo/teacher", "--epochs", "1", "--device", "cpu"]),
])
def test_lskd_train_without_the_train_extra(tmp_path, module, argv):
    argv = [*argv, "--output", str(tmp_path / "run")] if argv[0] != "--list" else argv
    code = f"from logit_standardization.training.cli import main\nsys.exit(main({argv!r}))"
    if module == "tqdm":  # progress bars are drawn only on a terminal: make stderr one
        code = "sys.stderr.isatty = lambda: True\n" + code
    result = _without(module, code)
    assert result.returncode == 2, result.stderr
    err = result.stderr.splitlines()[-1]
    assert f"the Python package '{module}' is not installed: install logit-standardization[train]" in err
    assert "Traceback" not in result.stderr


def test_lskd_plot_without_the_train_extra(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    result = _without("matplotlib", f"from logit_standardization.training.plots import main\n"
                                    f"sys.exit(main([{str(tmp_path)!r}]))")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("lskd-plot: error: the Python package 'matplotlib' is not installed: install "
                                     "logit-standardization[train] (pip install 'logit-standardization[train]')")


@pytest.mark.parametrize("module", ["onnx", "onnxruntime", "torch"])
def test_lskd_export_without_the_onnx_extra(tmp_path, module):
    from logit_standardization.training.checkpoint import student_payload
    from logit_standardization.training.models import create_model

    import torch

    net = create_model("mlp_digits_small", dataset="digits")
    torch.save(student_payload(net, arch="mlp_digits_small", dataset="digits", num_classes=10), tmp_path / "s.pt")
    result = _without(module, f"from logit_standardization.export.cli import main\n"
                              f"sys.exit(main([{str(tmp_path / 's.pt')!r}, '--onnx']))")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"lskd-export: error: the Python package {module!r} is not installed: install "
                                     "logit-standardization[onnx] (pip install 'logit-standardization[onnx]')")
    assert not (tmp_path / "s.onnx").exists()


def test_progress_bars_only_on_a_terminal(tmp_path, capsys, monkeypatch):
    argv = ["demo/teacher", "--epochs", "1", "--device", "cpu", "--no-plots"]
    assert main([*argv, "--output", str(tmp_path / "plain")]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "epoch 1/1 lr" in out  # not a terminal: plain lines only
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main([*argv, "--output", str(tmp_path / "tty")]) == 0
    out, err = capsys.readouterr()
    assert "epoch 1/1:" in err and "it/s" in err and "epoch 1/1 lr" in out
