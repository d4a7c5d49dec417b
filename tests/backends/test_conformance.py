"""Conformance of every face with the NumPy core, generated from ``logit_standardization.__all__``.

Every public name of the core has cases in ``_conformance_cases.py`` (a name without cases fails
``test_every_public_name_has_cases``). Each case runs on each face -- the core given arrays of the
case's dtype (``numpy``), :mod:`logit_standardization.torch`, and :mod:`logit_standardization.keras`
on the TensorFlow and on the torch Keras backend -- and is compared with the core on the same
values in float64:

* valid inputs: same shapes, finite values within the dtype tolerance below, and the gradient of
  a fixed weighted sum of the outputs (torch autograd, ``tf.GradientTape``) within tolerance of
  central differences of the float64 core; on TensorFlow, which flushes subnormal numbers to zero,
  the reference is the core on the inputs with their subnormal entries set to 0
  (``_conformance_cases.flush_subnormals``);
* invalid inputs: the same exception type and message as the core;
* class forms: constructor errors equal to the core's rule under the class name, and values equal
  to ``ce_weight * CE + kd_weight * functional loss`` (CE oracle written here in NumPy).

A Keras process has one backend, so the Keras backend this process does not run is evaluated
once, in one subprocess that runs every case and returns the results as JSON (shared by the
xdist workers through a file lock); the faces of this process run case by case.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("triton") is not None:  # before TensorFlow (see test_keras_backends.py)
    import triton  # noqa: F401

import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
keras = pytest.importorskip("keras")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _conformance_cases as cc  # noqa: E402

import logit_standardization as core  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[2]
THIS_BACKEND = keras.backend.backend()
IN_PROCESS = {"numpy", "torch", f"keras-{THIS_BACKEND}"}

CASES = cc.all_cases()
BY_KIND: dict[str, list[cc.Case]] = {}
for _case in CASES:
    BY_KIND.setdefault(_case.kind, []).append(_case)


def _params(kind: str, faces=cc.FACES):
    return [pytest.param(f, c, id=f"{f}-{c.id}") for c in BY_KIND[kind] for f in faces if cc.face(f).supports(c)]


# ----------------------------------------------------------------------------- tolerances
# A float computation with unit roundoff u returns, for a well-conditioned formula of n-term
# (pairwise) sums, values within about u * log2(n) of the exact result relative to the size of
# the terms it sums. Here:
#   error <= K * u_c * kappa * (|ref|_inf + scale) + 2 * u_out * |ref|_inf + 2 * tiny_out
# with K = 8 (2 + log2 C) (summation growth over C classes times a small constant for the chain
# of a few such steps), u_c the unit roundoff of the compute dtype (the input's, and float32 for
# float16/bfloat16 inputs, whose statistics the spec computes in float32), kappa the case's
# condition factor (max |x| / std of the standardized rows: centring cancels that many digits),
# scale the size of the terms a loss is summed from (see _conformance_cases.loss_scale),
# u_out the roundoff of the dtype the face returns (its result is rounded once more to it), and
# tiny_out its smallest normal number: values below it (such as the gradient of a Z-score of
# logits near the largest float) keep only absolute precision, or none where the framework
# flushes subnormals to zero (TensorFlow does on CPU). Gradients
# compare with central differences of the float64 core, whose own error FD_ROUNDOFF(kappa)
# (see _conformance_cases) is added to u_c. Nothing here is fitted to a run.
def _classes(case: cc.Case) -> int:
    sizes = [a.values.shape[-1] for a in case.args if isinstance(a, cc.F) and a.values.ndim]
    return max(sizes + [2])


def _compute_roundoff(dtype: str) -> float:
    return cc.UNIT_ROUNDOFF["float32" if dtype in ("float16", "bfloat16") else dtype]


def _check_close(what: str, got: np.ndarray, ref: np.ndarray, *, u_c: float, kappa: float, scale: float, k: float,
                 out_dtype: str, terms: float = 1.0) -> None:
    """``terms``: how many entries of at most ``tiny_out`` error each a compared value sums (the
    1-norm of the direction for a directional derivative)."""
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values {got.ravel()[~np.isfinite(got.ravel())][:5]}"
    size = float(np.max(np.abs(ref))) if ref.size else 0.0
    tol = k * u_c * kappa * (size + scale) + 2 * cc.UNIT_ROUNDOFF[out_dtype] * size + 2 * cc.FTINY[out_dtype] * terms
    err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    assert err <= tol, (f"{what}: max abs error {err:.3g} > tolerance {tol:.3g} (|ref|_inf {size:.3g}, "
                        f"u_c {u_c:.3g}, kappa {kappa:.3g}, scale {scale:.3g}, out dtype {out_dtype})")


# ----------------------------------------------------------------------------- results of a face
def _subprocess_results(face: str, tmp_path_factory) -> dict:
    """All results of a face that runs in another process (once per session, shared by workers)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent
    path = root / f"conformance-{face}.json"
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            env = dict(os.environ, KERAS_BACKEND=face.split("-", 1)[1], TF_CPP_MIN_LOG_LEVEL="3",
                       OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
            env.pop("PYTEST_XDIST_WORKER", None)
            tmp = path.with_suffix(".partial")
            proc = subprocess.run([sys.executable, str(Path(cc.__file__)), face, str(tmp)], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                path.write_text(json.dumps({"__crash__": proc.stderr[-6000:] + proc.stdout[-2000:]}))
            else:
                tmp.replace(path)
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def results_of(tmp_path_factory):
    cache: dict[str, dict] = {}

    def get(face: str, case: cc.Case) -> dict:
        if face in IN_PROCESS:
            return cc.face(face).run(case)
        if face not in cache:
            cache[face] = _subprocess_results(face, tmp_path_factory)
        results = cache[face]
        assert "__crash__" not in results, f"the {face} subprocess failed:\n{results.get('__crash__')}"
        assert case.id in results, f"{face}: no result for {case.id}"
        return cc.from_json(results[case.id])

    return get


def _no_error(face: str, res: dict) -> None:
    if res["error"] is not None:
        pytest.fail(f"{face} raised {res['error'][0]}: {res['error'][1]}\n{res.get('traceback', '')}")


# ----------------------------------------------------------------------------- coverage of the API
def test_every_public_name_has_cases():
    valid, invalid = cc.valid_cases(), cc.invalid_cases()
    missing = [name for name in core.__all__ if not valid.get(name)]
    assert not missing, f"public names of the core without conformance cases: {missing}"
    no_invalid = [name for name in core.__all__ if not invalid.get(name) and name not in cc.NO_INVALID_INPUTS]
    assert not no_invalid, f"public names of the core without invalid-input cases: {no_invalid}"
    stale = sorted(set(valid) - set(core.__all__))
    assert not stale, f"cases for names that are not public: {stale}"
    ctor_classes = {c.name for c in BY_KIND["ctor_error"]} | {c.name for c in BY_KIND["class_value"]}
    assert ctor_classes == set(cc.TORCH_CLASSES)


@pytest.mark.parametrize("face", cc.FRAMEWORK_FACES)
def test_face_exports_every_public_name(face):
    if face not in IN_PROCESS:
        # the other Keras backend has the same module; its names are those of this process
        face = f"keras-{THIS_BACKEND}"
    ns = cc.face(face).namespace()
    missing = [name for name in core.__all__ if not hasattr(ns, name)]
    unlisted = [name for name in core.__all__ if name not in getattr(ns, "__all__", ())]
    classes = cc.TORCH_CLASSES if face == "torch" else cc.KERAS_CLASSES
    missing_classes = [name for name in classes if not hasattr(ns, name)]
    assert not (missing or unlisted or missing_classes), (
        f"{ns.__name__}: missing {missing}, not in __all__ {unlisted}, missing classes {missing_classes}")


def _signature(obj) -> list[tuple[str, object, object]]:
    """(name, kind, default) of every parameter: positional-or-keyword vs keyword-only counts too."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(obj).parameters.values()]


@pytest.mark.parametrize("face", cc.FRAMEWORK_FACES[:2])
def test_functions_have_the_core_signatures(face):
    ns = cc.face(face).namespace()
    bad = {}
    for name in core.__all__:
        ref = getattr(core, name)
        if not callable(ref) or not hasattr(ns, name):
            continue
        got = [p for p in _signature(getattr(ns, name)) if p[0] != "check_finite"]
        want = _signature(ref)
        if got != want:
            bad[name] = (got, want)
    assert not bad, "\n".join(f"{n}: {g} != core {w}" for n, (g, w) in bad.items())


def test_classes_have_the_same_signature_in_both_frameworks():
    import logit_standardization.keras as kns
    import logit_standardization.torch as tns

    bad = []
    for cls in cc.TORCH_CLASSES:
        want = cc.CLASS_HYPERS[cls]
        tsig = [p for p in _signature(getattr(tns, cls)) if p[0] not in cc.FACE_EXTRAS["torch"]]
        if [p[0] for p in tsig] != want:
            bad.append(f"torch {cls}: {[p[0] for p in tsig]} != {want}")
        faces = [("torch", getattr(tns, cls))] + ([("keras", getattr(kns, cls))] if cls in cc.KERAS_CLASSES else [])
        for face, obj in faces:
            positional = [p.name for p in inspect.signature(obj).parameters.values()
                          if p.kind is not inspect.Parameter.KEYWORD_ONLY]
            if positional:
                bad.append(f"{face} {cls}: arguments {positional} are not keyword-only")
        if cls in cc.KERAS_CLASSES:
            ksig = [p for p in _signature(getattr(kns, cls)) if p[0] not in cc.FACE_EXTRAS["keras"]]
            if [p for p in ksig if p[0] != "reduction"] != [p for p in tsig if p[0] != "reduction"]:
                bad.append(f"keras {cls} {ksig} != torch {tsig}")
        # the weights' defaults (layout spec), and shared hyperparameters default to those of
        # the core functions the class computes with (loss, warm-up, temperature, schedule)
        defaults = {n: d for n, _, d in tsig}
        if (defaults["kd_weight"], defaults["ce_weight"]) != cc.CLASS_WEIGHT_DEFAULTS[cls]:
            bad.append(f"torch {cls}: kd_weight, ce_weight default to {defaults['kd_weight']!r}, "
                       f"{defaults['ce_weight']!r}, not {cc.CLASS_WEIGHT_DEFAULTS[cls]}")
        for fn in cc.CORE_FUNCTIONS_OF[cls]:
            ref = {n: d for n, _, d in _signature(getattr(core, fn))}
            for name, default in defaults.items():
                if name in ref and name not in ("reduction", "epoch") and default != ref[name]:
                    bad.append(f"torch {cls}({name}={default!r}) but core {fn}({name}={ref[name]!r})")
    assert not bad, "\n".join(bad)


# ----------------------------------------------------------------------------- valid inputs
_REFERENCE: dict[tuple[str, bool], dict] = {}


def _reference(case: cc.Case, *, flush: bool = False) -> dict:
    """The core's results for ``case``; ``flush``: on the inputs with subnormal entries set to 0."""
    if (case.id, flush) not in _REFERENCE:
        case = cc.flush_subnormals(case) if flush else case
        _REFERENCE[case.id, flush] = cc.class_reference(case) if case.kind == "class_value" else cc.reference(case)
    return _REFERENCE[case.id, flush]


@pytest.mark.parametrize(("face", "case"), _params("value"))
def test_values_and_gradients(face, case, results_of):
    # TensorFlow flushes subnormals to zero: its reference is the core on the flushed inputs
    ref = _reference(case, flush=face in cc.FLUSHES_SUBNORMALS)
    res = results_of(face, case)
    _no_error(face, res)
    if case.name == "DEFAULT_TEMPERATURES":
        assert np.array_equal(res["values"][0], ref["values"][0]), res
        return
    assert len(res["values"]) == len(ref["values"]), f"{len(res['values'])} outputs, expected {len(ref['values'])}"
    k = 8 * (2 + math.log2(_classes(case)))
    u_c = _compute_roundoff(case.dtype)
    dtypes = res.get("dtypes") or ["float64"] * len(res["values"])
    for i, (got, want) in enumerate(zip(res["values"], ref["values"])):
        _check_close(f"{face} output {i}", got, want, u_c=u_c, kappa=case.kappa, scale=case.scale, k=k,
                     out_dtype=dtypes[i])
    if not case.grad or face == "numpy":
        return
    grads = res["grads"]
    assert grads is not None, f"{face}: no gradient"
    for i, g in enumerate(grads):
        assert np.all(np.isfinite(g)), f"{face}: non-finite gradient of input {i}: {g.ravel()[~np.isfinite(g.ravel())][:5]}"
    if case.grad is not True:
        return
    inputs = [a for a in case.args if isinstance(a, cc.F) and a.grad]
    r = max(float(np.abs(a.values).max()) for a in inputs) or 1.0
    u_g = u_c + cc.FD_ROUNDOFF(case.kappa)
    # the terms a derivative is summed from: (output size + scale) / std = (...) * kappa / r
    vsize = max([float(np.max(np.abs(v))) for v in ref["values"] if v.size] + [0.0])
    g_scale = 2 * (vsize + case.scale) * case.kappa / r
    gdt = res["grad_dtypes"]
    out_dtype = max(gdt, key=lambda d: cc.UNIT_ROUNDOFF[d])
    if ref["grads"] is not None:
        for i, (got, want) in enumerate(zip(grads, ref["grads"])):
            _check_close(f"{face} gradient of input {i}", got, want, u_c=u_g, kappa=case.kappa, scale=g_scale,
                         k=k, out_dtype=gdt[i])
    else:
        got = np.array([sum(float(np.sum(g * vi)) for g, vi in zip(grads, v)) for v, _ in ref["directions"]])
        want = np.array([d for _, d in ref["directions"]])
        norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
        vnorm = max(math.sqrt(sum(float(np.sum(vi * vi)) for vi in v)) for v, _ in ref["directions"])
        _check_close(f"{face} directional derivatives", got, want, u_c=u_g, kappa=case.kappa,
                     scale=vnorm * (norm + g_scale), k=k, out_dtype=out_dtype,
                     terms=max(sum(float(np.sum(np.abs(vi))) for vi in v) for v, _ in ref["directions"]))


# ----------------------------------------------------------------------------- invalid inputs
def _check_error(face: str, case: cc.Case, res: dict) -> None:
    want = cc.core_error(case)
    assert want is not None, f"the core accepts {case.id}: not an invalid case"
    got = res["error"]
    assert got is not None, f"{face} accepted {case.id}; the core raises {want[0]}: {want[1]}"
    assert tuple(got) == want, (f"{face} raised {got[0]}: {got[1]}\nthe core raises {want[0]}: {want[1]}\n"
                                f"{res.get('traceback', '')}")


@pytest.mark.parametrize(("face", "case"), _params("error", cc.FRAMEWORK_FACES))
def test_invalid_inputs_raise_the_core_error(face, case, results_of):
    _check_error(face, case, results_of(face, case))


@pytest.mark.parametrize(("face", "case"), _params("ctor_error", cc.FRAMEWORK_FACES))
def test_class_constructor_errors(face, case, results_of):
    _check_error(face, case, results_of(face, case))


# ----------------------------------------------------------------------------- class forms
@pytest.mark.parametrize(("face", "case"), _params("class_value", cc.FRAMEWORK_FACES))
def test_class_values_follow_the_weight_rule(face, case, results_of):
    ref = _reference(case)
    res = results_of(face, case)
    _no_error(face, res)
    k = 8 * (2 + math.log2(_classes(case)))
    u_c = cc.UNIT_ROUNDOFF[case.dtype]
    if case.name == "CTKDLoss":  # the learnable temperature is a float32 variable (frameworks' default)
        u_c = max(u_c, cc.UNIT_ROUNDOFF["float32"])
    _check_close(f"{face} {case.name}", res["values"][0], np.asarray(ref["values"][0]), u_c=u_c, kappa=case.kappa,
                 scale=case.scale, k=k, out_dtype=case.dtype)
    terms = res.get("terms")
    assert terms is not None, f"{face} {case.name} has no last_terms"
    assert set(terms) == set(ref["terms"]), f"last_terms keys {sorted(terms)}, expected {sorted(ref['terms'])}"
    if case.kwargs.get("reduction") == "none":
        return  # per-sample losses: the logged terms may be per sample or reduced
    for name, want in ref["terms"].items():
        _check_close(f"{face} {case.name}.last_terms[{name!r}]", np.asarray(terms[name], dtype=np.float64),
                     np.asarray(want), u_c=u_c, kappa=case.kappa, scale=case.scale, k=k, out_dtype=case.dtype)


def _torch_views(n: int, c: int = 5, b: int = 4):
    import torch

    g = torch.Generator().manual_seed(n)
    return [torch.randn(b, c, generator=g) for _ in range(n)]


def test_every_loss_class_has_conformance_cases():
    # the loss classes of each face (its names ending in "Loss") are exactly those the class
    # tables of _conformance_cases cover: a new loss class without cases fails here
    import logit_standardization.keras as kns
    import logit_standardization.torch as tns

    # torch-only optimisations of a core loss with no core counterpart of their own, hence no
    # cross-face cases: FusedLinearKDLoss is kd_loss (+ CE) of the logits h @ W.T, tested against
    # kd_loss and cross_entropy on the materialised logits in tests/backends/test_fused_linear.py
    torch_only = {"FusedLinearKDLoss"}
    assert {n for n in tns.__all__ if n.endswith("Loss")} - torch_only == set(cc.TORCH_CLASSES)
    assert torch_only <= set(tns.__all__)
    assert {n for n in kns.__all__ if n.endswith("Loss")} == set(cc.KERAS_CLASSES)
    every = set(cc.TORCH_CLASSES) | set(cc.KERAS_CLASSES)
    for table in (cc.CLASS_HYPERS, cc.CLASS_VALUE_CONFIGS, cc.FUNCTIONAL_OF, cc.CORE_FUNCTIONS_OF,
                  cc.CLASS_WEIGHT_DEFAULTS):
        assert set(table) == every


@pytest.mark.parametrize("cls", cc.TORCH_CLASSES)
def test_torch_classes_need_labels_for_cross_entropy(cls):
    import logit_standardization.torch as tns

    kw = {"grl_lambda": -1.0} if cls == "CTKDLoss" else {}
    views = _torch_views(4 if cls == "MLKDLoss" else 2)
    with pytest.raises(ValueError, match="'labels'"):
        getattr(tns, cls)(ce_weight=0.5)(*views, **kw)


@pytest.mark.parametrize("cls", cc.KERAS_CLASSES)
def test_keras_classes_need_labels_for_cross_entropy(cls):
    import logit_standardization.keras as kns

    s, t = (v.numpy() for v in _torch_views(2))
    with pytest.raises(ValueError, match="labels"):
        getattr(kns, cls)(ce_weight=0.5)(t, s)


def test_torch_ctkd_needs_an_epoch_or_a_lambda():
    import logit_standardization.torch as tns

    with pytest.raises(ValueError, match="'epoch'.*'grl_lambda'|'grl_lambda'.*'epoch'"):
        tns.CTKDLoss()(*_torch_views(2))


def test_torch_dkd_refuses_a_negative_epoch():
    import torch

    import logit_standardization.torch as tns

    with pytest.raises(ValueError, match="'epoch'"):
        tns.DKDLoss()(*_torch_views(2), torch.tensor([0, 1, 2, 3]), epoch=-1)


def test_torch_instance_wise_ctkd_refuses_a_class_count_mismatch():
    import logit_standardization.torch as tns

    with pytest.raises(ValueError, match="'student_logits'|'teacher_logits'"):
        tns.CTKDLoss(instance_wise=True, num_classes=7)(*_torch_views(2), grl_lambda=-1.0)


def test_keras_dkd_refuses_a_negative_epoch():
    import logit_standardization.keras as kns

    with pytest.raises(ValueError, match="'epoch'"):
        kns.DKDLoss(warmup_epochs=4).set_epoch(-1)
