r"""The whole story on scikit-learn's digits, in a minute or two on a laptop CPU (``make demo``).

Run ``python -m logit_standardization.demo [--output demo-output] [--epochs N | --quick]``.
The 8x8 digits ship inside the scikit-learn wheel, so nothing is downloaded. Five steps,
all through the same engine and shipped recipes as ``lskd-train``:

1. train a teacher (``lskd-train demo/teacher``: an MLP 64-256-256-10);
2. train the small student (MLP 64-32-10) alone with cross-entropy (``demo/student``);
3. distil the student with KD (``demo/kd``) and with KD + logit standardization
   (``demo/kd_ls``), same seed and same budget;
4. print the table (teacher, student alone, KD, KD+LS; best-epoch and last-epoch top-1) and
   draw the figures of :mod:`logit_standardization.training.plots`;
5. export the KD+LS student with ``lskd-export`` (:func:`logit_standardization.export.export_onnx`)
   and run it in ONNX Runtime on the test images, reporting its agreement with PyTorch.

Everything goes under ``--output`` (default ``demo-output/``): one run directory per
recipe (``teacher/``, ``student/``, ``kd/``, ``kd_ls/``, each a complete ``lskd-train``
output), ``figures/*.png``, ``results.md``/``results.json`` and ``kd_ls_student.onnx``.
Running the demo again replaces what an earlier demo wrote there; a directory holding
anything else is refused.

The networks are tiny, so the demo uses one CPU thread by default (``--threads``): more
threads only add synchronisation for matrices this small. The test split has 360 images,
so one image is 0.28 points of accuracy and single-seed differences of a point or two
between methods are within run-to-run noise (``--seed`` changes it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .training.callbacks import Callback

__all__ = ["main", "build_parser", "run_demo", "format_table", "STEPS"]

MARKER = ".lskd-demo"
"""File that marks a directory as written by this demo (so a rerun may replace it)."""

STEPS: list[tuple[str, str, str]] = [
    ("teacher", "demo/teacher", "teacher"),
    ("student", "demo/student", "student alone"),
    ("kd", "demo/kd", "KD"),
    ("kd_ls", "demo/kd_ls", "KD+LS"),
]
"""``(run directory, shipped recipe, row label)`` of the four trainings, in order."""

QUICK_EPOCHS = 3
"""Epochs per training with ``--quick``."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m logit_standardization.demo",
        description="Train a teacher on scikit-learn's digits, distil a smaller student with KD and with KD + logit "
        "standardization (same seed, same budget) next to the student trained alone, print the table, draw the "
        "figures, and export the KD+LS student to ONNX Runtime.",
    )
    p.add_argument("--output", default="demo-output", metavar="DIR", help="where everything goes "
                   "(default: demo-output)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, metavar="N", help="epochs of every training (default: the recipes' 30)")
    budget.add_argument("--quick", action="store_true", help=f"{QUICK_EPOCHS} epochs per training: a smoke test "
                        "of the whole pipeline in seconds (the accuracies mean little)")
    p.add_argument("--seed", type=int, default=0, help="seed of every training (default 0)")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="CPU threads for PyTorch (default 1: the "
                   "networks are too small to gain from more)")
    p.add_argument("--verbose", action="store_true", help="print the engine's full line for every epoch instead "
                   "of a progress bar per training")
    return p


# ------------------------------------------------------------------------------- progress
class _Progress(Callback):
    """The demo's view of one training, fed by the engine's epoch records.

    On a terminal: a progress bar (epochs, last test top-1) with the engine's other messages
    printed above it; otherwise one short plain line per epoch. ``log`` is the engine's log
    function. With ``verbose`` there is neither: the engine prints its full line for every
    epoch (``epoch_lines``) and ``log`` prints every message.
    """

    def __init__(self, label: str, verbose: bool) -> None:
        self.label, self.verbose = label, verbose
        self.bar = None
        self.epochs = 0
        self.records: list[dict[str, Any]] = []

    def log(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write("  " + message)
        else:
            print("  " + message, flush=True)

    def on_train_begin(self, info: dict[str, Any]) -> None:
        self.epochs = int(info["epochs"])
        if self.verbose or not sys.stdout.isatty():
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=info["epochs"], initial=info["start_epoch"] - 1, desc=f"  {self.label:<14}",
                        unit="epoch", dynamic_ncols=True, file=sys.stdout,
                        bar_format="{desc} {bar} {n_fmt}/{total_fmt} epochs [{elapsed}{postfix}]")

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.bar is None:
            if not self.verbose:
                print(f"  {self.label}: epoch {record['epoch']}/{self.epochs}, test top-1 {record['test_top1']:.2f}",
                      flush=True)
            return
        self.bar.n = int(record["epoch"])
        self.bar.set_postfix_str(f"test top-1 {record['test_top1']:.2f}", refresh=False)
        self.bar.refresh()

    def on_train_end(self, summary: dict[str, Any]) -> None:
        self.close()  # the bar stays above the closing lines

    def on_exception(self, exc: BaseException) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---------------------------------------------------------------------------------- table
def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of the demo's results.

    Each row needs ``label``, ``arch``, ``parameters``, ``recipe``, ``best`` (``{"top1",
    "epoch"}``) and ``last`` (``{"top1", "epoch"}``).

    Example:
        >>> print(format_table([{"label": "KD", "arch": "mlp", "parameters": 10, "recipe": "demo/kd",
        ...                      "best": {"top1": 95.0, "epoch": 3}, "last": {"top1": 94.5, "epoch": 4}}]))
        | network | architecture | parameters | recipe | best top-1 (%) | last top-1 (%) |
        |---|---|--:|---|--:|--:|
        | KD | mlp | 10 | `demo/kd` | 95.00 (epoch 3) | 94.50 (epoch 4) |
    """
    lines = ["| network | architecture | parameters | recipe | best top-1 (%) | last top-1 (%) |",
             "|---|---|--:|---|--:|--:|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['arch']} | {r['parameters']:,} | `{r['recipe']}` | "
                     f"{r['best']['top1']:.2f} (epoch {r['best']['epoch']}) | "
                     f"{r['last']['top1']:.2f} (epoch {r['last']['epoch']}) |")
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------- output
def _prepare_output(output: Path) -> None:
    """Create ``output``; clear what an earlier demo wrote there; refuse a foreign non-empty directory."""
    if output.exists() and not output.is_dir():
        raise SystemExit(f"demo: --output {str(output)!r} exists and is not a directory")
    if output.is_dir() and any(output.iterdir()):
        if not (output / MARKER).is_file():
            raise SystemExit(f"demo: --output {str(output)!r} is not empty and was not written by this demo; "
                             "choose another directory (--output DIR)")
        for name, _, _ in STEPS:
            shutil.rmtree(output / name, ignore_errors=True)
        shutil.rmtree(output / "figures", ignore_errors=True)
        for name in ("results.md", "results.json", "kd_ls_student.onnx"):
            (output / name).unlink(missing_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    (output / MARKER).write_text("written by python -m logit_standardization.demo\n", encoding="utf-8")


# ------------------------------------------------------------------------------------ steps
def _train_all(output: Path, overrides: list[str], epochs: int, verbose: bool,
               say: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    from .training.engine import train
    from .training.recipes import load_recipe

    summaries: dict[str, dict[str, Any]] = {}
    teacher_ckpt = output / "teacher" / "best.pt"
    for i, (name, recipe, label) in enumerate(STEPS, 1):
        extra = [] if name in ("teacher", "student") else [f"teacher.checkpoint={json.dumps(str(teacher_ckpt))}"]
        cfg = load_recipe(recipe, overrides + extra)
        what = (f"{cfg['student']['arch']}" if name in ("teacher", "student")
                else f"{cfg['teacher']['arch']} -> {cfg['student']['arch']}")
        m = cfg["method"]
        if m["name"] == "kd":
            what += (f", KD {'with' if m['standardize'] else 'without'} logit standardization "
                     f"(temperature {m['temperature']:g}, weights CE {m['ce_weight']:g} / KD {m['kd_weight']:g})")
        else:
            what += ", cross-entropy"
        say(f"[{i}/6] {label}: lskd-train {recipe} ({what}) -> {output / name}")
        progress = _Progress(label, verbose)
        try:
            summaries[name] = train(cfg, output / name, device="cpu", quiet=True, log=progress.log,
                                    callbacks=[progress], epoch_lines=verbose)
        finally:
            progress.close()
    return summaries


def _figures(output: Path, summaries: dict[str, dict[str, Any]], say: Callable[[str], None]) -> list[Path]:
    from .training import plots

    fig_dir = output / "figures"
    kd = plots.run_logits(output / "kd", max_samples=None)
    kd_ls = plots.run_logits(output / "kd_ls", max_samples=None)  # same teacher, same test images
    teacher_label = f"teacher ({kd.teacher_arch})"
    students = {"KD": kd.student, "KD+LS": kd_ls.student}
    n = len(kd.labels)
    written = [
        plots.plot_logit_stats(kd.teacher, students, fig_dir / "logit_stats.png", teacher_label=teacher_label,
                               title=f"Per-sample logit mean and standard deviation, digits test set ({n} images)"),
        plots.plot_class_logits(kd.teacher, students, kd.labels, fig_dir / "class_logits.png",
                                class_names=kd.class_names, teacher_label=teacher_label,
                                title="Class-averaged standardized logits (row: true class, column: logit)"),
        plots.plot_correlation_difference(kd.teacher, students, fig_dir / "correlation_difference.png",
                                          class_names=kd.class_names),
    ]
    runs = {label: plots.read_metrics(output / name / "metrics.jsonl") for name, _, label in STEPS[1:]}
    written.append(plots.plot_accuracy_comparison(
        runs, fig_dir / "accuracy.png", reference={teacher_label + ", best": summaries["teacher"]["best"]["top1"]},
        title=f"Student ({kd.student_arch}) on the digits test set: alone, KD, KD+LS"))
    for name, _, label in STEPS:
        written.append(plots.plot_training_curves(plots.read_metrics(output / name / "metrics.jsonl"),
                                                  fig_dir / f"curves_{name}.png", title=f"Training curves: {label}"))
    for path in written:
        say(f"  wrote {path}")
    return written


def _export(output: Path, say: Callable[[str], None]) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort
    import torch

    from .export import INPUT_NAME, export_onnx, load_student
    from .training.data import build_datasets

    onnx_path = output / "kd_ls_student.onnx"
    say(f"[6/6] lskd-export {output / 'kd_ls' / 'student.pt'} --onnx -o {onnx_path}")
    report = export_onnx(output / "kd_ls" / "student.pt", onnx_path, force=True, provider="cpu")
    for line in report.summary().splitlines():
        say("  " + line)

    test = build_datasets("digits").test
    images = torch.stack([test[i][0] for i in range(len(test))]).numpy().astype(np.float32)
    labels = np.array([test[i][1] for i in range(len(test))])
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {INPUT_NAME: images})[0]
    model = load_student(output / "kd_ls" / "student.pt").model
    with torch.inference_mode():
        torch_logits = model(torch.from_numpy(images)).numpy()
    agree = float((onnx_logits.argmax(1) == torch_logits.argmax(1)).mean())
    result = {
        "file": str(onnx_path),
        "bytes": onnx_path.stat().st_size,
        "test_images": int(len(labels)),
        "top1_agreement": agree,
        "max_abs_diff": float(np.abs(onnx_logits - torch_logits).max()),
        "onnx_top1": 100.0 * float((onnx_logits.argmax(1) == labels).mean()),
        "torch_top1": 100.0 * float((torch_logits.argmax(1) == labels).mean()),
        "provider": session.get_providers()[0],
    }
    say(f"  ONNX Runtime ({result['provider']}) on all {result['test_images']} test images: top-1 agreement with "
        f"PyTorch {100 * agree:.2f}%, max |logit difference| {result['max_abs_diff']:.2e}, "
        f"top-1 {result['onnx_top1']:.2f}% (PyTorch {result['torch_top1']:.2f}%)")
    return result


def _describe(summaries: dict[str, dict[str, Any]]) -> list[str]:
    """Plain statements about the table, whatever the numbers are."""
    def d(a: str, b: str, key: str) -> float:
        return summaries[a][key]["top1"] - summaries[b][key]["top1"]

    n_test = 360
    return [
        f"KD+LS - KD: {d('kd_ls', 'kd', 'best'):+.2f} points (best epoch), {d('kd_ls', 'kd', 'last'):+.2f} (last epoch).",
        f"KD - student alone: {d('kd', 'student', 'best'):+.2f} (best), {d('kd', 'student', 'last'):+.2f} (last); "
        f"KD+LS - student alone: {d('kd_ls', 'student', 'best'):+.2f} (best), "
        f"{d('kd_ls', 'student', 'last'):+.2f} (last).",
        f"One test image is {100 / n_test:.2f} points; with one seed, differences of a point or two are within "
        "run-to-run noise (try --seed 1, 2, ... or the Fashion-MNIST study for means over seeds).",
    ]


def run_demo(output: str | Path = "demo-output", *, epochs: int | None = None, seed: int = 0, threads: int = 1,
             verbose: bool = False, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the six steps (four trainings, figures, export); return the results (also written to ``OUTPUT/results.json``).

    Args:
        output: output directory.
        epochs: epochs of every training (None: the recipes' own).
        seed: seed of every training.
        threads: ``torch.set_num_threads``.
        verbose: print every epoch line of the engine instead of progress bars.
        say: where the report goes.
    """
    import torch

    from .training.recipes import load_recipe

    started = time.perf_counter()
    output = Path(output)
    torch.set_num_threads(max(1, int(threads)))
    _prepare_output(output)
    overrides = [f"train.seed={int(seed)}"]
    if epochs is not None:
        overrides.append(f"schedule.epochs={int(epochs)}")
    n_epochs = int(load_recipe("demo/teacher", overrides)["schedule"]["epochs"])
    say("Logit standardization in knowledge distillation (Sun et al., CVPR 2024), on scikit-learn's digits.")
    say("KD makes a student match the teacher's softened logits; KD+LS compares the standardized logits "
        "Z(x) = (x - mean) / std")
    say("instead, so the student matches their shape, not their offset or scale. Same seed, same budget: "
        f"{n_epochs} epochs per training, seed {seed}, {torch.get_num_threads()} thread(s). Output: {output}/\n")

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    summaries = _train_all(output, overrides, n_epochs, verbose, say)
    timings["training"] = time.perf_counter() - t0

    rows = []
    for name, recipe, label in STEPS:
        s = summaries[name]
        rows.append({"label": label, "arch": s["student"]["arch"], "parameters": s["student"]["parameters"],
                     "recipe": recipe, "best": s["best"], "last": s["last"], "run": str(output / name)})
    table = format_table(rows)
    notes = _describe(summaries)
    say("\nTop-1 accuracy on the 360 test images (best: the epoch of highest test top-1, as the paper reports; "
        "last: the final epoch, the exported network)\n")
    say(table)
    say("")
    for line in notes:
        say(line)

    say("\n[5/6] figures")
    t0 = time.perf_counter()
    figures = _figures(output, summaries, say)
    timings["figures"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    onnx = _export(output, say)
    timings["export"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started

    results = {"rows": rows, "notes": notes, "epochs": n_epochs, "seed": seed, "threads": torch.get_num_threads(),
               "figures": [str(p) for p in figures], "onnx": onnx, "seconds": timings}
    _write_text(output / "results.md", table + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    _write_text(output / "results.json", json.dumps(results, indent=2) + "\n")
    say(f"\nDone in {timings['total']:.0f} s (training {timings['training']:.0f} s, figures {timings['figures']:.0f} s, "
        f"export {timings['export']:.0f} s). Results: {output / 'results.md'}; figures: {output / 'figures'}/")
    say("Next: lskd-plot " + str(output / "kd_ls") + " (figures of one run), lskd-train --list (all recipes), "
        "python benchmarks/fashion_mnist.py (KD, DKD, MLKD, CTKD with and without LS on Fashion-MNIST).")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m logit_standardization.demo``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be >= 1")
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    epochs = QUICK_EPOCHS if args.quick else args.epochs
    try:
        run_demo(args.output, epochs=epochs, seed=args.seed, threads=args.threads, verbose=args.verbose)
    except ImportError as exc:
        print(f"demo: {exc}. The demo needs the training and export extras: "
              "pip install 'logit-standardization[train,onnx]'", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
