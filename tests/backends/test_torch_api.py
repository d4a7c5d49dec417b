"""PyTorch backend: the public surface (signatures, errors, module hyperparameters) matches the core."""

import inspect
import pathlib
import re

import numpy as np
import pytest
import torch

import logit_standardization as ls
import logit_standardization.torch as lt


pytestmark = pytest.mark.usefixtures("one_torch_thread")


FUNCTIONS = ["zscore", "kd_loss", "dkd_loss", "mlkd_terms", "mlkd_loss", "ctkd_temperature", "ctkd_lambda"]
# The one deliberate addition: a keyword-only switch for the NaN/Inf scan on every function taking tensors.
EXTRA = inspect.Parameter("check_finite", inspect.Parameter.KEYWORD_ONLY, default=True)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_signature_matches_core(name):
    core = inspect.signature(getattr(ls, name)).parameters
    ours = inspect.signature(getattr(lt, name)).parameters

    def facts(params):
        return [(p.name, p.kind, p.default) for p in params.values()]

    expected = facts(core)
    if name != "ctkd_lambda":
        expected.append((EXTRA.name, EXTRA.kind, EXTRA.default))
    assert facts(ours) == expected


def test_the_module_named_torch_imports_the_real_torch():
    assert lt.torch is torch and lt.nn is torch.nn


def test_public_names():
    for name in FUNCTIONS + ["KDLoss", "DKDLoss", "MLKDLoss", "CTKDLoss", "GradientReversal", "CTKDLambdaSchedule",
                             "gradient_reversal", "standardized", "confidence_masks", "DEFAULT_TEMPERATURES"]:
        assert name in lt.__all__ and hasattr(lt, name)
    assert lt.DEFAULT_TEMPERATURES == ls.DEFAULT_TEMPERATURES


def test_module_signatures():
    def kw(cls):
        return {p.name: p.default for p in inspect.signature(cls).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}

    assert kw(lt.KDLoss) == {"temperature": 2.0, "standardize": True, "ddof": 1, "eps": 1e-7, "reduction": "mean",
                             "check_finite": True}
    d = kw(lt.DKDLoss)
    assert (d["alpha"], d["beta"], d["temperature"], d["warmup_epochs"], d["standardize"]) == (1.0, 8.0, 2.0, 20, True)
    m = kw(lt.MLKDLoss)
    assert (m["temperatures"], m["kd_weight"], m["standardize"], m["variant"]) == (ls.DEFAULT_TEMPERATURES, 9.0, True,
                                                                                   "reference")
    c = kw(lt.CTKDLoss)
    assert (c["t_start"], c["t_end"], c["init"], c["standardize"]) == (1.0, 20.0, 1.0, True)
    fwd = inspect.signature(lt.DKDLoss.forward).parameters
    assert list(fwd)[1:4] == ["student_logits", "teacher_logits", "labels"]
    assert fwd["epoch"].kind is inspect.Parameter.KEYWORD_ONLY and fwd["epoch"].default is None
    fwd = inspect.signature(lt.CTKDLoss.forward).parameters
    assert fwd["grl_lambda"].kind is inspect.Parameter.KEYWORD_ONLY and fwd["grl_lambda"].default is inspect._empty
    assert list(inspect.signature(lt.MLKDLoss.forward).parameters)[1:] == [
        "student_weak", "student_strong", "teacher_weak", "teacher_strong"]


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
    assert lt._all_finite(torch.tensor([3e38, 3e38, -1.0]))  # the sum overflows, the values are finite
    assert lt._all_finite(torch.tensor([6e4, 6e4], dtype=torch.float16))
    assert not lt._all_finite(torch.tensor([1.0, float("nan")]))
    assert not lt._all_finite(torch.tensor([float("inf"), float("-inf")]))
    assert not lt._all_finite(torch.tensor([-float("inf"), 2.0], dtype=torch.bfloat16))


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
        (lambda: lt.KDLoss(eps=-1.0), ValueError, r"KDLoss: argument 'eps' must be finite and >= 0"),
        (lambda: lt.DKDLoss(warmup_epochs=0), ValueError, r"DKDLoss: argument 'warmup_epochs' must be finite and > 0"),
        (lambda: lt.DKDLoss(alpha=None), TypeError, r"DKDLoss: argument 'alpha' must be a real number"),
        (lambda: lt.MLKDLoss(variant="paper"), ValueError, r"MLKDLoss: argument 'variant' must be one of"),
        (lambda: lt.MLKDLoss(temperatures=()), ValueError, r"MLKDLoss: argument 'temperatures' must be a non-empty"),
        (lambda: lt.CTKDLoss(t_end=-1.0), ValueError, r"CTKDLoss: argument 't_end' must be finite and > 0"),
        (lambda: lt.CTKDLoss(instance_wise=True), TypeError, r"CTKDLoss: argument 'num_classes' must be an int >= 2"),
        (lambda: lt.CTKDLoss(instance_wise=True, num_classes=1), ValueError, r"'num_classes' must be an int >= 2"),
        (lambda: lt.CTKDLambdaSchedule(loops=0), ValueError, r"ctkd_lambda: argument 'loops' must be an int >= 1"),
    ],
)
def test_module_hyperparameters_checked_at_construction(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


def test_module_call_errors_name_the_function():
    with pytest.raises(ValueError, match=r"dkd_loss: argument 'labels' must be class indices in \[0, 5\); got label 7"):
        lt.DKDLoss()(torch.randn(2, 5), torch.randn(2, 5), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match=r"DKDLoss: argument 'epoch' must be finite; got nan"):
        lt.DKDLoss()(torch.randn(2, 5), torch.randn(2, 5), torch.tensor([0, 1]), epoch=float("nan"))
    with pytest.raises(ValueError, match=r"kd_loss: argument 'ddof' must be an int in \[0, 2\)"):
        lt.KDLoss(ddof=2)(torch.randn(2, 2), torch.randn(2, 2))


def test_extra_repr():
    assert repr(lt.KDLoss()) == "KDLoss(temperature=2.0, standardize=True, ddof=1, eps=1e-07, reduction='mean')"
    assert "warmup_epochs=20" in repr(lt.DKDLoss()) and "beta=8.0" in repr(lt.DKDLoss())
    assert "variant='reference'" in repr(lt.MLKDLoss()) and "(2.0, 3.0, 5.0, 2.0, 6.0)" in repr(lt.MLKDLoss())
    assert "t_start=1.0, t_end=20.0" in repr(lt.CTKDLoss())
    assert repr(lt.CTKDLambdaSchedule()) == "CTKDLambdaSchedule(loops=10, max_value=0.0, min_value=-1.0, schedule='cosine')"


def test_no_device_hardcoding_in_source():
    src = pathlib.Path(lt.__file__).read_text()
    assert not re.search(r"\.cuda\(|device=['\"]cuda|\"cuda:|'cuda:", src)


def test_meta_device_follows_input():
    """Nothing assumes a device: shapes and dtypes propagate on the meta device."""
    s = torch.empty(4, 7, device="meta")
    out = lt.kd_loss(s, s, check_finite=False)
    assert out.device.type == "meta" and out.shape == () and out.dtype == torch.float32
    z = lt.zscore(s.half(), check_finite=False)
    assert z.device.type == "meta" and z.dtype == torch.float32 and z.shape == (4, 7)
