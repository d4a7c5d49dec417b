"""lskd-tune: search space, the held-out validation split, and real studies shared by worker processes.

The worker tests start real ``lskd-tune`` processes (digits recipe, one epoch per trial, a small
training subset) on one SQLite file and on a PostgreSQL server the test starts itself.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import optuna  # noqa: E402  -- requirements/dev.txt (the [tune] extra)

from training._train_helpers import env, random_teacher  # noqa: E402

from logit_standardization.training import tune as T  # noqa: E402
from logit_standardization.training.data import build_datasets, holdout_indices  # noqa: E402
from logit_standardization.training.recipes import RecipeError, load_recipe  # noqa: E402

RECIPE = "demo/kd_ls"
FAST = ["--epochs", "1", "--device", "cpu", "--set", "data.train_subset=240", "data.test_subset=120"]


def lskd_tune(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "logit_standardization.training.tune", *args], env=env(),
                          capture_output=True, text=True, timeout=timeout, **kw)


def start_tune(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "logit_standardization.training.tune", *args], env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return random_teacher(tmp_path_factory.mktemp("teacher") / "teacher.pt", "mlp_digits", "digits")


# ------------------------------------------------------------------------------ search space
def test_space_syntax():
    assert T.ParamSpec.parse("method.temperature", "0.5:8:log").describe() == "0.5:8:log"
    s = T.ParamSpec.parse("method.warmup_epochs", "1:20:int")
    assert (s.kind, s.low, s.high, s.log) == ("int", 1, 20, False)
    assert T.ParamSpec.parse("method.beta", "choice:1,2.5,8").choices == [1, 2.5, 8]
    for bad in ("8:0.5", "0:1:log", "a:b", "1", "1:2:cube", "choice:", "1:2:int:int"):
        with pytest.raises(T.SpaceError):
            T.ParamSpec.parse("method.temperature", bad)


def test_default_spaces_cover_the_methods():
    assert set(T.default_space("kd")) == {"method.temperature", "method.kd_weight", "method.ce_weight"}
    assert {"method.alpha", "method.beta", "method.temperature"} <= set(T.default_space("dkd"))
    assert "method.temperatures.0" in T.default_space("mlkd")
    assert {"method.t_start", "method.t_end"} <= set(T.default_space("ctkd"))
    with pytest.raises(T.SpaceError, match="empty"):
        T.parse_space("ce", [])
    assert "method.ce_weight" not in T.parse_space("kd", ["method.ce_weight=off"])


def test_trial_config_sets_values_and_validates():
    base = load_recipe("cifar100/mlkd_ls/resnet32x4-resnet8x4")
    cfg = T.trial_config(base, {"method.temperatures.0": 4.5, "optimizer.lr": 0.01})
    assert cfg["method"]["temperatures"][0] == 4.5 and cfg["optimizer"]["lr"] == 0.01
    assert base["method"]["temperatures"][0] != 4.5  # the base is not changed
    with pytest.raises(RecipeError):
        T.trial_config(base, {"method.nonsense": 1.0})


# ------------------------------------------------------------------------- validation split
def test_holdout_indices_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(5), 20)
    tr, va = holdout_indices(labels, 0.2, seed=3)
    assert len(va) == 20 and not set(tr) & set(va) and len(tr) + len(va) == 100
    assert np.bincount(labels[va]).tolist() == [4] * 5
    assert np.array_equal(va, holdout_indices(labels, 0.2, seed=3)[1])
    assert not np.array_equal(va, holdout_indices(labels, 0.2, seed=4)[1])
    with pytest.raises(ValueError, match="val_fraction"):
        holdout_indices(labels, 1.5)


def test_val_fraction_replaces_the_test_set_by_part_of_the_training_set():
    full = build_datasets("digits")
    held = build_datasets("digits", val_fraction=0.25, val_seed=1)
    train_ids = set(full.train.indices.tolist())
    val_ids = {int(full.train.indices[i]) for i in held.test.indices}
    fit_ids = {int(full.train.indices[i]) for i in held.train.indices}
    assert val_ids <= train_ids and fit_ids <= train_ids and not val_ids & fit_ids
    assert not val_ids & set(full.test.indices.tolist())  # the test set is not used
    assert held.split["val_size"] == len(val_ids) and held.split["train_size"] == len(fit_ids)
    x, _ = held.test[0]
    assert x.shape == full.test[0][0].shape  # evaluation transform on the held-out part
    two = build_datasets("digits", mlkd_views=True, val_fraction=0.25, val_seed=1)  # MLKD: two views to train on
    assert len(two.train[0]) == 3 and len(two.test[0]) == 2 and len(two.test) == len(val_ids)
    assert load_recipe(RECIPE)["data"]["val_fraction"] is None
    with pytest.raises(RecipeError, match="val_fraction"):
        load_recipe(RECIPE, ["data.val_fraction=1.5"])


# ------------------------------------------------------------------------------------- CLI
def _main(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = T.main(list(args))
    except SystemExit as exc:  # argparse: --version, usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_usage_errors_are_one_line_exit_2(tmp_path, teacher, capsys):
    code, out, _ = _main(capsys, "--version")
    assert code == 0 and out.startswith("lskd-tune ")
    cases = [
        [RECIPE, "--teacher", str(teacher), "--space", "method.temperature=8:1"],
        [RECIPE, "--teacher", str(teacher), "--space", "method.nonsense=0:1"],
        [RECIPE, "--teacher", str(teacher), "--space", "method.temperature=0:2"],  # temperature must be > 0
        [RECIPE, "--teacher", str(teacher), "--epoch", "1"],  # no abbreviations
        [RECIPE, "--teacher", str(teacher), "--trials", "-1"],
        [RECIPE],  # no teacher
        ["demo/nonexistent", "--teacher", str(teacher)],
    ]
    for args in cases:
        code, _, err = _main(capsys, *args, "--output", str(tmp_path / "o"))
        assert code == 2, (args, err)
        lines = err.strip().splitlines()
        assert lines[-1].startswith("lskd-tune: error:"), err
        assert len(lines) == 1 or lines[0].startswith("usage:"), err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ two workers
def _study_trials(storage: str, name: str) -> list:
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def test_two_sqlite_workers_share_a_study_and_a_rerun_continues(tmp_path, teacher):
    out = tmp_path / "tune"
    common = [RECIPE, "--teacher", str(teacher), "--output", str(out), "--trials", "2", *FAST]
    workers = [start_tune(*common, "--sampler-seed", str(s)) for s in (1, 2)]
    results = [w.communicate(timeout=300) for w in workers]
    for w, (stdout, stderr) in zip(workers, results):
        assert w.returncode == 0, stderr
        assert stdout.count("trial ") >= 2 and "best" in stdout
    storage = f"sqlite:///{(out / 'study.db').resolve()}"
    trials = _study_trials(storage, RECIPE)
    assert len(trials) == 4
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    study = optuna.load_study(study_name=RECIPE, storage=storage)
    split = study.user_attrs["validation"]
    assert split["val_fraction"] == 0.2 and split["val_seed"] == 0 and split["stratified"]

    r = lskd_tune(*common[:-len(FAST)], "--trials", "1", *FAST)  # a rerun continues the study
    assert r.returncode == 0, r.stderr
    assert len(_study_trials(storage, RECIPE)) == 5

    for name in ("best.yaml", "trials.csv", "summary.md", "figures/optimization_history.png", "figures/slice.png",
                 "figures/param_importances.png"):
        assert (out / name).is_file(), name
    assert len((out / "trials.csv").read_text().strip().splitlines()) == 6
    assert "validation" in (out / "summary.md").read_text()

    # best.yaml is a recipe lskd-train accepts: it loads and trains one epoch
    cfg = load_recipe(out / "best.yaml", ["schedule.epochs=1", "data.train_subset=200", "data.test_subset=100"])
    best = study.best_trial
    assert cfg["method"]["temperature"] == pytest.approx(best.params["method.temperature"])
    assert cfg["teacher"]["checkpoint"] == str(teacher.resolve())
    assert cfg["data"]["val_fraction"] is None
    from logit_standardization.training.engine import train

    summary = train(cfg, tmp_path / "retrain", device="cpu", quiet=True, log=lambda m: None)
    assert summary["epochs"] == 1 and (tmp_path / "retrain" / "student.pt").is_file()


def test_failing_trials_are_recorded_and_the_worker_goes_on(tmp_path, teacher):
    out = tmp_path / "tune"
    r = lskd_tune(RECIPE, "--teacher", str(teacher), "--output", str(out), "--trials", "2", *FAST,
                  "--space", "data.train_subset=choice:0")
    assert r.returncode == 0, r.stderr
    trials = _study_trials(f"sqlite:///{out / 'study.db'}", RECIPE)
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert all("subset" in t.user_attrs["error"] for t in trials)
    assert "fail" in r.stdout and not (out / "best.yaml").exists()
    assert "FAIL" in (out / "trials.csv").read_text()


def test_ctrl_c_records_the_running_trial_as_failed(tmp_path, teacher):
    out = tmp_path / "tune"
    w = start_tune(RECIPE, "--teacher", str(teacher), "--output", str(out), "--trials", "3", "--device", "cpu",
                   "--epochs", "400")
    metrics = out / "trials" / "demo_kd_ls" / "0000" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (metrics.is_file() and metrics.read_text().strip()):
        time.sleep(0.2)
    w.send_signal(signal.SIGINT)
    stdout, stderr = w.communicate(timeout=120)
    assert w.returncode == 130, stderr
    trials = _study_trials(f"sqlite:///{out / 'study.db'}", RECIPE)
    assert len(trials) == 1 and trials[0].state.name == "FAIL"
    assert "SIGINT" in trials[0].user_attrs["error"]
    assert "interrupted" in stderr


# ------------------------------------------------------------------------------ PostgreSQL
def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    pytest.fail("PostgreSQL's initdb was not found: install Debian's postgresql package "
                "(apt-get install -y postgresql; .ci/run does it) to run the shared-storage test")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A PostgreSQL server of its own (temp dir, free localhost port) with database ``lskd``."""
    bin_dir = _pg_bin()
    root = os.geteuid() == 0
    user = "postgres"
    if root:
        try:
            pwd.getpwnam(user)
        except KeyError:
            user = "lskdpg"
            try:
                pwd.getpwnam(user)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", user], check=True)
    base = Path(tempfile.mkdtemp(prefix="lskd-pg-"))
    os.chmod(base, 0o755)
    if root:
        entry = pwd.getpwnam(user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    prefix = ["runuser", "-u", user, "--"] if root else []
    data, port = base / "data", _free_port()

    def run(*cmd: str) -> None:
        r = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120, cwd=base)
        assert r.returncode == 0, f"{' '.join(cmd)}: {r.stdout}{r.stderr}"

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "lskd", "--auth=trust", "-E", "UTF8")
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "60",
        "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start")
    try:
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "lskd", "lskd")
        yield f"postgresql+psycopg2://lskd@127.0.0.1:{port}/lskd"
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120, cwd=base)
        shutil.rmtree(base, ignore_errors=True)


def test_two_workers_on_postgresql(tmp_path, teacher, postgres_url):
    import psycopg2  # noqa: F401  -- requirements/dev.txt (the [tune] extra)
    out = tmp_path / "tune"
    common = [RECIPE, "--teacher", str(teacher), "--output", str(out), "--trials", "2", "--storage", postgres_url,
              "--study", "pg-study", *FAST]
    workers = [start_tune(*common, "--sampler-seed", str(s)) for s in (1, 2)]
    for w in workers:
        stdout, stderr = w.communicate(timeout=300)
        assert w.returncode == 0, stderr
    trials = _study_trials(postgres_url, "pg-study")
    assert len(trials) == 4 and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert (out / "best.yaml").is_file() and not (out / "study.db").exists()


def test_final_runs_train_the_best_settings_on_the_full_training_set(tmp_path, teacher):
    out = tmp_path / "tune"
    r = lskd_tune(RECIPE, "--teacher", str(teacher), "--output", str(out), "--trials", "1", *FAST,
                  "--seeds", "0", "1", "--final-epochs", "1")
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "final.json").read_text())
    assert report["seeds"] == [0, 1] and len(report["test_top1"]["values"]) == 2
    for seed in (0, 1):
        summary = json.loads((out / "final" / f"seed{seed}" / "summary.json").read_text())
        assert summary["config"]["data"]["val_fraction"] is None and summary["epochs"] == 1
    assert "Final runs" in (out / "summary.md").read_text()
