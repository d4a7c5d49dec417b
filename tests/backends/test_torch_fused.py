"""PyTorch face: the fused autograd Functions (``_fused``) against the plain translation of the core
(``functional`` with ``_FUSED`` off), values and gradients, and the overflow-free Z-score at each
dtype's extreme magnitudes."""

import math

import numpy as np
import pytest
import torch

import logit_standardization as ls
import logit_standardization.torch as lt
from logit_standardization.torch import _fused
from logit_standardization.torch import functional as F

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64


def rel(a, b, floor=1e-30):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / max(float(b.abs().max()), floor))


def base(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=F64) * 2 - 1  # entries in [-1, 1]


def batch(shape, seed, magnitude, *, constant_row=True):
    x = base(shape, seed) * magnitude
    if constant_row:  # a constant row whose mean is exact (7 * 0.75 and its division by 7 round to nothing)
        x[0] = 0.75 * 2.0 ** math.floor(math.log2(magnitude))
    return x


LABELS = torch.tensor([0, 3, 5, 1, 2, 4])


def _cases():
    return {
        "zscore": lambda v: (lt.zscore(v[0]) * torch.linspace(-1, 1, v[0].shape[1], dtype=torch.float32)).sum(),
        "zscore_tau": lambda v: (lt.zscore(v[0], temperature=3.0, ddof=0, eps=1e-3)
                                 * torch.linspace(2, -1, v[0].shape[1], dtype=torch.float32) ** 2).sum(),
        "kd": lambda v: lt.kd_loss(v[0], v[1]),
        "kd_sum_ddof0": lambda v: lt.kd_loss(v[0], v[1], ddof=0, eps=1e-3, reduction="sum"),
        "kd_raw": lambda v: lt.kd_loss(v[0], v[1], standardize=False, temperature=4.0),
        "kd_tensor_tau": lambda v: lt.kd_loss(v[0], v[1], temperature=v[4]),
        "kd_per_sample_tau": lambda v: lt.kd_loss(v[0], v[1], temperature=v[5], reduction="none").sum(),
        "dkd": lambda v: lt.dkd_loss(v[0], v[1], LABELS, alpha=9.0, beta=72.0),
        "mlkd": lambda v: lt.mlkd_loss(*v[:4]),
        "mlkd_corrected": lambda v: lt.mlkd_loss(*v[:4], variant="corrected", temperatures=(2.0, 4.0, 2.0)),
    }


def _run(f, inputs, fused, monkeypatch):
    monkeypatch.setattr(F, "_FUSED", fused)
    xs = [x.clone().requires_grad_() for x in inputs]
    out = f(xs)
    out.backward()
    return out.detach(), [x.grad for x in xs]


# raw (unstandardized) softmaxes of logits at large magnitudes are one-hot: nothing to compare there,
# so those cases run at ordinary magnitude only
_RAW_SOFTMAX = ("kd_raw", "mlkd", "mlkd_corrected")
_NAME_MAGNITUDE = [(name, magnitude) for name in _cases() for magnitude in ("ordinary", "large", "huge")
                   if magnitude == "ordinary" or name not in _RAW_SOFTMAX]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 5e-6)])
@pytest.mark.parametrize("name,magnitude", _NAME_MAGNITUDE)
def test_fused_matches_plain_translation(name, dtype, tol, magnitude, monkeypatch):
    scale = {"ordinary": 3.0, "large": 1e19 if dtype == torch.float32 else 1e154,
             "huge": 1e38 if dtype == torch.float32 else 1e307}[magnitude]
    # a constant row, except beyond the range where the plain path can form 1/eps (see _standardize_scaled)
    # (in the students only: a teacher row equal to it would make the gradient there pure rounding noise)
    views = [batch((6, 7), seed, scale, constant_row=magnitude != "huge" and seed in (0, 2)).to(dtype)
             for seed in range(4)]
    taus = [torch.tensor([2.5], dtype=dtype), torch.tensor([1.5, 2.0, 4.0, 7.0, 0.5, 3.0], dtype=dtype)]
    f = _cases()[name]
    fused, g_fused = _run(f, views + taus, True, monkeypatch)
    plain, g_plain = _run(f, views + taus, False, monkeypatch)
    assert torch.isfinite(fused) and torch.isfinite(plain)
    assert rel(fused, plain, floor=1e-12) < tol
    for i, (a, b) in enumerate(zip(g_fused, g_plain)):
        assert (a is None) == (b is None), i
        if a is not None:
            assert torch.isfinite(a).all() and torch.isfinite(b).all(), i
            # row by row: a constant row's gradient, (g - mean g)/eps, dwarfs the others at large magnitudes
            rows = zip(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])) if a.ndim else [(a, b)]
            worst = max(rel(ra, rb) for ra, rb in rows)
            assert worst < 100 * tol, (i, worst)


def test_constant_rows_fused_and_plain_agree(monkeypatch):
    x = torch.tensor([[2.0, 2.0, 2.0, 2.0], [0.0, 1.0, 3.0, 2.0]], dtype=F64)
    t = torch.tensor([[1.0, 0.0, 0.0, 0.0], [3.0, 1.0, 2.0, 0.0]], dtype=F64)
    for eps in (1e-7, 0.0):
        out = {}
        for fused in (True, False):
            monkeypatch.setattr(F, "_FUSED", fused)
            a = x.clone().requires_grad_()
            z = lt.zscore(a, eps=eps)
            (z * torch.arange(4.0, dtype=F64)).sum().backward()
            out[fused] = (z.detach(), a.grad)
        assert torch.equal(out[True][0][0], torch.zeros(4, dtype=F64))
        torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-13, atol=0.0)
        torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-9, atol=0.0)
        if eps:  # (I - 11^T/C)/eps times the incoming gradient
            want = (torch.arange(4.0, dtype=F64) - 1.5) / eps
            torch.testing.assert_close(out[True][1][0], want, rtol=1e-12, atol=0.0)
        else:
            assert torch.equal(out[True][1][0], torch.zeros(4, dtype=F64))


def test_gradcheck_fused_with_scaled_rows():
    """The analytic backward, rescaling included, against finite differences (float64)."""
    g = torch.Generator().manual_seed(3)
    for scale in (1.0, 1e150, 1e-150):
        s = (torch.randn(3, 5, dtype=F64, generator=g) * scale).requires_grad_()
        t = (torch.randn(3, 5, dtype=F64, generator=g) * scale).requires_grad_()
        assert torch.autograd.gradcheck(lambda x: _fused.ZScore.apply(x, 1, 0.0), (s,), eps=1e-6 * scale,
                                        atol=1e-5 / scale, fast_mode=True)
        assert torch.autograd.gradcheck(lambda a, b: _fused.KDRows.apply(a, b, 2.0, True, 1, 0.0), (s, t),
                                        eps=1e-6 * scale, atol=1e-5 / scale, fast_mode=True)


def test_row_power_is_an_exact_power_of_two():
    for dtype in (torch.float32, torch.float64):
        fi = torch.finfo(dtype)
        x = torch.tensor([[fi.max, 1.0], [fi.tiny, 0.0], [fi.tiny / 8, 0.0], [0.0, 0.0], [3.0, -5.0], [0.75, 0.5]],
                         dtype=dtype)
        p = _fused.row_power(x)
        m, e = torch.frexp(p)
        assert torch.all(m == 0.5) and torch.isfinite(p).all()
        scaled = (x * p).abs().amax(dim=1)
        assert torch.all(scaled[[0, 4, 5]] >= 0.5) and torch.all(scaled < 1)
        assert p[4].item() == 0.125 and p[5].item() == 1.0  # ordinary rows: their bits are kept
        # the smallest normal exponent bounds the factor: 2**-k stays finite for subnormal rows
        assert p[2].item() == p[1].item() * 2 == 2.0 ** (-np.finfo(np.dtype(str(dtype)[6:])).minexp)


# ----------------------------------------------------------------------------- extreme magnitudes, every dtype
EXTREMES = [
    (torch.float16, 3e2), (torch.float16, 6e4),
    (torch.bfloat16, 1e19), (torch.bfloat16, 3e38),
    (torch.float32, 1e19), (torch.float32, 3e38),
    (torch.float64, 1e154), (torch.float64, 1e308),
]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("dtype,magnitude", EXTREMES)
def test_extreme_magnitudes(dtype, magnitude, fused, monkeypatch):
    monkeypatch.setattr(F, "_FUSED", fused)
    row = base((6, 7), 11)
    x = (row * magnitude).to(dtype)
    assert torch.isfinite(x).all() and x.abs().max() > 0.4 * magnitude
    # the right Z-score: the core's Z-score of the same (rounded) values at unit scale, eps scaled alike
    unit_s = x.double() / magnitude
    want = ls.zscore(unit_s.numpy(), eps=1e-7 / magnitude)
    tol = 1e-12 if dtype == F64 else 1e-5
    assert rel(lt.zscore(x), torch.from_numpy(want)) < tol
    assert rel(lt.zscore(x, ddof=0, eps=0.0, temperature=2.0),
               torch.from_numpy(ls.zscore(unit_s.numpy(), ddof=0, eps=0.0, temperature=2.0))) < tol
    # finite losses and gradients, with the values of the same logits at unit scale
    t = (base((6, 7), 12) * magnitude).to(dtype)
    unit_t = t.double() / magnitude
    s = x.clone().requires_grad_()
    tt = t.clone().requires_grad_()
    kw = {"eps": 1e-7 / magnitude}
    losses = {
        "kd": (lt.kd_loss(s, tt), ls.kd_loss(unit_s.numpy(), unit_t.numpy(), **kw)),
        "dkd": (lt.dkd_loss(s, tt, LABELS), ls.dkd_loss(unit_s.numpy(), unit_t.numpy(), LABELS.numpy(), **kw)),
        "mlkd_kd": (lt.mlkd_terms(s, s, tt, tt)["kd"], None),
    }
    total = sum(v for v, _ in losses.values())
    total.backward()
    for name, (got, want) in losses.items():
        assert torch.isfinite(got), name
        if want is not None:
            assert float(got.detach()) == pytest.approx(want, rel=1e-4 if dtype != F64 else 1e-10), name
    assert torch.isfinite(s.grad).all() and torch.isfinite(tt.grad).all()
    assert s.grad.dtype == dtype


def test_extreme_magnitude_gradients_scale_back():
    """Z(a x; a eps) = Z(x; eps), so its gradient at a x is the unit-scale gradient divided by a."""
    x = base((3, 6), 5)
    g = base((3, 6), 6)
    grads = []
    for a in (1.0, 2.0 ** 900, 2.0 ** -900):
        v = (x * a).requires_grad_()
        (lt.zscore(v, eps=1e-7 * a) * g).sum().backward()
        grads.append(v.grad * a)
    torch.testing.assert_close(grads[2], grads[0], rtol=1e-12, atol=0.0)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=0.0)


def test_ordinary_inputs_keep_their_bits():
    """Power-of-two scaling is exact: plain Z-score of x and of x * 2**40 are identical."""
    x = base((4, 9), 7) * 5 + 1
    monkey = F._FUSED
    try:
        for fused in (True, False):
            F._FUSED = fused
            assert torch.equal(lt.zscore(x, eps=0.0), lt.zscore(x * 2.0 ** 40, eps=0.0))
            assert torch.equal(lt.zscore(x, eps=2.0 ** -20), lt.zscore(x * 2.0 ** 40, eps=2.0 ** 20))
            assert torch.equal(lt.kd_loss(x, x.flip(1), eps=0.0),
                               lt.kd_loss(x * 2.0 ** -30, x.flip(1) * 2.0 ** 60, eps=0.0))
    finally:
        F._FUSED = monkey
