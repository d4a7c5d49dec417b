r"""Figures of a training run (``lskd-plot RUN_DIR``): the paper's visualizations on your own run.

Four PNG files are written (by default into ``RUN_DIR/plots/``):

``logit_stats.png``
    Per-sample logit mean and standard deviation of the teacher and of the student, for the
    raw logits and for the standardized logits :math:`\mathcal{Z}(x) = (x - \bar x) / s(x)`
    (:func:`logit_standardization.zscore`, ``ddof=1``). Raw logits show where the student put
    its own offset and scale; after standardization every sample of both networks sits at
    mean 0 and deviation 1, so a KD+LS student is free to keep a different mean and scale.
``class_logits.png``
    Class-averaged standardized logits, teacher and student side by side:
    :math:`M_{c,k} = \frac{1}{|\{i: y_i = c\}|}\sum_{i: y_i = c} \mathcal{Z}(x_i)_k`
    (row :math:`c`: true class; column :math:`k`: logit), on one colour scale.
``correlation_difference.png``
    :math:`|R^{s} - R^{t}|`, where :math:`R_{jk}` is the Pearson correlation, over the
    evaluation samples, of the standardized logits of classes :math:`j` and :math:`k`; the
    smaller, the better the student reproduces how the teacher relates the classes.
``curves.png``
    Training curves from ``metrics.jsonl``: the loss by term (as weighted in the total), the
    test cross-entropy, train and test top-1, and CTKD's temperature and :math:`\lambda` when
    present.

The logit figures need the run's ``student.pt`` (or ``student.safetensors``), its teacher
(``teacher.checkpoint`` of the recipe in ``summary.json``, or ``--teacher``) and the
evaluation split of its dataset (the recipe's ``data.root``, or ``--data-root``). A run
without a teacher (a teacher run or a student trained alone) gets the statistics of its own
network only. When the data cannot be found the curves are still drawn and the reason is
printed; a checkpoint that is corrupt or unreadable is refused (exit status 2).

The library functions take plain NumPy arrays, so they also serve runs trained elsewhere:

Example:
    >>> import numpy as np, tempfile
    >>> from pathlib import Path
    >>> from logit_standardization.training.plots import plot_logit_stats, logit_statistics
    >>> rng = np.random.default_rng(0)
    >>> teacher = rng.normal(size=(200, 10)) * 4.0
    >>> student = 0.5 * teacher + 1.0 + rng.normal(size=(200, 10)) * 0.1
    >>> mean, std = logit_statistics(student, standardized=True)
    >>> bool(np.allclose(mean, 0.0) and np.allclose(std, 1.0, atol=1e-6))
    True
    >>> path = plot_logit_stats(teacher, {"student": student}, Path(tempfile.mkdtemp()) / "stats.png")
    >>> path.stat().st_size > 10_000
    True
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import zscore

__all__ = [
    "RunLogits",
    "logit_statistics",
    "class_mean_logits",
    "class_correlation",
    "read_metrics",
    "plot_logit_stats",
    "plot_class_logits",
    "plot_correlation_difference",
    "plot_training_curves",
    "plot_accuracy_comparison",
    "run_logits",
    "plot_run",
    "plot_after_training",
    "main",
]

# one colour per curve, the teacher always grey
_TEACHER_COLOR = "0.35"
_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]
_DPI = 120


# ----------------------------------------------------------------------------------- numbers
def _as_logits(x: Any, name: str, fn: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 2 or a.shape[0] < 1:
        raise ValueError(f"{fn}: argument '{name}' must be a (samples, classes) array with at least 2 classes; "
                         f"got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{fn}: argument '{name}' contains NaN or Inf")
    return a


def _as_labels(y: Any, n: int, num_classes: int, fn: str) -> np.ndarray:
    a = np.asarray(y)
    if a.shape != (n,) or a.dtype.kind not in "iu":
        raise ValueError(f"{fn}: argument 'labels' must be an integer array of shape ({n},); "
                         f"got {a.dtype} array of shape {a.shape}")
    if n and (a.min() < 0 or a.max() >= num_classes):
        raise ValueError(f"{fn}: argument 'labels' must lie in [0, {num_classes - 1}]; "
                         f"got values in [{a.min()}, {a.max()}]")
    return a.astype(np.int64)


def logit_statistics(logits: Any, *, standardized: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample mean and standard deviation (``ddof=1``) of a ``(N, C)`` logit array.

    Args:
        logits: ``(N, C)`` logits.
        standardized: compute the statistics of :func:`logit_standardization.zscore` of the
            logits (which are 0 and 1 for every non-constant row) instead of the raw ones.

    Returns:
        ``(mean, std)``, two ``(N,)`` float64 arrays.

    Example:
        >>> m, s = logit_statistics([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
        >>> m.tolist(), s.round(4).tolist()
        ([2.0, 2.0], [1.0, 3.4641])
    """
    a = _as_logits(logits, "logits", "logit_statistics")
    if standardized:
        a = zscore(a)
    return a.mean(axis=1), a.std(axis=1, ddof=1)


def class_mean_logits(logits: Any, labels: Any, *, standardized: bool = True) -> np.ndarray:
    """``(C, C)`` matrix whose row ``c`` is the mean (standardized) logit vector of the samples of class ``c``.

    Rows of classes absent from ``labels`` are NaN.

    Example:
        >>> m = class_mean_logits([[2.0, 0.0], [4.0, 0.0], [0.0, 1.0]], [0, 0, 1], standardized=False)
        >>> m.tolist()
        [[3.0, 0.0], [0.0, 1.0]]
    """
    a = _as_logits(logits, "logits", "class_mean_logits")
    y = _as_labels(labels, a.shape[0], a.shape[1], "class_mean_logits")
    if standardized:
        a = zscore(a)
    c = a.shape[1]
    sums = np.zeros((c, c))
    np.add.at(sums, y, a)
    counts = np.bincount(y, minlength=c).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def class_correlation(logits: Any, *, standardized: bool = True) -> np.ndarray:
    """``(C, C)`` Pearson correlation between the classes' (standardized) logits over the samples.

    A class whose logit is constant over the samples has zero correlation with every other
    class (and 1 with itself).

    Example:
        >>> r = class_correlation([[1.0, 2.0, 0.0], [2.0, 4.0, 1.0], [3.0, 6.0, 0.0]], standardized=False)
        >>> r.round(3).tolist()
        [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    a = _as_logits(logits, "logits", "class_correlation")
    if standardized:
        a = zscore(a)
    centered = a - a.mean(axis=0)
    norm = np.sqrt((centered**2).sum(axis=0))
    safe = np.where(norm > 1e-12, norm, 1.0)
    r = (centered.T @ centered) / np.outer(safe, safe)
    r[norm <= 1e-12, :] = 0.0
    r[:, norm <= 1e-12] = 0.0
    np.fill_diagonal(r, 1.0)
    return np.clip(r, -1.0, 1.0)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (one JSON object per epoch; blank lines skipped).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line is not a JSON object (the line number is given).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_metrics: {str(path)!r} does not exist (a run directory holds metrics.jsonl)")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"read_metrics: {str(path)!r} line {number} is not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"read_metrics: {str(path)!r} line {number} is not a JSON object")
        records.append(record)
    return records


# ---------------------------------------------------------------------------------- figures
def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _save(fig, path: str | Path) -> Path:
    """Write a figure atomically (temporary file in the same directory, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, format="png", dpi=_DPI)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _students(students: Mapping[str, Any] | Any, fn: str) -> dict[str, np.ndarray]:
    if not isinstance(students, Mapping):
        students = {"student": students}
    if not students:
        raise ValueError(f"{fn}: argument 'students' must name at least one student")
    return {str(k): _as_logits(v, f"students[{k!r}]", fn) for k, v in students.items()}


def _subsample(n: int, k: int) -> np.ndarray:
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=k, replace=False))


def plot_logit_stats(teacher: Any | None, students: Mapping[str, Any] | Any, path: str | Path, *,
                     title: str | None = None, max_points: int = 3000, teacher_label: str = "teacher") -> Path:
    """Scatter of per-sample logit mean (x) against standard deviation (y), raw and standardized.

    Args:
        teacher: ``(N, C)`` teacher logits, or None for a network without a teacher.
        students: ``(N, C)`` logits, or a mapping ``{label: logits}`` to compare several
            students (e.g. ``{"KD": ..., "KD+LS": ...}``).
        path: the PNG file to write.
        title: figure title.
        max_points: at most this many samples are drawn per network (a fixed random subset).
        teacher_label: the teacher's name in the legend.

    Returns:
        ``path``.
    """
    studs = _students(students, "plot_logit_stats")
    nets: list[tuple[str, np.ndarray, str, str]] = []
    if teacher is not None:
        nets.append((teacher_label, _as_logits(teacher, "teacher", "plot_logit_stats"), _TEACHER_COLOR, "s"))
    nets += [(k, v, _COLORS[i % len(_COLORS)], "o") for i, (k, v) in enumerate(studs.items())]
    fig = _figure(12.5, 5.2)
    axes = fig.subplots(1, 2, width_ratios=[1.7, 1.0])
    for ax, std_flag, name in ((axes[0], False, "raw logits"), (axes[1], True, "standardized logits  Z(x)")):
        for label, logits, color, marker in nets:
            mean, std = logit_statistics(logits, standardized=std_flag)
            keep = _subsample(len(mean), max_points)
            ax.scatter(mean[keep], std[keep], s=9, alpha=0.35, color=color, marker=marker, linewidths=0,
                       label=f"{label}: mean {mean.mean():+.2f}, std {std.mean():.2f}")
            ax.scatter([mean.mean()], [std.mean()], s=130 if std_flag else 120, color=color, marker=marker,
                       edgecolors="black", linewidths=1.2, zorder=5, alpha=0.8 if std_flag else 1.0)
        ax.set_xlabel("per-sample mean of the logits")
        ax.set_ylabel("per-sample standard deviation of the logits")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        leg = ax.legend(loc="best", fontsize=9, markerscale=2.0, title="network: average over samples",
                        title_fontsize=9)
        for handle in leg.legend_handles:
            handle.set_alpha(1.0)
    axes[1].set_xlim(-1.0, 1.0)
    axes[1].set_ylim(0.0, 2.0)
    axes[1].annotate("every sample of every network:\nmean 0, standard deviation 1;\nonly the shape of the\n"
                     "logits is left to compare", xy=(0.0, 1.0), xytext=(-0.92, 1.45), fontsize=10,
                     arrowprops={"arrowstyle": "->", "color": "0.2", "shrinkB": 8})
    fig.suptitle(title or "Per-sample logit statistics (large markers: averages)", fontsize=13)
    return _save(fig, path)


def _heatmap(ax, matrix: np.ndarray, *, vmin: float, vmax: float, cmap: str, title: str, xlabel: str,
             ylabel: str, class_names: Sequence[str] | None, annotate: bool):
    image = ax.imshow(matrix, vmin=vmin, vmax=vmax, cmap=cmap, interpolation="nearest")
    n = matrix.shape[0]
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if n <= 20:
        ticks = np.arange(n)
        names = list(class_names) if class_names is not None and len(class_names) == n else [str(i) for i in ticks]
        ax.set_xticks(ticks, names, rotation=60 if max(len(s) for s in names) > 2 else 0, ha="right"
                      if max(len(s) for s in names) > 2 else "center", fontsize=8)
        ax.set_yticks(ticks, names, fontsize=8)
    if annotate and n <= 12:
        mid = (vmin + vmax) / 2
        for i in range(n):
            for j in range(n):
                v = matrix[i, j]
                if np.isfinite(v):
                    dark = v > mid if cmap != "RdBu_r" else abs(v) > 0.6 * max(abs(vmin), abs(vmax))
                    ax.text(j, i, f"{v:.1f}" if abs(v) >= 0.95 or cmap == "RdBu_r" else f"{v:.2f}",
                            ha="center", va="center", fontsize=6.5, color="white" if dark else "black")
    return image


def plot_class_logits(teacher: Any | None, students: Mapping[str, Any] | Any, labels: Any, path: str | Path, *,
                      class_names: Sequence[str] | None = None, title: str | None = None,
                      teacher_label: str = "teacher") -> Path:
    """Heatmaps of the class-averaged standardized logits (:func:`class_mean_logits`), side by side.

    Args:
        teacher: ``(N, C)`` teacher logits or None.
        students: ``(N, C)`` logits or ``{label: logits}``.
        labels: ``(N,)`` true classes.
        path: the PNG file to write.
        class_names: names for the axes (used when there are at most 20 classes).
        title: figure title.
        teacher_label: the teacher panel's title.
    """
    studs = _students(students, "plot_class_logits")
    mats: list[tuple[str, np.ndarray]] = []
    if teacher is not None:
        mats.append((teacher_label, class_mean_logits(teacher, labels)))
    mats += [(k, class_mean_logits(v, labels)) for k, v in studs.items()]
    bound = max(float(np.nanmax(np.abs(m))) for _, m in mats) or 1.0
    fig = _figure(4.3 * len(mats) + 1.2, 4.9)
    axes = np.atleast_1d(fig.subplots(1, len(mats)))
    image = None
    for ax, (name, m) in zip(axes, mats):
        image = _heatmap(ax, m, vmin=-bound, vmax=bound, cmap="RdBu_r", title=name, xlabel="logit of class",
                         ylabel="true class", class_names=class_names, annotate=True)
    fig.colorbar(image, ax=list(axes), shrink=0.85, label="mean standardized logit")
    fig.suptitle(title or "Class-averaged standardized logits (row: true class, column: logit)", fontsize=13)
    return _save(fig, path)


def plot_correlation_difference(teacher: Any, students: Mapping[str, Any] | Any, path: str | Path, *,
                                class_names: Sequence[str] | None = None, title: str | None = None) -> Path:
    """Heatmap of :math:`|R^s - R^t|` (:func:`class_correlation` of standardized logits) per student.

    All panels share one colour scale; each title gives the mean absolute difference over
    the off-diagonal entries.
    """
    t = class_correlation(_as_logits(teacher, "teacher", "plot_correlation_difference"))
    studs = _students(students, "plot_correlation_difference")
    diffs = {k: np.abs(class_correlation(v) - t) for k, v in studs.items()}
    for k, d in diffs.items():
        if d.shape != t.shape:
            raise ValueError(f"plot_correlation_difference: students[{k!r}] has {d.shape[0]} classes, "
                             f"the teacher {t.shape[0]}")
    vmax = max(float(d.max()) for d in diffs.values())
    vmax = max(vmax, 0.05)
    fig = _figure(4.6 * len(diffs) + 1.3, 4.9)
    axes = np.atleast_1d(fig.subplots(1, len(diffs)))
    off = ~np.eye(t.shape[0], dtype=bool)
    image = None
    for ax, (name, d) in zip(axes, diffs.items()):
        image = _heatmap(ax, d, vmin=0.0, vmax=vmax, cmap="magma_r", title=f"{name}: mean {d[off].mean():.3f}, "
                         f"max {d.max():.3f}", xlabel="class", ylabel="class", class_names=class_names,
                         annotate=False)
    fig.colorbar(image, ax=list(axes), shrink=0.85, label="|student - teacher| correlation")
    fig.suptitle(title or "Difference of class-correlation matrices, student vs teacher\n"
                 "(standardized logits; lower is closer)", fontsize=12)
    return _save(fig, path)


def _epoch_axis(ax, epochs: Sequence[int]) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(set(epochs)) == 1:  # a single epoch: show it in the middle of a unit-wide axis
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)


def _plot_losses(ax, records: list[dict[str, Any]]) -> None:
    epochs = [r["epoch"] for r in records]
    terms = sorted({k for r in records for k in r if k.startswith("train_loss_")})
    if len(terms) > 1:
        ax.plot(epochs, [r.get("train_loss", np.nan) for r in records], color="black", lw=2.2, marker=".",
                label="train: total")
    for i, key in enumerate(terms):
        name = key[len("train_loss_"):]
        ax.plot(epochs, [r.get(key, np.nan) for r in records], color=_COLORS[i % len(_COLORS)], lw=1.6,
                marker=".", label=f"train: {name}" + (" (= total)" if len(terms) == 1 else ""))
    if any("test_loss" in r for r in records):
        ax.plot(epochs, [r.get("test_loss", np.nan) for r in records], color="0.45", lw=1.6, ls="--", marker=".",
                label="test: cross-entropy")
    positive = [v for r in records for k, v in r.items() if (k.startswith("train_loss") or k == "test_loss")
                and isinstance(v, (int, float)) and v > 0]
    if positive and max(positive) / min(positive) > 50:
        ax.set_yscale("log")
    _epoch_axis(ax, epochs)
    ax.set_ylabel("loss (terms as weighted in the total)")
    ax.set_title("losses")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _plot_top1(ax, records: list[dict[str, Any]]) -> None:
    epochs = [r["epoch"] for r in records]
    if any("train_top1" in r for r in records):
        ax.plot(epochs, [r.get("train_top1", np.nan) for r in records], color="tab:blue", lw=1.6, marker=".",
                label="train (augmented, running)")
    test = [r.get("test_top1", np.nan) for r in records]
    ax.plot(epochs, test, color="tab:red", lw=2.0, marker=".", label="test")
    if np.isfinite(test).any():
        b = int(np.nanargmax(test))
        ax.scatter([epochs[b]], [test[b]], s=90, facecolors="none", edgecolors="tab:red", linewidths=1.5, zorder=5,
                   label=f"best test: {test[b]:.2f} (epoch {epochs[b]})")
        if len(test) > 1:
            ax.annotate(f"last: {test[-1]:.2f}", xy=(epochs[-1], test[-1]), xytext=(-8, -16),
                        textcoords="offset points", ha="right", fontsize=9, color="tab:red")
    _epoch_axis(ax, epochs)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("top-1 accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def _plot_temperature(ax, records: list[dict[str, Any]]) -> None:
    epochs = [r["epoch"] for r in records]
    ax.plot(epochs, [r.get("temperature", np.nan) for r in records], color="tab:purple", lw=2.0, marker=".",
            label="temperature T")
    _epoch_axis(ax, epochs)
    ax.set_ylabel("learned temperature T")
    ax.set_title("CTKD temperature")
    ax.grid(alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    if any("ctkd_lambda" in r for r in records):
        twin = ax.twinx()
        twin.plot(epochs, [r.get("ctkd_lambda", np.nan) for r in records], color="tab:gray", lw=1.4, ls="--",
                  marker="x", label="gradient-reversal factor (lambda)")
        twin.set_ylabel("lambda")
        h2, n2 = twin.get_legend_handles_labels()
        handles, names = handles + h2, names + n2
    ax.legend(handles, names, fontsize=8, loc="best")


def plot_training_curves(records: Sequence[Mapping[str, Any]], path: str | Path, *, title: str | None = None) -> Path:
    """Loss terms, top-1 and (CTKD) temperature against the epoch, from ``metrics.jsonl`` records.

    Args:
        records: one mapping per epoch with at least ``epoch`` and ``test_top1`` (the keys
            ``lskd-train`` writes: ``train_loss``, ``train_loss_<term>``, ``test_loss``,
            ``train_top1``, ``temperature``, ``ctkd_lambda`` are drawn when present).
        path: the PNG file to write.
        title: figure title.
    """
    records = [dict(r) for r in records]
    if not records:
        raise ValueError("plot_training_curves: argument 'records' is empty (no finished epoch yet)")
    for i, r in enumerate(records):
        if "epoch" not in r or "test_top1" not in r:
            raise ValueError(f"plot_training_curves: record {i} lacks 'epoch' or 'test_top1'; got keys {sorted(r)}")
    has_t = any("temperature" in r for r in records)
    fig = _figure(15.0 if has_t else 11.0, 4.6)
    axes = fig.subplots(1, 3 if has_t else 2)
    _plot_losses(axes[0], records)
    _plot_top1(axes[1], records)
    if has_t:
        _plot_temperature(axes[2], records)
    fig.suptitle(title or "Training curves", fontsize=13)
    return _save(fig, path)


def plot_accuracy_comparison(runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path, *,
                             title: str | None = None, reference: Mapping[str, float] | None = None,
                             styles: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Test top-1 against the epoch for several runs on one axis (e.g. student alone, KD, KD+LS).

    Args:
        runs: ``{label: metrics records}`` (each record needs ``epoch`` and ``test_top1``).
        path: the PNG file to write.
        title: figure title.
        reference: ``{label: accuracy}`` drawn as horizontal lines (e.g. the teacher's).
        styles: ``{label: keyword arguments of Axes.plot}`` overriding a run's colour, line
            style, ... (e.g. ``{"KD+LS": {"color": "tab:blue", "ls": "--"}}``).
    """
    if not runs:
        raise ValueError("plot_accuracy_comparison: argument 'runs' is empty")
    fig = _figure(8.5, 5.0)
    ax = fig.subplots()
    for label, value in (reference or {}).items():
        ax.axhline(value, color=_TEACHER_COLOR, ls="--", lw=1.4, label=f"{label}: {value:.2f}")
    for i, (label, records) in enumerate(runs.items()):
        epochs = [r["epoch"] for r in records]
        test = [r["test_top1"] for r in records]
        style = {"color": _COLORS[i % len(_COLORS)], "lw": 1.8, "marker": ".", **dict((styles or {}).get(label, {}))}
        ax.plot(epochs, test, label=f"{label}: best {max(test):.2f}, last {test[-1]:.2f}", **style)
    _epoch_axis(ax, sorted({r["epoch"] for records in runs.values() for r in records}))
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="lower right")
    ax.set_title(title or "Test top-1 accuracy per epoch")
    return _save(fig, path)


# ------------------------------------------------------------------------------------- runs
@dataclass
class RunLogits:
    """Logits of a run's networks on the evaluation split of its dataset.

    Attributes:
        student: ``(N, C)`` logits of the run's network (``student.pt`` or ``student.safetensors``).
        teacher: ``(N, C)`` logits of its teacher, or None for a run without a teacher.
        labels: ``(N,)`` true classes.
        class_names: names of the classes.
        dataset: dataset key.
        student_arch: architecture of the run's network.
        teacher_arch: architecture of the teacher, or None.
    """

    student: np.ndarray
    teacher: np.ndarray | None
    labels: np.ndarray
    class_names: list[str]
    dataset: str
    student_arch: str
    teacher_arch: str | None


def _read_config(run_dir: Path) -> dict[str, Any]:
    summary = run_dir / "summary.json"
    if summary.is_file():
        return json.loads(summary.read_text(encoding="utf-8"))["config"]
    last = run_dir / "last.pt"
    if last.is_file():
        from .checkpoint import load_checkpoint

        return load_checkpoint(last, what="run state")["config"]
    raise FileNotFoundError(f"{str(run_dir)!r} holds neither summary.json nor last.pt: not a lskd-train run directory")


def _load_network(path: Path, *, arch: str | None, dataset: str, num_classes: int, what: str):
    from .checkpoint import load_weights, read_checkpoint
    from .models import create_model

    loaded = read_checkpoint(path, what=what)  # the one reader: .pt/.pth or .safetensors, SHA-256 checked
    if arch is None:
        arch = loaded.meta.get("arch")
        if not arch:
            raise ValueError(f"{what} {str(path)!r} does not name its architecture; it must be a student.pt, "
                             "student.safetensors, best.pt or last.pt written by lskd-train")
    net = create_model(arch, dataset=dataset, num_classes=num_classes)
    load_weights(net, loaded, arch=arch, what=what)
    return net.eval(), arch


STUDENT_FILES = ("student.pt", "student.safetensors")
"""The files of a run that hold its final network, in the order they are looked for."""


def _student_file(run_dir: Path) -> Path:
    for name in STUDENT_FILES:
        if (run_dir / name).is_file():
            return run_dir / name
    raise FileNotFoundError(f"{str(run_dir / STUDENT_FILES[0])!r} does not exist (nor {STUDENT_FILES[1]}): "
                            "the run has not finished")


def run_logits(run_dir: str | Path, *, data_root: str | Path | None = None, teacher: str | Path | None = None,
               max_samples: int | None = 10000, device: str = "cpu", batch_size: int = 500) -> RunLogits:
    """Evaluate a run's network (and its teacher) on the evaluation split of its dataset.

    The network is read from ``student.pt``, or from ``student.safetensors`` when the run
    directory holds only that.

    Args:
        run_dir: a ``lskd-train`` output directory.
        data_root: dataset directory (default: the recipe's ``data.root``, else the dataset's default).
        teacher: a teacher checkpoint written by ``lskd-train`` (default: the recipe's
            ``teacher.checkpoint``; a run without a teacher gets ``teacher=None``).
        max_samples: evaluate at most this many samples (a fixed random subset), None for all.
        device: torch device string.
        batch_size: evaluation batch size.

    Raises:
        FileNotFoundError: the run directory, the student file, a checkpoint or the data is missing.
        CheckpointError: a checkpoint is corrupt (SHA-256 mismatch), unreadable, refused by the
            safe loader or has malformed metadata (missing or unfit files are the errors above).
    """
    import torch
    from torch.utils.data import DataLoader, Subset

    from .data import build_datasets

    run_dir = Path(run_dir)
    cfg = _read_config(run_dir)
    dataset = cfg["dataset"]
    root = data_root if data_root is not None else cfg["data"].get("root")
    bundle = build_datasets(dataset, root)
    test = bundle.test
    if max_samples is not None and len(test) > max_samples:
        test = Subset(test, _subsample(len(test), int(max_samples)).tolist())
    student_path = _student_file(run_dir)
    student, student_arch = _load_network(student_path, arch=cfg["student"]["arch"], dataset=dataset,
                                          num_classes=bundle.num_classes, what="student checkpoint")
    teacher_net, teacher_arch = None, None
    teacher_path = teacher if teacher is not None else (cfg.get("teacher") or {}).get("checkpoint")
    if teacher_path:
        teacher_net, teacher_arch = _load_network(
            Path(teacher_path), arch=None if teacher is not None else cfg["teacher"]["arch"], dataset=dataset,
            num_classes=bundle.num_classes, what="teacher checkpoint")
    loader = DataLoader(test, batch_size=batch_size, shuffle=False, num_workers=0)
    dev = torch.device(device)
    outs: dict[str, list[np.ndarray]] = {"s": [], "t": [], "y": []}
    student.to(dev)
    if teacher_net is not None:
        teacher_net.to(dev)
    with torch.inference_mode():
        for images, labels in loader:
            images = images.to(dev)
            outs["s"].append(student(images).float().cpu().numpy())
            if teacher_net is not None:
                outs["t"].append(teacher_net(images).float().cpu().numpy())
            outs["y"].append(labels.numpy())
    return RunLogits(
        student=np.concatenate(outs["s"]).astype(np.float64),
        teacher=np.concatenate(outs["t"]).astype(np.float64) if outs["t"] else None,
        labels=np.concatenate(outs["y"]).astype(np.int64),
        class_names=[str(c) for c in bundle.classes],
        dataset=dataset, student_arch=student_arch, teacher_arch=teacher_arch,
    )


def _label(arch: str | None, role: str) -> str:
    return f"{role} ({arch})" if arch else role


def plot_run(run_dir: str | Path, *, output: str | Path | None = None, data_root: str | Path | None = None,
             teacher: str | Path | None = None, max_samples: int | None = 10000, device: str = "cpu",
             log: Callable[[str], None] | None = print) -> list[Path]:
    """Write the figures of one run; return the paths written.

    The curves need only ``metrics.jsonl``; the logit figures need ``student.pt`` (or
    ``student.safetensors``), the data and (for the comparisons) the teacher. What cannot be
    drawn is reported through ``log`` with the reason, and the rest is still written; a
    checkpoint that is corrupt, unreadable or refused by the safe loader is an error.

    Args:
        run_dir: a ``lskd-train`` output directory.
        output: where the PNGs go (default ``RUN_DIR/plots``).
        data_root: dataset directory (default: the recipe's).
        teacher: teacher checkpoint (default: the recipe's ``teacher.checkpoint``).
        max_samples: evaluation samples used for the logit figures (None: all).
        device: torch device for the logits.
        log: where progress and notes go (None: silent).

    Raises:
        FileNotFoundError: ``run_dir`` is not a directory or holds no ``metrics.jsonl``.
        CheckpointError: the student or teacher checkpoint is corrupt (SHA-256 mismatch),
            unreadable, unsafe, or has malformed metadata.
    """
    say = log or (lambda _msg: None)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"plot_run: run directory {str(run_dir)!r} does not exist")
    out = Path(output) if output is not None else run_dir / "plots"
    written: list[Path] = []
    name = run_dir.name
    try:
        name = _read_config(run_dir).get("name") or name
    except (FileNotFoundError, KeyError, ValueError):
        pass
    records = read_metrics(run_dir / "metrics.jsonl")
    if records:
        written.append(plot_training_curves(records, out / "curves.png", title=f"Training curves: {name}"))
    else:
        say(f"lskd-plot: {run_dir / 'metrics.jsonl'} has no finished epoch yet; no curves")
    try:
        logits = run_logits(run_dir, data_root=data_root, teacher=teacher, max_samples=max_samples, device=device)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        if getattr(exc, "kind", None) in ("corrupt", "unsafe", "unreadable", "metadata"):
            raise  # a damaged or refused checkpoint (CheckpointError) is an error, not a figure to skip
        say(f"lskd-plot: no logit figures for {run_dir}: {exc}")
        logits = None
    if logits is not None:
        n = len(logits.labels)
        tlabel = _label(logits.teacher_arch, "teacher")
        stud = {_label(logits.student_arch, "student" if logits.teacher is not None else "network"): logits.student}
        written.append(plot_logit_stats(logits.teacher, stud, out / "logit_stats.png",
                                        title=f"Per-sample logit statistics on {n} test images\n{name}",
                                        teacher_label=tlabel))
        written.append(plot_class_logits(
            logits.teacher, stud, logits.labels, out / "class_logits.png", class_names=logits.class_names,
            title=f"Class-averaged standardized logits on {n} test images (row: true class)\n{name}",
            teacher_label=tlabel))
        if logits.teacher is not None:
            written.append(plot_correlation_difference(
                logits.teacher, stud, out / "correlation_difference.png", class_names=logits.class_names,
                title=f"|class correlation of the student - of the {tlabel}|\nstandardized logits, {n} test "
                      f"images: {name}"))
        else:
            say(f"lskd-plot: {name} has no teacher (pass --teacher to compare with one); "
                "no correlation-difference figure")
    for p in written:
        say(f"wrote {p}")
    return written


def plot_after_training(run_dir: str | Path, *, device: str = "cpu", max_samples: int | None = 5000,
                        log: Callable[[str], None] | None = print) -> list[Path]:
    """:func:`plot_run` for the end of a training run: never raises, so a finished run stays finished.

    A failure (matplotlib missing, an unreadable file, ...) is reported through ``log`` as one
    line, and whatever was drawn before it is kept.

    Args:
        run_dir: the run directory that was just written.
        device: torch device of the run (the logits are computed there).
        max_samples: evaluation samples for the logit figures.
        log: where the notes go.

    Returns:
        The PNG files written (``RUN_DIR/plots/*.png``).
    """
    say = log or (lambda _msg: None)
    try:
        return plot_run(run_dir, device=device, max_samples=max_samples, log=say)
    except Exception as exc:  # noqa: BLE001 -- plotting must not turn a finished run into a failure
        say(f"lskd-plot: figures skipped ({type(exc).__name__}: {exc}); draw them later with `lskd-plot {run_dir}`")
        return sorted((Path(run_dir) / "plots").glob("*.png"))


# -------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """The ``lskd-plot`` argument parser."""
    from .. import __version__

    p = argparse.ArgumentParser(
        prog="lskd-plot",
        allow_abbrev=False,
        description="Draw the figures of a lskd-train run: per-sample logit mean/std (raw and standardized), "
        "class-averaged standardized logits, the teacher-student difference of class-correlation matrices, "
        "and the training curves.",
        epilog="Example: lskd-plot runs/demo/kd_ls   (writes runs/demo/kd_ls/plots/*.png). Exit status: 0 when "
        "figures were written, 2 for a usage or setup error (one line says what to fix) or when nothing could "
        "be drawn.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a lskd-train output directory")
    p.add_argument("-o", "--output", metavar="DIR", help="where the PNGs go (default: RUN_DIR/plots)")
    p.add_argument("--data-root", metavar="DIR", help="dataset directory (default: the run's)")
    p.add_argument("--teacher", metavar="PATH", help="teacher checkpoint written by lskd-train (default: the run's)")
    p.add_argument("--max-samples", type=int, default=10000, metavar="N",
                   help="evaluation images used for the logit figures (default 10000; 0 for all)")
    p.add_argument("--device", default="cpu", help="torch device for the logits (default cpu)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lskd-plot``; returns the exit status (2 for a usage or setup error, or when
    nothing could be drawn)."""
    from ._errors import TrainingError, missing_dependency, output_dir_problem

    args = build_parser().parse_args(argv)

    def error(message: str) -> int:
        print(f"lskd-plot: error: {message}", file=sys.stderr)
        return 2

    if args.max_samples < 0:
        return error("--max-samples must be >= 0")
    out = Path(args.output) if args.output is not None else Path(args.run_dir) / "plots"
    if Path(args.run_dir).is_dir():
        problem = output_dir_problem(out, "figure directory")
        if problem:
            return error(f"{problem}; choose another --output")
    try:
        import matplotlib  # noqa: F401  -- fail early, with the install hint

        written = plot_run(args.run_dir, output=args.output, data_root=args.data_root, teacher=args.teacher,
                           max_samples=args.max_samples or None, device=args.device)
    except ImportError as exc:  # a core-only install: matplotlib, torch are the [train] extra
        return error(missing_dependency(exc, "train"))
    except (FileNotFoundError, ValueError, TrainingError) as exc:
        return error(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    except OSError as exc:
        where = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
        return error(f"cannot write{where}: {exc.strerror or exc}")
    return 0 if written else 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
