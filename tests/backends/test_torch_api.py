"""PyTorch backend: the public surface (signatures, errors, module hyperparameters) matches the core."""

import inspect
import pathlib
import re

import numpy as np
import pytest
import torch

import logit_standardization as ls
import logit_standardization.torch as lt
import logit_standardization.torch.functional as F


pytestmark = pytest.mark.usefixtures("one_torch_thread")


FUNCTIONS = ["zscore", "kd_loss", "dkd_loss", "mlkd_terms", "mlkd_loss", "ctkd_temperature", "ctkd_lambda",
             "dkd_warmup"]
# The one deliberate addition: a keyword-only switch for the NaN/Inf scan on every function taking tensors.
EXTRA = inspect.Parameter("check_finite", inspect.Parameter.KEYWORD_ONLY, default=True)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_signature_matches_core(name):
    core = inspect.signature(getattr(ls, name)).parameters
    ours = inspect.signature(getattr(lt, name)).parameters

    def facts(params):
        return [(p.name, p.kind, p.default) for p in params.values()]

    expected = facts(core)
    if name not in ("ctkd_lambda", "dkd_warmup"):  # schedules of an epoch number: the core's own functions
        expected.append((EXTRA.name, EXTRA.kind, EXTRA.default))
    assert facts(ours) == expected


def test_the_module_named_torch_imports_the_real_torch():
    assert lt.torch is torch and lt.nn is torch.nn


def test_public_names():
    for name in FUNCTIONS + ["KDLoss", "DKDLoss", "MLKDLoss", "CTKDLoss", "GradientReversal", "CTKDLambdaSchedule",
                             "gradient_reversal", "standardized", "confidence_masks", "DEFAULT_TEMPERATURES",
                             "dkd_warmup"]:
        assert name in lt.__all__ and hasattr(lt, name)
    assert set(ls.__all__) <= set(lt.__all__)  # the torch namespace covers every name of the core
    assert lt.DEFAULT_TEMPERATURES == ls.DEFAULT_TEMPERATURES
    assert lt.dkd_warmup is ls.dkd_warmup and lt.ctkd_lambda is ls.ctkd_lambda


def test_package_layout():
    """Functions in ``functional``, classes in ``modules``, the package re-exports both."""
    from logit_standardization.torch import functional, modules

    for name in functional.__all__:
        assert getattr(lt, name) is getattr(functional, name)
    for name in modules.__all__:
        assert getattr(lt, name) is getattr(modules, name)
    assert set(lt.__all__) == set(functional.__all__) | set(modules.__all__)
    assert lt.KDLoss.__module__ == "logit_standardization.torch.modules"
    assert lt.kd_loss.__module__ == "logit_standardization.torch.functional"


def kw(cls):
    return [(p.name, p.default) for p in inspect.signature(cls).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY]


def test_module_signatures():
    """Names, defaults and order of SPEC's constructor signatures (check_finite: the torch extra)."""
    assert kw(lt.KDLoss) == [("temperature", 2.0), ("standardize", True), ("ddof", 1), ("eps", 1e-7),
                             ("kd_weight", 1.0), ("ce_weight", 0.0), ("reduction", "mean"), ("check_finite", True)]
    assert kw(lt.DKDLoss) == [("alpha", 1.0), ("beta", 8.0), ("temperature", 2.0), ("warmup_epochs", 20),
                              ("standardize", True), ("ddof", 1), ("eps", 1e-7), ("kd_weight", 1.0),
                              ("ce_weight", 0.0), ("reduction", "mean"), ("check_finite", True)]
    assert kw(lt.MLKDLoss) == [("temperatures", ls.DEFAULT_TEMPERATURES), ("kd_weight", 9.0), ("standardize", True),
                               ("variant", "reference"), ("ddof", 1), ("eps", 1e-7), ("ce_weight", 0.0),
                               ("check_finite", True)]
    assert kw(lt.CTKDLoss) == [("t_start", 1.0), ("t_end", 20.0), ("init", 1.0), ("loops", 10), ("max_value", 0.0),
                               ("min_value", -1.0), ("schedule", "cosine"), ("standardize", True), ("ddof", 1),
                               ("eps", 1e-7), ("kd_weight", 1.0), ("ce_weight", 0.0), ("reduction", "mean"),
                               ("check_finite", True), ("instance_wise", False), ("num_classes", None),
                               ("hidden_features", 128)]
    # shared hyperparameters default to the core functions' defaults
    for cls, fn in ((lt.KDLoss, ls.kd_loss), (lt.DKDLoss, ls.dkd_loss), (lt.MLKDLoss, ls.mlkd_terms)):
        core = {p.name: p.default for p in inspect.signature(fn).parameters.values()}
        for name, default in kw(cls):
            if name in core:
                assert core[name] == default, (cls.__name__, name)
    assert dict(kw(lt.DKDLoss))["warmup_epochs"] == inspect.signature(ls.dkd_warmup).parameters["warmup_epochs"].default
    ctkd = dict(kw(lt.CTKDLoss))
    for fn in (ls.ctkd_lambda, ls.ctkd_temperature):
        for p in list(inspect.signature(fn).parameters.values())[1:]:
            assert ctkd[p.name] == p.default, p.name

    def params(method):
        return [(p.name, p.kind, p.default) for p in list(inspect.signature(method).parameters.values())[2:]]

    P, K = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY
    E = inspect.Parameter.empty
    assert params(lt.KDLoss.forward) == [("teacher_logits", P, E), ("labels", P, None)]
    assert params(lt.DKDLoss.forward) == [("teacher_logits", P, E), ("labels", P, E), ("epoch", K, None)]
    assert params(lt.CTKDLoss.forward) == [("teacher_logits", P, E), ("labels", P, None), ("epoch", K, None),
                                           ("grl_lambda", K, None)]
    assert list(inspect.signature(lt.MLKDLoss.forward).parameters)[1:] == [
        "student_weak", "student_strong", "teacher_weak", "teacher_strong", "labels"]


# ----------------------------------------------------------------------------- same errors as the core
S = np.zeros((4, 10)) + np.arange(10)
T = -S
Y = np.arange(4)
FOUR = [np.random.default_rng(0).normal(size=(4, 10)) for _ in range(4)]
NAN_S = np.where(S > 3, np.nan, S)
INF_T = np.where(S > 3, np.inf, S)

# (function name, positional args, keyword args): called on NumPy arrays (core) and on tensors (torch)
BAD = [
    ("kd_loss", (S, T[:, :9]), {}),
    ("kd_loss", (S[:, :1], T[:, :1]), {}),
    ("kd_loss", (S[0], T[0]), {}),
    ("kd_loss", (S[:0], T[:0]), {}),
    ("zscore", (S[:, :2],), {"ddof": 2}),
    ("kd_loss", (S[:, :3], T[:, :3]), {"ddof": 3}),
    ("kd_loss", (S, T), {"ddof": 1.0}),
    ("kd_loss", (NAN_S, T), {}),
    ("dkd_loss", (S, INF_T, Y), {}),
    ("zscore", (np.ones((2, 3), dtype=np.int64),), {}),
    ("zscore", (np.ones((2, 3), dtype=np.uint8),), {}),
    ("kd_loss", (S > 2, T), {}),
    ("kd_loss", (S + 0j, T), {}),
    ("dkd_loss", (S, T, Y.astype(float)), {}),
    ("dkd_loss", (S, T, np.array([0, 1, 2, 10])), {}),
    ("dkd_loss", (S, T, np.array([0, -1, 2, 3])), {}),
    ("dkd_loss", (S, T, Y[:3]), {}),
    ("dkd_loss", (S, T, Y[:, None]), {}),
    ("dkd_loss", (S, T, Y), {"alpha": "1"}),
    ("dkd_loss", (S, T, Y), {"beta": float("inf")}),
    ("kd_loss", (S, T), {"temperature": 0.0}),
    ("kd_loss", (S, T), {"temperature": -1}),
    ("zscore", (S,), {"temperature": float("inf")}),
    ("dkd_loss", (S, T, Y), {"temperature": float("nan")}),
    ("kd_loss", (S, T), {"temperature": "2"}),
    ("kd_loss", (S, T), {"temperature": True}),
    ("kd_loss", (S, T), {"reduction": "batchmean"}),
    ("dkd_loss", (S, T, Y), {"reduction": None}),
    ("mlkd_terms", FOUR, {"variant": "paper"}),
    ("mlkd_loss", FOUR, {"variant": "x"}),
    ("mlkd_terms", FOUR, {"temperatures": ()}),
    ("mlkd_terms", FOUR, {"temperatures": 2.0}),
    ("mlkd_terms", FOUR, {"temperatures": (2.0, -1.0)}),
    ("mlkd_terms", FOUR, {"kd_weight": None}),
    ("mlkd_terms", (FOUR[0], FOUR[1][:2], FOUR[2], FOUR[3]), {}),
    ("mlkd_loss", (FOUR[0], FOUR[1], FOUR[2], FOUR[3][:, :3]), {}),
    ("mlkd_loss", (FOUR[0], FOUR[1], FOUR[2][:, :3], FOUR[3]), {}),
    ("mlkd_terms", (FOUR[0], np.where(FOUR[1] > 0, np.nan, 0.0), FOUR[2], FOUR[3]), {}),
    ("mlkd_terms", FOUR, {"standardize": "yes"}),
    ("kd_loss", (S, T), {"standardize": 1}),
    ("zscore", (S,), {"eps": -1e-7}),
    ("zscore", (S,), {"axis": 2}),
    ("zscore", (S,), {"axis": 1.0}),
    ("zscore", (np.float64(3.0),), {}),
    ("zscore", (np.zeros((3, 1, 4)),), {"axis": 1}),
    ("ctkd_temperature", (float("nan"),), {}),
    ("ctkd_temperature", (np.array([1.0, np.inf]),), {}),
    ("ctkd_temperature", (np.array([True]),), {}),
    ("ctkd_temperature", (1.0,), {"t_end": 0.0}),
    ("ctkd_temperature", (1.0,), {"t_start": "a"}),
    ("ctkd_lambda", (1,), {"schedule": "step"}),
    ("ctkd_lambda", (1,), {"loops": 0}),
    ("ctkd_lambda", (float("inf"),), {}),
    ("ctkd_lambda", (-1,), {}),
    ("ctkd_temperature", (1.0,), {"t_start": -30}),
    ("dkd_warmup", (-5,), {}),
    ("dkd_warmup", (5,), {"warmup_epochs": 20.5}),
    ("dkd_warmup", ("5",), {}),
    # not an array at all: the library's TypeError, never torch's "new(): invalid data type 'str'"
    ("kd_loss", ("abc", T), {}),
    ("kd_loss", (S, "abc"), {}),
    ("zscore", ("abc",), {}),
    ("zscore", ([["a", "b"]],), {}),
    ("zscore", (object(),), {}),
    ("dkd_loss", (S, T, "abcd"), {}),
    ("mlkd_loss", (FOUR[0], "x", FOUR[2], FOUR[3]), {}),
    ("ctkd_temperature", ("abc",), {}),
    # every hyperparameter goes through check_hyper
    ("dkd_loss", (S, T, Y), {"alpha": -1.0}),
    ("dkd_loss", (S, T, Y), {"beta": -8}),
    ("mlkd_loss", FOUR, {"kd_weight": -9.0}),
    ("mlkd_terms", FOUR, {"eps": float("nan")}),
    ("mlkd_terms", FOUR, {"ddof": True}),
    ("zscore", (S,), {"ddof": -1}),
    ("ctkd_lambda", (1,), {"loops": 2.5}),
    ("ctkd_lambda", (1,), {"max_value": float("nan")}),
]


def _to_torch(x):
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x.copy())
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], np.ndarray):
        return type(x)(_to_torch(v) for v in x)
    return x


def _raised(call):
    try:
        call()
    except (TypeError, ValueError) as exc:  # the contract: one of these two, with the core's text
        return type(exc), str(exc)
    return None


@pytest.mark.parametrize("name,args,kwargs", BAD, ids=[f"{i}-{b[0]}" for i, b in enumerate(BAD)])
def test_same_error_as_core(name, args, kwargs):
    want = _raised(lambda: getattr(ls, name)(*args, **kwargs))
    assert want is not None, "the case must be bad input for the core too"
    got = _raised(lambda: getattr(lt, name)(*[_to_torch(a) for a in args], **kwargs))
    assert got == want
    assert got[1].startswith(f"{name}: argument '")


def test_non_finite_check_can_be_switched_off():
    s = torch.from_numpy(NAN_S)
    with pytest.raises(ValueError, match="must be finite"):
        lt.kd_loss(s, torch.from_numpy(T))
    out = lt.kd_loss(s, torch.from_numpy(T), check_finite=False)  # no scan: NaN propagates
    assert torch.isnan(out)
    with pytest.raises(TypeError, match=r"kd_loss: argument 'check_finite' must be a bool; got 0"):
        lt.kd_loss(torch.from_numpy(S), torch.from_numpy(T), check_finite=0)
    # labels are range-checked even without the scan
    with pytest.raises(ValueError, match=r"got label 10"):
        lt.dkd_loss(torch.from_numpy(S), torch.from_numpy(T), torch.tensor([0, 1, 2, 10]), check_finite=False)


def test_finite_scan_is_exact():
    assert F._all_finite(torch.tensor([3e38, 3e38, -1.0]))  # the sum overflows, the values are finite
    assert F._all_finite(torch.tensor([6e4, 6e4], dtype=torch.float16))
    assert not F._all_finite(torch.tensor([1.0, float("nan")]))
    assert not F._all_finite(torch.tensor([float("inf"), float("-inf")]))
    assert not F._all_finite(torch.tensor([-float("inf"), 2.0], dtype=torch.bfloat16))


def test_tensor_temperature_validation():
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    with pytest.raises(ValueError, match=r"kd_loss: argument 'temperature' must be a number or a tensor of shape "
                                         r"\(\), \(1,\), \(4,\) or \(4, 1\); got shape \(2,\)"):
        lt.kd_loss(s, t, temperature=torch.ones(2))
    with pytest.raises(ValueError, match=r"kd_loss: argument 'temperature' must be finite and > 0"):
        lt.kd_loss(s, t, temperature=torch.tensor([1.0, 2.0, -1.0, 1.0]))
    with pytest.raises(TypeError, match=r"kd_loss: argument 'temperature' must be a real number or a floating-point "
                                        r"tensor; got dtype kind integer"):
        lt.kd_loss(s, t, temperature=torch.tensor(2))


@pytest.mark.parametrize(
    "make,exc,pattern",
    [
        (lambda: lt.KDLoss(temperature=0), ValueError, r"KDLoss: argument 'temperature' must be finite and > 0; got 0"),
        (lambda: lt.KDLoss(reduction="avg"), ValueError, r"KDLoss: argument 'reduction' must be one of"),
        (lambda: lt.KDLoss(standardize="yes"), TypeError, r"KDLoss: argument 'standardize' must be a bool"),
        (lambda: lt.KDLoss(ddof=0.5), TypeError, r"KDLoss: argument 'ddof' must be an int"),
        (lambda: lt.KDLoss(ddof=-1), ValueError, r"KDLoss: argument 'ddof' must be an int >= 0; got -1"),
        (lambda: lt.KDLoss(eps=-1.0), ValueError, r"KDLoss: argument 'eps' must be finite and >= 0"),
        (lambda: lt.KDLoss(kd_weight=-1.0), ValueError, r"KDLoss: argument 'kd_weight' must be finite and >= 0"),
        (lambda: lt.KDLoss(ce_weight="0.1"), TypeError, r"KDLoss: argument 'ce_weight' must be a real number"),
        (lambda: lt.KDLoss(check_finite=1), TypeError, r"KDLoss: argument 'check_finite' must be a bool; got 1"),
        (lambda: lt.DKDLoss(warmup_epochs=0), ValueError, r"DKDLoss: argument 'warmup_epochs' must be an int >= 1; got 0"),
        (lambda: lt.DKDLoss(warmup_epochs=20.5), TypeError,
         r"DKDLoss: argument 'warmup_epochs' must be an int >= 1; got 20.5"),
        (lambda: lt.DKDLoss(alpha=None), TypeError, r"DKDLoss: argument 'alpha' must be a real number"),
        (lambda: lt.DKDLoss(beta=-1.0), ValueError, r"DKDLoss: argument 'beta' must be finite and >= 0"),
        (lambda: lt.MLKDLoss(variant="paper"), ValueError, r"MLKDLoss: argument 'variant' must be one of"),
        (lambda: lt.MLKDLoss(temperatures=()), ValueError, r"MLKDLoss: argument 'temperatures' must be a non-empty"),
        (lambda: lt.MLKDLoss(ce_weight=-0.1), ValueError, r"MLKDLoss: argument 'ce_weight' must be finite and >= 0"),
        (lambda: lt.CTKDLoss(t_end=-1.0), ValueError, r"CTKDLoss: argument 't_end' must be finite and > 0"),
        (lambda: lt.CTKDLoss(t_start=-30), ValueError, r"CTKDLoss: argument 't_start' must be finite and >= 0; got -30"),
        (lambda: lt.CTKDLoss(init=float("nan")), ValueError, r"CTKDLoss: argument 'init' must be finite"),
        (lambda: lt.CTKDLoss(loops=0), ValueError, r"CTKDLoss: argument 'loops' must be an int >= 1; got 0"),
        (lambda: lt.CTKDLoss(schedule="step"), ValueError, r"CTKDLoss: argument 'schedule' must be one of"),
        (lambda: lt.CTKDLoss(min_value="a"), TypeError, r"CTKDLoss: argument 'min_value' must be a real number"),
        (lambda: lt.CTKDLoss(instance_wise=1), TypeError, r"CTKDLoss: argument 'instance_wise' must be a bool"),
        (lambda: lt.CTKDLoss(instance_wise=True), TypeError, r"CTKDLoss: argument 'num_classes' must be an int >= 2"),
        (lambda: lt.CTKDLoss(instance_wise=True, num_classes=1), ValueError, r"'num_classes' must be an int >= 2"),
        (lambda: lt.CTKDLoss(instance_wise=True, num_classes=10.0), TypeError, r"'num_classes' must be an int >= 2"),
        (lambda: lt.CTKDLoss(hidden_features=0), ValueError,
         r"CTKDLoss: argument 'hidden_features' must be an int >= 1; got 0"),
        (lambda: lt.CTKDLambdaSchedule(loops=0), ValueError,
         r"CTKDLambdaSchedule: argument 'loops' must be an int >= 1"),
        (lambda: lt.CTKDLambdaSchedule(schedule="x"), ValueError,
         r"CTKDLambdaSchedule: argument 'schedule' must be one of"),
    ],
)
def test_module_hyperparameters_checked_at_construction(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


def test_modules_have_no_hand_rolled_checks():
    """Every hyperparameter is validated through _checks.check_hyper (one rule, one message)."""
    src = "".join(pathlib.Path(lt.__file__).with_name(n).read_text() for n in ("functional.py", "modules.py"))
    assert "_check_ddof_type" not in src and "check_positive(" not in src and "check_real(fn, \"t_start\"" not in src
    assert "raise TypeError" not in src and "raise ValueError" not in src


def test_module_call_errors_name_the_function():
    with pytest.raises(ValueError, match=r"dkd_loss: argument 'labels' must be class indices in \[0, 5\); got label 7"):
        lt.DKDLoss()(torch.randn(2, 5), torch.randn(2, 5), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match=r"DKDLoss: argument 'epoch' must be finite; got nan"):
        lt.DKDLoss()(torch.randn(2, 5), torch.randn(2, 5), torch.tensor([0, 1]), epoch=float("nan"))
    with pytest.raises(ValueError, match=r"kd_loss: argument 'ddof' must be an int in \[0, 2\)"):
        lt.KDLoss(ddof=2)(torch.randn(2, 2), torch.randn(2, 2))


def test_dkd_negative_epoch_is_refused():
    s, t, y = torch.randn(3, 5), torch.randn(3, 5), torch.tensor([0, 1, 2])
    module = lt.DKDLoss()
    with pytest.raises(ValueError, match=r"DKDLoss: argument 'epoch' must be finite and >= 0; got -5"):
        module(s, t, y, epoch=-5)
    with pytest.raises(ValueError, match=r"argument 'epoch'"):
        module.warmup_factor(-0.5)
    with pytest.raises(TypeError, match=r"DKDLoss: argument 'epoch' must be a real number; got '3'"):
        module(s, t, y, epoch="3")
    assert float(module(s, t, y, epoch=0)) == 0.0


def test_missing_labels_name_labels():
    s, t = torch.randn(3, 5), torch.randn(3, 5)
    for module, args in ((lt.KDLoss(ce_weight=0.1), (s, t)), (lt.CTKDLoss(ce_weight=0.1), (s, t)),
                         (lt.MLKDLoss(ce_weight=0.1), (s, s, t, t)), (lt.DKDLoss(), (s, t, None))):
        name = type(module).__name__
        with pytest.raises(ValueError, match=rf"{name}: argument 'labels' must be class indices"):
            module(*args, **({"grl_lambda": -1.0} if name == "CTKDLoss" else {}))
    with pytest.raises(ValueError, match=r"KDLoss: argument 'labels' must be class indices in \[0, 5\); got label 9"):
        lt.KDLoss(ce_weight=1.0)(s, t, torch.tensor([0, 1, 9]))
    with pytest.raises(TypeError, match=r"KDLoss: argument 'labels' must be an integer array"):
        lt.KDLoss(ce_weight=1.0)(s, t, "abc")


def test_ctkd_call_errors():
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    with pytest.raises(ValueError, match=r"CTKDLoss: argument 'grl_lambda' must be given, or 'epoch'"):
        lt.CTKDLoss()(s, t)
    with pytest.raises(ValueError, match=r"CTKDLoss: argument 'epoch' must be finite and >= 0; got -1"):
        lt.CTKDLoss()(s, t, epoch=-1)
    ctkd = lt.CTKDLoss(instance_wise=True, num_classes=5)
    with pytest.raises(ValueError, match=r"CTKDLoss: argument 'student_logits' must be an array with num_classes=5 "
                                         r"classes .*; got shape \(4, 10\)"):
        ctkd(s, t, grl_lambda=-1.0)
    with pytest.raises(TypeError, match=r"CTKDLoss: argument 'student_logits' must be a floating-point array"):
        ctkd("abc", t, grl_lambda=-1.0)


def test_string_input_gets_the_library_error():
    for call in (lambda: lt.kd_loss("abc", torch.randn(2, 3)), lambda: lt.KDLoss()("abc", torch.randn(2, 3)),
                 lambda: lt.zscore("abc"), lambda: lt.DKDLoss()("abc", "abc", torch.tensor([0, 1])),
                 lambda: lt.MLKDLoss()("a", "b", "c", "d"), lambda: lt.confidence_masks("abc")):
        with pytest.raises(TypeError, match=r"must be a floating-point array; got dtype kind 'U'") as info:
            call()
        assert "new()" not in str(info.value)


def test_extra_repr():
    assert repr(lt.KDLoss()) == ("KDLoss(temperature=2.0, standardize=True, ddof=1, eps=1e-07, kd_weight=1.0, "
                                 "ce_weight=0.0, reduction='mean')")
    assert "warmup_epochs=20" in repr(lt.DKDLoss()) and "beta=8.0" in repr(lt.DKDLoss())
    assert "variant='reference'" in repr(lt.MLKDLoss()) and "(2.0, 3.0, 5.0, 2.0, 6.0)" in repr(lt.MLKDLoss())
    assert "t_start=1.0, t_end=20.0, loops=10" in repr(lt.CTKDLoss())
    assert repr(lt.CTKDLambdaSchedule()) == "CTKDLambdaSchedule(loops=10, max_value=0.0, min_value=-1.0, schedule='cosine')"


def test_no_device_hardcoding_in_source():
    src = "".join(p.read_text() for p in pathlib.Path(lt.__file__).parent.glob("*.py"))
    assert not re.search(r"\.cuda\(|device=['\"]cuda|\"cuda:|'cuda:", src)


def test_meta_device_follows_input():
    """Nothing assumes a device: shapes and dtypes propagate on the meta device."""
    s = torch.empty(4, 7, device="meta")
    out = lt.kd_loss(s, s, check_finite=False)
    assert out.device.type == "meta" and out.shape == () and out.dtype == torch.float32
    z = lt.zscore(s.half(), check_finite=False)
    assert z.device.type == "meta" and z.dtype == torch.float32 and z.shape == (4, 7)
