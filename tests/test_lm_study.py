"""benchmarks/lm_study.py end to end on a tiny generated corpus (no Debian package, tiny models, a few steps)."""

from __future__ import annotations

import importlib.util
import json
import math
import random
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "lm_study.py"

WORDS = ("the and of to in that he shall unto for his a lord they be is him not them it with all thou thy was "
         "god which my me said but ye their have will thee from as are when this out were upon man by you israel "
         "king son up there hath then people came had house into on her come one we children before your also "
         "day land men against shalt").split()


def _load():
    spec = importlib.util.spec_from_file_location("lm_study_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _corpus(path: Path) -> Path:
    rng = random.Random(1234)
    paragraphs = []
    for _ in range(60):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "."
                     for _ in range(rng.randint(1, 3))]
        paragraphs.append("\n".join(sentences))
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return path


def _args(corpus: Path, output: Path) -> list[str]:
    return ["--corpus", str(corpus), "--output", str(output), "--vocab-size", "300", "--context", "16",
            "--batch-size", "4", "--teacher-steps", "12", "--student-steps", "6", "--teacher-layers", "1",
            "--teacher-width", "32", "--teacher-heads", "2", "--student-layers", "1", "--student-width", "16",
            "--student-heads", "2", "--seeds", "0", "1", "--threads", "1", "--eval-batch", "16"]


def test_lm_study_end_to_end(tmp_path, capsys):
    lm = _load()
    corpus = _corpus(tmp_path / "corpus.txt")
    out_a, out_b, page = tmp_path / "a", tmp_path / "b", tmp_path / "lm_study.md"

    assert lm.main([*_args(corpus, out_a), "--doc", str(page)]) == 0
    res = json.loads((out_a / "results.json").read_text(encoding="utf-8"))
    assert set(res) >= {"command", "results", "settings", "machine", "timing"}
    assert set(res["results"]) == {"teacher", "student", "kd", "kd_ls"}
    assert set(res["results"]["teacher"]) == {"0"}
    for key in ("student", "kd", "kd_ls"):
        assert set(res["results"][key]) == {"0", "1"}
    for runs in res["results"].values():
        for r in runs.values():
            assert math.isfinite(r["perplexity"]) and r["perplexity"] > 1.0
            assert 0.0 <= r["top1"] <= 100.0
    s = res["settings"]
    assert s["vocab"] <= 300 and s["parameters"]["teacher"] > s["parameters"]["student"] > 0
    assert s["corpus"]["train_tokens"] > 0 and s["corpus"]["val_tokens"] > 0
    assert res["timing"]["reused"] == 0
    # logit standardization changes the result of the same seed
    for seed in ("0", "1"):
        assert res["results"]["kd_ls"][seed] != res["results"]["kd"][seed]
    text = page.read_text(encoding="utf-8")
    assert "| network / method |" in text and "| KD+LS | 2 |" in text and "| student alone | 2 |" in text
    assert "## What the numbers show" in text and "fused_linear_kd_loss" in text

    # a second, independent study with the same settings gives the same numbers
    assert lm.main([*_args(corpus, out_b), "--no-doc"]) == 0
    res_b = json.loads((out_b / "results.json").read_text(encoding="utf-8"))
    assert res_b["results"]["student"] == res["results"]["student"]
    assert res_b["results"]["teacher"] == res["results"]["teacher"]

    # started again in the same directory: every run is reused
    capsys.readouterr()
    assert lm.main([*_args(corpus, out_b), "--no-doc"]) == 0
    assert "all runs reused" in capsys.readouterr().out
    assert json.loads((out_b / "results.json").read_text(encoding="utf-8"))["results"] == res_b["results"]


def test_parse_bible_and_split():
    lm = _load()
    out = "\nGenesis 1\n\n  1 In the beginning\nGod created.\n  2 And the earth.\n\n1 Samuel 2\n\n  1 Thus.\n"
    assert lm.parse_bible(out) == ["In the beginning God created.\nAnd the earth.", "Thus."]
    train, val = lm.split_train_val([f"u{i}" for i in range(1, 31)])
    assert val == ["u10", "u20", "u30"] and len(train) == 27


def test_too_small_corpus_is_refused(tmp_path):
    lm = _load()
    small = tmp_path / "small.txt"
    small.write_text("one\n\ntwo\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="at least 10"):
        lm.main(["--corpus", str(small), "--output", str(tmp_path / "o"), "--no-doc", "--vocab-size", "300"])
