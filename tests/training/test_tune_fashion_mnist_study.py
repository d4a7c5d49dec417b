"""``benchmarks/tune_fashion_mnist.py``: the table and findings on known numbers, and a tiny run end to end."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("optuna")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _train_helpers as H  # noqa: E402


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("tune_fashion_mnist_study",
                                                  REPO / "benchmarks" / "tune_fashion_mnist.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def fake_arms() -> dict:
    best = {"number": 3, "value": 84.0, "params": {"method.temperature": 2.5, "method.kd_weight": 4.0}}
    return {
        "kd": {"counts": {"COMPLETE": 6, "PRUNED": 2}, "best": best, "final": {0: 83.0, 1: 83.5, 2: 82.5}},
        "kd_ls": {"counts": {"COMPLETE": 5, "PRUNED": 2, "FAIL": 1}, "best": {**best, "value": 84.5},
                  "final": {0: 83.6, 1: 83.7, 2: 83.0}},
        "dkd": {"counts": {"COMPLETE": 8}, "best": {**best, "value": 83.0}, "final": {0: 82.0, 1: 81.0, 2: 82.0}},
        "dkd_ls": {"counts": {"COMPLETE": 8}, "best": {**best, "value": 82.0}, "final": {0: 81.0, 1: 81.5, 2: 82.0}},
    }


def test_table_pairs_each_ls_arm_with_its_base(study):
    rows = study.build_table(fake_arms()).splitlines()[2:]
    assert rows[0] == "| KD | 6 / 2 / 0 | 84.00 | 83.00 ± 0.50 (3) |  |"
    # paired 0.6, 0.2, 0.5 -> +0.43 ± 0.21
    assert rows[1] == "| KD+LS | 5 / 2 / 1 | 84.50 | 83.43 ± 0.38 (3) | +0.43 ± 0.21 |"
    # paired -1.0, +0.5, 0.0
    assert rows[3] == "| DKD+LS | 8 / 0 / 0 | 82.00 | 81.50 ± 0.50 (3) | -0.17 ± 0.76 |"


def test_findings_state_the_numbers_either_way(study):
    lines = study.findings(fake_arms())
    assert lines[0] == ("KD+LS vs KD, both tuned: test top-1 +0.43 points (higher in 3 of 3 seeds; "
                        "consistent; per seed: +0.60, +0.20, +0.50).")
    assert lines[1].startswith("DKD+LS vs DKD, both tuned: test top-1 -0.17 points (higher in 1 of 3 seeds, "
                               "lower in 1, equal in 1; within noise")
    assert lines[-1] == "Test top-1 ranking (mean over seeds): KD+LS 83.43, KD 83.00, DKD 81.67, DKD+LS 81.50."
    assert "| KD+LS | 3 | 2.5 | 4 |" in study.tuned_values_table(fake_arms())
    arms = fake_arms()
    arms["kd"]["candidates"] = [{"method.temperature": 2.0}, {"method.temperature": 3.0}]
    arms["kd_ls"]["candidates"] = [{"method.temperature": 2.0}, {"method.temperature": 3.5}]
    assert study.findings(arms)[0].startswith("KD+LS and KD did not evaluate identical candidate settings")
    arms["kd_ls"]["candidates"] = arms["kd"]["candidates"]
    assert study.findings(arms)[0] == "KD+LS and KD evaluated the same 2 candidate settings, trial by trial."


def test_tiny_tuned_comparison_end_to_end(study, tmp_path, capsys):
    data = H.write_fashion_mnist(tmp_path / "fm", n_train=160, n_test=60)
    out, doc, fig = tmp_path / "runs", tmp_path / "page.md", tmp_path / "figures" / "trials.png"
    args = ["--data-root", str(data), "--output", str(out), "--doc", str(doc), "--figure", str(fig),
            "--arms", "kd", "kd_ls", "--trials", "2", "--seeds", "0", "1", "--epochs", "1", "--teacher-epochs", "1",
            "--train-subset", "120", "--jobs", "2"]
    assert study.main(args) == 0
    printed = capsys.readouterr().out
    assert "[kd] 0 trials done, running 2 more" in printed and "[kd_ls] trial 1" in printed
    res = json.loads((out / "results.json").read_text())
    assert set(res["arms"]) == {"kd", "kd_ls"}
    for key in ("kd", "kd_ls"):
        arm = res["arms"][key]
        assert sum(arm["counts"].values()) == 2 and set(arm["final"]) == {"0", "1"}
        assert all(0.0 <= v <= 100.0 for v in arm["final"].values())
        final = json.loads((out / key / "final.json").read_text())
        assert final["seeds"] == [0, 1]
        for seed in (0, 1):  # the final runs train on the whole subset: no validation split
            cfg = json.loads((out / key / "final" / f"seed{seed}" / "summary.json").read_text())["config"]
            assert cfg["data"]["val_fraction"] is None and cfg["data"]["train_subset"] == 120
            assert cfg["method"]["standardize"] is (key == "kd_ls")
            assert cfg["teacher"]["checkpoint"] == str(out / "teacher" / "best.pt")
    # the search spaces of a pair are the same, and so are the sampler's first draws
    assert res["settings"]["spaces"]["kd"] == res["settings"]["spaces"]["kd_ls"]
    import csv

    first = [next(csv.DictReader((out / k / "trials.csv").open())) for k in ("kd", "kd_ls")]
    assert first[0]["method.temperature"] == first[1]["method.temperature"]
    page = doc.read_text()
    assert "| KD+LS | " in page and "--arms kd kd_ls" in page and "KD+LS vs KD, both tuned" in page
    assert "KD+LS and KD evaluated the same 2 candidate settings, trial by trial." in page
    assert fig.stat().st_size > 10_000
    # a rerun continues: nothing left to run
    assert study.main(args) == 0
    printed = capsys.readouterr().out
    assert "[kd] reusing 2 trials and the final runs" in printed and "all trials and final runs reused" in printed
    assert json.loads((out / "results.json").read_text())["timing"] == res["timing"]
    assert json.loads((out / "results.json").read_text())["arms"]["kd"]["final"] == res["arms"]["kd"]["final"]
