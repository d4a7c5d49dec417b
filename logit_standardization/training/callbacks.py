r"""Callbacks of the training engine, and the experiment loggers built on them.

:func:`.engine.train` calls, on rank 0 only (DDP), each callback of its ``callbacks`` list:

* :meth:`Callback.on_train_begin` ``(info)`` once, after the set-up (data, networks, resume,
  the teacher's evaluation) and before the first epoch this call trains;
* :meth:`Callback.on_epoch_begin` ``(epoch)`` before each epoch (1-based);
* :meth:`Callback.on_epoch_end` ``(record)`` after each epoch, with a copy of the record just
  appended to ``metrics.jsonl`` (and after ``best.pt``/``last.pt`` were written);
* :meth:`Callback.on_train_end` ``(summary)`` after the last epoch, with the summary just
  written to ``summary.json``;
* :meth:`Callback.on_exception` ``(exc)`` instead of ``on_train_end`` when training stops with
  an exception from ``on_train_begin`` on (a diverging loss, a failed write, SIGTERM/SIGINT:
  :class:`.engine.TrainingInterrupted`, another callback's error), so that a logger can close
  its files; it is called on every callback, also one whose ``on_train_begin`` did not run.
  The exception is raised again afterwards.

Callbacks run in the order of the list, after the engine's own work for that moment; they
observe the run and must not change it (the record and summary they get are copies).

The loggers:

* :class:`CSVLogger`: ``metrics.csv`` next to ``metrics.jsonl``, one row per epoch. Always on
  in :func:`.engine.train`.
* :class:`TensorBoardLogger`: scalars per epoch under ``OUTPUT/tensorboard`` (``lskd-train ...
  --logger tensorboard``; the ``tensorboard`` package).
* :class:`WandbLogger`: a Weights & Biases run (``--logger wandb``; the ``wandb`` package).
  ``WANDB_MODE=offline`` writes the run under ``OUTPUT/wandb/`` without any network
  (``wandb sync`` uploads it later).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import types
from pathlib import Path
from typing import Any, Iterable, Sequence

from ._errors import TrainingError

__all__ = ["Callback", "CSVLogger", "TensorBoardLogger", "WandbLogger", "LOGGERS", "make_loggers"]


class Callback:
    """Base class of the engine's callbacks: every hook does nothing; override those you need.

    ``info`` (:meth:`on_train_begin`) is a dict with:

    * ``output``: the run directory (:class:`~pathlib.Path`);
    * ``config``: the resolved recipe;
    * ``recipe``: the recipe's name; ``seed``; ``world_size``; ``device`` (a string);
    * ``epochs``: the last epoch of the run; ``start_epoch``: the first epoch this call trains
      (1, or where a resumed run continues);
    * ``resumed``: True when the run continues from ``last.pt``;
    * ``history``: the records of the epochs already done (those of ``metrics.jsonl``; empty
      for a new run);
    * ``best``: ``{"epoch", "top1", "top5"}`` of the best epoch so far (epoch 0 if none);
    * ``teacher``: the teacher's test ``{"loss", "top1", "top5"}``, or None;
    * ``student_arch``, ``num_classes``.

    Example:
        >>> class Last(Callback):
        ...     def on_epoch_end(self, record):
        ...         self.top1 = record["test_top1"]
        >>> cb = Last(); cb.on_epoch_end({"epoch": 1, "test_top1": 91.5}); cb.top1
        91.5
    """

    def on_train_begin(self, info: dict[str, Any]) -> None:
        """Training starts (or resumes); see the class documentation for ``info``."""

    def on_epoch_begin(self, epoch: int) -> None:
        """Epoch ``epoch`` (1-based) starts."""

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        """Epoch ``record["epoch"]`` ended; ``record`` is its line of ``metrics.jsonl``."""

    def on_train_end(self, summary: dict[str, Any]) -> None:
        """The last epoch ended; ``summary`` is the content of ``summary.json``."""

    def on_exception(self, exc: BaseException) -> None:
        """Training stopped with ``exc`` (raised again after the callbacks)."""


# ------------------------------------------------------------------------------------ CSV
def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return value  # floats are written by repr(), i.e. exactly


class CSVLogger(Callback):
    """``metrics.csv``: the records of ``metrics.jsonl`` as a table, one row per epoch.

    The header is the record's keys (in order). The file is rewritten at the start of
    training from the records already done (none for a new run), so a resumed run continues
    it with one header and no row past the epoch it resumes from, even when the earlier
    process was killed after writing more; then one row is appended and flushed per epoch.
    A record with a key the header lacks rewrites the file with the wider header.

    Args:
        path: the file (default: ``metrics.csv`` in the run directory).
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self._path = Path(path) if path is not None else None
        self.path: Path | None = self._path
        self.fields: list[str] = []
        self.rows: list[dict[str, Any]] = []

    def on_train_begin(self, info: dict[str, Any]) -> None:
        self.path = self._path or Path(info["output"]) / "metrics.csv"
        self.rows = [dict(r) for r in info.get("history") or []]
        self.fields = []
        self._rewrite()

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        self.rows.append(dict(record))
        if not self.fields or any(k not in self.fields for k in record):
            self._rewrite()
            return
        with open(self.path, "a", encoding="utf-8", newline="") as f:  # type: ignore[arg-type]
            self._writer(f).writerow({k: _cell(v) for k, v in record.items()})
            f.flush()

    def _writer(self, f: Any) -> csv.DictWriter:
        return csv.DictWriter(f, fieldnames=self.fields, restval="", lineterminator="\n")

    def _rewrite(self) -> None:
        fields: list[str] = []
        for r in self.rows:
            fields += [k for k in r if k not in fields]
        self.fields = fields
        buf = io.StringIO()
        if fields:
            w = self._writer(buf)
            w.writeheader()
            for r in self.rows:
                w.writerow({k: _cell(v) for k, v in r.items()})
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(buf.getvalue())
            f.flush()
        os.replace(tmp, self.path)


# ------------------------------------------------------------------------------ TensorBoard
def _scalars(record: dict[str, Any]) -> Iterable[tuple[str, float]]:
    for key, value in record.items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        yield key, float(value)


def _import_summary_writer() -> Any:
    if "tensorflow" not in sys.modules:
        # TensorBoard imports all of TensorFlow (seconds, and its log lines) when it is installed,
        # unless this module exists; its stub covers writing event files.
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter


class TensorBoardLogger(Callback):
    """TensorBoard scalars, one point per epoch (the step is the epoch).

    Every numeric key of the record except ``epoch`` is a tag of the same name (``lr``,
    ``train_loss``, ``train_loss_kd``, ``test_top1``, ``temperature``, ...); the resolved
    recipe is a text entry ``config`` of a new run. A resumed run appends a new event file and
    drops the points an earlier process wrote at or after the epoch it resumes from.

    Args:
        log_dir: event-file directory (default: ``tensorboard/`` in the run directory).

    Raises:
        TrainingError: the ``tensorboard`` package is not installed.
    """

    def __init__(self, log_dir: str | os.PathLike | None = None) -> None:
        try:
            self._summary_writer = _import_summary_writer()
        except ImportError:
            raise TrainingError("--logger tensorboard needs the tensorboard package, which is not installed: "
                                "pip install tensorboard (or pip install 'logit-standardization[train]')") from None
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self.log_dir: Path | None = self._log_dir
        self.writer: Any = None

    def on_train_begin(self, info: dict[str, Any]) -> None:
        self.log_dir = self._log_dir or Path(info["output"]) / "tensorboard"
        purge = int(info["start_epoch"]) if info.get("resumed") else None
        self.writer = self._summary_writer(log_dir=str(self.log_dir), purge_step=purge)
        if not info.get("resumed"):
            self.writer.add_text("config", "```\n" + json.dumps(info["config"], indent=2) + "\n```", 0)
        self.writer.flush()

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        for tag, value in _scalars(record):
            self.writer.add_scalar(tag, value, global_step=int(record["epoch"]))
        self.writer.flush()

    def on_train_end(self, summary: dict[str, Any]) -> None:
        self._close()

    def on_exception(self, exc: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# ------------------------------------------------------------------------------------- W&B
class WandbLogger(Callback):
    """A Weights & Biases run: the recipe as its config, every record logged against ``epoch``,
    the best and last top-1 in its summary.

    The run's files go to ``OUTPUT/wandb/`` and its id to ``OUTPUT/wandb-run-id``, so that a
    resumed training continues the same W&B run. The usual W&B variables apply
    (``WANDB_MODE=offline`` needs no network and no account; ``WANDB_PROJECT``, ...).

    Args:
        project: W&B project (default: ``$WANDB_PROJECT``, else ``logit-standardization``).
        name: run name (default: ``<recipe>-seed<seed>``).
        **init_kwargs: more arguments of ``wandb.init`` (they take precedence).

    Raises:
        TrainingError: the ``wandb`` package is not installed.
    """

    ID_FILE = "wandb-run-id"

    def __init__(self, *, project: str | None = None, name: str | None = None, **init_kwargs: Any) -> None:
        try:
            import wandb
        except ImportError:
            raise TrainingError("--logger wandb needs the wandb package, which is not installed: pip install wandb "
                                "(or pip install 'logit-standardization[wandb]')") from None
        self._wandb = wandb
        self.project, self.name, self.init_kwargs = project, name, init_kwargs
        self.run: Any = None

    def on_train_begin(self, info: dict[str, Any]) -> None:
        output = Path(info["output"])
        id_file = output / self.ID_FILE
        run_id = id_file.read_text(encoding="utf-8").strip() if info.get("resumed") and id_file.is_file() else None
        kwargs: dict[str, Any] = {
            "project": self.project or os.environ.get("WANDB_PROJECT") or "logit-standardization",
            "name": self.name or f"{info['recipe']}-seed{info['seed']}",
            "dir": str(output),
            "config": info["config"],
        }
        if run_id:
            kwargs.update(id=run_id, resume="allow")
        kwargs.update(self.init_kwargs)
        try:
            self.run = self._wandb.init(**kwargs)
        except Exception as exc:  # no login, no network, a bad setting: one line, not W&B's traceback
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrainingError(f"W&B could not start a run ({type(exc).__name__}: {text}); log in with "
                                "`wandb login`, or run offline with WANDB_MODE=offline") from None
        id_file.write_text(f"{self.run.id}\n", encoding="utf-8")
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in record.items() if not (isinstance(v, float) and not math.isfinite(v))})

    def on_train_end(self, summary: dict[str, Any]) -> None:
        if self.run is None:
            return
        self.run.summary.update({
            "best_top1": summary["best"]["top1"], "best_epoch": summary["best"]["epoch"],
            "last_top1": summary["last"]["top1"], "last_top5": summary["last"]["top5"],
            "paper_top1": summary["paper_top1"], "seconds": summary["seconds"],
        })
        self.run.finish()
        self.run = None

    def on_exception(self, exc: BaseException) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1)
            self.run = None


LOGGERS: dict[str, type[Callback]] = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger}
"""The loggers ``lskd-train --logger NAME`` can add (the CSV logger is always on)."""


def make_loggers(names: Sequence[str]) -> list[Callback]:
    """New logger callbacks for ``names`` (keys of :data:`LOGGERS`, duplicates ignored).

    Raises:
        TrainingError: an unknown name, or a logger whose package is not installed.

    Example:
        >>> make_loggers([])
        []
    """
    out: list[Callback] = []
    for name in dict.fromkeys(names):
        if name not in LOGGERS:
            raise TrainingError(f"unknown logger {name!r}; choose from {', '.join(LOGGERS)}")
        out.append(LOGGERS[name]())
    return out
