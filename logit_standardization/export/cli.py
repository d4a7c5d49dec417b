"""``lskd-export``: a trained student to a verified ONNX file.

Usage::

    lskd-export CHECKPOINT --onnx [-o OUT] [--opset N] [--batch dynamic|N] [--fp16 [--fp16-io]]
                [--int8 [--calibration-data DIR]] [--no-verify] [--atol X] [--min-top1 X]
                [--provider auto|cpu|cuda] [--benchmark] [--exporter auto|dynamo|torchscript]
                [--force] [--arch NAME --dataset NAME --num-classes N] [--json] [--quiet]
    lskd-export --version

Exit status: 0 success; 2 usage or setup error (a bad or abbreviated option, an output that
is the checkpoint itself -- same path, symbolic or hard link -- even with ``--force``, an
input size the network cannot take, a missing optional dependency: one line on stderr says
what to fix); otherwise the ``exit_code`` of the failure (see :data:`logit_standardization.export.EXIT_CODES`): 3 checkpoint not found,
4 unsafe checkpoint refused, 5 unreadable or corrupt checkpoint (truncated, SHA-256 mismatch), missing
or malformed metadata, 6 unknown
architecture or dataset, 7 weights do not fit the architecture, 8 output exists (no
``--force``), 9 output not writable, 10 verification failed, 11 conversion failed,
12 execution provider unavailable, 13 bad calibration data.

Output: progress lines (loading, exporting) on stderr, the report on stdout; each line is
printed once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


def _batch(text: str) -> str | int:
    if text == "dynamic":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'dynamic' or a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 'dynamic' or a positive integer, got {text!r}")
    return value


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    """The ``lskd-export`` argument parser (its ``--help`` is the command's reference)."""
    from .. import __version__

    p = argparse.ArgumentParser(
        prog="lskd-export",
        allow_abbrev=False,
        description="Export a trained student (student.pt or student.safetensors, best.pt/last.pt, a reference "
        "{'model': state_dict} file or plain state dict with --arch, or a Keras .keras file) to one ONNX file, "
        "then verify it in ONNX Runtime against the source model.",
        epilog="Example: lskd-export runs/cifar100/kd_ls/resnet32x4-resnet8x4/student.pt --onnx --benchmark",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("checkpoint", help="the checkpoint to export")
    p.add_argument("--onnx", action="store_true", help="export to ONNX (the only format; accepted for clarity)")
    p.add_argument("-o", "--output", metavar="OUT", help="output .onnx file (default: the checkpoint's name with "
                   ".onnx, .fp16.onnx or .int8.onnx)")
    p.add_argument("--opset", type=int, metavar="N", help="ONNX opset (default: the exporter's)")
    p.add_argument("--batch", type=_batch, default="dynamic", metavar="dynamic|N",
                   help="dynamic batch axis (default) or a fixed batch size")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="float16 weights and activations (I/O stays float32)")
    precision.add_argument("--int8", action="store_true", help="int8 quantization with ONNX Runtime (dynamic; "
                           "static with --calibration-data)")
    p.add_argument("--fp16-io", action="store_true", help="with --fp16: float16 input and logits too")
    p.add_argument("--calibration-data", metavar="DIR", help="with --int8: folder of .npy arrays (normalized, "
                   "one sample or a batch each) and/or images, for static quantization")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime comparison")
    p.add_argument("--atol", type=float, default=1e-4, metavar="X",
                   help="float32 tolerance on the max absolute logit difference (default 1e-4)")
    p.add_argument("--min-top1", type=float, metavar="X", help="top-1 agreement threshold for --fp16/--int8 "
                   "(default 0.99 for fp16, 0.90 for int8)")
    p.add_argument("--verify-batches", type=_sizes, default=[1, 4, 16], metavar="B,B,...",
                   help="sizes of the random verification batches (default 1,4,16)")
    p.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto",
                   help="ONNX Runtime execution provider (auto: CUDA when onnxruntime-gpu is installed)")
    p.add_argument("--benchmark", action="store_true", help="time eager vs ONNX Runtime at batch 1 and 64")
    p.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto",
                   help="PyTorch exporter (auto: torch.export-based, TorchScript fallback)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--arch", metavar="NAME", help="architecture (for checkpoints that do not name it)")
    p.add_argument("--dataset", metavar="NAME", help="dataset of the zoo: cifar100, imagenet, fashion_mnist, digits")
    p.add_argument("--num-classes", type=int, metavar="N", help="number of classes, if not the dataset's")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lskd-export``; returns the exit status (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.calibration_data and not args.int8:
        parser.error("--calibration-data needs --int8")
    if args.fp16_io and not args.fp16:
        parser.error("--fp16-io needs --fp16")

    from ..training._errors import missing_dependency
    from ._api import export_onnx
    from ._errors import ExportError, VerificationError

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    try:
        # fail fast, naming the package, when the [onnx] extra is not installed
        import onnx  # noqa: F401

        if not str(args.checkpoint).endswith(".keras"):
            import torch  # noqa: F401
        if not args.no_verify or args.benchmark:
            import onnxruntime  # noqa: F401
        report = export_onnx(
            args.checkpoint,
            args.output,
            arch=args.arch,
            dataset=args.dataset,
            num_classes=args.num_classes,
            opset=args.opset,
            batch=args.batch,
            fp16=args.fp16,
            fp16_io=args.fp16_io,
            int8=args.int8,
            calibration_data=args.calibration_data,
            verify_outputs=not args.no_verify,
            atol=args.atol,
            min_top1=args.min_top1,
            verify_batch_sizes=args.verify_batches,
            provider=args.provider,
            run_benchmark=args.benchmark,
            exporter=args.exporter,
            force=args.force,
            log=log,
        )
    except VerificationError as exc:
        if exc.report is None:
            print(f"lskd-export: error: {exc}", file=sys.stderr)
            return exc.exit_code
        print(json.dumps(exc.report.to_dict(), indent=2) if args.json else exc.report.summary())
        failed = ", ".join(v.precision for v in exc.report.verifications if not v.passed)
        print(f"lskd-export: error: verification failed ({failed}; the numbers are in the report): "
              f"{str(exc.report.output)!r} was written but does not match its source model", file=sys.stderr)
        return exc.exit_code
    except ExportError as exc:
        print(f"lskd-export: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ImportError as exc:  # a core-only install: torch, onnx, onnxruntime are the [onnx] extra
        name = (exc.name or "").split(".")[0]
        extra = "keras-onnx" if name in ("keras", "tensorflow", "tf2onnx") else "onnx"
        print(f"lskd-export: error: {missing_dependency(exc, extra)}", file=sys.stderr)
        return 2
    except ValueError as exc:  # contradictory arguments caught by the library
        print(f"lskd-export: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
