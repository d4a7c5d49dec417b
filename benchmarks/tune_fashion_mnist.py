"""Tuned against tuned: KD vs KD+LS and DKD vs DKD+LS on Fashion-MNIST, each re-tuned by ``lskd-tune``.

Run ``python benchmarks/tune_fashion_mnist.py`` (``make study-tune``). Comparing a method at
settings tuned elsewhere against a tuned baseline is not a fair test of the method; here every
arm gets the same search:

1. the teacher (``fashion_mnist/teacher``, 4 epochs on all 60000 training images, seed 0), once,
   shared by every arm (reused when ``OUTPUT/teacher`` already holds it);
2. for each arm of :data:`ARMS` (the shipped recipes ``fashion_mnist/kd``, ``kd_ls``, ``dkd``,
   ``dkd_ls``; an arm with LS differs from its base by ``method.standardize`` alone once its
   loss settings are tuned), ``lskd-tune`` with the method's default search space, the same
   number of trials (``--trials``, default 10) and the same TPE sampler seed for every arm (TPE's
   first 10 trials are its seeded random start-up, so up to 10 trials the two arms of a pair
   evaluate the same candidate settings: a paired random search); each
   trial trains the recipe's budget (3 epochs) on the recipe's 20000-image training subset with
   a stratified, seeded 20 % of it held out, and is scored on that validation split's top-1 at
   its last epoch (the test set is not used by any trial);
3. for each arm, the best trial's settings retrained on the whole 20000-image subset with seeds
   0, 1, 2 (``lskd-tune --seeds``) and evaluated once, at the last epoch, on the 10000 test
   images.

The arms run as ``lskd-tune`` processes, ``--jobs`` at a time (default 2, one PyTorch thread
each). A rerun with the same ``--output`` continues: each study only runs the trials it still
lacks, and finished final runs are kept. At the end the table (test top-1 mean ± sample std,
paired differences of an arm with LS against its base, seed by seed), the tuned values and the
machine/time record are printed and written to ``docs/tune_fashion_mnist.md`` (``--no-doc`` to
skip) and ``OUTPUT/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
for _p in (str(REPO), str(HERE)):
    if _p not in sys.path:  # run as a script from a source checkout
        sys.path.insert(0, _p)

import fashion_mnist as fm  # noqa: E402 -- the Fashion-MNIST study's teacher run and statistics

ARMS = {"kd": "KD", "kd_ls": "KD+LS", "dkd": "DKD", "dkd_ls": "DKD+LS"}
"""The tuned recipes ``fashion_mnist/<key>`` and their labels, in table order."""

PAIRS = [("kd_ls", "kd"), ("dkd_ls", "dkd")]
"""(arm with LS, its base): compared seed by seed."""


def paired_differences(finals: dict[str, dict[int, float]], a: str, b: str) -> list[float]:
    """Per-seed differences ``a - b`` over the seeds both arms have.

    Example:
        >>> paired_differences({"x": {0: 81.0, 1: 80.0}, "y": {0: 80.5, 1: 80.5, 2: 79.0}}, "x", "y")
        [0.5, -0.5]
    """
    seeds = sorted(set(finals.get(a, {})) & set(finals.get(b, {})))
    return [finals[a][s] - finals[b][s] for s in seeds]


def _fmt_value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def build_table(arms: dict[str, dict[str, Any]]) -> str:
    """The results table: per arm its trials, best validation top-1, test top-1 and paired difference.

    Args:
        arms: ``{key: {"counts": {state: n}, "best": {"value": v, ...} | None,
            "final": {seed: test top-1}}}`` for keys of :data:`ARMS`.

    Example:
        >>> arms = {"kd": {"counts": {"COMPLETE": 3}, "best": {"value": 80.0}, "final": {0: 81.0, 1: 82.0}},
        ...         "kd_ls": {"counts": {"COMPLETE": 2, "PRUNED": 1}, "best": {"value": 80.5},
        ...                   "final": {0: 81.5, 1: 81.0}}}
        >>> print(build_table(arms))
        | method (tuned) | trials: complete / pruned / failed | best validation top-1 (%) | test top-1 (%), seeds | LS - base, test (paired) |
        |---|--:|--:|--:|--:|
        | KD | 3 / 0 / 0 | 80.00 | 81.50 ± 0.71 (2) |  |
        | KD+LS | 2 / 1 / 0 | 80.50 | 81.25 ± 0.35 (2) | -0.25 ± 1.06 |
    """
    lines = ["| method (tuned) | trials: complete / pruned / failed | best validation top-1 (%) "
             "| test top-1 (%), seeds | LS - base, test (paired) |", "|---|--:|--:|--:|--:|"]
    bases = dict(PAIRS)
    for key, label in ARMS.items():
        arm = arms.get(key)
        if not arm:
            continue
        c = arm.get("counts", {})
        trials = f"{c.get('COMPLETE', 0)} / {c.get('PRUNED', 0)} / {c.get('FAIL', 0)}"
        best = f"{arm['best']['value']:.2f}" if arm.get("best") else ""
        final = arm.get("final") or {}
        test = f"{fm.fmt_mean_std(list(final.values()))} ({len(final)})" if final else ""
        delta = ""
        if key in bases:
            d = paired_differences({k: v.get("final") or {} for k, v in arms.items()}, key, bases[key])
            if d:
                delta = fm.fmt_difference(d)
        lines.append(f"| {label} | {trials} | {best} | {test} | {delta} |")
    return "\n".join(lines)


def tuned_values_table(arms: dict[str, dict[str, Any]]) -> str:
    """The best trial's values of every arm (one row per arm, one column per tuned key)."""
    keys = list(dict.fromkeys(k for arm in arms.values() if arm.get("best") for k in arm["best"]["params"]))
    short = [k.split(".", 1)[1] if k.startswith("method.") else k for k in keys]
    lines = ["| method (tuned) | best trial | " + " | ".join(f"`{s}`" for s in short) + " |",
             "|---|--:|" + "--:|" * len(keys)]
    for key, label in ARMS.items():
        best = (arms.get(key) or {}).get("best")
        if best:
            cells = [_fmt_value(best["params"][k]) if k in best["params"] else "" for k in keys]
            lines.append(f"| {label} | {best['number']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def same_candidates(arms: dict[str, dict[str, Any]], a: str, b: str) -> bool | None:
    """Whether two arms' trials evaluated the same settings in the same order (None: unknown)."""
    ca, cb = (arms.get(a) or {}).get("candidates"), (arms.get(b) or {}).get("candidates")
    if ca is None or cb is None:
        return None
    return ca == cb


def findings(arms: dict[str, dict[str, Any]]) -> list[str]:
    """Plain statements the numbers support, whatever they show."""
    finals = {k: v.get("final") or {} for k, v in arms.items()}
    out = []
    for ls, base in PAIRS:
        same = same_candidates(arms, ls, base)
        if same is not None:
            n = len(arms[ls]["candidates"])
            out.append(f"{ARMS[ls]} and {ARMS[base]} " + (
                f"evaluated the same {n} candidate settings, trial by trial." if same else
                "did not evaluate identical candidate settings (TPE's model-based proposals after its random "
                "start-up depend on each arm's own results)."))
    for ls, base in PAIRS:
        d = paired_differences(finals, ls, base)
        if not d:
            continue
        m = fm.mean_std(d)[0]
        out.append(f"{ARMS[ls]} vs {ARMS[base]}, both tuned: test top-1 {m:+.2f} points "
                   f"({fm.describe_signs(d)}; per seed: {', '.join(f'{x:+.2f}' for x in d)}).")
    for ls, base in PAIRS:
        b_ls, b_base = (arms.get(ls) or {}).get("best"), (arms.get(base) or {}).get("best")
        if b_ls and b_base:
            out.append(f"Best validation top-1 of the search: {ARMS[ls]} {b_ls['value']:.2f}, {ARMS[base]} "
                       f"{b_base['value']:.2f} ({b_ls['value'] - b_base['value']:+.2f}).")
    ranked = sorted(((fm.mean_std(list(v.values()))[0], k) for k, v in finals.items() if v), reverse=True)
    if ranked:
        out.append("Test top-1 ranking (mean over seeds): "
                   + ", ".join(f"{ARMS[k]} {m:.2f}" for m, k in ranked) + ".")
    return out


# ------------------------------------------------------------------------------------ runs
def _load_study(db: Path, name: str) -> Any:
    """The Optuna study ``name`` in an SQLite file, or None when there is none yet."""
    if not db.is_file():
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    except KeyError:
        return None


def _counts(study: Any) -> dict[str, int]:
    """Trials per state (empty without a study)."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False) if study is not None else []:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def _load_arm(out: Path, key: str) -> dict[str, Any]:
    study = _load_study(out / "study.db", key)
    counts = _counts(study)
    try:
        b = study.best_trial
        best = {"number": b.number, "value": b.value, "params": b.params}
    except ValueError:
        best = None
    candidates = [t.params for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)]
    final = {}
    if (out / "final.json").is_file():
        report = json.loads((out / "final.json").read_text(encoding="utf-8"))
        final = {int(s): float(v) for s, v in zip(report["seeds"], report["test_top1"]["values"])}
    return {"counts": counts, "best": best, "final": final, "candidates": candidates}


def run_arm(key: str, args: argparse.Namespace, teacher: Path, print_lock: threading.Lock) -> dict[str, Any]:
    """Tune one arm and run its final seeds with ``lskd-tune`` (continuing what an earlier run left)."""
    out = args.output / key
    done = _counts(_load_study(out / "study.db", key))
    finished = sum(done.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL"))
    remaining = max(0, args.trials - finished)
    final = out / "final.json"
    have_final = final.is_file() and json.loads(final.read_text(encoding="utf-8"))["seeds"] == list(args.seeds)
    if remaining == 0 and have_final:
        with print_lock:
            print(f"[{key}] reusing {finished} trials and the final runs in {out}", flush=True)
        return {**_load_arm(out, key), "reused": True}
    sets = ["data.num_workers=0", f"data.train_subset={args.train_subset}",
            *fm.data_overrides(args.data_root, args.test_subset)]
    cmd = [sys.executable, "-m", "logit_standardization.training.tune", f"fashion_mnist/{key}",
           "--teacher", str(teacher), "--trials", str(remaining), "--epochs", str(args.epochs),
           "--val-fraction", str(args.val_fraction), "--study", key, "--sampler-seed", str(args.sampler_seed),
           "--output", str(out), "--device", "cpu", "--seeds", *map(str, args.seeds), "--set", *sets,
           *(["--space", *args.space] if args.space else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    with print_lock:
        print(f"[{key}] {finished} trials done, running {remaining} more, then seeds "
              f"{' '.join(map(str, args.seeds))}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "tune.log", "a", encoding="utf-8") as log, subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            with print_lock:
                print(f"[{key}] {line.rstrip()}", flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"lskd-tune for {key} failed with exit status {proc.returncode}; see {out / 'tune.log'}")
    return {**_load_arm(out, key), "reused": False}


# ------------------------------------------------------------------------------------ page
def draw_trials(arms_dir: Path, keys: Sequence[str], path: Path) -> None:
    """Validation top-1 of every trial and the best so far, base arm against LS arm, one panel per pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import optuna

    pairs = [p for p in PAIRS if p[0] in keys and p[1] in keys]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 3.8), squeeze=False)
    for ax, (ls, base) in zip(axes.flat, pairs):
        for key, colour in ((base, "tab:blue"), (ls, "tab:orange")):
            study = optuna.load_study(study_name=key, storage=f"sqlite:///{arms_dir / key / 'study.db'}")
            done = [t for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")]
            xs = [t.number for t in done]
            ys = [t.value if t.value is not None else max(t.intermediate_values.values(), default=float("nan"))
                  for t in done]
            pruned = [t.state.name == "PRUNED" for t in done]
            ax.scatter([x for x, p in zip(xs, pruned) if not p], [y for y, p in zip(ys, pruned) if not p],
                       color=colour, label=f"{ARMS[key]} trial")
            ax.scatter([x for x, p in zip(xs, pruned) if p], [y for y, p in zip(ys, pruned) if p],
                       color=colour, marker="x", label=f"{ARMS[key]} pruned (last reported)")
            best, run = [], float("-inf")
            for t in study.get_trials(deepcopy=False):
                if t.state.name == "COMPLETE":
                    run = max(run, t.value)
                best.append(run if run > float("-inf") else float("nan"))
            ax.step(range(len(best)), best, where="post", color=colour, alpha=0.7)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("trial")
        ax.set_ylabel("validation top-1 (%)")
        ax.set_title(f"{ARMS[base]} vs {ARMS[ls]}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def render_page(*, arms: dict[str, dict[str, Any]], command: str, settings: dict[str, Any],
                machine: dict[str, Any], timing: dict[str, Any], figure: str | None = None) -> str:
    """The Markdown page ``docs/tune_fashion_mnist.md``."""
    load = timing["load_average"]
    spaces = settings["spaces"]
    lines = [
        "# Tuned against tuned: KD and DKD with and without logit standardization on Fashion-MNIST", "",
        "The [Fashion-MNIST study](fashion_mnist.md) runs every method at the loss settings the paper tuned for "
        "CIFAR-100. Here each arm (KD, KD+LS, DKD, DKD+LS) is re-tuned for this pair with "
        "[`lskd-tune`](tuning.md) under the same search, and only the best settings of each are retrained and "
        "tested, so an arm with logit standardization (LS) and its base meet at their own best settings.", "",
        "## Command", "", "```bash", command, "```", "",
        "`make study-tune` runs `python benchmarks/tune_fashion_mnist.py` with the default settings. The data "
        "come from the Debian package `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`), or "
        "`--data-root DIR` with the four IDX files.", "",
        "## Protocol", "",
        f"- Teacher: `fashion_mnist/teacher` (`resnet_fm`), {settings['teacher_epochs']} epochs on all 60000 "
        f"training images, seed 0, test top-1 {settings['teacher_top1']:.2f} (best epoch); shared by every arm.",
        f"- Student: `cnn_fm_small`; every run trains {settings['epochs']} epochs (the recipes' cosine schedule, "
        f"SGD 0.05) on the recipes' fixed {settings['train_subset']}-image subset of the training images.",
        f"- Search: `lskd-tune fashion_mnist/<arm>`, {settings['trials']} trials per arm, TPE sampler with seed "
        f"{settings['sampler_seed']} in every arm (Optuna's TPE draws its first 10 trials from its seeded random "
        "start-up, so up to 10 trials the two arms of a pair evaluate the same candidate settings), median "
        "pruner after 3 trials. Each trial is scored on the top-1 at its last epoch on a "
        f"stratified {settings['val_fraction']:.0%} of the training subset held out with seed 0; it trains on "
        "the rest. No trial sees the test set.",
        "- Search space (`lskd-tune`'s default for the method"
        + (f" changed by `--space {' '.join(settings['space_changes'])}`" if settings.get("space_changes") else "")
        + ", identical for the arm with and without LS): "
        + "; ".join(f"{ARMS[k]}: " + ", ".join(f"`{p}` {s}" for p, s in spaces[k].items()) for k in spaces) + ".",
        f"- Final runs: the best trial's `best.yaml`, retrained on the whole {settings['train_subset']}-image "
        f"subset with seeds {', '.join(map(str, settings['seeds']))}, evaluated once at the last epoch on the "
        "10000 test images. Same seed, same initialisation and data order across arms.", "",
        "## Results", "",
        "Test top-1 (%): mean ± sample standard deviation over the seeds; the last column is the per-seed "
        "difference between the arm with LS and its base, averaged.", "",
        build_table(arms), "",
        "### Tuned values (best trial of each arm)", "",
        tuned_values_table(arms), "",
        "## What the numbers show", "",
        *(f"- {line}" for line in findings(arms)),
        "- For comparison, at the paper's CIFAR-100 settings (untuned; [Fashion-MNIST study](fashion_mnist.md), "
        "same recipes, budget and test set) the last-epoch top-1 was KD 82.05, KD+LS 79.11, DKD 80.58, "
        "DKD+LS 68.98.",
        f"- Caveats: {settings['trials']} trials per arm in a "
        + " or ".join(sorted({f"{len(v)}-dimensional" for v in spaces.values()}))
        + " space is a small search, and "
        f"{len(settings['seeds'])} seeds resolve differences of about a point at best; a difference is called "
        "consistent only when it has the same sign for every seed.", "",
    ]
    if figure:
        lines += ["## Figure", "", f"```{{figure}} {figure}", ":alt: Validation top-1 of every trial", ":width: 100%",
                  "", "Validation top-1 of every trial (dots; crosses: pruned trials at their last reported "
                  "epoch) and the best so far (steps), each base method against its arm with LS.", "```", ""]
    lines += [
        "## Machine and time", "",
        f"- {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; Python {machine['python']}, "
        f"PyTorch {machine['torch']}; {settings['jobs']} `lskd-tune` processes at a time, one thread each.",
        f"- Wall time: {timing['total_s'] / 60:.1f} min in total (teacher {timing['teacher_s'] / 60:.1f} min, "
        f"tuning and final runs {timing['arms_s'] / 60:.1f} min)"
        + (f"; the teacher was trained by an earlier invocation, in {timing['teacher_run_s'] / 60:.1f} min "
           "(its own record, on the same machine)." if timing.get("teacher_reused") else "."),
        f"- Load average (1 / 5 / 15 min) start: {' / '.join(f'{x:.1f}' for x in load['start'])}, end: "
        f"{' / '.join(f'{x:.1f}' for x in load['end'])}. A load above 2 means the cores were shared with other "
        "work, which inflates the wall time.",
        f"- CPU time (user + system, all processes): {timing['cpu_s'] / 60:.1f} min.", "",
        "Per-trial records: `OUTPUT/<arm>/trials.csv`, `summary.md`, `figures/` and `final.json` "
        "(written by `lskd-tune`); the whole run: `OUTPUT/results.json`.", "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/tune_fashion_mnist.py", allow_abbrev=False,
        description="KD vs KD+LS and DKD vs DKD+LS on Fashion-MNIST, each re-tuned with lskd-tune under the same "
        "search, best settings retrained with several seeds and tested once.")
    p.add_argument("--output", type=Path, default=Path("runs/tune_fashion_mnist"), help="default "
                   "runs/tune_fashion_mnist")
    p.add_argument("--doc", type=Path, default=REPO / "docs" / "tune_fashion_mnist.md")
    p.add_argument("--no-doc", action="store_true", help="do not write the page (nor its figure)")
    p.add_argument("--figure", type=Path, default=REPO / "docs" / "figures" / "tune_fashion_mnist" / "trials.png")
    p.add_argument("--data-root", help="directory of the IDX files (default: the Debian package's)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), metavar="ARM",
                   help=f"arms to run (default all: {' '.join(ARMS)})")
    p.add_argument("--trials", type=int, default=10, help="trials per arm (default 10)")
    p.add_argument("--sampler-seed", type=int, default=0, help="TPE seed of every arm (default 0)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="final-run seeds (default 0 1 2)")
    p.add_argument("--epochs", type=int, default=3, help="epochs of every trial and final run (default 3)")
    p.add_argument("--train-subset", type=int, default=20000, help="student training images (default 20000)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="held out for the trials (default 0.2)")
    p.add_argument("--teacher-epochs", type=int, default=4, help="teacher epochs (default 4)")
    p.add_argument("--test-subset", type=int, default=None, help="test images (default all; for smoke tests)")
    p.add_argument("--jobs", type=int, default=2, help="lskd-tune processes at a time (default 2)")
    p.add_argument("--space", action="extend", nargs="+", default=[], metavar="KEY=SPEC",
                   help="change the search space of every arm, as lskd-tune --space")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("trials", "epochs", "train_subset", "teacher_epochs", "jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0.0 < args.val_fraction < 1.0:
        parser.error("--val-fraction must be in (0, 1)")
    args.output = args.output.resolve()
    command = "python benchmarks/tune_fashion_mnist.py" + (" " + shlex.join(argv) if argv else "")
    loads = {"start": os.getloadavg()}
    started, cpu0 = time.perf_counter(), fm.cpu_seconds()
    print(f"tuned comparison -> {args.output}; load average at start {loads['start'][0]:.1f}", flush=True)

    teacher = fm.teacher_task(args.output, args.teacher_epochs, threads=args.jobs, data_root=args.data_root,
                              test_subset=args.test_subset)
    print(f"[1/2] teacher: {teacher.recipe}, {args.teacher_epochs} epochs", flush=True)
    t_summary = fm.run_task(teacher)
    t_teacher = time.perf_counter() - started

    print(f"[2/2] arms {' '.join(args.arms)}: {args.trials} trials each, then seeds "
          f"{' '.join(map(str, args.seeds))}; {args.jobs} at a time", flush=True)
    t0 = time.perf_counter()
    lock = threading.Lock()
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {key: pool.submit(run_arm, key, args, teacher.output / "best.pt", lock) for key in args.arms}
        arms = {key: fut.result() for key, fut in futures.items()}
    t_arms = time.perf_counter() - t0
    loads["end"] = os.getloadavg()

    from logit_standardization.training.tune import parse_space

    settings = {"teacher_epochs": args.teacher_epochs, "teacher_top1": t_summary["best"]["top1"],
                "epochs": args.epochs, "train_subset": args.train_subset, "trials": args.trials,
                "sampler_seed": args.sampler_seed, "val_fraction": args.val_fraction, "seeds": list(args.seeds),
                "jobs": args.jobs, "test_subset": args.test_subset,
                **({"space_changes": list(args.space)} if args.space else {}),
                "spaces": {k: {p: s.describe() for p, s in parse_space(k.replace("_ls", ""), args.space).items()}
                           for k in args.arms}}
    timing = {"total_s": time.perf_counter() - started, "teacher_s": t_teacher, "arms_s": t_arms,
              "teacher_reused": bool(t_summary.get("reused")), "teacher_run_s": float(t_summary["seconds"]),
              "cpu_s": fm.cpu_seconds() - cpu0, "load_average": loads}
    old = args.output / "results.json"
    reused = [arm.pop("reused") for arm in arms.values()]
    if all(reused) and old.is_file():
        previous = json.loads(old.read_text(encoding="utf-8"))
        if previous.get("settings") == json.loads(json.dumps(settings)):
            timing = previous["timing"]  # nothing ran: keep the time of the invocation that did the work
            timing.setdefault("teacher_reused", True)
            timing.setdefault("teacher_run_s", float(t_summary["seconds"]))
            print("all trials and final runs reused; the time shown is that of the run that made them", flush=True)
    machine = fm.machine_info()
    print(build_table(arms), flush=True)
    print(tuned_values_table(arms), flush=True)
    for line in findings(arms):
        print("- " + line, flush=True)
    results = {"command": command, "settings": settings, "timing": timing, "machine": machine,
               "arms": {k: {**v, "final": {str(s): x for s, x in v["final"].items()}} for k, v in arms.items()}}
    fm._write_atomic(args.output / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    if not args.no_doc:
        figure = None
        if any(ls in args.arms and base in args.arms for ls, base in PAIRS):
            draw_trials(args.output, args.arms, args.figure)
            figure = os.path.relpath(args.figure, args.doc.parent)
        page = render_page(arms=arms, command=command, settings=settings, machine=machine, timing=timing,
                           figure=figure)
        fm._write_atomic(args.doc, page)
        print(f"wrote {args.doc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
