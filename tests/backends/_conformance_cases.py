"""Cases and face adapters of the conformance suite (``test_conformance.py``).

The NumPy core is the specification. This module turns every public name of the core
(``logit_standardization.__all__``) into cases -- valid inputs over a grid of dtypes, class
counts, magnitudes and hyperparameters, and invalid inputs with one thing wrong each -- and runs
a case through a *face*: ``numpy`` (the core given arrays of the case's dtype), ``torch``
(:mod:`logit_standardization.torch`), ``keras-tensorflow`` and ``keras-torch``
(:mod:`logit_standardization.keras` on the two Keras backends). The class forms of the
frameworks get cases too (constructor errors, values against the weight rule of the layout spec).

A face run returns plain data (lists of float64 arrays, exception type name and message), so
that a face evaluated in another process (a Keras backend is fixed per process) is compared in
the parent exactly like one evaluated in place. Run as a script, the module evaluates every case
of one face and writes the results as JSON::

    python tests/backends/_conformance_cases.py keras-torch results.json
"""

from __future__ import annotations

import json
import math
import sys
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

import logit_standardization as core
from logit_standardization import _checks

FACES = ("numpy", "torch", "keras-tensorflow", "keras-torch")
FRAMEWORK_FACES = FACES[1:]
KERAS_FACES = ("keras-tensorflow", "keras-torch")
DTYPES = ("float16", "bfloat16", "float32", "float64")

# Unit roundoff u = 2**-p of each dtype (p: significand bits including the implicit one).
UNIT_ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24, "float64": 2.0**-53}
# Largest finite value and smallest normal value of each dtype.
FMAX = {"float16": 65504.0, "bfloat16": 3.3895313892515355e38, "float32": 3.4028234663852886e38,
        "float64": 1.7976931348623157e308}
FTINY = {"float16": 2.0**-14, "bfloat16": 2.0**-126, "float32": 2.0**-126, "float64": 2.0**-1022}

# Central differences of the float64 core: step h = 2**-17 times the input's magnitude r. The
# truncation error is about h**2 |f'''| / 6 and the rounding error about u64 |f| / h; for a
# Z-score based function |f'''| grows like (r / std)**3 = kappa**3 (kappa: the case's condition
# factor, see ``tolerance``), so the relative error of the difference is about
# 2**-34 kappa**2 + 2**-36, which FD_ROUNDOFF(kappa) bounds.
FD_STEP = 2.0**-17


def FD_ROUNDOFF(kappa: float) -> float:  # noqa: N802 (a constant of the method, like the table above)
    return 2.0**-34 * kappa * kappa + 2.0**-36


# Gradients are compared in full when the differentiated inputs have at most this many entries,
# else along FD_DIRECTIONS random directions (a directional derivative is one difference).
FD_FULL_MAX = 64
FD_DIRECTIONS = 3
# Output weights of the scalar whose gradient is compared: exactly representable in every dtype.
_WEIGHTS = np.array([-1.0, -0.5, 0.5, 1.0, 2.0])

MLKD_KEYS = ("kd", "cc", "bc")


# ----------------------------------------------------------------------------- case data
class F:
    """A floating-point array argument: float64 ``values`` exactly representable in ``dtype``."""

    def __init__(self, values: np.ndarray, dtype: str, grad: bool = False):
        self.values, self.dtype, self.grad = np.asarray(values, dtype=np.float64), dtype, grad


class I:  # noqa: E742 (the integer counterpart of F)
    """An integer array argument (class labels)."""

    def __init__(self, values: Any, dtype: str = "int64"):
        self.values, self.dtype = np.asarray(values), dtype


@dataclass
class Case:
    """One call of a public name (``kind`` "value"/"error") or of a class ("class_value"/"ctor_error").

    ``scale`` is the size of the quantities the output is computed from (see ``tolerance``),
    ``kappa`` the condition factor of the inputs, ``grad`` whether gradients are compared
    (``"finite"``: only checked to be finite).
    """

    id: str
    name: str
    kind: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    dtype: str = "float64"
    grad: Any = False
    scale: float = 1.0
    kappa: float = 1.0
    faces: tuple = FACES
    labels: Any = None  # class cases: I or None
    call_kwargs: dict = field(default_factory=dict)  # class cases: forward keywords (epoch, grl_lambda)


def _seed(text: str) -> int:
    return zlib.crc32(text.encode())


def to_dtype(values: np.ndarray, dtype: str) -> np.ndarray:
    """Round float64 values to ``dtype`` (round to nearest even) and return them as float64."""
    values = np.asarray(values, dtype=np.float64)
    if dtype == "bfloat16":
        bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.astype(np.uint32).view(np.float32).astype(np.float64)
    return values.astype(dtype).astype(np.float64)


def make_logits(rng: np.random.Generator, shape: tuple, dtype: str, magnitude: str) -> np.ndarray:
    """Logits of a magnitude class: ``normal``, ``huge`` (entries up to 0.99 of the dtype's max),
    ``tiny`` (subnormal rows), ``edge`` (subnormal rows whose first entry is a normal number of at
    most 4 times the smallest), ``constant`` (the first rows constant, the others normal)."""
    if magnitude == "huge":
        x = rng.uniform(-0.99, 0.99, size=shape) * FMAX[dtype]
    elif magnitude == "tiny":
        x = rng.uniform(-1.0, 1.0, size=shape) * FTINY[dtype] * 0.25
    elif magnitude == "edge":
        x = rng.uniform(-1.0, 1.0, size=shape) * FTINY[dtype] * 0.5
        x[..., 0] = rng.choice([-1.0, 1.0], size=shape[:-1]) * rng.uniform(1.0, 4.0, size=shape[:-1]) * FTINY[dtype]
    else:
        x = 3.0 * rng.standard_normal(shape) + rng.uniform(-2.0, 2.0, size=shape[:-1] + (1,))
        if magnitude == "constant":
            flat = x.reshape(-1, shape[-1])
            flat[0] = 3.0
            if flat.shape[0] > 2:
                flat[1] = 0.0
            x = flat.reshape(shape)
    return to_dtype(x, dtype)


def condition(x: np.ndarray, axis: int = -1) -> float:
    """max over the non-constant rows of max|x| / std: the Z-score's sensitivity to rounding of x."""
    big = np.abs(x).max(axis=axis, keepdims=True)
    x = x / np.where(big > 0, big, 1.0)  # rows scaled to max |x| = 1 (no overflow near the max)
    centred = x - x.mean(axis=axis, keepdims=True)
    std = np.sqrt((centred**2).mean(axis=axis))
    ok = std > 0
    return float(max(1.0, np.max(1.0 / std[ok]))) if ok.any() else 1.0


def loss_scale(tau: float, c: int, standardize: bool, x_max: float) -> float:
    """Size of the terms of a tau-scaled KL of (B, C) logits: tau**2 (1 + max|z| / tau) with
    max|z| <= sqrt(C) for Z-scores and max|x| for raw logits."""
    top = math.sqrt(c) if standardize else x_max
    return tau * tau * (1.0 + top / tau)


# ----------------------------------------------------------------------------- the valid grid
def _ids(*parts: Any) -> str:
    return "-".join(str(p) for p in parts if p != "")


def _kw_id(kw: dict) -> str:
    if not kw:
        return "defaults"
    return ",".join(f"{k}={v}" for k, v in kw.items()).replace(" ", "")


def _grad_mode(magnitude: str, kwargs: dict) -> Any:
    """Gradients compared (True), only checked to be finite ("finite"), or not looked at (False).

    Constant and subnormal rows: the derivative is (I - 11^T/C) / eps times the incoming gradient
    (finite differences of the core are meaningless across the kink); a subnormal row with
    ``eps=0`` has a derivative of about 1/std, beyond the dtype's range, so nothing is checked;
    nor for ``edge`` rows, whose derivative is about 1/std too (or 1/eps, across the kink of the
    flushed rows on TensorFlow).
    """
    if magnitude in ("normal", "huge"):
        return True
    if magnitude == "edge":
        return False
    return False if magnitude == "tiny" and kwargs.get("eps", 1e-7) == 0 else "finite"


def zscore_cases() -> list[Case]:
    out = []
    shapes = [((4, 2), -1), ((3, 1000), -1), ((2, 3, 5), -1), ((5, 4, 3), 1), ((6,), -1), ((5, 3), 0)]
    hypers = [{}, {"ddof": 0, "eps": 0.0}, {"temperature": 2.5, "ddof": 1, "eps": 1e-3}]
    for dtype in DTYPES:
        for shape, axis in shapes:
            for mag in ("normal", "huge", "tiny", "edge", "constant"):
                for kw in hypers if mag == "normal" and shape == (4, 2) or shape == (2, 3, 5) else [{}, {"eps": 0.0}]:
                    if mag == "constant" and len(shape) == 1 or mag == "edge" and kw.get("temperature"):
                        continue
                    kw = dict(kw, **({"axis": axis} if axis != -1 else {}))
                    cid = _ids("zscore", dtype, "x".join(map(str, shape)), mag, _kw_id(kw))
                    x = make_logits(np.random.default_rng(_seed(cid)), shape, dtype, mag)
                    out.append(Case(cid, "zscore", "value", (F(x, dtype, grad=True),), kw, dtype,
                                    grad=_grad_mode(mag, kw),
                                    scale=0.0, kappa=condition(x, axis)))
    return out


def standardized_cases() -> list[Case]:
    out = []
    for dtype in DTYPES:
        for mag in ("normal", "huge", "constant"):
            for kw in ({}, {"ddof": 0, "eps": 0.0}):
                cid = _ids("standardized", dtype, mag, _kw_id(kw))
                rng = np.random.default_rng(_seed(cid))
                s, t = make_logits(rng, (4, 6), dtype, mag), make_logits(rng, (4, 6), dtype, "normal")
                out.append(Case(cid, "standardized", "value", (F(s, dtype, True), F(t, dtype, True)), kw, dtype,
                                grad=_grad_mode(mag, kw), scale=0.0,
                                kappa=max(condition(s), condition(t))))
    return out


def _pair_grid(name: str, hyper_grid: list[dict], b: int = 4) -> list[tuple[str, int, str, dict]]:
    """(dtype, C, magnitude, kwargs): every dtype x C in {2, 1000} x magnitude with the defaults,
    and the hyperparameter grid on float32/float64 with C = 7 and ordinary logits."""
    rows = []
    for dtype in DTYPES:
        for c in (2, 1000):
            for mag in ("normal", "huge", "tiny", "constant"):
                rows.append((dtype, c, mag, {}))
                if mag in ("normal", "constant"):
                    rows.append((dtype, c, mag, {"standardize": False}))
    for dtype in ("float32", "float64"):
        for kw in hyper_grid:
            rows.append((dtype, 7, "normal", kw))
    return rows


_KD_HYPERS = [
    {"standardize": False, "temperature": 4.0},
    {"ddof": 0, "eps": 0.0, "temperature": 1.0},
    {"temperature": 0.5, "reduction": "sum"},
    {"reduction": "none"},
    {"standardize": False, "reduction": "none", "temperature": 3.0},
    {"eps": 0.5, "ddof": 1, "temperature": 2.0},
]


# Token-level logits (..., C) and position masks of kd_loss and dkd_loss: (leading shape, mask kind,
# kwargs). Mask kinds: None (no mask), "some" (random, the first position kept), "none-kept" (all False).
_TOKEN_GRID = [
    ((2, 3), None, {}),
    ((2, 3), "some", {}),
    ((2, 3), "none-kept", {}),
    ((2, 3), "some", {"reduction": "none"}),
    ((2, 3), None, {"reduction": "none"}),
    ((2, 3), "some", {"reduction": "sum", "standardize": False}),
    ((2, 2, 2), "some", {"temperature": 4.0}),
    ((5,), "some", {}),
]


def _token_mask(rng: np.random.Generator, lead: tuple, kind: str | None) -> I | None:
    if kind is None:
        return None
    if kind == "none-kept":
        return I(np.zeros(lead, dtype=bool), "bool")
    m = rng.random(lead) < 0.5
    m.flat[0] = True
    return I(m, "bool")


def token_cases(name: str) -> list[Case]:
    """kd_loss / dkd_loss on token-level logits with and without a mask (``mask`` a keyword)."""
    out = []
    c = 7
    for dtype in ("float16", "float32", "float64"):
        for lead, mask_kind, kw in _TOKEN_GRID:
            if dtype == "float16" and (kw or mask_kind != "some"):
                continue
            cid = _ids(name, "tokens", dtype, "x".join(map(str, lead + (c,))), f"mask={mask_kind}", _kw_id(kw))
            rng = np.random.default_rng(_seed(cid))
            s, t = make_logits(rng, lead + (c,), dtype, "normal"), make_logits(rng, lead + (c,), dtype, "normal")
            extra = (I(rng.integers(0, c, size=lead)),) if name == "dkd_loss" else ()
            mask = _token_mask(rng, lead, mask_kind)
            kwargs = dict(kw, **({} if mask is None else {"mask": mask}))
            std = kw.get("standardize", True)
            tau = kw.get("temperature", 2.0)
            weight = 9.0 if name == "dkd_loss" else 1.0
            x_max = float(max(np.abs(s).max(), np.abs(t).max()))
            out.append(Case(cid, name, "value", (F(s, dtype, True), F(t, dtype, True)) + extra, kwargs, dtype,
                            grad=True, scale=weight * loss_scale(tau, c, std, x_max),
                            kappa=max(condition(s), condition(t)) if std else 1.0))
    return out


def kd_cases() -> list[Case]:
    out = token_cases("kd_loss")
    for dtype, c, mag, kw in _pair_grid("kd_loss", _KD_HYPERS):
        cid = _ids("kd_loss", dtype, f"C{c}", mag, _kw_id(kw))
        rng = np.random.default_rng(_seed(cid))
        s, t = make_logits(rng, (4, c), dtype, mag), make_logits(rng, (4, c), dtype, mag)
        std = kw.get("standardize", True)
        tau = kw.get("temperature", 2.0)
        x_max = float(max(np.abs(s).max(), np.abs(t).max()))
        out.append(Case(cid, "kd_loss", "value", (F(s, dtype, True), F(t, dtype, True)), kw, dtype,
                        grad=_grad_mode(mag, kw), scale=loss_scale(tau, c, std, x_max),
                        kappa=max(condition(s), condition(t)) if std else 1.0))
    return out


_DKD_HYPERS = [
    {"alpha": 0.0, "beta": 8.0},
    {"alpha": 9.0, "beta": 72.0, "temperature": 2.0},
    {"alpha": 1.0, "beta": 0.0, "standardize": False},
    {"ddof": 0, "eps": 0.0, "temperature": 4.0, "reduction": "sum"},
    {"reduction": "none", "temperature": 1.0},
]


def dkd_cases() -> list[Case]:
    out = token_cases("dkd_loss")
    for dtype, c, mag, kw in _pair_grid("dkd_loss", _DKD_HYPERS):
        cid = _ids("dkd_loss", dtype, f"C{c}", mag, _kw_id(kw))
        rng = np.random.default_rng(_seed(cid))
        s, t = make_logits(rng, (4, c), dtype, mag), make_logits(rng, (4, c), dtype, mag)
        y = rng.integers(0, c, size=4)
        std = kw.get("standardize", True)
        tau = kw.get("temperature", 2.0)
        weight = kw.get("alpha", 1.0) + kw.get("beta", 8.0)
        x_max = float(max(np.abs(s).max(), np.abs(t).max()))
        out.append(Case(cid, "dkd_loss", "value", (F(s, dtype, True), F(t, dtype, True), I(y)), kw, dtype,
                        grad=_grad_mode(mag, kw), scale=weight * loss_scale(tau, c, std, x_max),
                        kappa=max(condition(s), condition(t)) if std else 1.0))
    return out


_MLKD_HYPERS = [
    {},
    {"variant": "corrected"},
    {"standardize": False},
    {"standardize": False, "variant": "corrected", "temperatures": (1.0, 4.0)},
    {"kd_weight": 1.0, "ddof": 0, "eps": 0.0, "temperatures": (2.0, 2.0, 3.0)},
    {"kd_weight": 0.0},
]


def mlkd_cases(name: str) -> list[Case]:
    out = []
    rows = [(d, c, m, {}) for d in DTYPES for c in (2, 10) for m in ("normal", "huge", "constant")]
    rows += [("float32", 1000, "normal", {}), ("float64", 100, "normal", {})]
    rows += [(d, 5, "normal", kw) for d in ("float32", "float64") for kw in _MLKD_HYPERS[1:]]
    for dtype, c, mag, kw in rows:
        cid = _ids(name, dtype, f"C{c}", mag, _kw_id(kw))
        rng = np.random.default_rng(_seed(cid))
        views = [make_logits(rng, (6, c), dtype, mag) for _ in range(4)]
        std = kw.get("standardize", True)
        temps = kw.get("temperatures", core.DEFAULT_TEMPERATURES)
        x_max = float(max(np.abs(v).max() for v in views))
        # correlation terms are sums of products of probabilities: O(1) per temperature
        scale = kw.get("kd_weight", 9.0) * sum(2 * loss_scale(t, c, std, x_max) + 2.0 for t in temps)
        grad_flags = (True, True, False, False)
        # raw huge logits make the correlation terms' softmaxes one-hot: their derivatives
        # vanish except within rounding of a tie, so only finiteness is checked there
        grad = True if mag == "normal" and c <= 100 else "finite"
        out.append(Case(cid, name, "value", tuple(F(v, dtype, g) for v, g in zip(views, grad_flags)), kw, dtype,
                        grad=grad, scale=scale, kappa=max(condition(v) for v in views) if std else 1.0))
    return out


def ctkd_temperature_cases() -> list[Case]:
    out = []
    for dtype in DTYPES:
        for raw_kind in ("normal", "extreme"):
            for kw in ({}, {"t_start": 0.0, "t_end": 5.0}, {"t_start": 2.5, "t_end": 10.0}):
                cid = _ids("ctkd_temperature", dtype, raw_kind, _kw_id(kw))
                rng = np.random.default_rng(_seed(cid))
                if raw_kind == "normal":
                    g = to_dtype(rng.standard_normal(5) * 2.0, dtype)
                else:
                    g = to_dtype(np.array([-0.5, 0.25, 1.0]) * FMAX[dtype] * 0.99, dtype)
                out.append(Case(cid, "ctkd_temperature", "value", (F(g, dtype, True),), kw, dtype,
                                grad=True if raw_kind == "normal" else "finite",
                                scale=kw.get("t_start", 1.0) + kw.get("t_end", 20.0)))
    for raw in (1.0, -3.5, 0.0):
        cid = _ids("ctkd_temperature", "python-float", raw)
        out.append(Case(cid, "ctkd_temperature", "value", (raw,), {}, "float64", scale=21.0,
                        faces=FACES))
    return out


def ctkd_lambda_cases() -> list[Case]:
    out = []
    for schedule in ("cosine", "linear"):
        for loops in (1, 10):
            for lim in ({}, {"max_value": 0.5, "min_value": -2.0}):
                for epoch in (0, 0.5, 1, 3, 10, 11, 250):
                    kw = dict(schedule=schedule, loops=loops, **lim)
                    cid = _ids("ctkd_lambda", f"epoch={epoch}", _kw_id(kw))
                    out.append(Case(cid, "ctkd_lambda", "value", (epoch,), kw, scale=4.0))
    return out


def dkd_warmup_cases() -> list[Case]:
    out = []
    for w in (1, 5, 20):
        for epoch in (0, 0.5, 1, 4, 5, 19.5, 20, 400):
            cid = _ids("dkd_warmup", f"epoch={epoch}", f"warmup_epochs={w}")
            out.append(Case(cid, "dkd_warmup", "value", (epoch,), {"warmup_epochs": w}))
    return out


def confidence_masks_cases() -> list[Case]:
    out = []
    for dtype in DTYPES:
        for b, c in ((6, 2), (5, 10), (8, 1000)):
            cid = _ids("confidence_masks", dtype, f"B{b}", f"C{c}")
            rng = np.random.default_rng(_seed(cid))
            t = make_logits(rng, (b, c), dtype, "normal")
            out.append(Case(cid, "confidence_masks", "value", (F(t, dtype),), {}, dtype, scale=1.0))
    return out


def valid_cases() -> dict[str, list[Case]]:
    return {
        "DEFAULT_TEMPERATURES": [Case("DEFAULT_TEMPERATURES", "DEFAULT_TEMPERATURES", "value")],
        "confidence_masks": confidence_masks_cases(),
        "ctkd_lambda": ctkd_lambda_cases(),
        "ctkd_temperature": ctkd_temperature_cases(),
        "dkd_loss": dkd_cases(),
        "dkd_warmup": dkd_warmup_cases(),
        "kd_loss": kd_cases(),
        "mlkd_loss": mlkd_cases("mlkd_loss"),
        "mlkd_terms": mlkd_cases("mlkd_terms"),
        "standardized": standardized_cases(),
        "zscore": zscore_cases(),
    }


# ----------------------------------------------------------------------------- the invalid grid
def _logit_arg(rng, shape=(4, 5), dtype="float32"):
    return F(make_logits(rng, shape, dtype, "normal"), dtype)


def _with_value(x: F, index: tuple, value: float) -> F:
    v = x.values.copy()
    v[index] = value
    return F(v, x.dtype)


NAN, INF = float("nan"), float("inf")

# Bad values of each hyperparameter name (the faces' checks go through the same table).
BAD_HYPER = {
    "temperature": [-1.0, 0.0, "x", NAN, True],
    "eps": [-1e-3, INF, "0"],
    "ddof": [1.5, -1, True, "1"],
    "standardize": ["yes", 1],
    "reduction": ["avg", None, "MEAN"],
    "alpha": [-1.0, "x"],
    "beta": [-0.5, NAN],
    "temperatures": [(), "ab", (2.0, -1.0), 3.0],
    "variant": ["paper", None],
    "kd_weight": [-1.0, "9", None],
    "t_start": [-1.0, "1"],
    "t_end": [0.0, -2.0, INF],
    "loops": [0, 2.5, "10"],
    "max_value": [INF, "0"],
    "min_value": [NAN, None],
    "schedule": ["step", 1],
    "epoch": [-1, -0.5, "x", NAN, None],
    "warmup_epochs": [0, 20.5, "x", True],
    "ce_weight": [-0.5, "x"],
    "init": [NAN, "1"],
    "check_finite": ["no"],
    "instance_wise": ["no", 1],
    "hidden_features": [0, 1.5],
    "num_classes": [1, 2.0],
}


def _bad_logits(rng, fn: str, arg: str, shape=(4, 5), batch_first=True) -> list[tuple[str, Any]]:
    """(label, bad value) of a logits argument."""
    x = _logit_arg(rng, shape)
    bad = [
        ("str", "not logits"),
        ("str-array", np.full(shape, "x")),
        ("int64", I(np.arange(int(np.prod(shape))).reshape(shape))),
        ("bool", I(np.arange(int(np.prod(shape))).reshape(shape) % 2 == 0, "bool")),
        ("nan", _with_value(x, (0, 0), NAN)),
        ("inf", _with_value(x, (-1, -1), -INF)),
        ("one-class", _logit_arg(rng, shape[:-1] + (1,))),
    ]
    if batch_first:  # (..., C) logits: (B, C) and token-level (B, T, C) are valid
        bad += [("1d", _logit_arg(rng, shape[-1:])), ("empty-batch", F(np.zeros((0, shape[-1])), "float32")),
                ("empty-tokens", F(np.zeros((2, 0, shape[-1])), "float32"))]
    return bad


def _error_case(name: str, label: str, args: tuple, kwargs: dict) -> Case:
    return Case(_ids(name, "bad", label), name, "error", args, kwargs, faces=FRAMEWORK_FACES)


def invalid_cases() -> dict[str, list[Case]]:
    rng = np.random.default_rng(20240617)
    out: dict[str, list[Case]] = {name: [] for name in core.__all__}
    s, t = _logit_arg(rng), _logit_arg(rng)
    y = I(np.array([0, 4, 2, 1]))

    def hyper(name, base_args, names, base_kwargs=None):
        for hp in names:
            for value in BAD_HYPER[hp]:
                kw = dict(base_kwargs or {}, **{hp: value})
                out[name].append(_error_case(name, f"{hp}={value!r}", base_args, kw))

    # zscore
    for label, bad in _bad_logits(rng, "zscore", "logits", batch_first=False):
        out["zscore"].append(_error_case("zscore", f"logits={label}", (bad,), {}))
    out["zscore"].append(_error_case("zscore", "logits=0d", (F(np.array(1.5), "float32"),), {}))
    out["zscore"].append(_error_case("zscore", "ddof=C", (_logit_arg(rng, (3, 2)),), {"ddof": 2}))
    for axis in (2, -3, 1.0, "0"):
        out["zscore"].append(_error_case("zscore", f"axis={axis!r}", (s,), {"axis": axis}))
    out["zscore"].append(_error_case("zscore", "axis-one-entry", (_logit_arg(rng, (1, 5)),), {"axis": 0}))
    hyper("zscore", (s,), ["temperature", "eps", "ddof"])

    # standardized: the wrapped call validates like zscore
    for label, bad in (("str", "x"), ("nan", _with_value(s, (1, 1), NAN))):
        out["standardized"].append(_error_case("standardized", f"student={label}", (bad, t), {}))
    for kw in ({"ddof": 1.5}, {"ddof": 5}, {"eps": -1.0}):
        out["standardized"].append(_error_case("standardized", _kw_id(kw), (s, t), kw))

    # kd_loss and dkd_loss
    for name, extra in (("kd_loss", ()), ("dkd_loss", (y,))):
        for arg in ("student_logits", "teacher_logits"):
            for label, bad in _bad_logits(rng, name, arg):
                args = (bad, t) if arg == "student_logits" else (s, bad)
                out[name].append(_error_case(name, f"{arg}={label}", args + extra, {}))
        out[name].append(_error_case(name, "teacher-shape", (s, _logit_arg(rng, (4, 6))) + extra, {}))
        out[name].append(_error_case(name, "teacher-batch", (s, _logit_arg(rng, (3, 5))) + extra, {}))
        out[name].append(_error_case(name, "ddof=C", (s, t) + extra, {"ddof": 5}))
        names = ["temperature", "eps", "ddof", "standardize", "reduction"]
        hyper(name, (s, t) + extra, names + (["alpha", "beta"] if name == "dkd_loss" else []))
    for label, labels in (("out-of-range", I([0, 5, 1, 2])), ("negative", I([0, -1, 1, 2])),
                          ("float", F(np.array([0.0, 1.0, 2.0, 3.0]), "float32")),
                          ("bool", I(np.array([True, False, True, False]), "bool")),
                          ("short", I([0, 1, 2])), ("2d", I([[0], [1], [2], [3]])), ("str", "0123"),
                          ("int32-out-of-range", I([0, 1, 2, 7], "int32"))):
        out["dkd_loss"].append(_error_case("dkd_loss", f"labels={label}", (s, t, labels), {}))

    # token-level logits: masks and labels of the leading shape
    s3, t3 = _logit_arg(rng, (2, 3, 5)), _logit_arg(rng, (2, 3, 5))
    y3 = I(rng.integers(0, 5, size=(2, 3)))
    bad_masks = (("mask-shape", I(np.ones((2, 4), bool), "bool")), ("mask-flat", I(np.ones(6, bool), "bool")),
                 ("mask-int", I(np.ones((2, 3), "int64"))), ("mask-float", F(np.ones((2, 3)), "float32")),
                 ("mask-batch-only", I(np.ones(2, bool), "bool")))
    for name, extra in (("kd_loss", ()), ("dkd_loss", (y3,))):
        for label, mask in bad_masks:
            out[name].append(_error_case(name, f"tokens-{label}", (s3, t3) + extra, {"mask": mask}))
        out[name].append(_error_case(name, "rows-mask-shape", (s, t) + ((y,) if extra else ()),
                                     {"mask": I(np.ones(5, bool), "bool")}))
        out[name].append(_error_case(name, "tokens-teacher-shape", (s3, _logit_arg(rng, (2, 4, 5))) + extra, {}))
    for label, labels in (("batch-only", I([0, 1])), ("flat", I(np.arange(6) % 5)), ("3d", I(np.zeros((2, 3, 1), int))),
                          ("out-of-range", I([[0, 1, 2], [3, 4, 5]])), ("float", F(np.zeros((2, 3)), "float32"))):
        out["dkd_loss"].append(_error_case("dkd_loss", f"tokens-labels={label}", (s3, t3, labels), {}))

    # mlkd_loss and mlkd_terms
    views = tuple(_logit_arg(rng, (6, 5)) for _ in range(4))
    arg_names = ("student_weak", "student_strong", "teacher_weak", "teacher_strong")
    for name in ("mlkd_loss", "mlkd_terms"):
        for i, arg in enumerate(arg_names):
            for label, bad in _bad_logits(rng, name, arg, shape=(6, 5))[:7]:
                args = views[:i] + (bad,) + views[i + 1:]
                out[name].append(_error_case(name, f"{arg}={label}", args, {}))
            args = views[:i] + (_logit_arg(rng, (6, 4)),) + views[i + 1:]
            out[name].append(_error_case(name, f"{arg}-shape", args, {}))
        out[name].append(_error_case(name, "ddof=C", views, {"ddof": 5}))
        # MLKD's batch-level terms have no token-level meaning: (B, T, C) logits are refused
        tokens = tuple(_logit_arg(rng, (2, 6, 5)) for _ in range(4))
        out[name].append(_error_case(name, "tokens", tokens, {}))
        hyper(name, views, ["temperatures", "kd_weight", "standardize", "variant", "ddof", "eps"])

    # ctkd_temperature
    for label, raw in (("str", "1.0"), ("nan", F(np.array([0.5, NAN]), "float32")),
                       ("inf", F(np.array([INF]), "float64")), ("python-nan", NAN),
                       ("complex", 1 + 2j), ("bool-array", I(np.array([True, False]), "bool"))):
        out["ctkd_temperature"].append(_error_case("ctkd_temperature", f"raw={label}", (raw,), {}))
    hyper("ctkd_temperature", (F(np.array([0.5, -1.0]), "float32"),), ["t_start", "t_end"])

    # ctkd_lambda and dkd_warmup: plain numbers
    for e in BAD_HYPER["epoch"]:
        out["ctkd_lambda"].append(_error_case("ctkd_lambda", f"epoch={e!r}", (e,), {}))
        out["dkd_warmup"].append(_error_case("dkd_warmup", f"epoch={e!r}", (e,), {}))
    hyper("ctkd_lambda", (3,), ["loops", "max_value", "min_value", "schedule"])
    hyper("dkd_warmup", (3,), ["warmup_epochs"])
    # DEFAULT_TEMPERATURES is a constant and confidence_masks takes logits the core does not
    # validate (MLKD validates them before computing the masks): no invalid inputs.
    return out


# Names whose invalid grid is empty on purpose (see the end of ``invalid_cases``).
NO_INVALID_INPUTS = {"DEFAULT_TEMPERATURES", "confidence_masks"}


# ----------------------------------------------------------------------------- class forms
# Constructor hyperparameters of each class (SPEC order; face extras separate).
CLASS_HYPERS = {
    "KDLoss": ["temperature", "standardize", "ddof", "eps", "kd_weight", "ce_weight", "reduction"],
    "DKDLoss": ["alpha", "beta", "temperature", "warmup_epochs", "standardize", "ddof", "eps", "kd_weight",
                "ce_weight", "reduction"],
    "MLKDLoss": ["temperatures", "kd_weight", "standardize", "variant", "ddof", "eps", "ce_weight"],
    "CTKDLoss": ["t_start", "t_end", "init", "loops", "max_value", "min_value", "schedule", "standardize", "ddof",
                 "eps", "kd_weight", "ce_weight", "reduction", "instance_wise", "num_classes", "hidden_features"],
}
TORCH_CLASSES = ("KDLoss", "DKDLoss", "MLKDLoss", "CTKDLoss")
KERAS_CLASSES = ("KDLoss", "DKDLoss", "CTKDLoss")
# Face-specific constructor arguments (not compared across frameworks).
FACE_EXTRAS = {"torch": ("check_finite",), "keras": ("name", "dtype")}
KERAS_REDUCTION = {"mean": "sum_over_batch_size", "sum": "sum", "none": "none"}


def class_faces(cls: str) -> tuple:
    return ("torch",) + (KERAS_FACES if cls in KERAS_CLASSES else ())


def ctor_error_cases() -> list[Case]:
    out = []
    for cls, names in CLASS_HYPERS.items():
        for hp in names:
            if hp == "reduction":
                faces = ("torch",)  # Keras classes take Keras's reduction strings, checked by Keras
            elif hp in ("num_classes", "hidden_features"):
                faces = ("torch",)  # instance-wise CTKD: torch (Keras may refuse it altogether)
            else:
                faces = class_faces(cls)
            for value in BAD_HYPER[hp]:
                kw = {hp: value}
                if hp in ("num_classes", "hidden_features"):
                    kw = {"instance_wise": True, "num_classes": 10, "hidden_features": 16, hp: value}
                out.append(Case(_ids(cls, "ctor", f"{hp}={value!r}"), cls, "ctor_error", (), kw, faces=faces))
        if cls in TORCH_CLASSES:
            out.append(Case(_ids(cls, "ctor", "check_finite='no'"), cls, "ctor_error", (), {"check_finite": "no"},
                            faces=("torch",)))
    return out


# Constructor and call arguments of the value cases of each loss class (a face's loss class
# without an entry here fails test_every_loss_class_has_conformance_cases).
CLASS_VALUE_CONFIGS = {
    "KDLoss": [({}, {}), ({"kd_weight": 9.0, "ce_weight": 0.1}, {}), ({"temperature": 4.0, "reduction": "sum"}, {}),
               ({"standardize": False, "ce_weight": 1.0, "reduction": "none"}, {}),
               ({"ddof": 0, "eps": 0.0, "kd_weight": 0.5}, {})],
    "DKDLoss": [({}, {}), ({"alpha": 9.0, "beta": 72.0, "ce_weight": 1.0}, {}),
                ({"kd_weight": 2.0, "reduction": "sum", "standardize": False}, {}),
                ({"warmup_epochs": 20, "ce_weight": 0.5}, {"epoch": 5}),
                ({"warmup_epochs": 4}, {"epoch": 10}), ({"reduction": "none"}, {"epoch": 0}),
                ({"kd_weight": 0.5}, {"epoch": 3})],  # factor 3/20: not a float32 number
    "MLKDLoss": [({}, {}), ({"ce_weight": 1.0, "kd_weight": 1.0}, {}),
                 ({"variant": "corrected", "standardize": False, "temperatures": (1.0, 3.0)}, {})],
    "CTKDLoss": [({}, {"grl_lambda": -1.0}), ({"init": 0.5, "t_start": 2.0, "t_end": 10.0}, {"epoch": 3}),
                 ({"kd_weight": 9.0, "ce_weight": 0.1, "reduction": "sum"}, {"grl_lambda": 0.0}),
                 ({"standardize": False, "reduction": "none", "schedule": "linear"}, {"epoch": 1})],
}


def class_value_cases() -> list[Case]:
    out = []
    for cls, rows in CLASS_VALUE_CONFIGS.items():
        for dtype in ("float32", "float64"):
            for ctor, call in rows:
                cid = _ids(cls, "value", dtype, _kw_id(ctor), _kw_id(call) if call else "")
                rng = np.random.default_rng(_seed(cid))
                n = 4 if cls == "MLKDLoss" else 2
                arrays = tuple(F(make_logits(rng, (6, 7), dtype, "normal"), dtype) for _ in range(n))
                needs = cls == "DKDLoss" or ctor.get("ce_weight", 0.0) > 0
                labels = I(rng.integers(0, 7, size=6)) if needs else None
                faces = class_faces(cls)
                temps = ctor.get("temperatures", core.DEFAULT_TEMPERATURES if cls == "MLKDLoss" else
                                 [ctor.get("temperature", 2.0 if cls != "CTKDLoss" else 21.0)])
                scale = (ctor.get("kd_weight", 9.0 if cls == "MLKDLoss" else 1.0)
                         * sum(2 * loss_scale(tt, 7, ctor.get("standardize", True), 9.0) + 2 for tt in temps)
                         + ctor.get("ce_weight", 0.0) * 2 * 9.0 * 6)
                out.append(Case(cid, cls, "class_value", arrays, ctor, dtype, scale=scale,
                                kappa=max(condition(a.values) for a in arrays), faces=faces, labels=labels,
                                call_kwargs=call))
    return out


def all_cases() -> list[Case]:
    cases = [c for group in valid_cases().values() for c in group]
    cases += [c for group in invalid_cases().values() for c in group]
    cases += ctor_error_cases() + class_value_cases()
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)[:5]
    return cases


# ----------------------------------------------------------------------------- the reference
def _pair_identity(s: Any, t: Any) -> tuple:
    return (s, t)


def _call(ns: Any, case: Case, args: tuple, convert: Callable[[Any], Any] | None = None) -> Any:
    """Call the public name of ``case`` in namespace ``ns`` (the core or a face); array keywords
    (``mask``) go through ``convert`` (the face's tensor maker; the core's arrays by default)."""
    if case.name == "DEFAULT_TEMPERATURES":
        return getattr(ns, "DEFAULT_TEMPERATURES")
    if case.name == "standardized":
        return ns.standardized(_pair_identity, **case.kwargs)(*args)
    convert = convert or _core_arg
    kwargs = {k: convert(v) if isinstance(v, (F, I)) else v for k, v in case.kwargs.items()}
    return getattr(ns, case.name)(*args, **kwargs)


def _flatten(out: Any) -> list:
    if isinstance(out, dict):
        return [out[k] for k in MLKD_KEYS] if set(out) == set(MLKD_KEYS) else [out[k] for k in sorted(out)]
    if isinstance(out, (tuple, list)):
        if all(isinstance(v, (int, float)) for v in out):
            return [np.asarray(out, dtype=np.float64)]
        return [v for item in out for v in _flatten(item)]
    return [out]


def _core_arg(a: Any, dtype_of_face: bool = False) -> Any:
    if isinstance(a, F):
        return a.values.astype(a.dtype) if dtype_of_face else a.values
    if isinstance(a, I):
        return a.values.astype(a.dtype)
    return a


def core_outputs(case: Case, args: tuple | None = None) -> list[np.ndarray]:
    args = tuple(_core_arg(a) for a in case.args) if args is None else args
    return [np.asarray(v, dtype=np.float64) for v in _flatten(_call(core, case, args))]


def _weights(case: Case, shapes: list[tuple]) -> list[np.ndarray]:
    rng = np.random.default_rng(_seed("weights" + case.id))
    return [rng.choice(_WEIGHTS, size=shape) for shape in shapes]


def core_error(case: Case) -> tuple[str, str] | None:
    try:
        if case.kind == "ctor_error":
            _checks.check_hyper(case.name, **case.kwargs)
        else:
            core_outputs(case)
    except Exception as e:  # noqa: BLE001 (the reference's exception is the expectation)
        return type(e).__name__, str(e)
    return None


def reference(case: Case) -> dict:
    """Values of the core (float64 inputs) and, for ``grad=True``, central differences of the
    weighted sum of the outputs with respect to each argument marked ``grad``."""
    values = core_outputs(case)
    res = {"values": values, "grads": None}
    if case.grad is not True:
        return res
    weights = _weights(case, [v.shape for v in values])
    base = [_core_arg(a) for a in case.args]

    def f(args):
        return sum(float(np.sum(w * v)) for w, v in zip(weights, core_outputs(case, tuple(args))))

    grads, directions = [], []
    idx = [i for i, a in enumerate(case.args) if isinstance(a, F) and a.grad]
    total = sum(case.args[i].values.size for i in idx)
    rng = np.random.default_rng(_seed("directions" + case.id))
    if total <= FD_FULL_MAX:
        for i in idx:
            x = base[i]
            h = FD_STEP * (float(np.abs(x).max()) or 1.0)
            g = np.zeros_like(x)
            for j in np.ndindex(x.shape):
                plus, minus = x.copy(), x.copy()
                plus[j] += h
                minus[j] -= h
                g[j] = (f(base[:i] + [plus] + base[i + 1:]) - f(base[:i] + [minus] + base[i + 1:])) / (2 * h)
            grads.append(g)
        res["grads"] = grads
    else:
        dirs = []
        for _ in range(FD_DIRECTIONS):
            v = [rng.standard_normal(base[i].shape) for i in idx]
            h = FD_STEP * (max(float(np.abs(base[i]).max()) for i in idx) or 1.0)
            plus, minus = list(base), list(base)
            for k, i in enumerate(idx):
                plus[i] = base[i] + h * v[k]
                minus[i] = base[i] - h * v[k]
            dirs.append((v, (f(plus) - f(minus)) / (2 * h)))
        res["directions"] = dirs
    res["weights"] = weights
    return res


# Faces whose framework treats a subnormal number of the compute dtype as zero: TensorFlow's CPU
# kernels run with denormals-are-zero and flush-to-zero, so a subnormal logit never reaches the face
# (its number model: the value IS 0). Their reference is the core on the inputs with those entries
# set to 0 (see ``flush_subnormals``); the other faces keep subnormals.
FLUSHES_SUBNORMALS = ("keras-tensorflow",)


def flush_subnormals(case: Case) -> Case:
    """``case`` with every floating-point entry that is subnormal in its compute dtype (float32 for
    float16/bfloat16 inputs, whose statistics are computed in float32) set to 0; ``case`` itself when
    there is none. The id stays (it seeds the output weights of the gradient check)."""
    args, changed = [], False
    for a in case.args:
        if isinstance(a, F):
            tiny = FTINY["float32" if a.dtype in ("float16", "bfloat16") else a.dtype]
            sub = (a.values != 0) & (np.abs(a.values) < tiny)
            if sub.any():
                a, changed = F(np.where(sub, 0.0, a.values), a.dtype, a.grad), True
        args.append(a)
    if not changed:
        return case
    return Case(case.id, case.name, case.kind, tuple(args), case.kwargs, case.dtype, case.grad,
                case.scale, case.kappa, case.faces, case.labels, case.call_kwargs)


# ----------------------------------------------------------------------------- the faces
class Face:
    """Runs cases in one framework namespace and returns plain data."""

    name = "numpy"

    def namespace(self) -> Any:
        return core

    def supports(self, case: Case) -> bool:
        return self.name in case.faces and not (self.name == "numpy" and case.dtype == "bfloat16")

    # conversion
    def tensor(self, a: Any, requires_grad: bool = False) -> Any:
        return _core_arg(a, dtype_of_face=True)

    def to_numpy(self, v: Any) -> np.ndarray:
        return np.asarray(v, dtype=np.float64)

    def run_value(self, case: Case, weights: list | None) -> dict:
        ns = self.namespace()
        args = tuple(self.tensor(a) for a in case.args)
        out = _call(ns, case, args, self.tensor)
        if case.name == "DEFAULT_TEMPERATURES":
            return {"values": [np.asarray(out, dtype=np.float64)], "grads": None, "repr": repr(out)}
        outs = _flatten(out)
        return {"values": [self.to_numpy(v) for v in outs], "grads": None, "dtypes": [dtype_name(v) for v in outs]}

    def run(self, case: Case, weights: list | None = None) -> dict:
        """``{"values", "grads", "error", "terms"}``; ``error``: (type name, message) of what the call raised."""
        try:
            if case.kind in ("value", "error"):
                res = self.run_value(case, weights)
            elif case.kind == "ctor_error":
                self.construct(case.name, case.kwargs)
                res = {"values": [], "grads": None}
            else:
                res = self.run_class(case)
            res["error"] = None
        except Exception as e:  # noqa: BLE001 (any exception is data for the comparison)
            res = {"values": None, "grads": None, "error": (type(e).__name__, str(e)),
                   "traceback": traceback.format_exc(limit=-3)}
        return res

    def construct(self, cls: str, kwargs: dict) -> Any:
        return getattr(self.namespace(), cls)(**kwargs)

    def run_class(self, case: Case) -> dict:
        raise NotImplementedError


class TorchFace(Face):
    name = "torch"

    def namespace(self) -> Any:
        import logit_standardization.torch as ns

        return ns

    def tensor(self, a: Any, requires_grad: bool = False) -> Any:
        import torch

        if isinstance(a, F):
            t = torch.tensor(a.values, dtype=torch.float64).to(getattr(torch, a.dtype))
            return t.requires_grad_(requires_grad)
        if isinstance(a, I):
            return torch.tensor(a.values.astype(a.dtype))
        return a

    def to_numpy(self, v: Any) -> np.ndarray:
        import torch

        if isinstance(v, torch.Tensor):
            return v.detach().to(torch.float64).cpu().numpy()
        return np.asarray(v, dtype=np.float64)

    def _scalar(self, outs: list, weights: list) -> Any:
        import torch

        return sum((o.to(torch.float64) * torch.as_tensor(w)).sum() for o, w in zip(outs, weights))

    def _grad(self, outs: list, weights: list, inputs: list) -> list:
        import torch

        grads = torch.autograd.grad(self._scalar(outs, weights), inputs, allow_unused=True)
        return [np.zeros(x.shape) * np.nan if g is None else self.to_numpy(g) for g, x in zip(grads, inputs)]

    def run_value(self, case: Case, weights: list | None) -> dict:
        if case.kind == "error" or not case.grad or case.name == "DEFAULT_TEMPERATURES":
            return super().run_value(case, weights)
        args = [self.tensor(a, requires_grad=isinstance(a, F) and a.grad) for a in case.args]
        outs = _flatten(_call(self.namespace(), case, tuple(args), self.tensor))
        inputs = [x for x, a in zip(args, case.args) if isinstance(a, F) and a.grad]
        if weights is None:
            weights = _weights(case, [tuple(o.shape) for o in outs])
        res = {"values": [self.to_numpy(o) for o in outs], "dtypes": [dtype_name(o) for o in outs]}
        res["grads"] = self._grad(outs, weights, inputs)
        res["grad_dtypes"] = [dtype_name(x) for x in inputs]
        return res

    def run_class(self, case: Case) -> dict:
        obj = self.construct(case.name, case.kwargs)
        args = [self.tensor(a) for a in case.args]
        if case.labels is not None:
            args.append(self.tensor(case.labels))
        loss = obj(*args, **case.call_kwargs)
        terms = getattr(obj, "last_terms", None)
        return {"values": [self.to_numpy(loss)],
                "terms": None if terms is None else {k: self.to_numpy(v).tolist() for k, v in terms.items()}}


class KerasFace(Face):
    """The Keras face on the backend of this process (``name`` says which)."""

    def __init__(self, backend: str):
        self.name = f"keras-{backend}"
        self.backend = backend

    def namespace(self) -> Any:
        import keras

        assert keras.backend.backend() == self.backend, (keras.backend.backend(), self.backend)
        import logit_standardization.keras as ns

        return ns

    def tensor(self, a: Any, requires_grad: bool = False) -> Any:
        if self.backend == "torch":
            return TorchFace().tensor(a, requires_grad)
        from keras import ops

        if isinstance(a, F):
            return ops.cast(ops.convert_to_tensor(a.values, dtype="float64"), a.dtype)
        if isinstance(a, I):
            return ops.convert_to_tensor(a.values.astype(a.dtype))
        return a

    def to_numpy(self, v: Any) -> np.ndarray:
        from keras import ops

        if isinstance(v, (int, float, np.ndarray, np.generic)):
            return np.asarray(v, dtype=np.float64)
        return np.asarray(ops.convert_to_numpy(ops.cast(v, "float64")), dtype=np.float64)

    def run_value(self, case: Case, weights: list | None) -> dict:
        if case.kind == "error" or not case.grad or case.name == "DEFAULT_TEMPERATURES":
            return super().run_value(case, weights)
        if self.backend == "torch":
            face = TorchFace()
            face.namespace = self.namespace  # torch autograd through the Keras face
            face.to_numpy = self.to_numpy
            return face.run_value(case, weights)
        import tensorflow as tf
        from keras import ops

        args = [self.tensor(a) for a in case.args]
        inputs = [x for x, a in zip(args, case.args) if isinstance(a, F) and a.grad]
        with tf.GradientTape() as tape:
            for x in inputs:
                tape.watch(x)
            outs = _flatten(_call(self.namespace(), case, tuple(args), self.tensor))
            if weights is None:
                weights = _weights(case, [tuple(o.shape) for o in outs])
            total = sum(ops.sum(ops.cast(o, "float64") * w) for o, w in zip(outs, weights))
        grads = tape.gradient(total, inputs)
        return {"values": [self.to_numpy(o) for o in outs], "dtypes": [dtype_name(o) for o in outs],
                "grads": [np.full(x.shape, np.nan) if g is None else self.to_numpy(g) for g, x in zip(grads, inputs)],
                "grad_dtypes": [dtype_name(x) for x in inputs]}

    def construct(self, cls: str, kwargs: dict) -> Any:
        return getattr(self.namespace(), cls)(**kwargs)

    def run_class(self, case: Case) -> dict:
        ns = self.namespace()
        kw = dict(case.kwargs)
        if "reduction" in kw:
            kw["reduction"] = KERAS_REDUCTION[kw["reduction"]]
        if case.dtype == "float64":
            kw["dtype"] = "float64"
        obj = self.construct(case.name, kw)
        if "epoch" in case.call_kwargs:  # Keras: the epoch is state, set as EpochSchedule sets it
            obj.set_epoch(case.call_kwargs["epoch"])
        s, t = (self.tensor(a) for a in case.args)
        y_true = t if case.labels is None else ns.pack_targets(t, self.tensor(case.labels))
        loss = obj(y_true, s)
        terms = getattr(obj, "last_terms", None)
        return {"values": [self.to_numpy(loss)],
                "terms": None if terms is None else {k: self.to_numpy(v).tolist() for k, v in terms.items()}}


def dtype_name(v: Any) -> str:
    """Name of a value's floating dtype ("float64" for Python numbers and non-floating values)."""
    dtype = getattr(v, "dtype", None)
    name = str(getattr(dtype, "name", dtype)).replace("torch.", "")
    return name if name in UNIT_ROUNDOFF else "float64"


def face(name: str) -> Face:
    if name == "numpy":
        return Face()
    if name == "torch":
        return TorchFace()
    return KerasFace(name.split("-", 1)[1])


# ----------------------------------------------------------------------------- class oracle
def cross_entropy_rows(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample -log softmax(logits)[label] in float64 (the CE oracle of the class forms)."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=1, keepdims=True)
    log_p = x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels]


def _reduce(rows: np.ndarray, reduction: str) -> np.ndarray:
    return rows if reduction == "none" else np.asarray(rows.sum() if reduction == "sum" else rows.mean())


FUNCTIONAL_OF = {"KDLoss": "kd_loss", "DKDLoss": "dkd_loss", "MLKDLoss": "mlkd_loss", "CTKDLoss": "kd_loss"}
# every core function a class computes with (its defaults are the class's), and (kd_weight, ce_weight) defaults
CORE_FUNCTIONS_OF = {"KDLoss": ("kd_loss",), "DKDLoss": ("dkd_loss", "dkd_warmup"), "MLKDLoss": ("mlkd_loss",),
                     "CTKDLoss": ("kd_loss", "ctkd_temperature", "ctkd_lambda")}
CLASS_WEIGHT_DEFAULTS = {"KDLoss": (1.0, 0.0), "DKDLoss": (1.0, 0.0), "MLKDLoss": (9.0, 0.0), "CTKDLoss": (1.0, 0.0)}
_NOT_FUNCTIONAL = ("kd_weight", "ce_weight", "warmup_epochs", "check_finite", "t_start", "t_end", "init", "loops",
                   "max_value", "min_value", "schedule", "instance_wise", "num_classes", "hidden_features")


def class_reference(case: Case) -> dict:
    """ce_weight * CE + kd_weight * (warm-up factor) * functional loss, with the class's reduction
    (MLKD: CE of both student views, kd_weight passed to mlkd_loss), and the weighted terms."""
    kw = case.kwargs
    arrays = [a.values for a in case.args]
    labels = None if case.labels is None else case.labels.values.astype(np.int64)
    ce_w = kw.get("ce_weight", 0.0)
    reduction = kw.get("reduction", "mean")
    fkw = {k: v for k, v in kw.items() if k not in _NOT_FUNCTIONAL}
    terms: dict[str, np.ndarray] = {}
    if case.name == "MLKDLoss":
        parts = core.mlkd_terms(*arrays, kd_weight=kw.get("kd_weight", 9.0), **fkw)
        terms = {k: np.asarray(v) for k, v in parts.items()}
        ce = 0.0 if labels is None else (cross_entropy_rows(arrays[0], labels).mean()
                                         + cross_entropy_rows(arrays[1], labels).mean())
        terms["ce"] = np.asarray(ce_w * ce)
    else:
        factor = 1.0
        if case.name == "DKDLoss" and "epoch" in case.call_kwargs:
            factor = core.dkd_warmup(case.call_kwargs["epoch"], warmup_epochs=kw.get("warmup_epochs", 20))
        if case.name == "CTKDLoss":
            fkw["temperature"] = core.ctkd_temperature(kw.get("init", 1.0), t_start=kw.get("t_start", 1.0),
                                                       t_end=kw.get("t_end", 20.0))
        extra = (labels,) if case.name == "DKDLoss" else ()
        kd = core.__dict__[FUNCTIONAL_OF[case.name]](arrays[0], arrays[1], *extra, **fkw)
        terms["kd"] = kw.get("kd_weight", 1.0) * factor * np.asarray(kd)
        ce = np.zeros(len(arrays[0])) if labels is None else cross_entropy_rows(arrays[0], labels)
        terms["ce"] = ce_w * _reduce(ce, reduction)
    return {"values": [sum(terms.values())], "terms": terms}


# ----------------------------------------------------------------------------- script mode
def _jsonable(res: dict) -> dict:
    out = {}
    for k, v in res.items():
        if k in ("values", "grads") and v is not None:
            out[k] = [{"shape": list(np.shape(a)), "data": np.asarray(a, dtype=np.float64).ravel().tolist()} for a in v]
        else:
            out[k] = v
    return out


def from_json(res: dict) -> dict:
    res = dict(res)
    for k in ("values", "grads"):
        if res.get(k) is not None:
            res[k] = [np.asarray(a["data"], dtype=np.float64).reshape(a["shape"]) for a in res[k]]
    if res.get("error") is not None:
        res["error"] = tuple(res["error"])
    return res


def main(face_name: str, path: str) -> None:
    """Evaluate every case of ``face_name`` in this process and write ``{case id: result}`` as JSON."""
    if importlib_find("triton") and face_name == "keras-tensorflow":
        import triton  # noqa: F401  (before TensorFlow: see tests/backends/test_keras_backends.py)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    f = face(face_name)
    results = {}
    for case in all_cases():
        if f.supports(case):
            results[case.id] = _jsonable(f.run(case))
    Path(path).write_text(json.dumps(results))


def importlib_find(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
