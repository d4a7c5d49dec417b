"""Architectures of `timm` (PyTorch Image Models), named ``timm:<name>`` in recipes.

``timm:resnet18`` is ``timm.create_model("resnet18", pretrained=False, num_classes=N)``: a
randomly initialised network; trained weights come from a local file (``--teacher PATH``,
``student.checkpoint``), never from the internet. `timm` is optional (the ``timm`` extra).
"""

from __future__ import annotations

import difflib

from torch import nn

from .._errors import TrainingError

__all__ = ["TIMM_PREFIX", "is_timm_name", "create_timm_model"]

TIMM_PREFIX = "timm:"
"""Prefix that selects a timm architecture in ``student.arch`` / ``teacher.arch``."""


def is_timm_name(name: object) -> bool:
    """Whether ``name`` selects a timm architecture (``"timm:<name>"``).

    Example:
        >>> is_timm_name("timm:resnet18"), is_timm_name("resnet8x4")
        (True, False)
    """
    return isinstance(name, str) and name.startswith(TIMM_PREFIX)


def create_timm_model(name: str, num_classes: int) -> nn.Module:
    """``timm.create_model(<name>, pretrained=False, num_classes=num_classes)`` for ``name = "timm:<name>"``.

    Raises:
        TrainingError: timm is not installed ("install timm"), or it has no architecture of
            that name (the message lists close matches). Both are one line.
    """
    arch = name[len(TIMM_PREFIX):] if is_timm_name(name) else name
    try:
        import timm
    except ImportError:
        raise TrainingError(
            f"architecture {name!r} needs the Python package 'timm', which is not installed: install timm "
            "(pip install timm, or pip install 'logit-standardization[timm]')") from None
    base = arch.split(".", 1)[0]  # "resnet18.a1_in1k": the architecture, with a pretrained tag
    if not base or not timm.is_model(base):
        known = timm.list_models()
        close = difflib.get_close_matches(base.lower(), known, n=4, cutoff=0.6)
        hint = f"; did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
        raise TrainingError(f"unknown timm architecture {name!r} (timm {timm.__version__} has no model "
                            f"{base!r}){hint}; list them with `python -c \"import timm; print(timm.list_models())\"`")
    try:
        return timm.create_model(arch, pretrained=False, num_classes=num_classes)
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(f"timm cannot build {name!r} with {num_classes} classes: {text}") from None
