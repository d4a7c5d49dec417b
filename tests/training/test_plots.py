"""``lskd-plot``: figures of a real (tiny) run, the numbers behind them, and the error paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from logit_standardization.training import plots
from logit_standardization.training.checkpoint import save_atomic, student_payload
from logit_standardization.training.engine import train
from logit_standardization.training.models import create_model
from logit_standardization.training.recipes import load_recipe

FIGURES = ("curves.png", "logit_stats.png", "class_logits.png", "correlation_difference.png")


def _image(path: Path) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(str(path))


def assert_drawn(path: Path, min_width: int = 600, min_height: int = 350) -> np.ndarray:
    """A PNG of a reasonable size with real content: many non-white pixels, several colours."""
    assert path.is_file() and path.stat().st_size > 10_000, path
    img = _image(path)
    h, w = img.shape[:2]
    assert w >= min_width and h >= min_height, (path, img.shape)
    rgb = img[..., :3]
    non_white = (rgb < 0.95).any(axis=-1).mean()
    assert 0.03 < non_white < 0.97, (path, non_white)  # neither blank nor a solid block
    assert len(np.unique((rgb * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50, path
    return img


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A teacher checkpoint (untrained), KD+LS and CTKD+LS runs on digits, and a student trained alone."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("plots")
    teacher = create_model("mlp_digits", dataset="digits")
    teacher_path = save_atomic(student_payload(teacher, arch="mlp_digits", dataset="digits", num_classes=10),
                               root / "teacher.pt")
    common = ["schedule.epochs=2", f"teacher.checkpoint={json.dumps(str(teacher_path))}"]
    kd = root / "kd_ls"
    train(load_recipe("demo/kd_ls", common), kd, device="cpu", quiet=True, log=lambda m: None)
    recipe = root / "ctkd_ls.yaml"
    recipe.write_text("extends: _base/demo\nteacher: {arch: mlp_digits}\nstudent: {arch: mlp_digits_small}\n"
                      "method: {name: ctkd, standardize: true, loops: 1}\n", encoding="utf-8")
    ctkd = root / "ctkd_ls"
    train(load_recipe(str(recipe), [*common, "schedule.epochs=3"]), ctkd, device="cpu", quiet=True,
          log=lambda m: None)
    alone = root / "student"
    train(load_recipe("demo/student", ["schedule.epochs=1"]), alone, device="cpu", quiet=True, log=lambda m: None)
    return {"kd": kd, "ctkd": ctkd, "alone": alone, "teacher": teacher_path}


def test_lskd_plot_writes_all_figures(runs, capsys):
    assert plots.main([str(runs["kd"])]) == 0
    out = capsys.readouterr().out
    for name in FIGURES:
        assert_drawn(runs["kd"] / "plots" / name)
        assert f"wrote {runs['kd'] / 'plots' / name}" in out


def test_ctkd_curves_have_a_temperature_panel(runs, tmp_path):
    records = plots.read_metrics(runs["ctkd"] / "metrics.jsonl")
    assert all("temperature" in r and "ctkd_lambda" in r for r in records)
    with_t = assert_drawn(plots.plot_training_curves(records, tmp_path / "curves.png"))
    without_t = assert_drawn(plots.plot_training_curves(plots.read_metrics(runs["kd"] / "metrics.jsonl"),
                                                        tmp_path / "kd.png"))
    assert with_t.shape[1] > 1.2 * without_t.shape[1]  # a third panel


def test_run_without_teacher_gets_its_own_statistics_only(runs, tmp_path):
    notes: list[str] = []
    written = plots.plot_run(runs["alone"], output=tmp_path, log=notes.append)
    assert sorted(p.name for p in written) == ["class_logits.png", "curves.png", "logit_stats.png"]
    assert any("has no teacher" in n for n in notes)
    # with a teacher given explicitly (lskd-plot --teacher) it is compared with that one
    logits = plots.run_logits(runs["alone"], teacher=runs["teacher"], max_samples=20)
    assert logits.teacher is not None and logits.teacher.shape == (20, 10)
    assert logits.teacher_arch == "mlp_digits"


def test_run_logits_match_the_checkpoints(runs):
    logits = plots.run_logits(runs["kd"], max_samples=50)
    assert logits.student.shape == logits.teacher.shape == (50, 10)
    assert logits.labels.shape == (50,) and logits.dataset == "digits"
    assert (logits.student_arch, logits.teacher_arch) == ("mlp_digits_small", "mlp_digits")
    net = create_model("mlp_digits_small", dataset="digits")
    net.load_state_dict(torch.load(runs["kd"] / "student.pt", weights_only=True)["state_dict"])
    from logit_standardization.training.data import build_datasets

    test = build_datasets("digits").test
    idx = plots._subsample(len(test), 50)
    x = torch.stack([test[int(i)][0] for i in idx])
    with torch.no_grad():
        np.testing.assert_allclose(logits.student, net.eval()(x).double().numpy(), rtol=1e-5, atol=1e-5)


def test_missing_data_still_draws_the_curves(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cfg = load_recipe("fashion_mnist/student", [f"data.root={json.dumps(str(tmp_path / 'nowhere'))}"])
    (run / "summary.json").write_text(json.dumps({"config": cfg}), encoding="utf-8")
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": e, "train_loss": 2.0 / e, "train_loss_ce": 2.0 / e, "test_loss": 1.5 / e,
                            "train_top1": 50 + 10 * e, "test_top1": 55 + 9 * e}) + "\n" for e in (1, 2, 3)),
        encoding="utf-8")
    notes: list[str] = []
    written = plots.plot_run(run, log=notes.append)
    assert [p.name for p in written] == ["curves.png"]
    assert_drawn(written[0])
    assert any("no logit figures" in n and "nowhere" in n for n in notes)


def test_cli_errors(tmp_path, capsys):
    assert plots.main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert plots.main([str(tmp_path / "empty")]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err
    assert plots.main([str(tmp_path / "empty"), "--max-samples", "-1"]) == 2


# ------------------------------------------------------------------------------ the numbers
def test_logit_statistics_raw_and_standardized():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 7)) * rng.uniform(0.5, 9.0, size=(30, 1)) + rng.normal(size=(30, 1)) * 4
    m, s = plots.logit_statistics(x)
    np.testing.assert_allclose(m, x.mean(axis=1))
    np.testing.assert_allclose(s, x.std(axis=1, ddof=1))
    zm, zs = plots.logit_statistics(x, standardized=True)
    np.testing.assert_allclose(zm, 0.0, atol=1e-12)
    np.testing.assert_allclose(zs, 1.0, atol=1e-6)
    # the same statistics for a student at another offset and scale
    zm2, zs2 = plots.logit_statistics(0.3 * x - 2.0, standardized=True)
    np.testing.assert_allclose(zs2, zs, atol=1e-6)


def test_class_mean_logits_and_correlation():
    x = np.array([[3.0, 1.0, 0.0], [1.0, 3.0, 0.0], [5.0, 1.0, 0.0], [0.0, 0.0, 9.0]])
    y = np.array([0, 1, 0, 2])
    m = plots.class_mean_logits(x, y, standardized=False)
    np.testing.assert_allclose(m, [[4.0, 1.0, 0.0], [1.0, 3.0, 0.0], [0.0, 0.0, 9.0]])
    assert np.isnan(plots.class_mean_logits(x[:3], y[:3])[2]).all()  # no sample of class 2
    rng = np.random.default_rng(2)
    z = rng.normal(size=(200, 6))
    np.testing.assert_allclose(plots.class_correlation(z, standardized=False), np.corrcoef(z.T), atol=1e-12)
    r = plots.class_correlation(z)
    np.testing.assert_allclose(r, r.T)
    np.testing.assert_allclose(np.diag(r), 1.0)
    # a student equal to the teacher up to per-sample offset and scale: zero difference after standardization
    t = rng.normal(size=(100, 10))
    s = t * rng.uniform(0.2, 3.0, size=(100, 1)) + rng.normal(size=(100, 1))
    np.testing.assert_allclose(plots.class_correlation(s), plots.class_correlation(t), atol=1e-6)  # eps in zscore
    assert np.abs(plots.class_correlation(s, standardized=False) - plots.class_correlation(t, standardized=False)).max() > 0.05


def test_input_errors(tmp_path):
    with pytest.raises(ValueError, match=r"logit_statistics: argument 'logits' must be a \(samples, classes\)"):
        plots.logit_statistics(np.zeros(5))
    with pytest.raises(ValueError, match="contains NaN or Inf"):
        plots.class_correlation([[0.0, np.nan]])
    with pytest.raises(ValueError, match=r"class_mean_logits: argument 'labels' must lie in \[0, 1\]"):
        plots.class_mean_logits([[0.0, 1.0]], [2])
    with pytest.raises(ValueError, match="plot_training_curves: argument 'records' is empty"):
        plots.plot_training_curves([], tmp_path / "x.png")
    bad = tmp_path / "metrics.jsonl"
    bad.write_text('{"epoch": 1, "test_top1": 3}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        plots.read_metrics(bad)


def test_plot_after_training_never_raises(tmp_path):
    notes: list[str] = []
    assert plots.plot_after_training(tmp_path / "missing", log=notes.append) == []
    assert len(notes) == 1 and "figures skipped" in notes[0] and "lskd-plot" in notes[0]
