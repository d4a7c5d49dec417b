"""PyTorch backend: the public surface beyond the conformance suite (tests/backends/test_conformance.py):
package layout, class and forward signatures, the check_finite switch, tensor temperatures, module call
errors, and the error of inputs of other kinds than the suite's grid."""

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


def test_the_module_named_torch_imports_the_real_torch():
    from logit_standardization.torch import functional, modules

    assert functional.torch is torch and modules.nn is torch.nn


def test_package_layout():
    """Functions in ``functional``, classes in ``modules``, the large-vocabulary losses in
    ``fused_linear``, the top-k teacher in ``topk``; the package re-exports all of them."""
    from logit_standardization.torch import functional, fused_linear, modules, topk

    for name in functional.__all__:
        assert getattr(lt, name) is getattr(functional, name)
    for name in modules.__all__:
        assert getattr(lt, name) is getattr(modules, name)
    for name in fused_linear.__all__:
        assert getattr(lt, name) is getattr(fused_linear, name)
    for name in topk.__all__:
        assert getattr(lt, name) is getattr(topk, name)
    assert set(lt.__all__) == (set(functional.__all__) | set(modules.__all__) | set(fused_linear.__all__)
                               | set(topk.__all__))
    assert lt.KDLoss.__module__ == "logit_standardization.torch.modules"
    assert lt.kd_loss.__module__ == "logit_standardization.torch.functional"
    # the schedules of an epoch number are the core's own functions, re-exported
    assert lt.dkd_warmup is ls.dkd_warmup and lt.ctkd_lambda is ls.ctkd_lambda


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

    def params(method):
        return [(p.name, p.kind, p.default) for p in list(inspect.signature(method).parameters.values())[2:]]

    P, K = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY
    E = inspect.Parameter.empty
    assert params(lt.KDLoss.forward) == [("teacher_logits", P, E), ("labels", P, None), ("mask", K, None)]
    assert params(lt.DKDLoss.forward) == [("teacher_logits", P, E), ("labels", P, None), ("epoch", K, None),
                                          ("mask", K, None)]
    assert params(lt.CTKDLoss.forward) == [("teacher_logits", P, E), ("labels", P, None), ("epoch", K, None),
                                           ("grl_lambda", K, None)]
    assert list(inspect.signature(lt.MLKDLoss.forward).parameters)[1:] == [
        "student_weak", "student_strong", "teacher_weak", "teacher_strong", "labels"]


# ----------------------------------------------------------------------------- same errors as the core
S = np.zeros((4, 10)) + np.arange(10)
T = -S
NAN_S = np.where(S > 3, np.nan, S)

# (function name, positional args, keyword args): called on NumPy arrays (core) and on tensors (torch).
# Only inputs the conformance suite's invalid-input grid does not hold (tests/backends/test_conformance.py
# covers every other bad logits, labels and hyperparameter of every function): other dtype kinds of
# logits (unsigned, complex) and things that are not arrays (nested lists of strings, objects).
BAD = [
    ("zscore", (np.ones((2, 3), dtype=np.uint8),), {}),
    ("kd_loss", (S + 0j, T), {}),
    # not an array: the library's TypeError, never torch's "new(): invalid data type 'str'"
    ("zscore", ([["a", "b"]],), {}),
    ("zscore", (object(),), {}),
]


def _to_torch(x):
    return torch.from_numpy(x.copy()) if isinstance(x, np.ndarray) else x


def _raised(call):
    try:
        call()
    except (TypeError, ValueError) as exc:  # the contract: one of these two, with the core's text
        return type(exc), str(exc)
    return None


@pytest.mark.parametrize("name,args,kwargs", BAD, ids=[f"{i}-{b[0]}" for i, b in enumerate(BAD)])
def test_same_error_as_core_for_other_kinds(name, args, kwargs):
    want = _raised(lambda: getattr(ls, name)(*args, **kwargs))
    assert want is not None, "the case must be bad input for the core too"
    got = _raised(lambda: getattr(lt, name)(*[_to_torch(a) for a in args], **kwargs))
    assert got == want
    assert got[1].startswith(f"{name}: argument '")


def test_check_finite_is_the_one_extra_keyword():
    for name in ("zscore", "kd_loss", "dkd_loss", "mlkd_terms", "mlkd_loss", "ctkd_temperature"):
        ours = list(inspect.signature(getattr(lt, name)).parameters.values())
        assert (ours[-1].name, ours[-1].kind, ours[-1].default) == ("check_finite", inspect.Parameter.KEYWORD_ONLY,
                                                                    True), name
        assert len(ours) == len(inspect.signature(getattr(ls, name)).parameters) + 1, name


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


# The conformance suite checks every hyperparameter of the four loss classes against the core's rule
# (test_class_constructor_errors); these are the constructor errors it does not reach.
@pytest.mark.parametrize(
    "make,exc,pattern",
    [
        (lambda: lt.CTKDLoss(instance_wise=True), TypeError, r"CTKDLoss: argument 'num_classes' must be an int >= 2"),
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
    with pytest.raises(TypeError, match=r"DKDLoss: argument 'epoch' must be a real number; got '3'"):
        lt.DKDLoss()(torch.randn(2, 5), torch.randn(2, 5), torch.tensor([0, 1]), epoch="3")
    with pytest.raises(ValueError, match=r"kd_loss: argument 'ddof' must be an int in \[0, 2\)"):
        lt.KDLoss(ddof=2)(torch.randn(2, 2), torch.randn(2, 2))
    s, t = torch.randn(3, 5), torch.randn(3, 5)
    with pytest.raises(ValueError, match=r"KDLoss: argument 'labels' must be class indices in \[0, 5\); got label 9"):
        lt.KDLoss(ce_weight=1.0)(s, t, torch.tensor([0, 1, 9]))
    with pytest.raises(TypeError, match=r"KDLoss: argument 'labels' must be an integer array"):
        lt.KDLoss(ce_weight=1.0)(s, t, "abc")


def test_ctkd_call_errors():
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    with pytest.raises(ValueError, match=r"CTKDLoss: argument 'epoch' must be finite and >= 0; got -1"):
        lt.CTKDLoss()(s, t, epoch=-1)
    ctkd = lt.CTKDLoss(instance_wise=True, num_classes=5)
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
