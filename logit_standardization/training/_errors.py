"""Error type of the training tools, and the checks the command-line tools share.

Every usage or setup error of ``lskd-train``, ``lskd-plot`` and ``lskd-export`` is one line on
stderr naming what to fix, and exit status 2 (no traceback).
"""

from __future__ import annotations

import os
from pathlib import Path


class TrainingError(ValueError):
    """Bad recipe, missing data or checkpoint, or a checkpoint that does not fit: the message says why."""


def missing_dependency(exc: ImportError, extra: str) -> str:
    """One line for an optional dependency that is not installed.

    Example:
        >>> missing_dependency(ModuleNotFoundError("No module named 'torch'", name="torch"), "train")
        "the Python package 'torch' is not installed: install logit-standardization[train] (pip install 'logit-standardization[train]')"
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "logit-standardization[" in text:  # the library already says which extra
        return text
    name = (exc.name or "").split(".")[0] or text or "an optional dependency"
    return (f"the Python package {name!r} is not installed: install logit-standardization[{extra}] "
            f"(pip install 'logit-standardization[{extra}]')")


def output_dir_problem(path: str | os.PathLike, what: str = "output directory") -> str | None:
    """Why ``path`` cannot be used (created if needed) as a directory to write in, or None.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); _ = (d / "f").write_text("x")
        >>> output_dir_problem(d / "new" / "run") is None
        True
        >>> output_dir_problem(d / "f" / "run").endswith("/f' is a file, not a directory")
        True
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        return f"{what} {str(path)!r} exists and is not a directory"
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe != path and not probe.is_dir():
        return f"{what} {str(path)!r} cannot be created: {str(probe)!r} is a file, not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{what} {str(path)!r} is not writable (no write permission on {str(probe)!r})"
    return None
