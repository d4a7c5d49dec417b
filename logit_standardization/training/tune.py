r"""``lskd-tune``: hyperparameter search for a recipe with Optuna, scored on a validation split.

Usage::

    lskd-tune RECIPE [--teacher PATH] [--trials N] [--timeout S] [--storage URL] [--study NAME]
                     [--output DIR] [--epochs N] [--val-fraction F] [--seeds S [S ...]]
                     [--final-epochs N] [--space KEY=SPEC ...] [--set KEY=VALUE ...]
                     [--sampler-seed N] [--device auto|cpu|cuda] [--data-root DIR]
    lskd-tune --version

Each trial trains the recipe (``--epochs`` per trial) with values drawn by Optuna's TPE sampler
and is scored by its **validation** top-1 at the last epoch: the recipe key
``data.val_fraction`` (``--val-fraction``, default 0.2) holds out a stratified, seeded part of
the training set (:func:`.data.holdout_indices`) and the trial evaluates on it instead of the
test set, which no trial touches. The validation top-1 of every epoch goes to a
``MedianPruner`` through an engine callback (:class:`PruningCallback`), which stops trials
that fall behind the median of the earlier ones at the same epoch.

Search space: the default of the method (:data:`DEFAULT_SPACES`), changed or extended with
``--space KEY=SPEC``, SPEC one of ``LOW:HIGH`` (float), ``LOW:HIGH:log`` (float, log scale),
``LOW:HIGH:int`` (integer; ``LOW:HIGH:int:log``) or ``choice:A,B,C`` (values parsed as YAML),
and ``--space KEY=off`` drops a key of the default. KEY is a recipe key
(``method.temperature``, ``optimizer.lr``); a list element is addressed by its position
(``method.temperatures.0``, MLKD's base temperature).

The study lives in ``--storage`` (default: ``sqlite:///OUTPUT/study.db``) under ``--study``
(default: the recipe's name); several workers started with the same storage and study name
share it (PostgreSQL for workers on several machines), and a rerun continues it. ``--trials N``
is the number of trials *this* worker runs. A failing trial and a Ctrl-C are recorded in the
study (state FAIL, the error in the trial's user attribute ``error``); a failing trial does
not stop the worker, Ctrl-C does (exit status 130).

Outputs in ``--output``: ``best.yaml`` (a recipe that extends RECIPE with the best values and
the teacher; ``lskd-train OUTPUT/best.yaml`` trains it), ``trials.csv``, ``summary.md``,
``figures/*.png`` (optimization history, parameter importances, slices) and one directory per
trial under ``trials/``. With ``--seeds S ...`` the best settings are then trained on the full
training set with each seed (``--final-epochs``, default the recipe's ``schedule.epochs``) and
evaluated once on the test set (``final/seed<S>``, ``final.json``): the last epoch's test top-1
is the number to report.

Exit status: 0 on success, 2 for a usage or setup error (one line on stderr), 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import math
import os
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from ._errors import TrainingError, missing_dependency, output_dir_problem
from .callbacks import Callback

__all__ = [
    "DEFAULT_SPACES",
    "DEFAULT_VAL_FRACTION",
    "ParamSpec",
    "parse_space",
    "default_space",
    "set_key",
    "trial_config",
    "PruningCallback",
    "tune",
    "write_outputs",
    "best_recipe",
    "final_runs",
    "build_parser",
    "main",
]

DEFAULT_VAL_FRACTION = 0.2
"""Fraction of the training set held out for validation when the recipe sets none."""

DEFAULT_SPACES: dict[str, dict[str, str]] = {
    "kd": {"method.temperature": "1:8:log", "method.kd_weight": "0.5:16:log", "method.ce_weight": "0:1"},
    "dkd": {"method.temperature": "1:8:log", "method.alpha": "0.25:4:log", "method.beta": "1:16:log",
            "method.kd_weight": "0.5:4:log", "method.ce_weight": "0:1"},
    "mlkd": {"method.temperatures.0": "1:8:log", "method.kd_weight": "1:16:log", "method.ce_weight": "0:1"},
    "ctkd": {"method.t_start": "0.5:2:log", "method.t_end": "4:20:log", "method.kd_weight": "0.5:16:log",
             "method.ce_weight": "0:1"},
}
"""The default search space of each method (``--space`` syntax); ``ce`` has none."""


class SpaceError(TrainingError):
    """A ``--space`` entry cannot be parsed or names a key the recipe lacks."""


# ------------------------------------------------------------------------------ search space
class ParamSpec:
    """One dimension of the search space: ``kind`` is ``"float"``, ``"int"`` or ``"choice"``.

    Example:
        >>> ParamSpec.parse("method.temperature", "0.5:8:log")
        ParamSpec('method.temperature', 'float', low=0.5, high=8.0, log=True)
        >>> ParamSpec.parse("method.beta", "choice:1,2,8").choices
        [1, 2, 8]
    """

    def __init__(self, key: str, kind: str, *, low: float | None = None, high: float | None = None,
                 log: bool = False, choices: list[Any] | None = None) -> None:
        self.key, self.kind, self.low, self.high, self.log, self.choices = key, kind, low, high, log, choices

    def __repr__(self) -> str:
        if self.kind == "choice":
            return f"ParamSpec({self.key!r}, 'choice', choices={self.choices!r})"
        return f"ParamSpec({self.key!r}, {self.kind!r}, low={self.low!r}, high={self.high!r}, log={self.log!r})"

    @classmethod
    def parse(cls, key: str, spec: str) -> "ParamSpec":
        import yaml

        where = f"--space {key}={spec}"
        if not key or any(not part for part in key.split(".")):
            raise SpaceError(f"{where}: the key must be a recipe key such as method.temperature")
        if spec.startswith("choice:"):
            items = [s.strip() for s in spec[len("choice:"):].split(",")]
            if not items or any(not s for s in items):
                raise SpaceError(f"{where}: a choice needs values separated by commas, e.g. choice:1,2,4")
            values = [yaml.safe_load(s) for s in items]
            if any(not isinstance(v, (bool, int, float, str)) and v is not None for v in values):
                raise SpaceError(f"{where}: choices must be numbers, strings, true/false or null")
            return cls(key, "choice", choices=values)
        parts = spec.split(":")
        if len(parts) < 2 or len(parts) > 4:
            raise SpaceError(f"{where}: expected LOW:HIGH, LOW:HIGH:log, LOW:HIGH:int or choice:A,B,C")
        flags = parts[2:]
        if any(f not in ("log", "int") for f in flags) or len(set(flags)) != len(flags):
            raise SpaceError(f"{where}: the flags after LOW:HIGH may be 'log' and 'int'; got {':'.join(flags)!r}")
        kind = "int" if "int" in flags else "float"
        try:
            low, high = (int(p) if kind == "int" else float(p) for p in parts[:2])
        except ValueError:
            raise SpaceError(f"{where}: LOW and HIGH must be {'integers' if kind == 'int' else 'numbers'}") from None
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise SpaceError(f"{where}: LOW must be below HIGH (both finite)")
        if "log" in flags and low <= 0:
            raise SpaceError(f"{where}: a log scale needs LOW > 0")
        return cls(key, kind, low=low, high=high, log="log" in flags)

    def suggest(self, trial: Any) -> Any:
        """Draw a value from an Optuna trial."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, self.choices)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log)

    def sample_values(self) -> list[Any]:
        """Values used to check the key before any trial (the ends of a range, every choice)."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "choice":
            return "choice:" + ",".join(map(str, self.choices or []))
        return f"{self.low:g}:{self.high:g}" + (":int" if self.kind == "int" else "") + (":log" if self.log else "")


def default_space(method: str) -> dict[str, ParamSpec]:
    """The default search space of a method (empty for ``ce``).

    Example:
        >>> list(default_space("dkd"))
        ['method.temperature', 'method.alpha', 'method.beta', 'method.kd_weight', 'method.ce_weight']
    """
    return {k: ParamSpec.parse(k, v) for k, v in DEFAULT_SPACES.get(method, {}).items()}


def parse_space(method: str, entries: Sequence[str]) -> dict[str, ParamSpec]:
    """The method's default space updated by ``--space KEY=SPEC`` entries (``KEY=off`` drops a key).

    Example:
        >>> space = parse_space("kd", ["method.temperature=0.5:8:log", "method.ce_weight=off",
        ...                            "optimizer.lr=choice:0.01,0.05"])
        >>> {k: v.describe() for k, v in space.items()}
        {'method.temperature': '0.5:8:log', 'method.kd_weight': '0.5:16:log', 'optimizer.lr': 'choice:0.01,0.05'}
    """
    space = default_space(method)
    for entry in entries:
        if "=" not in entry:
            raise SpaceError(f"--space {entry!r} must have the form KEY=SPEC, e.g. method.temperature=0.5:8:log")
        key, spec = (s.strip() for s in entry.split("=", 1))
        if spec == "off":
            if key not in space:
                raise SpaceError(f"--space {entry}: {key!r} is not in the search space ({', '.join(space) or 'empty'})")
            del space[key]
            continue
        space[key] = ParamSpec.parse(key, spec)
    if not space:
        raise SpaceError(f"the search space is empty: method {method!r} has no default space; add --space KEY=SPEC")
    return space


def set_key(cfg: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted recipe key in place; a numeric part addresses a list element.

    Example:
        >>> cfg = {"method": {"temperatures": [2.0, 3.0]}}
        >>> set_key(cfg, "method.temperatures.0", 4.0); set_key(cfg, "optimizer.lr", 0.1); cfg
        {'method': {'temperatures': [4.0, 3.0]}, 'optimizer': {'lr': 0.1}}
    """
    parts = key.split(".")
    node: Any = cfg
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, (list, tuple)):
            if not part.isdigit() or int(part) >= len(node):
                raise SpaceError(f"search-space key {key!r}: {part!r} is not a position of {list(node)!r}")
            if isinstance(node, tuple):
                raise SpaceError(f"search-space key {key!r}: cannot set an element of a tuple")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise SpaceError(f"search-space key {key!r}: {'.'.join(parts[:i])!r} is a value, not a section")
        if last:
            node[part] = value
        else:
            child = node.get(part)
            if isinstance(child, tuple):
                node[part] = child = list(child)
            if child is None:
                node[part] = child = {}
            node = child


def trial_config(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a resolved recipe) with ``params`` (dotted keys) set, validated again.

    Raises:
        RecipeError: a key the recipe does not have, or a value it refuses.
    """
    from .recipes import validate

    cfg = copy.deepcopy(base)
    if isinstance(cfg["method"].get("temperatures"), tuple):
        cfg["method"]["temperatures"] = list(cfg["method"]["temperatures"])
    for key, value in params.items():
        set_key(cfg, key, value)
    return validate(cfg)


def _check_space(base: dict[str, Any], space: dict[str, ParamSpec]) -> None:
    for spec in space.values():
        for value in spec.sample_values():
            try:
                trial_config(base, {spec.key: value})
            except TrainingError as exc:
                raise SpaceError(f"--space {spec.key}={spec.describe()}: {exc}") from None


# --------------------------------------------------------------------------------- pruning
class PruningCallback(Callback):
    """Engine callback: reports each epoch's validation top-1 to an Optuna trial and prunes.

    The record's ``test_top1`` is the top-1 on the held-out validation split when the recipe
    sets ``data.val_fraction`` (as every trial of :func:`tune` does). When the pruner says so,
    :meth:`on_epoch_end` raises ``optuna.TrialPruned``, which stops the training.
    """

    def __init__(self, trial: Any, key: str = "test_top1") -> None:
        self.trial, self.key = trial, key
        self.values: list[float] = []

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        import optuna

        value = float(record[self.key])
        self.values.append(value)
        self.trial.report(value, int(record["epoch"]))
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {record['epoch']} (validation top-1 {value:.2f})")


# ---------------------------------------------------------------------------------- storage
def _storage(url: str) -> Any:
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    last: Exception | None = None
    for attempt in range(5):  # workers starting together may race on creating the tables
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except Exception as exc:  # noqa: BLE001 -- reported after the retries
            last = exc
            time.sleep(0.5 + attempt)
    raise TrainingError(f"cannot open the study storage {url!r}: {type(last).__name__}: "
                        f"{str(last).strip().splitlines()[0] if str(last).strip() else ''}")


def _open_study(storage_url: str, name: str, sampler_seed: int | None) -> Any:
    import optuna

    storage = _storage(storage_url)
    sampler = optuna.samplers.TPESampler(seed=sampler_seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    last: Exception | None = None
    for attempt in range(5):
        try:
            return optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler,
                                       pruner=pruner, load_if_exists=True)
        except Exception as exc:  # noqa: BLE001 -- concurrent creation by another worker
            last = exc
            time.sleep(0.5 + attempt)
    raise TrainingError(f"cannot create or load study {name!r} in {storage_url!r}: {type(last).__name__}: {last}")


# ------------------------------------------------------------------------------------- tune
def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def tune(base: dict[str, Any], output: str | os.PathLike, space: dict[str, ParamSpec], *, trials: int | None = 20,
         timeout: float | None = None, storage: str | None = None, study_name: str | None = None,
         recipe: str | None = None, overrides: Sequence[str] = (), sampler_seed: int | None = None,
         device: str = "auto", log: Callable[[str], None] = print) -> Any:
    """Run this worker's trials of a study and return the ``optuna.Study``.

    Args:
        base: the resolved recipe of every trial (its ``data.val_fraction`` must be set: the
            trials are scored on that held-out split, never on the test set).
        output: the tuning directory (``trials/<study>/<number>`` per trial, ``study.db``).
        space: the search space (:func:`parse_space`).
        trials: the number of trials this worker runs (Optuna's ``n_trials``; None: until
            ``timeout``). timeout: seconds after which no new trial starts.
        storage: an SQLAlchemy URL (default ``sqlite:///OUTPUT/study.db``). study_name:
            default the recipe's name.
        recipe, overrides: the recipe name or path and the ``--set`` overrides, recorded in
            the study so that :func:`best_recipe` can rebuild the recipe.
        sampler_seed: seed of the TPE sampler (None: random; give workers different seeds).
        device: ``auto``, ``cpu`` or ``cuda``. log: where the per-trial lines go.

    Raises:
        TrainingError: no validation split in ``base``, a study that was tuned with another
            split or recipe, a storage that cannot be opened.
        KeyboardInterrupt: Ctrl-C (the running trial is recorded as FAIL first).
    """
    import optuna

    from .engine import train

    if base["data"].get("val_fraction") is None:
        raise TrainingError("tuning needs a validation split: set data.val_fraction (the test set is not used)")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(output / 'study.db').resolve()}"
    study_name = study_name or str(base["name"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(storage, study_name, sampler_seed)
    validation = _validation_record(base)
    attrs = {"recipe": recipe or base["name"], "overrides": list(overrides), "validation": validation,
             "space": {k: v.describe() for k, v in space.items()}, "metric": "validation top-1 (%) at the last epoch",
             "teacher": base["teacher"].get("checkpoint")}
    known = study.user_attrs
    if "validation" in known and known["validation"] != validation:
        raise TrainingError(f"study {study_name!r} scores trials on another validation split "
                            f"({known['validation']}); use another --study or the same data.val_fraction/val_seed")
    for key, value in attrs.items():
        if known.get(key) != _jsonable(value):
            study.set_user_attr(key, _jsonable(value))

    trial_root = output / "trials" / _safe(study_name)

    def objective(trial: Any) -> float:
        params = {key: spec.suggest(trial) for key, spec in space.items()}
        run_dir = trial_root / f"{trial.number:04d}"
        trial.set_user_attr("output", str(run_dir))
        try:
            cfg = trial_config(base, params)
            trial.set_user_attr("method", _jsonable(cfg["method"]))
            if run_dir.exists():  # a directory left by a crashed process of another study state
                shutil.rmtree(run_dir)
            pruning = PruningCallback(trial)
            summary = train(cfg, run_dir, device=device, quiet=True, log=lambda msg: None, callbacks=[pruning],
                            epoch_lines=False)
        except optuna.TrialPruned:
            raise
        except BaseException as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            trial.set_user_attr("error", f"{type(exc).__name__}: {text}".rstrip(": "))
            from .engine import TrainingInterrupted

            if isinstance(exc, TrainingInterrupted):  # Ctrl-C / SIGTERM inside the training loop
                raise KeyboardInterrupt(text) from None
            raise
        value = float(summary["last"]["top1"])
        trial.set_user_attr("best_epoch_top1", float(summary["best"]["top1"]))
        return value

    def report(study: Any, frozen: Any) -> None:
        state = frozen.state.name
        if frozen.value is not None:
            what = f"value {frozen.value:.2f}"
        elif state == "PRUNED":
            last = frozen.intermediate_values
            what = f"pruned at epoch {max(last)} ({last[max(last)]:.2f})" if last else "pruned"
        else:
            what = frozen.user_attrs.get("error", state.lower())
        try:
            best = study.best_trial
            best_text = f"best {best.value:.2f} (trial {best.number})"
        except ValueError:
            best_text = "no completed trial yet"
        log(f"trial {frozen.number} {state.lower()}: {what} | {_fmt_params(frozen.params)} | {best_text}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
        if trials is None or trials > 0 or timeout is not None:
            study.optimize(objective, n_trials=trials, timeout=timeout, catch=(Exception,), callbacks=[report],
                           gc_after_trial=True)
    return study


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _validation_record(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"val_fraction": float(cfg["data"]["val_fraction"]), "val_seed": int(cfg["data"]["val_seed"]),
            "stratified": True, "source": "training set (sklearn train_test_split, stratify=labels)",
            "train_subset": cfg["data"].get("train_subset"), "dataset": cfg["dataset"]}


# ---------------------------------------------------------------------------------- outputs
def best_recipe(study: Any) -> dict[str, Any]:
    """A recipe (a dict, written as ``best.yaml``) that extends the tuned one with the best values.

    It holds ``extends:`` (the tuned recipe), the ``--set`` overrides of the tuning except the
    validation split, the best trial's values (the whole ``method`` block) and the teacher.

    Raises:
        ValueError: the study has no completed trial.
    """
    from .recipes import apply_overrides, recipe_path

    attrs = study.user_attrs
    best = study.best_trial
    recipe = str(attrs["recipe"])
    source = recipe_path(recipe)
    from .recipes import RECIPE_DIR

    try:
        extends = source.relative_to(RECIPE_DIR).with_suffix("").as_posix()
    except ValueError:
        extends = str(source.resolve())
    out: dict[str, Any] = {"extends": extends}
    name = extends if not os.path.isabs(extends) else Path(extends).stem
    out["name"] = f"{name}-tuned"
    out["description"] = (f"{recipe} with the settings of trial {best.number} of study {study.study_name!r} "
                          f"(validation top-1 {best.value:.2f})")
    overrides = [o for o in attrs.get("overrides") or [] if not o.split("=", 1)[0].strip().startswith(
        ("data.val_fraction", "data.val_seed", "schedule.epochs", "teacher.checkpoint"))]
    out = apply_overrides(out, overrides)
    for key, value in best.params.items():
        set_key(out, key, value)
    resolved = best.user_attrs.get("method")
    if resolved:
        out["method"] = resolved
    if attrs.get("teacher"):
        out.setdefault("teacher", {})["checkpoint"] = attrs["teacher"]
    return out


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _trials_csv(study: Any) -> str:
    trials = study.get_trials(deepcopy=False)
    params = list(dict.fromkeys(k for t in trials for k in t.params))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["number", "state", "value", *params, "epochs_reported", "seconds", "error", "output"])
    for t in trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else ""
        w.writerow([t.number, t.state.name, "" if t.value is None else repr(t.value),
                    *(t.params.get(k, "") for k in params), len(t.intermediate_values), seconds,
                    t.user_attrs.get("error", ""), t.user_attrs.get("output", "")])
    return buf.getvalue()


def _figures(study: Any, folder: Path, log: Callable[[str], None]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    folder.mkdir(parents=True, exist_ok=True)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    n_params = len({k for t in complete for k in t.params})
    plots: list[tuple[str, Callable[[], Any]]] = [("optimization_history", lambda: ovm.plot_optimization_history(study))]
    if len(complete) >= 2 and n_params >= 2:
        plots.append(("param_importances", lambda: ovm.plot_param_importances(study)))
    plots.append(("slice", lambda: ovm.plot_slice(study)))
    written = []
    for name, draw in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw()
            fig = ax.flat[0].figure if hasattr(ax, "flat") else ax.figure
            fig.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
            plt.close(fig)
            written.append(folder / f"{name}.png")
        except (ValueError, RuntimeError, optuna.exceptions.OptunaError) as exc:  # e.g. too few trials
            log(f"figure {name} skipped: {exc}")
    return written


def write_outputs(study: Any, output: str | os.PathLike, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write ``best.yaml`` (when a trial completed), ``trials.csv``, ``figures/*.png``, ``summary.md``."""
    import yaml

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    _write_text(output / "trials.csv", _trials_csv(study))
    figures = _figures(study, output / "figures", log)
    attrs = study.user_attrs
    result: dict[str, Any] = {"counts": counts, "figures": [str(f) for f in figures], "best": None}
    lines = [f"# Tuning: {attrs.get('recipe')}", "",
             f"- study: `{study.study_name}`; trials: " + ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items())),
             f"- metric: {attrs.get('metric')}, on a validation split held out from the training data "
             f"({attrs.get('validation')}); the test set is not used by any trial",
             f"- search space: " + ", ".join(f"`{k}={v}`" for k, v in (attrs.get("space") or {}).items()),
             f"- overrides: {' '.join(attrs.get('overrides') or []) or 'none'}"]
    try:
        best = study.best_trial
    except ValueError:
        best = None
    if best is not None:
        recipe = best_recipe(study)
        header = (f"# Written by lskd-tune: the best trial ({best.number}, validation top-1 {best.value:.2f}) of study "
                  f"{study.study_name!r}.\n# Train it with: lskd-train {output / 'best.yaml'}\n")
        _write_text(output / "best.yaml", header + yaml.safe_dump(recipe, sort_keys=False, width=110))
        result["best"] = {"number": best.number, "value": best.value, "params": best.params}
        lines += ["", "## Best trial", "", f"trial {best.number}: validation top-1 **{best.value:.2f}**", "",
                  "| key | value |", "| --- | --- |", *(f"| `{k}` | {v:.6g} |" if isinstance(v, float) else
                                                        f"| `{k}` | {v} |" for k, v in best.params.items()),
                  "", f"Recipe: `best.yaml` (`lskd-train {output / 'best.yaml'}`)."]
    else:
        lines += ["", "No trial has completed yet."]
    lines += ["", "Files: `trials.csv`, " + ", ".join(f"`figures/{f.name}`" for f in figures) + "."]
    final = output / "final.json"
    if final.is_file():
        report = json.loads(final.read_text(encoding="utf-8"))
        lines += ["", "## Final runs (full training set, test set once)", "",
                  f"seeds {report['seeds']}: test top-1 at the last epoch {report['test_top1']['mean']:.2f} ± "
                  f"{report['test_top1']['std']:.2f}"]
    _write_text(output / "summary.md", "\n".join(lines) + "\n")
    return result


def final_runs(output: str | os.PathLike, seeds: Sequence[int], *, epochs: int | None = None, device: str = "auto",
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``OUTPUT/best.yaml`` on the full training set with each seed; test once; write ``final.json``.

    The validation split is off (``data.val_fraction=null``): the networks train on the whole
    training set and their last epoch is evaluated on the test set.
    """
    from .engine import _write_json, train
    from .recipes import load_recipe

    output = Path(output)
    overrides = ["data.val_fraction=null"] + ([f"schedule.epochs={epochs}"] if epochs else [])
    cfg = load_recipe(output / "best.yaml", overrides)
    tops = []
    for seed in seeds:
        run_cfg = {**cfg, "train": {**cfg["train"], "seed": int(seed)}}
        summary = train(run_cfg, output / "final" / f"seed{seed}", device=device, quiet=True, log=lambda m: None)
        tops.append(float(summary["last"]["top1"]))
        log(f"final seed {seed}: test top-1 {tops[-1]:.2f} (last epoch of {cfg['schedule']['epochs']})")
    report = {"recipe": str(output / "best.yaml"), "seeds": [int(s) for s in seeds],
              "epochs": cfg["schedule"]["epochs"],
              "test_top1": {"mean": statistics.fmean(tops), "std": statistics.stdev(tops) if len(tops) > 1 else 0.0,
                            "values": tops},
              "note": "trained on the full training set; the test set is evaluated once per run, at the last epoch"}
    _write_json(output / "final.json", report)
    return report


# ------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """The ``argparse`` parser of ``lskd-tune``."""
    from .. import __version__

    p = argparse.ArgumentParser(
        prog="lskd-tune", allow_abbrev=False,
        description="Tune the hyperparameters of a recipe with Optuna (TPE sampler, median pruner), scoring each "
        "trial on a validation split held out from the training set. RECIPE is a shipped name or a YAML file.",
        epilog="Example: lskd-tune demo/kd_ls --teacher runs/demo/teacher/best.pt --trials 20 --epochs 10")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("recipe", help="shipped recipe name or YAML path")
    p.add_argument("--teacher", metavar="PATH", help="teacher checkpoint (as for lskd-train)")
    p.add_argument("--trials", type=int, metavar="N", help="trials this worker runs (default 20; 0: none)")
    p.add_argument("--timeout", type=float, metavar="S", help="start no new trial after S seconds")
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL (default sqlite:///OUTPUT/study.db); "
                   "e.g. postgresql+psycopg2://user:pass@host:5432/db for workers on several machines")
    p.add_argument("--study", metavar="NAME", help="study name (default: the recipe's name)")
    p.add_argument("--output", metavar="DIR", help="tuning directory (default runs/tune/<recipe name>)")
    p.add_argument("--epochs", type=int, metavar="N", help="epochs per trial (schedule.epochs of the trials)")
    p.add_argument("--val-fraction", type=float, metavar="F", help="fraction of the training set held out for "
                   f"validation (default: the recipe's data.val_fraction, else {DEFAULT_VAL_FRACTION})")
    p.add_argument("--seeds", type=int, nargs="+", metavar="S", help="after tuning, train best.yaml on the full "
                   "training set with these seeds and evaluate each once on the test set")
    p.add_argument("--final-epochs", type=int, metavar="N", help="epochs of those final runs (default: the "
                   "recipe's schedule.epochs)")
    p.add_argument("--space", action="extend", nargs="+", default=[], metavar="KEY=SPEC",
                   help="search-space entry: LOW:HIGH[:log], LOW:HIGH:int, choice:A,B,C, or off (drop a default key)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override a recipe key for every trial (YAML value)")
    p.add_argument("--sampler-seed", type=int, metavar="N", help="seed of the TPE sampler (default: random)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--data-root", metavar="DIR", help="dataset directory (as for lskd-train)")
    return p


def _error(message: str) -> int:
    print(f"lskd-tune: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lskd-tune``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("trials", "epochs", "final_epochs"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "trials" else 1):
            parser.error(f"--{name.replace('_', '-')} must be >= {0 if name == 'trials' else 1}")
    if args.timeout is not None and not args.timeout > 0:
        parser.error("--timeout must be > 0")
    if args.val_fraction is not None and not 0.0 < args.val_fraction < 1.0:
        parser.error("--val-fraction must be in (0, 1)")
    try:
        return _main(args)
    except ImportError as exc:
        return _error(missing_dependency(exc, "tune"))


def _main(args: argparse.Namespace) -> int:
    import optuna  # noqa: F401 -- the [tune] extra

    from .recipes import load_recipe

    overrides = list(args.overrides)
    if args.data_root is not None:
        overrides.append(f"data.root={json.dumps(args.data_root)}")
    if args.teacher is not None:
        overrides.append(f"teacher.checkpoint={json.dumps(str(Path(args.teacher).expanduser().resolve()))}")
    try:
        base = load_recipe(args.recipe, overrides + ([f"schedule.epochs={args.epochs}"] if args.epochs else []))
        if args.val_fraction is not None or base["data"]["val_fraction"] is None:
            base = load_recipe(args.recipe, overrides + [f"schedule.epochs={base['schedule']['epochs']}",
                                                         f"data.val_fraction={args.val_fraction or DEFAULT_VAL_FRACTION}"])
        space = parse_space(base["method"]["name"], args.space)
        _check_space(base, space)
    except TrainingError as exc:
        return _error(str(exc))
    if base["method"]["name"] != "ce" and not base["teacher"]["checkpoint"]:
        return _error(f"method {base['method']['name']!r} needs a teacher: pass --teacher PATH")
    output = Path(args.output) if args.output else Path("runs") / "tune" / str(base["name"])
    problem = output_dir_problem(output, "--output directory")
    if problem:
        return _error(f"{problem}; choose another --output")

    def log(msg: str) -> None:
        print(msg, flush=True)

    log(f"tuning {base['name']}: {len(space)} parameters ({', '.join(space)}), scored on validation top-1 "
        f"(data.val_fraction={base['data']['val_fraction']}, val_seed={base['data']['val_seed']}), "
        f"{base['schedule']['epochs']} epochs per trial")
    status = 0
    study = None
    try:
        study = tune(base, output, space, trials=20 if args.trials is None and args.timeout is None else args.trials,
                     timeout=args.timeout, storage=args.storage, study_name=args.study, recipe=args.recipe,
                     overrides=[*overrides, *([f"schedule.epochs={args.epochs}"] if args.epochs else [])],
                     sampler_seed=args.sampler_seed, device=args.device, log=log)
    except KeyboardInterrupt:
        print("lskd-tune: interrupted (the running trial is recorded as failed)", file=sys.stderr)
        status = 130
    except TrainingError as exc:
        return _error(str(exc))
    try:
        if study is None:
            study = _open_study(args.storage or f"sqlite:///{(output / 'study.db').resolve()}",
                                args.study or str(base["name"]), None)
        result = write_outputs(study, output, log=log)
        if result["best"] is not None:
            b = result["best"]
            log(f"best: trial {b['number']}, validation top-1 {b['value']:.2f} | {_fmt_params(b['params'])} "
                f"[{output / 'best.yaml'}]")
        if status == 0 and args.seeds:
            if result["best"] is None:
                return _error("no completed trial: nothing to retrain with --seeds")
            report = final_runs(output, args.seeds, epochs=args.final_epochs, device=args.device, log=log)
            write_outputs(study, output, log=log)
            t = report["test_top1"]
            log(f"final ({len(args.seeds)} seeds, full training set): test top-1 {t['mean']:.2f} ± {t['std']:.2f} "
                f"[{output / 'final.json'}]")
    except KeyboardInterrupt:
        print("lskd-tune: interrupted", file=sys.stderr)
        return 130
    except TrainingError as exc:
        return _error(str(exc))
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
