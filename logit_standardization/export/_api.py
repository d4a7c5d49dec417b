"""``export_onnx``: checkpoint in, verified ``.onnx`` file and a report out."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _convert
from ._checkpoint import Student, load_student
from ._errors import (
    CheckpointNotFoundError,
    ConversionError,
    OutputExistsError,
    OutputNotWritableError,
    SetupError,
    VerificationError,
)
from ._runtime import PROVIDERS, Benchmark, Verification, benchmark, resolve_providers, verify

__all__ = ["ExportReport", "export_onnx", "reference_function"]

EXPORTERS = ("auto", "dynamo", "torchscript")


@dataclass
class ExportReport:
    """What :func:`export_onnx` did and measured.

    Attributes:
        output: the written ``.onnx`` file.
        checkpoint: the source file.
        source_format: the recognised checkpoint layout.
        framework: ``"torch"`` or ``"keras"``.
        arch: architecture name.
        dataset: zoo dataset key, or None.
        num_classes: logits size.
        input_size: one input without the batch axis, in ``input_layout``.
        input_layout: ``"NCHW"`` or ``"NHWC"``.
        normalization: ``{"mean", "std"}`` for ``[0, 1]`` pixels, or None.
        precision: ``"fp32"``, ``"fp16"``, ``"int8-dynamic"`` or ``"int8-static"``.
        exporter: ``"dynamo"``, ``"torchscript"`` or ``"keras (<backend> backend)"``.
        opset: the ONNX opset of the default domain.
        batch_size: the fixed batch size, or None for a dynamic batch axis.
        file_bytes: size of the ``.onnx`` file.
        seconds: wall time of the export and verification.
        verifications: one :class:`Verification` for the float32 graph and, for reduced
            precision, one for the final graph (empty with ``verify_outputs=False``).
        benchmark: latency table, when requested.
        notes: remarks (exporter fallback, inferred dataset, ...).
    """

    output: Path
    checkpoint: Path
    source_format: str
    framework: str
    arch: str
    dataset: str | None
    num_classes: int
    input_size: tuple[int, ...]
    input_layout: str
    normalization: dict[str, list[float]] | None
    precision: str
    exporter: str
    opset: int
    batch_size: int | None
    file_bytes: int
    seconds: float
    verifications: list[Verification] = field(default_factory=list)
    benchmark: Benchmark | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        """True when verification ran and every criterion held."""
        return bool(self.verifications) and all(v.passed for v in self.verifications)

    def summary(self) -> str:
        """Human-readable lines for the console."""
        batch = "dynamic" if self.batch_size is None else str(self.batch_size)
        lines = [
            f"wrote {self.output} ({_size(self.file_bytes)}, {self.precision}, opset {self.opset}, "
            f"exporter {self.exporter}, batch {batch})",
            f"model {self.arch} ({self.dataset or 'no dataset'}), {self.num_classes} classes, input "
            f"{self.input_layout} {tuple(self.input_size)}, from {self.source_format}",
        ]
        lines += [v.describe() for v in self.verifications]
        if not self.verifications:
            lines.append("verification skipped")
        if self.benchmark is not None:
            lines.append(f"latency (median, {self.benchmark.threads} threads):")
            lines.append(self.benchmark.table())
        lines += self.notes
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        out = asdict(self)
        out["output"], out["checkpoint"] = str(self.output), str(self.checkpoint)
        out["verified"] = self.verified
        if self.benchmark is not None:
            out["benchmark"] = self.benchmark.to_dict()
        return out


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.2f} MB" if n_bytes >= 100_000 else f"{n_bytes / 1e3:.1f} kB"


def reference_function(student: Student) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """The source model as a NumPy function (float32 batch in, logits out) and its label."""
    if student.framework == "keras":
        import keras

        model = student.model

        def run_keras(x: np.ndarray) -> np.ndarray:
            return keras.ops.convert_to_numpy(model(x, training=False))

        return run_keras, f"Keras ({keras.backend.backend()})"

    import torch

    model = student.model

    def run_torch(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return run_torch, "PyTorch eager"


def _first_samples(batches: list[np.ndarray] | None, n: int) -> list[np.ndarray] | None:
    """The leading batches holding at least ``n`` samples (all of them if fewer)."""
    if batches is None:
        return None
    out: list[np.ndarray] = []
    for b in batches:
        if sum(len(o) for o in out) >= n:
            break
        out.append(b)
    return out


def _default_output(checkpoint: Path, precision_tag: str) -> Path:
    suffix = "" if precision_tag == "fp32" else f".{precision_tag}"
    return checkpoint.with_name(checkpoint.stem + suffix + ".onnx")


def _check_args(batch, fp16, fp16_io, int8, calibration_data, provider, exporter, atol, min_top1, sizes) -> int | None:
    if fp16 and int8:
        raise ValueError("export_onnx: 'fp16' and 'int8' cannot both be set; choose one precision")
    if fp16_io and not fp16:
        raise ValueError("export_onnx: 'fp16_io' is only used with fp16=True")
    if calibration_data is not None and not int8:
        raise ValueError("export_onnx: 'calibration_data' is only used with int8=True (static quantization)")
    if provider not in PROVIDERS:
        raise ValueError(f"export_onnx: argument 'provider' must be one of {', '.join(PROVIDERS)}; got {provider!r}")
    if exporter not in EXPORTERS:
        raise ValueError(f"export_onnx: argument 'exporter' must be one of {', '.join(EXPORTERS)}; got {exporter!r}")
    if not (isinstance(atol, (int, float)) and atol >= 0):
        raise ValueError(f"export_onnx: argument 'atol' must be a number >= 0; got {atol!r}")
    if min_top1 is not None and not (isinstance(min_top1, (int, float)) and 0 <= min_top1 <= 1):
        raise ValueError(f"export_onnx: argument 'min_top1' must be in [0, 1]; got {min_top1!r}")
    if not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
        raise ValueError(f"export_onnx: argument 'verify_batch_sizes' must be positive ints; got {tuple(sizes)!r}")
    if batch in (None, "dynamic"):
        return None
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"export_onnx: argument 'batch' must be 'dynamic' or a positive int; got {batch!r}")
    return batch


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_output_is_not_source(output: Path, checkpoint: Path) -> None:
    """Refuse an output that is the checkpoint: the same path, a symbolic link or a hard link to it."""
    if _same_file(output, checkpoint) or output.resolve() == checkpoint.resolve():
        how = ("is" if output.absolute() == checkpoint.absolute() else
               "is a link to" if output.is_symlink() else "is the same file as (a hard link to)")
        raise SetupError(f"output {str(output)!r} {how} the checkpoint {str(checkpoint)!r}; writing it would "
                         "destroy the source (even with --force): choose another output with -o")


def _check_input_size(student: Student) -> None:
    """Run the source model once on a zero batch of ``input_size``; refuse a size the network cannot take."""
    if student.framework != "torch":
        return  # a Keras model's input size is its own input shape
    import torch

    size = tuple(student.input_size)
    try:
        with torch.no_grad():
            out = student.model(torch.zeros(1, *size))
        shape = tuple(out.shape)
    except Exception as exc:  # noqa: BLE001 - any failure of the forward pass means the size does not fit
        text = str(exc).strip()
        reason = f"{type(exc).__name__}: {text.splitlines()[0][:160]}" if text else type(exc).__name__
        raise SetupError(
            f"input size {list(size)} does not fit {student.arch!r} ({reason}); the checkpoint's 'input_size' "
            f"must be one input (C, H, W) the network was built for"
            + (f" (dataset {student.dataset!r})" if student.dataset else "")
        ) from None
    if shape != (1, student.num_classes):
        raise SetupError(f"input size {list(size)} gives {student.arch!r} logits of shape {shape}, not "
                         f"(1, {student.num_classes}); the checkpoint's 'input_size' does not fit the network")


def _prepare_output(output: Path, force: bool) -> Path:
    """Refuse an existing output without ``force``; create and return a private work directory."""
    if output.exists() and not force:
        raise OutputExistsError(f"output {str(output)!r} already exists; pass --force to overwrite it")
    if output.is_dir():
        raise OutputNotWritableError(f"output {str(output)!r} is a directory; give a file name ending in .onnx")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".lskd-export-", dir=output.parent))
    except OSError as exc:
        raise OutputNotWritableError(
            f"cannot write {str(output)!r}: {exc.strerror or exc} ({str(output.parent)!r} is not a writable directory)"
        ) from None


def export_onnx(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    arch: str | None = None,
    dataset: str | None = None,
    num_classes: int | None = None,
    opset: int | None = None,
    batch: int | str | None = "dynamic",
    fp16: bool = False,
    fp16_io: bool = False,
    int8: bool = False,
    calibration_data: str | os.PathLike | None = None,
    verify_outputs: bool = True,
    atol: float = 1e-4,
    min_top1: float | None = None,
    verify_batch_sizes: Sequence[int] = (1, 4, 16),
    provider: str = "auto",
    run_benchmark: bool = False,
    benchmark_batch_sizes: Sequence[int] = (1, 64),
    exporter: str = "auto",
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export a trained student to one self-contained, verified ONNX file.

    The graph takes ``input`` (normalized images, ``(batch, *input_size)``) and returns
    ``logits``; the batch axis is dynamic unless ``batch`` is an int. Architecture, dataset,
    class count, input size and layout, and normalization are stored in the model's
    ``metadata_props`` (read them back with :func:`read_metadata`).

    Verification (on by default) runs the graph in ONNX Runtime and the source model on the
    same random batches. A float32 graph must match within ``atol`` (max absolute logit
    difference); a float16/int8 graph is first exported and checked in float32, then must
    agree on the top-1 class for at least ``min_top1`` of the inputs (default
    :data:`~logit_standardization.export.TOP1_THRESHOLDS`: 0.99 for fp16, 0.90 for int8).

    Args:
        checkpoint: ``student.pt``, ``best.pt``/``last.pt``, a reference-zoo file or plain
            state dict (with ``arch``), or a Keras ``.keras`` file.
        output: the ``.onnx`` path; defaults to the checkpoint's name with ``.onnx``
            (``.fp16.onnx``, ``.int8.onnx`` for reduced precision).
        arch: zoo architecture (required when the checkpoint does not name it).
        dataset: zoo dataset (``"cifar100"``, ``"imagenet"``, ...).
        num_classes: logits size when it differs from the dataset's.
        opset: ONNX opset (None: the exporter's default).
        batch: ``"dynamic"`` or a fixed batch size.
        fp16: convert weights and activations to float16.
        fp16_io: with ``fp16``, make ``input``/``logits`` float16 too (default float32).
        int8: quantize with ONNX Runtime (dynamic, or static with ``calibration_data``).
        calibration_data: directory of calibration inputs (see
            :func:`read_calibration_data`).
        verify_outputs: run the verification.
        atol: float32 tolerance on the max absolute logit difference.
        min_top1: top-1 agreement threshold for fp16/int8.
        verify_batch_sizes: sizes of the random verification batches.
        provider: ONNX Runtime provider: ``"auto"`` (CUDA when installed), ``"cpu"``, ``"cuda"``.
        run_benchmark: time the source model and ONNX Runtime at ``benchmark_batch_sizes``.
        benchmark_batch_sizes: batch sizes for the latency table.
        exporter: ``"auto"`` (``torch.export``-based, TorchScript fallback), ``"dynamo"`` or
            ``"torchscript"``; ignored for Keras.
        force: overwrite an existing output.
        log: called with progress lines (loading, exporting, benchmarking); the verification
            lines and notes are in the report, not repeated here.

    Returns:
        An :class:`ExportReport`.

    Raises:
        ValueError: contradictory or malformed arguments.
        SetupError: ``output`` is the checkpoint itself (same path, symbolic or hard link),
            even with ``force``; or the input size does not fit the network.
        ExportError: a subclass per failure (missing or unsafe checkpoint, unknown
            architecture, weight mismatch, existing or unwritable output, conversion failure,
            unavailable provider, bad calibration data, verification failure).
    """
    started = time.perf_counter()
    fixed_batch = _check_args(
        batch, fp16, fp16_io, int8, calibration_data, provider, exporter, atol, min_top1, list(verify_batch_sizes)
    )
    say = log or (lambda _msg: None)
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointNotFoundError(
            f"checkpoint {str(checkpoint)!r} " + ("is not a file" if checkpoint.exists() else "does not exist")
        )
    tag = "fp16" if fp16 else "int8" if int8 else "fp32"
    output = Path(output) if output is not None else _default_output(checkpoint, tag)
    _check_output_is_not_source(output, checkpoint)
    if verify_outputs or run_benchmark:
        resolve_providers(provider)  # fail fast on --provider cuda without a CUDA build

    work = _prepare_output(output, force)
    try:
        student = load_student(checkpoint, arch=arch, dataset=dataset, num_classes=num_classes)
        say(f"loaded {student.arch} ({student.dataset or student.framework}) from {student.source_format}")
        _check_input_size(student)
        notes = list(student.notes)
        calibration = None
        if calibration_data is not None:
            calibration = _convert.read_calibration_data(
                calibration_data, input_size=student.input_size, layout=student.layout,
                normalization=student.normalization, batch=fixed_batch,
            )  # fmt: skip
        # the file that is moved into place carries the output's name: external weights (models
        # over 2 GiB) are referenced by that name
        reduced = fp16 or int8
        fp32_path = work / output.name
        if reduced:  # the float32 graph is an intermediate
            (work / "fp32").mkdir()
            fp32_path = work / "fp32" / "model.onnx"
        if student.framework == "keras":
            used, external = _convert.export_keras(student.model, fp32_path, opset=opset, batch=fixed_batch), False
        else:
            used, external, export_notes = _convert.export_torch(
                student.model, student.input_size, fp32_path, opset=opset, batch=fixed_batch, exporter=exporter
            )  # its notes are printed once, with the report
            notes += export_notes
        if external and reduced:
            raise ConversionError("float16/int8 conversion of a model over 2 GiB is not supported; export float32")
        say(f"exported with {used}")
        meta = {
            "arch": student.arch,
            "dataset": student.dataset or "",
            "num_classes": student.num_classes,
            "input_size": list(student.input_size),
            "input_layout": student.layout,
            **({"normalization": student.normalization} if student.normalization else {}),
            "batch": "dynamic" if fixed_batch is None else fixed_batch,
            "exporter": used,
            "source_format": student.source_format,
        }
        fp32_model = _convert.finalize(fp32_path, {**meta, "precision": "fp32"}, batch=fixed_batch, external_data=external)
        opset_used = next((o.version for o in fp32_model.opset_import if o.domain in ("", "ai.onnx")), 0)
        del fp32_model

        reference, reference_name = reference_function(student)
        sizes = [fixed_batch] * len(verify_batch_sizes) if fixed_batch else list(verify_batch_sizes)
        checks: list[Verification] = []
        if verify_outputs:
            checks.append(verify(fp32_path, reference, student.input_size, batch_sizes=sizes, atol=atol, provider=provider))

        final_path, precision = fp32_path, "fp32"
        if reduced:
            final_path = work / output.name
            if fp16:
                _convert.to_fp16(fp32_path, final_path, keep_io_types=not fp16_io)
                precision = "fp16"
            else:
                precision = _convert.to_int8(fp32_path, final_path, calibration=calibration)
            _convert.finalize(final_path, {**meta, "precision": precision}, batch=fixed_batch)
            if verify_outputs:
                check = verify(
                    final_path, reference, student.input_size, precision=precision, batch_sizes=sizes,
                    min_top1=min_top1, provider=provider, inputs=_first_samples(calibration, 64),
                )  # fmt: skip
                checks.append(check)

        os.replace(final_path, output)
        if external:
            os.replace(work / (output.name + ".data"), output.with_name(output.name + ".data"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    bench = None
    if run_benchmark:
        say("benchmarking ...")
        run = [fixed_batch] if fixed_batch else list(benchmark_batch_sizes)
        bench = benchmark(output, reference, student.input_size, reference_name=reference_name,
                          batch_sizes=run, provider=provider)  # fmt: skip
    report = ExportReport(
        output=output,
        checkpoint=checkpoint,
        source_format=student.source_format,
        framework=student.framework,
        arch=student.arch,
        dataset=student.dataset,
        num_classes=student.num_classes,
        input_size=tuple(student.input_size),
        input_layout=student.layout,
        normalization=student.normalization,
        precision=precision,
        exporter=used,
        opset=int(opset_used),
        batch_size=fixed_batch,
        file_bytes=output.stat().st_size,
        seconds=time.perf_counter() - started,
        verifications=checks,
        benchmark=bench,
        notes=notes,
    )
    failed = [v for v in checks if not v.passed]
    if failed:
        raise VerificationError(
            f"verification failed; {str(output)!r} was written but does not match its source model: "
            + "; ".join(v.describe() for v in failed),
            report,
        )
    return report
