"""Fashion-MNIST study: KD, DKD, MLKD and CTKD with and without logit standardization, 3 seeds, on 2 CPU cores.

Run ``python benchmarks/fashion_mnist.py`` (``make study-fmnist``). It trains, with the shipped
``fashion_mnist/...`` recipes through the library's engine:

1. the teacher (``fashion_mnist/teacher``, ``resnet_fm``, all 60000 training images), once,
   seed 0, shared by every student -- the question is how the students use one given teacher,
   and three teachers would cost three times as much;
2. for every seed: the student trained alone (``fashion_mnist/student``, ``cnn_fm_small``)
   and the eleven distillations of :data:`METHODS`: KD, DKD, MLKD and CTKD; each of the first
   three with logit standardization (LS) as the paper publishes it (``kd_ls`` ...: LS with the
   paper's LS temperature and weights) and with LS switched on and nothing else changed
   (``kd_ls_matched`` ...); CTKD+LS (``ctkd_ls``) differs from CTKD by LS alone.

Budget (defaults, the recipes' own, chosen to fit 60 minutes on 2 CPU cores): the teacher trains
``--teacher-epochs 4`` epochs; students train ``--epochs 3`` epochs on the recipes' fixed
20000-image subset of the training set (``--train-subset`` changes it); every evaluation uses
the complete 10000-image test set. All other settings are the recipes' own (SGD 0.05, momentum
0.9, weight decay 5e-4, batch 128, cosine schedule, the paper's CIFAR-100 loss weights).

Parallelism: the student runs go to ``--jobs`` worker processes (default 2, one per core),
each with one PyTorch thread and data loading in-process; the teacher trains first, in this
process, with ``--teacher-threads`` threads (default: ``--jobs``). Finished runs are reused
when the script is started again with the same settings (``summary.json`` with an identical
configuration), interrupted ones are resumed; ``--fresh`` starts over.

At the end the table of mean ± sample standard deviation over the seeds of the best-epoch
and last-epoch test top-1 is printed and written, with the exact command, the settings, the
machine, the wall time and the comparisons it supports, to ``docs/fashion_mnist.md``
(``--doc``; ``--no-doc`` to skip) and ``OUTPUT/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(REPO))

METHODS = ["kd", "kd_ls", "kd_ls_matched", "dkd", "dkd_ls", "dkd_ls_matched", "mlkd", "mlkd_ls", "mlkd_ls_matched",
           "ctkd", "ctkd_ls"]
"""Distillation recipes ``fashion_mnist/<name>``, in table order: each base method, then with LS at the
paper's LS settings (``_ls``), then with LS switched on and nothing else changed (``_ls_matched``; CTKD's
two recipes already differ by the standardization alone)."""

LABELS = {"teacher": "teacher", "student": "student alone", "kd": "KD", "kd_ls": "KD+LS",
          "kd_ls_matched": "KD+LS, KD's T and weights", "dkd": "DKD", "dkd_ls": "DKD+LS",
          "dkd_ls_matched": "DKD+LS, DKD's T and weights", "mlkd": "MLKD", "mlkd_ls": "MLKD+LS",
          "mlkd_ls_matched": "MLKD+LS, MLKD's T and weights", "ctkd": "CTKD", "ctkd_ls": "CTKD+LS"}

CHANCE_LEVEL = 20.0
"""A best top-1 (%) at or below this is reported as a run that did not learn (chance is 10 %)."""

# relative cost of a run (for ordering the queue: longest first balances the workers)
_COST = {"student": 1.0, "mlkd": 5.0, "mlkd_ls": 5.0, "mlkd_ls_matched": 5.0}


def base_of(key: str) -> str | None:
    """The method a recipe with logit standardization is compared with (``None`` for a base method).

    Example:
        >>> base_of("dkd_ls"), base_of("mlkd_ls_matched"), base_of("kd")
        ('dkd', 'mlkd', None)
    """
    return key.split("_ls")[0] if "_ls" in key else None


@dataclass
class Task:
    """One training run of the study."""

    key: str  # "teacher", "student" or a METHODS name
    seed: int
    overrides: list[str]
    output: Path
    threads: int = 1
    cost: float = field(default=2.5)

    @property
    def recipe(self) -> str:
        return f"fashion_mnist/{self.key}"

    @property
    def name(self) -> str:
        return f"{self.key}/seed{self.seed}"


# ------------------------------------------------------------------------------ statistics
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value).

    Example:
        >>> mean_std([1.0, 2.0, 3.0])
        (2.0, 1.0)
        >>> mean_std([5.0])
        (5.0, 0.0)
    """
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std: no values")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt_mean_std(values: Sequence[float]) -> str:
    """``"mean ± std"`` with two decimals, or the single value.

    Example:
        >>> fmt_mean_std([90.0, 91.0, 92.5]), fmt_mean_std([88.123])
        ('91.17 ± 1.26', '88.12')
    """
    m, s = mean_std(values)
    return f"{m:.2f} ± {s:.2f}" if len(values) > 1 else f"{m:.2f}"


def fmt_difference(d: Sequence[float]) -> str:
    """Paired differences as ``"+mean ± std"`` (the sign always shown), or the single value.

    Example:
        >>> fmt_difference([1.0, 0.7, 1.3]), fmt_difference([-0.5])
        ('+1.00 ± 0.30', '-0.50')
    """
    m, s = mean_std(d)
    return f"{m:+.2f} ± {s:.2f}" if len(d) > 1 else f"{m:+.2f}"


def describe_signs(d: Sequence[float]) -> str:
    """How many paired differences are above, below and at zero; *consistent* when all share a sign.

    Example:
        >>> describe_signs([0.4, 1.2, -0.1]), describe_signs([-0.4, -1.2, -0.1])
        ('higher in 2 of 3 seeds, lower in 1; within noise', 'higher in 0 of 3 seeds, lower in 3; consistent')
    """
    hi, lo = sum(v > 0 for v in d), sum(v < 0 for v in d)
    eq = len(d) - hi - lo
    parts = [f"higher in {hi} of {len(d)} seeds"]
    if lo:
        parts.append(f"lower in {lo}")
    if eq:
        parts.append(f"equal in {eq}")
    verdict = "consistent" if (hi == len(d) or lo == len(d)) and len(d) > 1 else "within noise"
    return ", ".join(parts) + f"; {verdict}"


def data_overrides(data_root: str | None, test_subset: int | None) -> list[str]:
    """The ``--set`` overrides for another data directory and a smaller test set (none by default)."""
    ov = []
    if data_root:
        ov.append(f"data.root={json.dumps(str(Path(data_root).resolve()))}")
    if test_subset:
        ov.append(f"data.test_subset={test_subset}")
    return ov


def paired(results: dict[str, dict[int, dict[str, float]]], a: str, b: str, which: str) -> list[float]:
    """Per-seed differences ``a - b`` of the ``which`` (``"best"``/``"last"``) top-1, over the common seeds."""
    seeds = sorted(set(results.get(a, {})) & set(results.get(b, {})))
    return [results[a][s][which] - results[b][s][which] for s in seeds]


def build_table(results: dict[str, dict[int, dict[str, float]]]) -> str:
    """The Markdown table of the study.

    Args:
        results: ``{key: {seed: {"best": top1, "last": top1}}}`` for ``"teacher"``,
            ``"student"`` and the names in :data:`METHODS` (missing keys are skipped).

    Example:
        >>> r = {"student": {0: {"best": 85.0, "last": 84.0}, 1: {"best": 86.0, "last": 85.0}},
        ...      "kd": {0: {"best": 86.0, "last": 85.5}, 1: {"best": 87.0, "last": 86.5}},
        ...      "kd_ls": {0: {"best": 86.5, "last": 86.0}, 1: {"best": 87.0, "last": 86.0}}}
        >>> print(build_table(r))
        | network / method | seeds | best top-1 (%) | last top-1 (%) | LS - base, best (paired) | LS - base, last (paired) |
        |---|--:|--:|--:|--:|--:|
        | student alone | 2 | 85.50 ± 0.71 | 84.50 ± 0.71 |  |  |
        | KD | 2 | 86.50 ± 0.71 | 86.00 ± 0.71 |  |  |
        | KD+LS | 2 | 86.75 ± 0.35 | 86.00 ± 0.00 | +0.25 ± 0.35 | +0.00 ± 0.71 |
    """
    lines = ["| network / method | seeds | best top-1 (%) | last top-1 (%) | LS - base, best (paired) "
             "| LS - base, last (paired) |", "|---|--:|--:|--:|--:|--:|"]
    for key in ["teacher", "student", *METHODS]:
        runs = results.get(key)
        if not runs:
            continue
        seeds = sorted(runs)
        best = [runs[s]["best"] for s in seeds]
        last = [runs[s]["last"] for s in seeds]
        delta = ["", ""]
        base = base_of(key)
        if base and results.get(base):
            for i, which in enumerate(("best", "last")):
                d = paired(results, key, base, which)
                if d:
                    delta[i] = fmt_difference(d)
        lines.append(f"| {LABELS.get(key, key)} | {len(seeds)} | {fmt_mean_std(best)} | {fmt_mean_std(last)} | "
                     f"{delta[0]} | {delta[1]} |")
    return "\n".join(lines)


def findings(results: dict[str, dict[int, dict[str, float]]]) -> list[str]:
    """Plain statements the numbers support, whatever they are (no claim beyond them).

    A difference is called *consistent* when it has the same sign for every common seed
    and *within noise* otherwise; with three seeds nothing stronger can be said.

    Example:
        >>> r = {"student": {0: {"best": 85.0, "last": 84.0}, 1: {"best": 86.0, "last": 85.0}},
        ...      "kd": {0: {"best": 86.0, "last": 85.5}, 1: {"best": 87.0, "last": 86.5}},
        ...      "kd_ls": {0: {"best": 86.5, "last": 86.0}, 1: {"best": 87.0, "last": 86.0}}}
        >>> for line in findings(r): print(line)
        KD+LS vs KD: best-epoch top-1 +0.25 (higher in 1 of 2 seeds, equal in 1; within noise), last-epoch +0.00 (higher in 1 of 2 seeds, lower in 1; within noise).
        Logit standardization with the paper's LS settings raised the mean best-epoch top-1 for 1 of 1 method and the mean last-epoch top-1 for 0 of 1.
        Against the student trained alone (best epoch): KD +1.00, KD+LS +1.25.
    """
    out: list[str] = []
    for key in ["student", *METHODS]:
        runs = results.get(key) or {}
        low = sorted(s for s, v in runs.items() if v["best"] <= CHANCE_LEVEL)
        if low:
            out.append(f"{LABELS[key]} stayed at or below {CHANCE_LEVEL:.0f} % top-1 (10 classes: chance is 10 %) for "
                       f"seed{'s' if len(low) > 1 else ''} {', '.join(map(str, low))}: the training diverged or "
                       "did not learn; see that run's metrics.jsonl.")
    pairs = [m for m in METHODS if base_of(m) and results.get(m) and results.get(base_of(m))]

    ups = {kind: {"best": 0, "last": 0, "n": 0} for kind in ("paper", "matched")}
    for ls in pairs:
        base = base_of(ls)
        kind = ups["matched" if ls.endswith("_matched") else "paper"]
        kind["n"] += 1
        text = []
        for which in ("best", "last"):
            d = paired(results, ls, base, which)
            m = statistics.fmean(d)
            kind[which] += m > 0
            text.append(f"{which}-epoch {'' if which == 'last' else 'top-1 '}{m:+.2f} ({describe_signs(d)})")
        out.append(f"{LABELS[ls]} vs {LABELS[base]}: " + ", ".join(text) + ".")
    for name, what in (("paper", "with the paper's LS settings"),
                       ("matched", "switched on with nothing else changed")):
        k = ups[name]
        if k["n"]:
            out.append(f"Logit standardization {what} raised the mean best-epoch top-1 for {k['best']} of {k['n']} "
                       f"method{'s' if k['n'] > 1 else ''} and the mean last-epoch top-1 for {k['last']} of {k['n']}.")
    if results.get("student"):
        s = mean_std([v["best"] for v in results["student"].values()])[0]
        gains = [f"{LABELS[m]} {mean_std([v['best'] for v in results[m].values()])[0] - s:+.2f}"
                 for m in METHODS if results.get(m)]
        if gains:
            out.append("Against the student trained alone (best epoch): " + ", ".join(gains) + ".")
    if results.get("teacher") and results.get("student"):
        t = mean_std([v["best"] for v in results["teacher"].values()])[0]
        top = max((m for m in ["student", *METHODS] if results.get(m)),
                  key=lambda m: mean_std([v["best"] for v in results[m].values()])[0])
        tb = mean_std([v["best"] for v in results[top].values()])[0]
        gap = f"stays {t - tb:.2f} points below" if tb <= t else f"exceeds by {tb - t:.2f} points"
        out.append(f"The best student ({LABELS[top]}, {tb:.2f}) {gap} the teacher ({t:.2f}).")
    return out


# ------------------------------------------------------------------------------------ page
def machine_info() -> dict[str, Any]:
    """CPU model, cores available to this process, memory, load average, versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {"cpu": cpu, "cores": cores, "memory_gib": mem, "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform()}


def _figure_blocks(figures: dict[str, str]) -> list[str]:
    if not figures:
        return []
    lines = ["## Figures", ""]
    for name, rel in figures.items():
        caption = _CAPTIONS.get(name, name)
        lines += [f"```{{figure}} {rel}", f":alt: {caption.split(':')[0]}", ":width: 100%", "", caption, "```", ""]
    return lines


def render_page(*, results: dict[str, dict[int, dict[str, float]]], command: str, settings: dict[str, Any],
                machine: dict[str, Any], timing: dict[str, Any], figures: dict[str, str] | None = None) -> str:
    """The Markdown page ``docs/fashion_mnist.md``; ``figures`` maps figure names (see
    :func:`draw_figures`) to paths relative to the page."""
    table = build_table(results)
    notes = findings(results)
    load = timing.get("load_average", {})
    load_text = ", ".join(f"{k}: {v[0]:.1f} / {v[1]:.1f} / {v[2]:.1f}" for k, v in load.items())
    seeds = settings["seeds"]
    lines = [
        "# Fashion-MNIST study: KD, DKD, MLKD and CTKD with and without logit standardization",
        "",
        "A CPU-scale check of the paper's claim on real data: a `resnet_fm` teacher (a small ResNet, "
        f"{settings['teacher_parameters']:,} parameters) and a `cnn_fm_small` student "
        f"({settings['student_parameters']:,} parameters), every method with and without logit "
        f"standardization (LS), {len(seeds)} seeds each, on Fashion-MNIST (10 classes, 28×28 grayscale).",
        "",
        "## Command",
        "",
        "```bash",
        command,
        "```",
        "",
        "`make study-fmnist` runs `python benchmarks/fashion_mnist.py` with the default settings. The data come "
        "from the Debian package `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`), or "
        "`--data-root DIR` with the four IDX files.",
        "",
        "## Results",
        "",
        f"Test top-1 (%) on the 10000 test images, mean ± sample standard deviation over seeds "
        f"{', '.join(map(str, seeds))}. *Best*: the epoch of highest test top-1 (what the reference code and the "
        "paper report, i.e. model selection on the test set); *last*: the final epoch. The last two columns are "
        "the per-seed differences between a method with LS and without it (same seed, so same data order and "
        "initialisation), averaged over the seeds. The teacher is trained once (seed 0) and shared by all students.",
        "",
        "Two rows with LS per method. *X+LS* is the recipe as the paper publishes it: standardization together "
        "with the paper's LS temperature and loss weights (for KD, DKD and MLKD a base temperature of 2 and a "
        "KD weight 9 or 10 times the base recipe's), so its difference to *X* mixes the standardization with those "
        "changes. *X+LS, X's T and weights* switches the standardization on and changes nothing else, which "
        "isolates it. CTKD learns its temperature and its two recipes share their weights, so CTKD+LS is "
        "already that ablation.",
        "",
        table,
        "",
        "## What the numbers show",
        "",
        *[f"- {n}" for n in notes],
        f"- Caveats: {len(seeds)} seeds and a {settings['student_epochs']}-epoch budget; a difference is only called "
        "consistent when it has the same sign for every seed. The loss settings are the paper's CIFAR-100 ones "
        "(`resnet32x4 -> resnet8x4` row), not tuned for this dataset or budget. MLKD's class-correlation term "
        "is not standardized and grows like B²/C (batch B = 128, C = 10 classes here, against 64 and 100 on "
        "CIFAR-100, i.e. 40× larger), so MLKD's CIFAR-100 weights weigh it far more heavily here.",
        "",
        *_figure_blocks(figures or {}),
        "## Settings",
        "",
        f"- Teacher: `fashion_mnist/teacher`, {settings['teacher_epochs']} epochs on "
        f"{'all 60000' if not settings['teacher_subset'] else 'a fixed subset of ' + str(settings['teacher_subset'])} "
        "training images, "
        f"seed {settings['teacher_seed']}, test top-1 {settings['teacher_top1']:.2f} (best epoch).",
        f"- Students: `fashion_mnist/student` and `fashion_mnist/<method>`, {settings['student_epochs']} epochs on a "
        f"fixed {settings['train_subset']}-image subset of the training images (the same subset for every run), "
        f"seeds {', '.join(map(str, seeds))}.",
        "- Every run: SGD lr 0.05, momentum 0.9, weight decay 5e-4, batch 128, cosine schedule to 0, standard "
        "augmentation (random crop with 2-pixel padding, horizontal flip; MLKD adds its strong view), "
        "evaluation on the whole test set after every epoch. Loss settings: the recipes "
        "(`lskd-train --show fashion_mnist/<method>`).",
        f"- Overrides passed to every student run: `{' '.join(settings['student_overrides']) or '(none)'}`; to the "
        f"teacher: `{' '.join(settings['teacher_overrides']) or '(none)'}`.",
        f"- Parallelism: {settings['jobs']} worker process(es) with 1 PyTorch thread each for the student runs; "
        f"the teacher with {settings['teacher_threads']} thread(s).",
        "",
        "## Machine and time",
        "",
        f"- CPU: {machine['cpu']}, {machine['cores']} cores available, {machine['memory_gib']} GiB; "
        f"Python {machine['python']}, PyTorch {machine['torch']}; {machine['platform']}.",
        f"- Wall time: {timing['total_s'] / 60:.1f} min in total (teacher {timing['teacher_s'] / 60:.1f} min, "
        f"students {timing['students_s'] / 60:.1f} min); runs reused from an earlier invocation: "
        f"{timing['reused']}.",
        f"- Load average (1 / 5 / 15 min) {load_text}. A load above {machine['cores']} means the cores were shared "
        "with other work, which inflates the wall time.",
        f"- CPU time (user + system, all processes of the study): teacher {timing['cpu_teacher_s'] / 60:.1f} min, "
        f"students {timing['cpu_students_s'] / 60:.1f} min. On otherwise idle cores that is about "
        f"{timing['cpu_teacher_s'] / 60:.1f} / {settings['teacher_threads']} + {timing['cpu_students_s'] / 60:.1f} / "
        f"{settings['jobs']} ≈ {timing['idle_estimate_s'] / 60:.0f} min of wall time (CPU time divided by the "
        "threads or processes working in parallel; an estimate, since CPU time measured on a busy machine also "
        "includes some contention).",
        "",
    ]
    return "\n".join(lines)


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished child processes."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------- figures
_FAMILY_COLORS = {"kd": "tab:blue", "dkd": "tab:orange", "mlkd": "tab:green", "ctkd": "tab:red"}


def draw_figures(output: Path, fig_dir: Path, *, seeds: Sequence[int], keys: Sequence[str],
                 log: Callable[[str], None] = print) -> dict[str, Path]:
    """The study's figures: mean test top-1 per epoch of every method, and, for the first seed, the
    logit figures of :mod:`logit_standardization.training.plots` for the KD and KD+LS students and
    the CTKD+LS training curves. Returns ``{name: path}`` of what was drawn."""
    from logit_standardization.training import plots

    drawn: dict[str, Path] = {}
    curves, styles = {}, {}
    for key in ["student", *[k for k in METHODS if k in keys]]:
        per_seed = [plots.read_metrics(output / key / f"seed{s}" / "metrics.jsonl") for s in seeds]
        epochs = min(len(r) for r in per_seed)
        curves[LABELS[key]] = [{"epoch": e + 1, "test_top1": statistics.fmean(r[e]["test_top1"] for r in per_seed)}
                               for e in range(epochs)]
        family = base_of(key) or key
        line, marker = (":", "^") if key.endswith("_matched") else ("--", "s") if base_of(key) else ("-", "o")
        styles[LABELS[key]] = ({"color": "0.25", "lw": 2.2} if key == "student" else
                               {"color": _FAMILY_COLORS[family], "ls": line, "marker": marker, "ms": 4})
    teacher = json.loads((output / "teacher" / "summary.json").read_text(encoding="utf-8"))
    drawn["accuracy"] = plots.plot_accuracy_comparison(
        curves, fig_dir / "accuracy.png", styles=styles,
        reference={f"teacher ({teacher['student']['arch']}), best": teacher["best"]["top1"]},
        title=f"Student test top-1 per epoch, mean over seeds {', '.join(map(str, seeds))}\n"
              "(dashed: with LS at the paper's settings; dotted: LS switched on, nothing else changed)")
    s0 = seeds[0]
    if "kd" in keys and "kd_ls" in keys:
        kd = plots.run_logits(output / "kd" / f"seed{s0}", max_samples=None)
        kd_ls = plots.run_logits(output / "kd_ls" / f"seed{s0}", max_samples=None)
        students = {"KD": kd.student, "KD+LS": kd_ls.student}
        tlabel = f"teacher ({kd.teacher_arch})"
        n = len(kd.labels)
        drawn["logit_stats"] = plots.plot_logit_stats(
            kd.teacher, students, fig_dir / "logit_stats.png", teacher_label=tlabel,
            title=f"Per-sample logit mean and standard deviation, Fashion-MNIST test set ({n} images), seed {s0}")
        drawn["class_logits"] = plots.plot_class_logits(
            kd.teacher, students, kd.labels, fig_dir / "class_logits.png", class_names=kd.class_names,
            teacher_label=tlabel, title=f"Class-averaged standardized logits (row: true class), seed {s0}")
        drawn["correlation_difference"] = plots.plot_correlation_difference(
            kd.teacher, students, fig_dir / "correlation_difference.png", class_names=kd.class_names,
            title=f"Difference of class-correlation matrices, student vs teacher, seed {s0}\n"
                  "(standardized logits; lower is closer)")
    if "ctkd_ls" in keys:
        drawn["curves_ctkd_ls"] = plots.plot_training_curves(
            plots.read_metrics(output / "ctkd_ls" / f"seed{s0}" / "metrics.jsonl"), fig_dir / "curves_ctkd_ls.png",
            title=f"Training curves: CTKD+LS, seed {s0}")
    for path in drawn.values():
        log(f"wrote {path}")
    return drawn


_CAPTIONS = {
    "accuracy": "Test top-1 of the student per epoch, averaged over the seeds: trained alone (grey), and "
                "distilled with each method without logit standardization (solid), with it at the paper's LS "
                "settings (dashed), and with it switched on and nothing else changed (dotted). The horizontal "
                "line is the teacher's best epoch.",
    "logit_stats": "Per-sample mean and standard deviation of the logits of the teacher and of the KD and KD+LS "
                   "students on the test images (large markers: averages), raw (left) and standardized (right).",
    "class_logits": "Class-averaged standardized logits of the teacher and of the KD and KD+LS students "
                    "(row: true class; column: the logit of each class).",
    "correlation_difference": "Absolute difference between the student's and the teacher's class-correlation "
                              "matrices (Pearson correlation between the classes' standardized logits over the "
                              "test images), for KD and KD+LS; each title gives the mean and the largest entry.",
    "curves_ctkd_ls": "Training curves of a CTKD+LS run: loss terms, top-1, and the learned temperature with "
                      "the gradient-reversal factor.",
}


# ------------------------------------------------------------------------------------ runs
def _same_config(a: Any, b: Any) -> bool:
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def run_task(task: Task, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train one run (or reuse a finished one with the same configuration); return its summary.

    ``summary["reused"]`` tells whether it was reused.
    """
    import torch

    from logit_standardization.training.engine import train
    from logit_standardization.training.recipes import load_recipe

    torch.set_num_threads(task.threads)
    say = log or (lambda msg: print(f"[{task.name}] {msg}", flush=True))
    cfg = load_recipe(task.recipe, task.overrides)
    summary_path = task.output / "summary.json"
    if summary_path.is_file():
        old = json.loads(summary_path.read_text(encoding="utf-8"))
        if _same_config(old.get("config"), cfg):
            say(f"reusing finished run {task.output}")
            return {**old, "reused": True}
        raise SystemExit(f"{task.output} holds a run with other settings; pass --fresh or another --output")
    resume = (task.output / "last.pt").is_file()
    summary = train(cfg, task.output, device="cpu", resume=resume, quiet=True, log=say)
    return {**summary, "reused": False}


def teacher_task(output: Path, epochs: int, *, threads: int, train_subset: int | None = None,
                 data_root: str | None = None, test_subset: int | None = None) -> Task:
    """The shared teacher's run: ``fashion_mnist/teacher``, seed 0, in ``output/teacher``."""
    ov = [f"schedule.epochs={epochs}", "train.seed=0"]
    if train_subset:
        ov.append(f"data.train_subset={train_subset}")
    ov += data_overrides(data_root, test_subset)
    return Task("teacher", 0, ov, output / "teacher", threads=threads)


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def plan(args: argparse.Namespace, teacher_ckpt: Path) -> list[Task]:
    """The student tasks, longest first."""
    common = [f"schedule.epochs={args.epochs}", f"data.train_subset={args.train_subset}", "data.num_workers=0",
              *data_overrides(args.data_root, args.test_subset)]
    tasks = []
    for seed in args.seeds:
        for key in ["student", *args.methods]:
            ov = [*common, f"train.seed={seed}"]
            if key != "student":
                ov.append(f"teacher.checkpoint={json.dumps(str(teacher_ckpt))}")
            tasks.append(Task(key, seed, ov, args.output / key / f"seed{seed}", cost=_COST.get(key, 2.5)))
    return sorted(tasks, key=lambda t: -t.cost)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/fashion_mnist.py",
        description="Fashion-MNIST study: teacher, student alone, KD/DKD/MLKD/CTKD with and without logit "
        "standardization, several seeds; prints and writes the table of mean ± std top-1.",
    )
    p.add_argument("--output", type=Path, default=Path("runs/fashion_mnist_study"), help="run directories "
                   "(default runs/fashion_mnist_study)")
    p.add_argument("--doc", type=Path, default=REPO / "docs" / "fashion_mnist.md", help="the page to write "
                   "(default docs/fashion_mnist.md)")
    p.add_argument("--no-doc", action="store_true", help="do not write the page (nor the figures)")
    p.add_argument("--figures", type=Path, default=REPO / "docs" / "figures" / "fashion_mnist",
                   help="where the page's figures go (default docs/figures/fashion_mnist)")
    p.add_argument("--no-figures", action="store_true", help="do not draw the figures")
    p.add_argument("--data-root", help="directory of the IDX files (default: the Debian package's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="student seeds (default 0 1 2)")
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS, metavar="M",
                   help=f"distillation recipes to run (default all: {' '.join(METHODS)})")
    p.add_argument("--teacher-epochs", type=int, default=4, help="teacher epochs (default 4)")
    p.add_argument("--teacher-subset", type=int, default=None, help="teacher training images (default all 60000)")
    p.add_argument("--epochs", type=int, default=3, help="student epochs (default 3)")
    p.add_argument("--train-subset", type=int, default=20000, help="student training images (default 20000)")
    p.add_argument("--test-subset", type=int, default=None, help="evaluate on this many test images "
                   "(default all 10000; for smoke tests)")
    p.add_argument("--jobs", type=int, default=2, help="parallel student runs, one thread each (default 2)")
    p.add_argument("--teacher-threads", type=int, default=None, help="PyTorch threads of the teacher run "
                   "(default: --jobs)")
    p.add_argument("--fresh", action="store_true", help="delete OUTPUT first instead of reusing finished runs")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    for name in ("teacher_epochs", "epochs", "train_subset", "jobs"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    args.teacher_threads = args.teacher_threads or args.jobs
    args.output = args.output.resolve()
    command = "python benchmarks/fashion_mnist.py" + (" " + shlex.join(argv) if argv else "")
    if args.fresh and args.output.exists():
        shutil.rmtree(args.output)
    loads = {"start": os.getloadavg()}
    started = time.perf_counter()
    cpu0 = cpu_seconds()
    print(f"Fashion-MNIST study -> {args.output}; load average at start {loads['start'][0]:.1f}", flush=True)

    # 1. the teacher, once
    teacher = teacher_task(args.output, args.teacher_epochs, threads=args.teacher_threads,
                           train_subset=args.teacher_subset, data_root=args.data_root, test_subset=args.test_subset)
    teacher_ov = teacher.overrides
    print(f"[1/2] teacher: {teacher.recipe}, {args.teacher_epochs} epochs, {args.teacher_threads} thread(s)",
          flush=True)
    t_summary = run_task(teacher)
    t_teacher = time.perf_counter() - started
    cpu_teacher = cpu_seconds() - cpu0
    teacher_ckpt = teacher.output / "best.pt"

    # 2. the students, in parallel
    tasks = plan(args, teacher_ckpt)
    print(f"[2/2] {len(tasks)} student runs ({args.epochs} epochs on {args.train_subset} images, seeds "
          f"{' '.join(map(str, args.seeds))}) in {args.jobs} process(es)", flush=True)
    t0 = time.perf_counter()
    summaries: dict[tuple[str, int], dict[str, Any]] = {}
    if args.jobs == 1:
        for i, task in enumerate(tasks, 1):
            summaries[(task.key, task.seed)] = run_task(task)
            print(f"  done {i}/{len(tasks)}: {task.name}", flush=True)
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
            futures = {pool.submit(run_task, task): task for task in tasks}
            for i, fut in enumerate(as_completed(futures), 1):
                task = futures[fut]
                summaries[(task.key, task.seed)] = fut.result()
                s = summaries[(task.key, task.seed)]
                print(f"  done {i}/{len(tasks)}: {task.name}: best {s['best']['top1']:.2f}, last "
                      f"{s['last']['top1']:.2f} ({time.perf_counter() - t0:.0f} s since start of students)",
                      flush=True)
    t_students = time.perf_counter() - t0
    cpu_students = cpu_seconds() - cpu0 - cpu_teacher
    loads["end"] = os.getloadavg()

    results: dict[str, dict[int, dict[str, float]]] = {"teacher": {0: {"best": t_summary["best"]["top1"],
                                                                       "last": t_summary["last"]["top1"]}}}
    for (key, seed), s in sorted(summaries.items()):
        results.setdefault(key, {})[seed] = {"best": s["best"]["top1"], "last": s["last"]["top1"]}
    total = time.perf_counter() - started
    reused = sum(bool(s.get("reused")) for s in [t_summary, *summaries.values()])
    any_student = next(iter(summaries.values()))
    settings = {
        "seeds": list(args.seeds), "methods": list(args.methods), "teacher_epochs": args.teacher_epochs,
        "student_epochs": args.epochs, "train_subset": args.train_subset, "jobs": args.jobs,
        "teacher_threads": args.teacher_threads, "teacher_seed": 0, "teacher_subset": args.teacher_subset,
        "teacher_top1": t_summary["best"]["top1"],
        "teacher_parameters": t_summary["student"]["parameters"],
        "student_parameters": any_student["student"]["parameters"],
        "student_overrides": [o for o in plan(args, teacher_ckpt)[0].overrides
                              if not o.startswith(("train.seed", "teacher.checkpoint"))],
        "teacher_overrides": teacher_ov,
    }
    timing = {"total_s": total, "teacher_s": t_teacher, "students_s": t_students, "reused": reused,
              "cpu_teacher_s": cpu_teacher, "cpu_students_s": cpu_students,
              "idle_estimate_s": cpu_teacher / args.teacher_threads + cpu_students / args.jobs,
              "load_average": loads,
              "run_seconds": {f"{k}/seed{s}": v["seconds"] for (k, s), v in summaries.items()}}
    table = build_table(results)
    print("\n" + table + "\n")
    for line in findings(results):
        print("- " + line)
    print(f"\nwall time {total / 60:.1f} min (teacher {t_teacher / 60:.1f}, students {t_students / 60:.1f}); "
          f"load average start {loads['start'][0]:.1f}, end {loads['end'][0]:.1f}; CPU time teacher "
          f"{cpu_teacher / 60:.1f} min, students {cpu_students / 60:.1f} min (on an idle machine: about "
          f"{timing['idle_estimate_s'] / 60:.0f} min)")
    machine = machine_info()
    previous = args.output / "results.json"
    if reused == 1 + len(summaries) and previous.is_file():
        # nothing was trained now: keep the time and load of the invocation that trained the runs
        old = json.loads(previous.read_text(encoding="utf-8"))
        if old.get("settings") == json.loads(json.dumps(settings)) and old["timing"].get("reused", 1) == 0:
            timing, command = old["timing"], old["command"]
            print(f"all runs reused: the page keeps the time of the invocation that trained them ({command})")
    _write_atomic(args.output / "results.json", json.dumps(
        {"command": command, "results": {k: {str(s): v for s, v in r.items()} for k, r in results.items()},
         "settings": settings, "machine": machine, "timing": timing}, indent=2) + "\n")
    if not args.no_doc:
        figures: dict[str, str] = {}
        if not args.no_figures:
            drawn = draw_figures(args.output, args.figures.resolve(), seeds=args.seeds, keys=args.methods)
            figures = {k: Path(os.path.relpath(v, args.doc.resolve().parent)).as_posix() for k, v in drawn.items()}
        _write_atomic(args.doc, render_page(results=results, command=command, settings=settings, machine=machine,
                                            timing=timing, figures=figures))
        print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
