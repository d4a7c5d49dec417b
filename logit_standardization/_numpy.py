"""NumPy adapters: turn user input into validated float64 arrays, plus the small
numerically safe primitives (log-softmax, KL with the ``0 log 0 = 0`` convention)
that the spec modules share."""

from __future__ import annotations

import numpy as np

from . import _checks


def as_logits(fn: str, name: str, x: object, *, ndim: int | str | None = 2, check_finite: bool = True) -> np.ndarray:
    """Validate ``x`` as logits and return it as a float64 array."""
    arr = np.asarray(x)
    _checks.check_logits(fn, name, arr.shape, arr.dtype.kind, ndim=ndim)
    arr = arr.astype(np.float64, copy=False)
    if check_finite:
        _checks.check_finite(fn, name, np.isfinite(arr).all())
    return arr


def as_labels(fn: str, name: str, labels: object, batch: int | tuple, num_classes: int) -> np.ndarray:
    """Validate integer class labels of shape ``(batch,)`` (or the leading shape ``batch``) in ``[0, num_classes)``."""
    arr = np.asarray(labels)
    lead = (batch,) if isinstance(batch, int) else tuple(batch)
    size_ok = arr.shape == lead and arr.size > 0
    lo = int(arr.min()) if size_ok and arr.dtype.kind in "iu" else None
    hi = int(arr.max()) if size_ok and arr.dtype.kind in "iu" else None
    _checks.check_labels(fn, name, arr.shape, arr.dtype.kind, batch, num_classes, lo, hi)
    return arr.astype(np.int64, copy=False)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``x - logsumexp(x)``, stable for any finite ``x``."""
    m = np.max(x, axis=axis, keepdims=True)
    with np.errstate(over="ignore"):  # x - m = -inf for entries ~1e308 below the maximum: exp gives 0
        shifted = x - m
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    with np.errstate(over="ignore"):  # as in log_softmax
        e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def kl_rows(log_p: np.ndarray, log_q: np.ndarray, axis: int = -1) -> np.ndarray:
    """Per-row ``KL(p || q) = sum p (log p - log q)`` with ``0 log 0 = 0``.

    Entries where ``p`` underflows to exactly 0 contribute 0, as ``torch.xlogy``
    does in ``F.kl_div``; this also keeps ``log_q = -inf`` from producing NaN.
    """
    p = np.exp(log_p)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (log_p - log_q), 0.0)
    return np.sum(terms, axis=axis)


def as_mask(fn: str, name: str, mask: object, lead: tuple) -> np.ndarray | None:
    """Validate an optional position mask (boolean, of the logits' leading shape ``lead``)."""
    if mask is None:
        return None
    arr = np.asarray(mask)
    _checks.check_mask(fn, name, arr.shape, arr.dtype.kind, lead)
    return arr


def reduce_rows(values: np.ndarray, reduction: str, mask: np.ndarray | None = None) -> np.ndarray | float:
    """Apply a checked ``reduction`` to per-position values (any shape), over the positions
    where ``mask`` is True (all without a mask): ``"none"`` sets the others to 0, ``"mean"`` is 0.0
    when no position counts."""
    if mask is not None:
        values = np.where(mask, values, 0.0)
    if reduction == "none":
        return values
    if reduction == "sum":
        return float(np.sum(values))
    if mask is None:
        return float(np.mean(values))
    return float(np.sum(values) / max(int(np.count_nonzero(mask)), 1))
