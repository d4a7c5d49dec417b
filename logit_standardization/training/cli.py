"""``lskd-train``: train a teacher, a student alone, or distil a student from a shipped recipe.

Usage::

    lskd-train RECIPE [--data-root DIR] [--output DIR] [--epochs N] [--batch-size N]
                      [--teacher PATH] [--device auto|cpu|cuda] [--seed N] [--resume] [--download]
                      [--amp off|bf16|fp16] [--channels-last] [--compile] [--sync-bn]
                      [--deterministic] [--workers N] [--runs N | --seeds S [S ...]] [--quiet] [--no-plots]
                      [--logger tensorboard|wandb ...] [--set KEY=VALUE [KEY=VALUE ...]]
    lskd-train --list [PREFIX]
    lskd-train --show RECIPE [options]      # print the resolved recipe and exit
    lskd-train --version

Under ``torchrun --nproc_per_node=N -m logit_standardization.training ...`` the same command
runs data-parallel (DDP); ``--batch-size`` is the global batch.

Exit status: 0 on success, 2 for a usage or setup error (one line on stderr says what to fix:
an unknown recipe or key, missing or refused data, an output directory that cannot be
written, a checkpoint that is corrupt or does not fit, a failed checkpoint write, a missing
optional dependency, ``--list`` of a prefix no recipe has), 128 + the signal number (130,
143) when SIGINT/SIGTERM stopped training after saving ``last.pt``. Options cannot be
abbreviated (``--epoch`` is refused). Progress bars are drawn only when stderr is a
terminal; otherwise (and with ``--quiet``) one plain line per epoch is printed.

Every run writes ``metrics.csv`` next to ``metrics.jsonl``; ``--logger tensorboard`` adds
TensorBoard scalars under ``OUTPUT/tensorboard``, ``--logger wandb`` a Weights & Biases run
(``WANDB_MODE=offline`` works without a network); ``--logger`` may be given several times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

from ._errors import TrainingError, missing_dependency, output_dir_problem

__all__ = ["main", "build_parser", "resolve"]


def build_parser() -> argparse.ArgumentParser:
    """The ``argparse`` parser of ``lskd-train`` (its ``--help`` documents every option)."""
    from .. import __version__

    p = argparse.ArgumentParser(
        prog="lskd-train",
        allow_abbrev=False,
        description="Train with a recipe of the logit-standardization paper (CIFAR-100, ImageNet) or a small "
        "CPU recipe (demo/..., fashion_mnist/...). RECIPE is a shipped name (see --list) or a YAML file.",
        epilog="Example: lskd-train cifar100/kd_ls/resnet32x4-resnet8x4 --data-root data "
        "--teacher runs/cifar100/teacher/resnet32x4/best.pt",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("recipe", nargs="?", help="shipped recipe name or YAML path")
    p.add_argument("--list", nargs="?", const="", metavar="PREFIX", help="list the shipped recipes (optionally "
                   "those starting with PREFIX) and exit")
    p.add_argument("--show", action="store_true", help="print the resolved recipe as YAML and exit")
    p.add_argument("--data-root", metavar="DIR", help="dataset directory (CIFAR-100: the folder holding "
                   "cifar-100-python/; ImageNet: the folder holding train/ and val/)")
    p.add_argument("--download", action="store_true", help="download CIFAR-100 / Fashion-MNIST if missing")
    p.add_argument("--output", metavar="DIR", help="run directory (default: runs/<recipe name>)")
    p.add_argument("--teacher", metavar="PATH", help="teacher checkpoint: best.pt/student.pt of a run, a reference "
                   "{'model': state_dict} file or a plain state dict")
    p.add_argument("--epochs", type=int, help="override schedule.epochs")
    p.add_argument("--batch-size", type=int, help="override data.batch_size (global over all processes)")
    p.add_argument("--workers", type=int, help="override data.num_workers (per process)")
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--amp", choices=("off", "bf16", "fp16"), help="autocast dtype (fp16 needs CUDA)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the student")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes (torchrun)")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower on CUDA)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.pt (start fresh if absent)")
    runs = p.add_mutually_exclusive_group()
    runs.add_argument("--runs", type=int, metavar="N", help="repeat with seeds SEED, SEED+1, ... and report mean "
                      "and std (runs go to OUTPUT/seed<k>)")
    runs.add_argument("--seeds", type=int, nargs="+", metavar="S", help="repeat with these seeds")
    p.add_argument("--quiet", action="store_true", help="no progress bars (one line per epoch)")
    p.add_argument("--no-plots", action="store_true",
                   help="do not draw the run's figures at the end (draw them later with lskd-plot RUN_DIR)")
    p.add_argument("--logger", dest="loggers", action="append", default=[], choices=("tensorboard", "wandb"),
                   help="also log every epoch to TensorBoard (OUTPUT/tensorboard) or Weights & Biases (the wandb "
                   "package; WANDB_MODE=offline needs no network); may be repeated. metrics.csv is always written")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override any recipe key, value parsed as YAML (e.g. method.kd_weight=6 "
                   "schedule.milestones=[30,60])")
    return p


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """The resolved recipe for parsed arguments (command-line options become overrides)."""
    from .recipes import load_recipe

    overrides = list(args.overrides)
    flag_map = [
        ("data.root", args.data_root), ("schedule.epochs", args.epochs), ("data.batch_size", args.batch_size),
        ("data.num_workers", args.workers), ("train.seed", args.seed), ("train.amp", args.amp),
    ]
    for key, value in flag_map:
        if value is not None:
            overrides.append(f"{key}={json.dumps(str(value)) if isinstance(value, str) else value}")
    for key, on in [("data.download", args.download), ("train.channels_last", args.channels_last),
                    ("train.compile", args.compile), ("train.sync_bn", args.sync_bn),
                    ("train.deterministic", args.deterministic)]:
        if on:
            overrides.append(f"{key}=true")
    if args.teacher is not None:
        overrides.append(f"teacher.checkpoint={json.dumps(str(Path(args.teacher).expanduser().resolve()))}")
    return load_recipe(args.recipe, overrides)


def _print_list(prefix: str) -> int:
    from .recipes import list_recipes, load_recipe

    names = list_recipes(prefix or None)
    if not names:
        print(f"lskd-train: error: no shipped recipe starts with {prefix!r} (lskd-train --list shows them all)",
              file=sys.stderr)
        return 2
    width = max(len(n) for n in names)
    for name in names:
        cfg = load_recipe(name)
        paper = f"{cfg['paper']:6.2f}" if cfg["paper"] is not None else "     -"
        print(f"{name:<{width}}  {paper}  {cfg['description']}")
    print(f"\n{len(names)} recipes; the number is the top-1 (%) the paper reports for that row.")
    return 0


def _default_output(cfg: dict[str, Any], recipe: str) -> Path:
    return Path("runs") / str(cfg["name"] or Path(recipe).stem)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _repeat(cfg: dict[str, Any], output: Path, seeds: list[int], args, state, log) -> dict[str, Any]:
    from .engine import train

    results = []
    for seed in seeds:
        run_cfg = {**cfg, "train": {**cfg["train"], "seed": seed}}
        log(f"== {cfg['name']}: seed {seed} ({len(results) + 1}/{len(seeds)})")
        results.append(train(run_cfg, output / f"seed{seed}", resume=args.resume, quiet=args.quiet, state=state,
                             log=log, callbacks=_loggers(args)))
        _plots(args, state, output / f"seed{seed}", log)
    best = [r["best"]["top1"] for r in results]
    last = [r["last"]["top1"] for r in results]
    bm, bs = _mean_std(best)
    lm, ls = _mean_std(last)
    report = {
        "recipe": cfg["name"], "paper_top1": cfg["paper"], "seeds": seeds,
        "best_top1": {"mean": bm, "std": bs, "values": best},
        "last_top1": {"mean": lm, "std": ls, "values": last},
        "std_note": "sample standard deviation (n - 1) over the runs",
        "runs": [str(output / f"seed{s}") for s in seeds],
    }
    if state.is_main:
        from .engine import _write_json

        output.mkdir(parents=True, exist_ok=True)
        _write_json(output / "runs.json", report)
    paper = f"paper {cfg['paper']:.2f}; " if cfg["paper"] is not None else ""
    log(f"{cfg['name']} over {len(seeds)} runs: {paper}best top-1 {bm:.2f} ± {bs:.2f}, "
        f"last top-1 {lm:.2f} ± {ls:.2f} [{output / 'runs.json'}]")
    return report


def _loggers(args) -> list:
    """New logger callbacks for ``--logger`` (one set per training run)."""
    from .callbacks import make_loggers

    return make_loggers(args.loggers)


def _plots(args, state, run_dir: Path, log) -> None:
    """The run's figures (``RUN_DIR/plots/*.png``), drawn by rank 0 unless ``--no-plots``."""
    if args.no_plots or not state.is_main:
        return
    from .plots import plot_after_training

    plot_after_training(run_dir, device=str(state.device), log=log)


def _error(message: str) -> int:
    print(f"lskd-train: error: {message}", file=sys.stderr)
    return 2


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lskd-train``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _main(parser, args)
    except ImportError as exc:  # a core-only install: torch, PyYAML, tqdm, ... are the [train] extra
        return _error(missing_dependency(exc, "train"))


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.list is not None:
        try:
            return _print_list(args.list)
        except BrokenPipeError:  # e.g. `lskd-train --list | head`
            sys.stdout = open(os.devnull, "w")
        return 0
    if not args.recipe:
        parser.error("a RECIPE is required (see --list)")
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be >= 1")
    try:
        cfg = resolve(args)
    except TrainingError as exc:
        return _error(str(exc))
    if args.show:
        import yaml

        print(yaml.safe_dump(cfg, sort_keys=False, width=110), end="")
        return 0

    output = Path(args.output) if args.output else _default_output(cfg, args.recipe)
    problem = output_dir_problem(output, "--output directory")
    if problem:
        return _error(f"{problem}; choose another --output")

    import torch  # noqa: F401  -- fail here, with the install hint, when the [train] extra is missing

    try:
        _loggers(args)  # a logger whose package is missing: say so before any work
    except TrainingError as exc:
        return _error(str(exc))

    from . import distributed as D
    from .engine import TrainingInterrupted, train

    try:
        state = D.setup(args.device)
    except (TrainingError, RuntimeError, ValueError) as exc:
        return _error(str(exc))

    def log(msg: str) -> None:
        if state.is_main:
            print(msg, flush=True)

    try:
        if args.runs is not None or args.seeds is not None:
            seeds = args.seeds or [cfg["train"]["seed"] + i for i in range(args.runs)]
            _repeat(cfg, output, seeds, args, state, log)
        else:
            train(cfg, output, resume=args.resume, quiet=args.quiet, state=state, log=log, callbacks=_loggers(args))
            _plots(args, state, output, log)
    except TrainingError as exc:
        return _error(str(exc))
    except TrainingInterrupted as exc:
        print(f"lskd-train: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:  # before training started, or a second Ctrl-C
        print("lskd-train: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # writing the run's files (metrics, summary): disk full, permissions, ...
        where = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
        return _error(f"cannot write{where} in {str(output)!r}: {exc.strerror or _first_line(exc)}")
    except ValueError as exc:  # the data loaders refuse malformed or unsafe dataset files with a ValueError
        return _error(f"{_first_line(exc)} (check the files under --data-root)")
    finally:
        D.teardown(state)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
