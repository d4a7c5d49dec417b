"""Input validation shared by every backend.

Every check takes plain Python facts (shapes as tuples, a dtype *kind*, scalars),
so the NumPy core, the PyTorch backend and the Keras backend call the very same
functions and raise the very same messages. A message always names the function,
the argument, what was expected and what arrived::

    kd_loss: argument 'teacher_logits' must be of the same shape as 'student_logits' (4, 10); got (4, 9)

Dtype kinds follow NumPy's ``dtype.kind`` letters: ``"f"`` floating, ``"i"``/``"u"``
integer, ``"b"`` boolean, ``"c"`` complex, anything else is reported as is.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Sequence

REDUCTIONS = ("mean", "sum", "none")
MLKD_VARIANTS = ("reference", "corrected")
CTKD_SCHEDULES = ("cosine", "linear")

_KIND_NAMES = {
    "f": "floating point",
    "i": "integer",
    "u": "unsigned integer",
    "b": "boolean",
    "c": "complex",
}


def fail(fn: str, name: str, expected: str, got: object, exc: type = ValueError) -> None:
    """Raise ``exc`` with the library's message: ``fn: argument 'name' must be expected; got got``."""
    raise exc(f"{fn}: argument '{name}' must be {expected}; got {got}")


def kind_name(kind: str) -> str:
    """Human name of a dtype kind letter."""
    return _KIND_NAMES.get(kind, repr(kind))


#: ``check_logits(..., ndim=TOKENS)``: logits of shape ``(..., classes)`` with at least 2 dimensions
#: (``(batch, classes)``, ``(batch, tokens, classes)``, ...), every leading dimension non-empty.
TOKENS = "tokens"


def check_logits(fn: str, name: str, shape: Sequence[int], kind: str, *, ndim: int | str | None = 2) -> None:
    """Logits are a floating-point array with at least two classes on the last axis.

    Args:
        fn: name of the public function doing the check (used in the message).
        name: argument name.
        shape: the array's shape.
        kind: the dtype kind letter (``"f"`` for floating point).
        ndim: required number of dimensions, ``None`` for "at least 1", or :data:`TOKENS`
            for "at least 2, ``(..., classes)``" (token-level logits).
    """
    if kind != "f":
        fail(fn, name, "a floating-point array", f"dtype kind {kind_name(kind)}", TypeError)
    shape = tuple(int(s) for s in shape)
    if ndim == TOKENS:
        if len(shape) < 2:
            fail(fn, name, "an array of shape (..., classes) with at least 2 dimensions", f"shape {shape}")
    elif ndim is not None and len(shape) != ndim:
        want = "a 2-D array of shape (batch, classes)" if ndim == 2 else f"a {ndim}-D array"
        fail(fn, name, want, f"shape {shape}")
    if len(shape) == 0:
        fail(fn, name, "an array with a class axis", "a 0-D scalar")
    if shape[-1] < 2:
        fail(fn, name, "an array with at least 2 classes on the last axis", f"shape {shape}")
    if len(shape) >= 2 and shape[0] < 1 or ndim == TOKENS and 0 in shape[:-1]:
        fail(fn, name, "a non-empty batch", f"shape {shape}")


def check_axis_classes(fn: str, name: str, shape: Sequence[int], axis: int) -> int:
    """Normalise ``axis`` for ``shape`` and require at least 2 entries along it."""
    shape = tuple(int(s) for s in shape)
    if isinstance(axis, bool) or not isinstance(axis, int):
        fail(fn, "axis", "an int", repr(axis), TypeError)
    if not -len(shape) <= axis < len(shape) or len(shape) == 0:
        fail(fn, "axis", f"a valid axis for an array of shape {shape}", repr(axis))
    axis = axis % len(shape)
    if shape[axis] < 2:
        fail(fn, name, f"an array with at least 2 entries along axis {axis}", f"shape {shape}")
    return axis


def check_same_shape(fn: str, name: str, shape: Sequence[int], ref_name: str, ref_shape: Sequence[int]) -> None:
    shape, ref_shape = tuple(int(s) for s in shape), tuple(int(s) for s in ref_shape)
    if shape != ref_shape:
        fail(fn, name, f"of the same shape as '{ref_name}' {ref_shape}", shape)


def check_finite(fn: str, name: str, all_finite: bool) -> None:
    """``all_finite`` is the backend's own reduction (``np.isfinite(x).all()`` ...)."""
    if not bool(all_finite):
        fail(fn, name, "finite (no NaN or Inf)", "non-finite values")


def check_labels(
    fn: str,
    name: str,
    shape: Sequence[int],
    kind: str,
    batch: int | Sequence[int],
    num_classes: int,
    lo: int | None,
    hi: int | None,
) -> None:
    """Class labels: integer array of the logits' leading shape with values in ``[0, num_classes)``.

    ``batch``: the batch size (labels ``(batch,)``) or the whole leading shape of the logits
    (``(batch, tokens)`` for token-level logits ``(batch, tokens, classes)``).
    ``lo``/``hi`` are the smallest and largest label (``None`` to skip the range check).
    """
    if kind not in ("i", "u"):
        fail(fn, name, "an integer array of class indices", f"dtype kind {kind_name(kind)}", TypeError)
    shape = tuple(int(s) for s in shape)
    lead = (int(batch),) if isinstance(batch, int) else tuple(int(b) for b in batch)
    if shape != lead:
        fail(fn, name, f"a {len(lead)}-D array of shape {lead}", f"shape {shape}")
    if lo is not None and hi is not None and (lo < 0 or hi >= num_classes):
        bad = lo if lo < 0 else hi
        fail(fn, name, f"class indices in [0, {int(num_classes)})", f"label {int(bad)}")


def check_mask(fn: str, name: str, shape: Sequence[int], kind: str, lead: Sequence[int]) -> None:
    """A position mask: a boolean array of the logits' leading shape ``lead`` (True: the position counts)."""
    if kind != "b":
        fail(fn, name, "a boolean array", f"dtype kind {kind_name(kind)}", TypeError)
    shape, lead = tuple(int(s) for s in shape), tuple(int(s) for s in lead)
    if shape != lead:
        fail(fn, name, f"of the leading shape of the logits {lead}", f"shape {shape}")


def check_positive(fn: str, name: str, value: object, *, allow_zero: bool = False) -> float:
    """A real, finite scalar > 0 (or >= 0 with ``allow_zero``). Returns it as ``float``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        fail(fn, name, "a real number", repr(value), TypeError)
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        fail(fn, name, "finite and >= 0" if allow_zero else "finite and > 0", repr(value))
    return v


def check_real(fn: str, name: str, value: object) -> float:
    """A real, finite scalar. Returns it as ``float``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        fail(fn, name, "a real number", repr(value), TypeError)
    v = float(value)
    if not math.isfinite(v):
        fail(fn, name, "finite", repr(value))
    return v


def check_int(fn: str, name: str, value: object, *, minimum: int | None = None) -> int:
    """An ``int`` (``bool`` refused) that is at least ``minimum`` when given. Returns it."""
    if isinstance(value, bool) or not isinstance(value, int):
        fail(fn, name, "an int" if minimum is None else f"an int >= {minimum}", repr(value), TypeError)
    if minimum is not None and value < minimum:
        fail(fn, name, f"an int >= {minimum}", repr(value))
    return int(value)


def check_ddof(fn: str, ddof: object, num_classes: int | None = None) -> int:
    """``ddof`` is an int in ``[0, num_classes)``; without ``num_classes`` (a constructor) only ``>= 0``."""
    ddof = check_int(fn, "ddof", ddof, minimum=0)
    if num_classes is not None and ddof >= num_classes:
        fail(fn, "ddof", f"an int in [0, {int(num_classes)}) (fewer than the number of classes)", repr(ddof))
    return ddof


def check_choice(fn: str, name: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        fail(fn, name, "one of " + ", ".join(repr(c) for c in choices), repr(value))
    return value


def check_reduction(fn: str, reduction: object) -> str:
    return check_choice(fn, "reduction", reduction, REDUCTIONS)


def check_bool(fn: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        fail(fn, name, "a bool", repr(value), TypeError)
    return value


def check_temperatures(fn: str, temperatures: object) -> tuple[float, ...]:
    """A non-empty sequence of positive finite temperatures."""
    if isinstance(temperatures, (str, bytes)) or not hasattr(temperatures, "__len__"):
        fail(fn, "temperatures", "a non-empty sequence of positive numbers", repr(temperatures), TypeError)
    if len(temperatures) == 0:  # type: ignore[arg-type]
        fail(fn, "temperatures", "a non-empty sequence of positive numbers", "an empty sequence")
    return tuple(check_positive(fn, "temperatures", t) for t in temperatures)  # type: ignore[union-attr]


def check_real_kind(fn: str, name: str, kind: str) -> None:
    """A real (floating or integer) numeric dtype kind."""
    if kind not in ("f", "i", "u"):
        fail(fn, name, "a real number or array", f"dtype kind {kind_name(kind)}", TypeError)


def check_epoch(fn: str, name: str, value: object) -> float:
    """An epoch number: a real, finite and non-negative (epochs are 1-based; fractions allowed)."""
    v = check_real(fn, name, value)
    if v < 0:
        fail(fn, name, "finite and >= 0", repr(value))
    return v


def check_nonnegative(fn: str, name: str, value: object) -> float:
    return check_positive(fn, name, value, allow_zero=True)


def _int_at_least(minimum: int):
    return lambda fn, name, value: check_int(fn, name, value, minimum=minimum)


def _choice(choices: Sequence[str]):
    return lambda fn, name, value: check_choice(fn, name, value, choices)


# Every hyperparameter of every public function and loss class, validated by name. The NumPy
# functions, the PyTorch and Keras functions and the classes' constructors all go through
# ``check_hyper``, so one name has one rule and one message everywhere.
HYPERPARAMETERS = {
    "temperature": check_positive,
    "temperatures": lambda fn, name, value: check_temperatures(fn, value),
    "eps": check_nonnegative,
    "ddof": lambda fn, name, value: check_ddof(fn, value),
    "standardize": check_bool,
    "check_finite": check_bool,
    "instance_wise": check_bool,
    "reduction": lambda fn, name, value: check_reduction(fn, value),
    "variant": _choice(MLKD_VARIANTS),
    "schedule": _choice(CTKD_SCHEDULES),
    "alpha": check_nonnegative,
    "beta": check_nonnegative,
    "kd_weight": check_nonnegative,
    "ce_weight": check_nonnegative,
    "weight_soft_loss": check_nonnegative,
    "weight_hard_loss": check_nonnegative,
    "warmup_epochs": _int_at_least(1),
    "t_start": check_nonnegative,
    "t_end": check_positive,
    "init": check_real,
    "loops": _int_at_least(1),
    "max_value": check_real,
    "min_value": check_real,
    "num_classes": _int_at_least(2),
    "hidden_features": _int_at_least(1),
    "epoch": check_epoch,
    "ignore_index": lambda fn, name, value: check_int(fn, name, value),
    "vocab_size": _int_at_least(2),
    "chunk_size": _int_at_least(1),
    "k": _int_at_least(1),
    "rest": _choice(("uniform", "renormalize")),
}


def check_hyper(fn: str, **values: object) -> dict:
    """Validate hyperparameters by name (see ``HYPERPARAMETERS``); return them normalised.

    Example:
        >>> check_hyper("kd_loss", temperature=2, reduction="mean")
        {'temperature': 2.0, 'reduction': 'mean'}
    """
    return {name: HYPERPARAMETERS[name](fn, name, value) for name, value in values.items()}
