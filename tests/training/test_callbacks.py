"""The engine's callbacks and the loggers built on them: order and content of the calls, metrics.csv
(also across a resume), TensorBoard event files, an offline Weights & Biases run, missing packages."""

from __future__ import annotations

import csv
import glob
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _train_helpers as H  # noqa: E402

from logit_standardization.training import distributed as D  # noqa: E402
from logit_standardization.training.callbacks import Callback, CSVLogger, make_loggers  # noqa: E402
from logit_standardization.training.cli import main  # noqa: E402
from logit_standardization.training.engine import train  # noqa: E402
from logit_standardization.training.recipes import load_recipe  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Recorder(Callback):
    """Every call, in order."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[tuple[str, object]] = []
        self.fail_at = fail_at

    def on_train_begin(self, info):
        self.calls.append(("on_train_begin", info))

    def on_epoch_begin(self, epoch):
        self.calls.append(("on_epoch_begin", epoch))

    def on_epoch_end(self, record):
        self.calls.append(("on_epoch_end", record))
        if record["epoch"] == self.fail_at:
            raise _Killed(f"stopped after epoch {record['epoch']}")

    def on_train_end(self, summary):
        self.calls.append(("on_train_end", summary))

    def on_exception(self, exc):
        self.calls.append(("on_exception", exc))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


class _Killed(Exception):
    pass


def _cfg(epochs: int, *extra: str, recipe: str = "demo/student") -> dict:
    return load_recipe(recipe, [f"schedule.epochs={epochs}", "data.train_subset=300", *extra])


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    text = path.read_text()
    rows = list(csv.DictReader(text.splitlines()))
    return text.splitlines()[0].split(","), rows


def _csv_matches_jsonl(run: Path) -> None:
    header, rows = _read_csv(run / "metrics.csv")
    records = H.read_metrics(run)
    assert header == list(records[0])
    assert len(rows) == len(records)
    for row, record in zip(rows, records):
        assert {k: float(v) for k, v in row.items()} == {k: float(v) for k, v in record.items()}  # exact (repr)


# -------------------------------------------------------------------------------- the calls
def test_callbacks_are_called_in_order_with_the_records_and_summary(tmp_path):
    rec = Recorder()
    out = tmp_path / "run"
    summary = train(_cfg(3), out, device="cpu", quiet=True, log=lambda m: None, callbacks=[rec])
    assert rec.names() == ["on_train_begin", "on_epoch_begin", "on_epoch_end", "on_epoch_begin", "on_epoch_end",
                           "on_epoch_begin", "on_epoch_end", "on_train_end"]
    info = rec.calls[0][1]
    assert info["output"] == out and info["epochs"] == 3 and info["start_epoch"] == 1
    assert info["resumed"] is False and info["history"] == [] and info["teacher"] is None
    assert info["config"]["name"] == "demo/student" and info["recipe"] == "demo/student"
    assert info["world_size"] == 1 and info["device"] == "cpu" and info["student_arch"] == "mlp_digits_small"
    assert [arg for name, arg in rec.calls if name == "on_epoch_begin"] == [1, 2, 3]
    records = [arg for name, arg in rec.calls if name == "on_epoch_end"]
    assert records == H.read_metrics(out)  # exactly the lines of metrics.jsonl
    assert rec.calls[-1][1] == summary == json.loads((out / "summary.json").read_text())
    _csv_matches_jsonl(out)


def test_a_callback_sees_the_files_of_its_epoch(tmp_path):
    seen = []

    class Look(Callback):
        def on_train_begin(self, info):
            self.out = info["output"]

        def on_epoch_end(self, record):
            lines = (self.out / "metrics.jsonl").read_text().splitlines()
            last = torch.load(self.out / "last.pt", weights_only=True)["epoch"]
            seen.append((record["epoch"], len(lines), last, (self.out / "best.pt").is_file()))

        def on_train_end(self, summary):
            seen.append(((self.out / "summary.json").is_file(), (self.out / "student.pt").is_file()))

    train(_cfg(2), tmp_path / "run", device="cpu", quiet=True, log=lambda m: None, callbacks=[Look()])
    assert seen == [(1, 1, 1, True), (2, 2, 2, True), (True, True)]


def test_only_rank_0_calls_the_callbacks(tmp_path):
    """A rank other than 0 (here a stand-in of rank 1 of 2, without a process group) calls nothing."""
    rec = Recorder()
    state = D.DistState(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"), distributed=False)
    train(_cfg(1), tmp_path / "run", state=state, quiet=True, log=lambda m: None, callbacks=[rec])
    assert rec.calls == [] and not (tmp_path / "run" / "metrics.csv").exists()


def test_an_error_reaches_on_exception_and_the_resume_continues_the_csv(tmp_path):
    """A run stopped after epoch 3 whose last.pt is at epoch 2 (save_every=2): the resumed run
    rewrites metrics.csv without the rows past epoch 2, then appends; one header, no duplicates."""
    out = tmp_path / "run"
    rec = Recorder(fail_at=3)
    with pytest.raises(_Killed):
        train(_cfg(4, "train.save_every=2"), out, device="cpu", quiet=True, log=lambda m: None, callbacks=[rec])
    assert rec.names()[-2:] == ["on_epoch_end", "on_exception"] and isinstance(rec.calls[-1][1], _Killed)
    assert "on_train_end" not in rec.names()
    header, rows = _read_csv(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]  # written before the run stopped
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2

    rec2 = Recorder()
    train(_cfg(4, "train.save_every=2"), out, device="cpu", resume=True, quiet=True, log=lambda m: None,
          callbacks=[rec2])
    info = rec2.calls[0][1]
    assert info["resumed"] is True and info["start_epoch"] == 3 and [r["epoch"] for r in info["history"]] == [1, 2]
    assert [arg for name, arg in rec2.calls if name == "on_epoch_begin"] == [3, 4]
    text = (out / "metrics.csv").read_text()
    assert text.count("epoch,lr,") == 1 and text.endswith("\n")
    _, rows = _read_csv(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    _csv_matches_jsonl(out)
    # the re-run epoch 3 is the epoch 3 the stopped run computed (the resume is exact)
    first3 = {k: v for k, v in rec.calls[-2][1].items() if k not in H.TIMING_KEYS}
    again3 = {k: v for k, v in rec2.calls[2][1].items() if k not in H.TIMING_KEYS}
    assert first3 == again3


def test_csv_logger_widens_its_header_for_a_new_key(tmp_path):
    log = CSVLogger(tmp_path / "m.csv")
    log.on_train_begin({"output": tmp_path, "history": [{"epoch": 1, "a": 0.5}]})
    log.on_epoch_end({"epoch": 2, "a": 0.25})
    log.on_epoch_end({"epoch": 3, "a": 0.125, "b": 1e-20})
    assert (tmp_path / "m.csv").read_text() == "epoch,a,b\n1,0.5,\n2,0.25,\n3,0.125,1e-20\n"


# -------------------------------------------------------------------------------- TensorBoard
def _tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_logger_writes_every_scalar_per_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    assert main(["demo/student", "--output", str(out), "--epochs", "2", "--quiet", "--device", "cpu", "--no-plots",
                 "--set", "data.train_subset=300", "--logger", "tensorboard"]) == 0
    scalars = _tensorboard_scalars(out / "tensorboard")
    records = H.read_metrics(out)
    assert set(scalars) == set(records[0]) - {"epoch"}
    for tag, points in scalars.items():
        assert [step for step, _ in points] == [1, 2]
        for (_, value), record in zip(points, records):
            assert value == pytest.approx(record[tag], rel=1e-6, abs=1e-30)  # stored as float32


def test_tensorboard_after_a_resume_has_one_point_per_epoch(tmp_path):
    """Stopped after epoch 3 with last.pt at epoch 2: the resumed run drops the earlier epoch-3 points."""
    pytest.importorskip("tensorboard")
    from logit_standardization.training.callbacks import TensorBoardLogger

    out = tmp_path / "run"
    cfg = _cfg(4, "train.save_every=2")
    with pytest.raises(_Killed):
        train(cfg, out, device="cpu", quiet=True, log=lambda m: None,
              callbacks=[TensorBoardLogger(), Recorder(fail_at=3)])
    assert [s for s, _ in _tensorboard_scalars(out / "tensorboard")["test_top1"]] == [1, 2, 3]
    stale = json.loads(json.dumps(H.read_metrics(out)[2]))
    stale_lr = [v for s, v in _tensorboard_scalars(out / "tensorboard")["lr"] if s == 3]
    train(cfg, out, device="cpu", resume=True, quiet=True, log=lambda m: None, callbacks=[TensorBoardLogger()])
    scalars = _tensorboard_scalars(out / "tensorboard")
    assert [s for s, _ in scalars["test_top1"]] == [1, 2, 3, 4]
    records = H.read_metrics(out)
    assert [v for _, v in scalars["seconds"]] == pytest.approx(
        [r["seconds"] for r in records], rel=1e-6)  # epoch 3 is the resumed run's (its own timing)
    assert records[2]["seconds"] != stale["seconds"] and stale_lr == pytest.approx([records[2]["lr"]])
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2


# -------------------------------------------------------------------------------- Weights & Biases
def _wandb_records(path: Path) -> list:
    """The records of a W&B run file (``run-<id>.wandb``: a header, then a LevelDB-style log of
    protobuf ``Record`` messages in 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    block, pos, buf, out = 32768, 7, b"", []
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # the tail of a block too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        buf += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


@pytest.mark.slow
def test_wandb_offline_run_holds_the_history(tmp_path):
    pytest.importorskip("wandb")
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    env = H.env()
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "cfg"),
               WANDB_CACHE_DIR=str(tmp_path / "cache"), WANDB_DATA_DIR=str(tmp_path / "data"),
               WANDB_API_KEY="", WANDB_BASE_URL="http://127.0.0.1:9")  # nothing to reach
    proc = subprocess.run([sys.executable, "-m", "logit_standardization.training", "demo/student", "--output", str(out),
                           "--epochs", "2", "--quiet", "--device", "cpu", "--no-plots", "--set",
                           "data.train_subset=300", "--logger", "wandb", "--logger", "tensorboard"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (run_file,) = glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb"))
    run_id = (out / "wandb-run-id").read_text().strip()
    assert run_file.endswith(f"run-{run_id}.wandb")
    records = _wandb_records(Path(run_file))
    history = []
    for rec in records:
        if rec.WhichOneof("record_type") == "history":
            item = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            history.append({k: v for k, v in item.items() if not k.startswith("_")})
    metrics = H.read_metrics(out)
    assert len(history) == 2
    for logged, record in zip(history, metrics):
        assert logged == pytest.approx(record, rel=1e-12)
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.run_id == run_id and run.display_name == "demo/student-seed0"
    keys = {i.key for i in run.config.update}
    assert {"method", "optimizer", "schedule", "train"} <= keys
    summary = {}
    for rec in records:
        if rec.WhichOneof("record_type") == "summary":
            summary.update({i.key: json.loads(i.value_json) for i in rec.summary.update})
    best = json.loads((out / "summary.json").read_text())["best"]
    assert summary["best_top1"] == pytest.approx(best["top1"]) and summary["best_epoch"] == best["epoch"]
    assert _tensorboard_scalars(out / "tensorboard")["test_top1"][-1][0] == 2  # both loggers ran
    assert math.isfinite(summary["last_top1"])


# -------------------------------------------------------------------------------- missing packages
@pytest.mark.parametrize("logger, module", [("wandb", "wandb"), ("tensorboard", "torch.utils.tensorboard")])
def test_a_missing_logger_package_exits_2_before_training(tmp_path, capsys, monkeypatch, logger, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    out = tmp_path / "run"
    rc = main(["demo/student", "--output", str(out), "--epochs", "1", "--quiet", "--device", "cpu",
               "--logger", logger])
    err = capsys.readouterr().err
    assert rc == 2 and f"install {logger}" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_make_loggers_refuses_an_unknown_name():
    from logit_standardization.training._errors import TrainingError

    assert make_loggers([]) == []
    with pytest.raises(TrainingError, match="unknown logger 'mlflow'"):
        make_loggers(["mlflow"])


def test_logger_flag_choices(capsys):
    with pytest.raises(SystemExit):
        main(["demo/student", "--logger", "mlflow"])
    assert "invalid choice" in capsys.readouterr().err


def test_a_wandb_run_that_cannot_start_is_one_line(tmp_path, monkeypatch):
    import types

    from logit_standardization.training._errors import TrainingError
    from logit_standardization.training.callbacks import WandbLogger

    def init(**kwargs):
        raise RuntimeError("No API key configured. Use `wandb login` to log in.\nmore lines")

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    rec = Recorder()
    with pytest.raises(TrainingError, match=r"W&B could not start a run \(RuntimeError: No API key configured.*"
                                            r"WANDB_MODE=offline$"):
        train(_cfg(1), tmp_path / "run", device="cpu", quiet=True, log=lambda m: None,
              callbacks=[WandbLogger(), rec])
    assert [name for name, _ in rec.calls] == ["on_exception"]  # told, though its on_train_begin never ran
