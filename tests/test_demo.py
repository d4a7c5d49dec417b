"""``make demo`` end to end in its reduced form: four trainings, the table, the figures, the ONNX file."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from logit_standardization import demo

REPO = Path(__file__).resolve().parents[1]


def _non_blank_png(path: Path) -> None:
    import matplotlib.image

    assert path.is_file() and path.stat().st_size > 10_000, path
    img = matplotlib.image.imread(str(path))
    assert img.shape[0] >= 350 and img.shape[1] >= 600, (path, img.shape)
    non_white = (img[..., :3] < 0.95).any(axis=-1).mean()
    assert 0.03 < non_white < 0.97, (path, non_white)


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo-output"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "logit_standardization.demo", "--quick", "--output", str(out)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=out.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_demo_prints_the_table(quick_demo):
    out, stdout = quick_demo
    for step in ("[1/6] teacher", "[2/6] student alone", "[3/6] KD", "[4/6] KD+LS", "[5/6] figures", "[6/6] lskd-export"):
        assert step in stdout
    rows = {}
    for label in ("teacher", "student alone", "KD", "KD+LS"):
        m = re.search(rf"^\| {re.escape(label)} \| (\S+) \| ([\d,]+) \| `(demo/\w+)` \| ([\d.]+) \(epoch (\d)\) \| "
                      rf"([\d.]+) \(epoch 3\) \|$", stdout, re.M)
        assert m, f"no table row for {label!r} in:\n{stdout}"
        rows[label] = m.groups()
    assert rows["teacher"][0] == "mlp_digits" and rows["KD+LS"][0] == "mlp_digits_small"
    assert rows["KD"][2] == "demo/kd" and rows["KD+LS"][2] == "demo/kd_ls"
    assert int(rows["teacher"][1].replace(",", "")) > 10 * int(rows["KD"][1].replace(",", ""))
    assert "standardiz" in stdout and "KD+LS - KD:" in stdout


def test_demo_results_file(quick_demo):
    out, _ = quick_demo
    res = json.loads((out / "results.json").read_text())
    assert res["epochs"] == demo.QUICK_EPOCHS and res["seed"] == 0
    assert [r["label"] for r in res["rows"]] == ["teacher", "student alone", "KD", "KD+LS"]
    for row in res["rows"]:
        assert 10.0 <= row["best"]["top1"] <= 100.0  # 3 epochs: well above chance (10 %)
        assert row["best"]["top1"] >= row["last"]["top1"] and row["last"]["epoch"] == 3
        summary = json.loads((Path(row["run"]) / "summary.json").read_text())
        assert summary["best"] == row["best"] and summary["epochs"] == 3
    kd = json.loads((out / "kd" / "summary.json").read_text())
    kd_ls = json.loads((out / "kd_ls" / "summary.json").read_text())
    assert kd["config"]["method"]["standardize"] is False and kd_ls["config"]["method"]["standardize"] is True
    for key in ("seed", "epochs"):  # same seed, same budget
        assert kd[key] == kd_ls[key]
    assert kd["config"]["teacher"]["checkpoint"] == kd_ls["config"]["teacher"]["checkpoint"]
    assert (out / "results.md").read_text().startswith("| network |")


def test_demo_figures(quick_demo):
    out, _ = quick_demo
    names = {p.name for p in (out / "figures").glob("*.png")}
    assert names == {"logit_stats.png", "class_logits.png", "correlation_difference.png", "accuracy.png",
                     "curves_teacher.png", "curves_student.png", "curves_kd.png", "curves_kd_ls.png"}
    for name in names:
        _non_blank_png(out / "figures" / name)


def test_demo_onnx_runs_in_onnx_runtime(quick_demo):
    import onnxruntime as ort
    import torch

    from logit_standardization.export import load_student, read_metadata
    from logit_standardization.training.data import build_datasets

    out, stdout = quick_demo
    onnx_path = out / "kd_ls_student.onnx"
    assert onnx_path.is_file()
    meta = read_metadata(onnx_path)
    assert meta["arch"] == "mlp_digits_small" and meta["input_size"] == [1, 8, 8]
    test = build_datasets("digits").test
    x = torch.stack([test[i][0] for i in range(64)])
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = load_student(out / "kd_ls" / "student.pt").model(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    res = json.loads((out / "results.json").read_text())["onnx"]
    assert res["top1_agreement"] == 1.0 and res["max_abs_diff"] < 1e-4 and res["test_images"] == 360
    assert "top-1 agreement with PyTorch 100.00%" in stdout


def test_demo_refuses_a_foreign_directory(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not written by this demo"):
        demo.main(["--output", str(tmp_path), "--quick"])
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_demo_rerun_replaces_its_own_output(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / demo.MARKER).write_text("x")
    (out / "kd").mkdir()
    (out / "kd" / "last.pt").write_text("old run")
    (out / "keep.txt").write_text("not the demo's")
    demo._prepare_output(out)
    assert not (out / "kd").exists() and (out / "keep.txt").exists() and (out / demo.MARKER).exists()


def test_demo_options():
    with pytest.raises(SystemExit):
        demo.main(["--epochs", "0"])
    with pytest.raises(SystemExit):
        demo.main(["--epochs", "2", "--quick"])


def test_demo_prints_plain_epoch_lines_from_the_records(quick_demo):
    """Not on a terminal: one short line per epoch from the engine's records, not the engine's own lines."""
    _, stdout = quick_demo
    for label in ("teacher", "student alone", "KD", "KD+LS"):
        for epoch in (1, 2, 3):
            assert re.search(rf"^  {re.escape(label)}: epoch {epoch}/3, test top-1 [\d.]+$", stdout, re.M), label
    assert "lr 0.05 | loss" not in stdout  # the engine's epoch lines stay off


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_demo_progress_bar_is_moved_by_the_records(monkeypatch):
    term = _Terminal()
    monkeypatch.setattr(sys, "stdout", term)
    progress = demo._Progress("KD+LS", verbose=False)
    progress.on_train_begin({"epochs": 4, "start_epoch": 2})  # a resumed run: epoch 1 is done
    assert progress.bar.n == 1 and progress.bar.total == 4
    progress.log("a message")
    progress.on_epoch_begin(2)
    progress.on_epoch_end({"epoch": 2, "test_top1": 61.25})
    assert progress.bar.n == 2 and "test top-1 61.25" in term.getvalue()
    progress.on_epoch_end({"epoch": 3, "test_top1": 70.5})
    progress.on_epoch_end({"epoch": 4, "test_top1": 72.0})
    progress.on_train_end({})
    assert progress.bar is None
    text = term.getvalue()
    assert "4/4 epochs" in text and "test top-1 72.00" in text and "  a message" in text
    assert [r["epoch"] for r in progress.records] == [2, 3, 4]


def test_demo_verbose_progress_prints_messages_only(capsys):
    progress = demo._Progress("KD", verbose=True)
    progress.on_train_begin({"epochs": 2, "start_epoch": 1})
    progress.log("epoch 1/2 lr 0.1 | the engine's line")
    progress.on_epoch_end({"epoch": 1, "test_top1": 50.0})
    progress.on_train_end({})
    assert capsys.readouterr().out == "  epoch 1/2 lr 0.1 | the engine's line\n"
