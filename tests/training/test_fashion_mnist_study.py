"""``benchmarks/fashion_mnist.py``: the table and the statements on known numbers, and a tiny run end to end."""

from __future__ import annotations

import gzip
import importlib.util
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("fashion_mnist_study", REPO / "benchmarks" / "fashion_mnist.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def fake_results() -> dict:
    # three seeds; KD+LS above KD in every seed, DKD+LS above and below
    return {
        "teacher": {0: {"best": 92.0, "last": 91.5}},
        "student": {s: {"best": 88.0 + s * 0.1, "last": 87.5 + s * 0.1} for s in range(3)},
        "kd": {0: {"best": 88.5, "last": 88.0}, 1: {"best": 88.7, "last": 88.1}, 2: {"best": 88.6, "last": 88.6}},
        "kd_ls": {0: {"best": 89.5, "last": 89.0}, 1: {"best": 89.4, "last": 89.4}, 2: {"best": 89.9, "last": 88.0}},
        "dkd": {0: {"best": 89.0, "last": 88.0}, 1: {"best": 89.0, "last": 88.0}, 2: {"best": 89.0, "last": 88.0}},
        "dkd_ls": {0: {"best": 90.0, "last": 88.5}, 1: {"best": 88.0, "last": 87.5}, 2: {"best": 89.0, "last": 88.0}},
        "dkd_ls_matched": {s: {"best": 88.5, "last": 87.0} for s in range(3)},
    }


def test_table_rows_and_paired_differences(study):
    lines = study.build_table(fake_results()).splitlines()
    assert lines[0].startswith("| network / method | seeds | best top-1 (%) | last top-1 (%) |")
    rows = {line.split(" | ")[0][2:]: line for line in lines[2:]}
    assert list(rows) == ["teacher", "student alone", "KD", "KD+LS", "DKD", "DKD+LS", "DKD+LS, DKD's T and weights"]
    assert rows["teacher"] == "| teacher | 1 | 92.00 | 91.50 |  |  |"
    assert rows["student alone"] == "| student alone | 3 | 88.10 ± 0.10 | 87.60 ± 0.10 |  |  |"
    # KD+LS: best 89.60 ± 0.26; paired best differences 1.0, 0.7, 1.3 -> +1.00 ± 0.30; last 1.0, 1.3, -0.6
    assert rows["KD+LS"] == "| KD+LS | 3 | 89.60 ± 0.26 | 88.80 ± 0.72 | +1.00 ± 0.30 | +0.57 ± 1.02 |"
    assert rows["DKD+LS"] == "| DKD+LS | 3 | 89.00 ± 1.00 | 88.00 ± 0.50 | +0.00 ± 1.00 | +0.00 ± 0.50 |"
    # the ablation is compared with the base method, not with DKD+LS
    assert rows["DKD+LS, DKD's T and weights"].endswith("| 88.50 ± 0.00 | 87.00 ± 0.00 | -0.50 ± 0.00 | -1.00 ± 0.00 |")


def test_findings_follow_the_numbers(study):
    lines = study.findings(fake_results())
    kd = next(line for line in lines if line.startswith("KD+LS vs KD:"))
    assert "best-epoch top-1 +1.00 (higher in 3 of 3 seeds; consistent)" in kd
    assert "last-epoch +0.57 (higher in 2 of 3 seeds, lower in 1; within noise)" in kd
    dkd = next(line for line in lines if line.startswith("DKD+LS vs DKD:"))
    assert "higher in 1 of 3 seeds, lower in 1, equal in 1; within noise" in dkd
    assert ("Logit standardization with the paper's LS settings raised the mean best-epoch top-1 for 1 of 2 "
            "methods and the mean last-epoch top-1 for 1 of 2.") in lines
    matched = next(line for line in lines if line.startswith("DKD+LS, DKD's T and weights vs DKD:"))
    assert "best-epoch top-1 -0.50 (higher in 0 of 3 seeds, lower in 3; consistent)" in matched
    assert ("Logit standardization switched on with nothing else changed raised the mean best-epoch top-1 for 0 of "
            "1 method and the mean last-epoch top-1 for 0 of 1.") in lines
    assert ("Against the student trained alone (best epoch): KD +0.50, KD+LS +1.50, DKD +0.90, DKD+LS +0.90, "
            "DKD+LS, DKD's T and weights +0.40.") in lines
    assert lines[-1] == "The best student (KD+LS, 89.60) stays 2.40 points below the teacher (92.00)."
    # the opposite outcome is reported just as plainly
    worse = fake_results()
    worse["kd_ls"] = {s: {"best": v["best"] - 2.0, "last": v["last"] - 2.0} for s, v in worse["kd"].items()}
    kd = next(line for line in study.findings(worse) if line.startswith("KD+LS vs KD:"))
    assert "best-epoch top-1 -2.00 (higher in 0 of 3 seeds, lower in 3; consistent)" in kd


def test_page_has_command_table_settings_and_machine(study):
    settings = {"seeds": [0, 1, 2], "methods": study.METHODS, "teacher_epochs": 4, "student_epochs": 4,
                "train_subset": 20000, "jobs": 2, "teacher_threads": 2, "teacher_seed": 0, "teacher_subset": None,
                "teacher_top1": 92.0, "teacher_parameters": 304_000, "student_parameters": 24_000,
                "student_overrides": ["schedule.epochs=4"], "teacher_overrides": ["schedule.epochs=4"]}
    timing = {"total_s": 3000.0, "teacher_s": 600.0, "students_s": 2400.0, "reused": 0, "cpu_teacher_s": 1100.0,
              "cpu_students_s": 4700.0, "idle_estimate_s": 2900.0,
              "load_average": {"start": (1.0, 1.2, 1.3), "end": (2.0, 2.1, 2.2)}}
    machine = {"cpu": "Some CPU", "cores": 2, "memory_gib": 8.0, "python": "3.11", "torch": "2.x", "platform": "Linux"}
    page = study.render_page(results=fake_results(), command="python benchmarks/fashion_mnist.py", settings=settings,
                             machine=machine, timing=timing)
    assert page.startswith("# Fashion-MNIST study")
    assert "```bash\npython benchmarks/fashion_mnist.py\n```" in page
    assert study.build_table(fake_results()) in page
    for text in ("- KD+LS vs KD:", "4 epochs on all 60000 training images", "20000-image subset",
                 "Some CPU, 2 cores", "Wall time: 50.0 min in total (teacher 10.0 min, students 40.0 min)",
                 "start: 1.0 / 1.2 / 1.3", "≈ 48 min of wall time"):
        assert text in page, text


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_tiny_study_end_to_end(study, tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "fm"
    data.mkdir()
    for prefix, n in (("train", 128), ("t10k", 64)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 120, (n, 28, 28)) + labels[:, None, None] * 12  # brightness tells the class
        _write_idx(data / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(data / f"{prefix}-labels-idx1-ubyte.gz", labels)
    out, doc, figs = tmp_path / "runs", tmp_path / "page.md", tmp_path / "figures"
    args = ["--data-root", str(data), "--output", str(out), "--doc", str(doc), "--figures", str(figs),
            "--seeds", "0", "1", "--methods", "kd_ls", "--teacher-epochs", "1", "--epochs", "1",
            "--train-subset", "96", "--jobs", "1"]
    assert study.main(args) == 0
    printed = capsys.readouterr().out
    assert "| KD+LS | 2 |" in printed and "| student alone | 2 |" in printed and "| teacher | 1 |" in printed
    page = doc.read_text()
    assert "--methods kd_ls" in page and "| KD+LS | 2 |" in page
    assert "```{figure} figures/accuracy.png" in page and (figs / "accuracy.png").stat().st_size > 10_000
    res = json.loads((out / "results.json").read_text())
    assert set(res["results"]) == {"teacher", "student", "kd_ls"} and set(res["results"]["kd_ls"]) == {"0", "1"}
    for seed in (0, 1):
        summary = json.loads((out / "kd_ls" / f"seed{seed}" / "summary.json").read_text())
        assert summary["seed"] == seed and summary["epochs"] == 1
        assert summary["config"]["data"]["train_subset"] == 96
        assert summary["config"]["teacher"]["checkpoint"] == str(out / "teacher" / "best.pt")
    timing = json.loads((out / "results.json").read_text())["timing"]
    assert timing["reused"] == 0 and timing["total_s"] > 0
    # a second invocation reuses every finished run and keeps the time of the one that trained them
    assert study.main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("reusing finished run") == 5 and "all runs reused" in printed
    assert json.loads((out / "results.json").read_text())["timing"] == timing


def test_findings_name_runs_that_did_not_learn(study):
    r = fake_results()
    r["kd_ls"][1] = {"best": 10.2, "last": 10.0}
    lines = study.findings(r)
    assert lines[0] == ("KD+LS stayed at or below 20 % top-1 (10 classes: chance is 10 %) for seed 1: the training "
                        "diverged or did not learn; see that run's metrics.jsonl.")
    assert not any("stayed at or below" in line for line in study.findings(fake_results()))
