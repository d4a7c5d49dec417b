"""Errors raised by :mod:`logit_standardization.export`, each with its CLI exit code.

Every failure the exporter can diagnose has its own class and its own process exit code,
so scripts can tell "the file is missing" from "the numbers did not match" without parsing
text. The codes are part of the interface and are listed in the export guide.
"""

from __future__ import annotations


class ExportError(Exception):
    """Base class: a failure of ``lskd-export`` with a message meant for the user.

    Attributes:
        exit_code: the process exit status ``lskd-export`` returns for this failure.
    """

    exit_code = 1


class CheckpointNotFoundError(ExportError, FileNotFoundError):
    """The checkpoint path does not exist (or is not a file)."""

    exit_code = 3


class UnsafeCheckpointError(ExportError):
    """The file can only be unpickled by running code it names; it is refused."""

    exit_code = 4


class CheckpointFormatError(ExportError, ValueError):
    """The file loads but is not a checkpoint this tool understands, or lacks metadata."""

    exit_code = 5


class UnknownArchitectureError(ExportError, ValueError):
    """The architecture (or dataset) is not in the model zoo."""

    exit_code = 6


class StateDictMismatchError(ExportError, ValueError):
    """The weights do not fit the architecture (missing, unexpected or mis-shaped keys)."""

    exit_code = 7


class SetupError(ExportError, ValueError):
    """The command cannot work as given: the output is the source checkpoint itself (the same
    path, a symbolic or a hard link to it), or the input size does not fit the network.

    Exit status 2, like a command-line usage error; not in :data:`EXIT_CODES`, which lists
    the codes above 2.
    """

    exit_code = 2


class OutputExistsError(ExportError, FileExistsError):
    """The output file exists and ``force`` was not given."""

    exit_code = 8


class OutputNotWritableError(ExportError, PermissionError):
    """The output location cannot be written."""

    exit_code = 9


class VerificationError(ExportError):
    """ONNX Runtime's outputs differ from the source framework's beyond tolerance.

    Attributes:
        report: the :class:`~logit_standardization.export.ExportReport` with the measured
            numbers (the exported file is kept so it can be inspected).
    """

    exit_code = 10

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class ConversionError(ExportError):
    """Every exporter failed on this model, or a reduced-precision conversion failed."""

    exit_code = 11


class ProviderUnavailableError(ExportError):
    """The requested ONNX Runtime execution provider is not available in this install."""

    exit_code = 12


class CalibrationDataError(ExportError, ValueError):
    """``calibration_data`` is missing, empty, or holds arrays of the wrong shape."""

    exit_code = 13


EXIT_CODES: dict[str, int] = {
    cls.__name__: cls.exit_code
    for cls in (
        CheckpointNotFoundError,
        UnsafeCheckpointError,
        CheckpointFormatError,
        UnknownArchitectureError,
        StateDictMismatchError,
        OutputExistsError,
        OutputNotWritableError,
        VerificationError,
        ConversionError,
        ProviderUnavailableError,
        CalibrationDataError,
    )
}
"""Exit code of each error class (``0`` is success, ``2`` a command-line usage error)."""
