"""ONNX export of distilled students, verified in ONNX Runtime (the ``lskd-export`` command).

The command-line tool is a thin layer over :func:`export_onnx`, which loads a checkpoint
safely (``torch.load(..., weights_only=True)``; architectures are looked up by name in the
model zoo, nothing from the file is executed), exports it with ``torch.onnx.export`` (or
Keras's ONNX export for ``.keras`` files), stores the preprocessing metadata in the graph,
checks it with ``onnx.checker``, and compares ONNX Runtime with the source model on random
batches.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from logit_standardization.training.models import create_model
    >>> from logit_standardization.training.checkpoint import student_payload
    >>> d = Path(tempfile.mkdtemp())
    >>> net = create_model("mlp_digits_small", dataset="digits")
    >>> torch.save(student_payload(net, arch="mlp_digits_small", dataset="digits", num_classes=10), d / "student.pt")
    >>> report = export_onnx(d / "student.pt", exporter="torchscript", provider="cpu")
    >>> report.output.name, report.verified, report.verifications[0].max_abs_diff < 1e-4
    ('student.onnx', True, True)
    >>> read_metadata(report.output)["input_size"]
    [1, 8, 8]

Exit codes of ``lskd-export`` are the ``exit_code`` attributes of the error classes
(:data:`EXIT_CODES`); 2 is a usage or setup error (:class:`SetupError`, a missing optional
dependency, a bad option).
"""

from ._api import ExportReport, export_onnx, reference_function
from ._checkpoint import Student, load_student, safe_torch_load
from ._convert import INPUT_NAME, OUTPUT_NAME, read_calibration_data, read_metadata
from ._errors import (
    EXIT_CODES,
    CalibrationDataError,
    CheckpointFormatError,
    CheckpointNotFoundError,
    ConversionError,
    ExportError,
    OutputExistsError,
    OutputNotWritableError,
    ProviderUnavailableError,
    SetupError,
    StateDictMismatchError,
    UnknownArchitectureError,
    UnsafeCheckpointError,
    VerificationError,
)
from ._runtime import (
    TOP1_THRESHOLDS,
    Benchmark,
    LatencyRow,
    Verification,
    benchmark,
    compare_logits,
    make_session,
    resolve_providers,
    verify,
)

__all__ = [
    "EXIT_CODES",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "TOP1_THRESHOLDS",
    "Benchmark",
    "CalibrationDataError",
    "CheckpointFormatError",
    "CheckpointNotFoundError",
    "ConversionError",
    "ExportError",
    "ExportReport",
    "LatencyRow",
    "OutputExistsError",
    "OutputNotWritableError",
    "ProviderUnavailableError",
    "SetupError",
    "StateDictMismatchError",
    "Student",
    "UnknownArchitectureError",
    "UnsafeCheckpointError",
    "Verification",
    "VerificationError",
    "benchmark",
    "compare_logits",
    "export_onnx",
    "load_student",
    "make_session",
    "read_calibration_data",
    "read_metadata",
    "reference_function",
    "resolve_providers",
    "safe_torch_load",
    "verify",
]
