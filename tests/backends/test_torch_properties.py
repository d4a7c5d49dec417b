"""The core's hypothesis properties, run through the PyTorch functions (float64), plus agreement with the
core and finite gradients on the same generated inputs."""

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import logit_standardization as ls
import logit_standardization.torch as lt
from lskd_testing import affine_maps, logit_batches


pytestmark = pytest.mark.usefixtures("one_torch_thread")


taus = st.sampled_from([0.5, 1.0, 2.0, 4.0])
ddofs = st.sampled_from([0, 1])


def T(x, grad=False):
    return torch.tensor(np.asarray(x), dtype=torch.float64, requires_grad=grad)


def _pair(s, t):
    b, c = min(len(s), len(t)), min(s.shape[1], t.shape[1])
    return s[:b, :c], t[:b, :c]


def _rounding_scale(x, ddof, eps):
    """How far float64 rounding can move a standardized entry: (C * ulp(max|x|)) / (eps + s)."""
    s = np.std(x, axis=-1, ddof=ddof, keepdims=True)
    return x.shape[-1] * np.spacing(np.abs(x).max(axis=-1, keepdims=True)) / (eps + s)


@given(logit_batches(), taus, ddofs)
def test_zero_mean(x, tau, ddof):
    z = lt.zscore(T(x), temperature=tau, ddof=ddof).numpy()
    assert np.all(np.abs(z.mean(axis=-1, keepdims=True)) <= 1e-12 + 4 * _rounding_scale(x, ddof, 1e-7) / tau)


@given(logit_batches(), taus, ddofs, st.sampled_from([0.0, 1e-7, 1e-3]))
def test_population_std(x, tau, ddof, eps):
    z = lt.zscore(T(x), temperature=tau, ddof=ddof, eps=eps).numpy()
    c = x.shape[-1]
    s = np.std(x, axis=-1, ddof=ddof)
    unit = np.sqrt((c - 1) / c) if ddof == 1 else 1.0
    np.testing.assert_allclose(z.std(axis=-1), unit / tau * s / (s + eps), rtol=1e-7)


@given(logit_batches(spread=False), taus, ddofs)
def test_monotonic_and_ties_kept(x, tau, ddof):
    z = lt.zscore(T(x), temperature=tau, ddof=ddof).numpy()
    for row_x, row_z in zip(x, z):
        dx = row_x[:, None] - row_x[None, :]
        dz = row_z[:, None] - row_z[None, :]
        assert np.all(dz[dx == 0] == 0), "ties must stay ties"
        assert np.all(dz[dx > 0] >= 0), "order must be kept"
        clear = dx > 1e-9 * (np.abs(row_x).max() + 1.0)
        assert np.all(dz[clear] > 0)


@given(logit_batches(spread=False), taus, ddofs)
def test_bounded(x, tau, ddof):
    c = x.shape[-1]
    bound = ((c - 1) / np.sqrt(c) if ddof == 1 else np.sqrt(c - 1)) / tau
    assert np.all(np.abs(lt.zscore(T(x), temperature=tau, ddof=ddof).numpy()) <= bound * (1 + 1e-12))


@given(logit_batches(min_classes=3), logit_batches(min_classes=3), affine_maps(), affine_maps(), taus, st.data())
def test_standardized_losses_invariant_under_affine_maps(s, t, ms, mt, tau, data):
    s, t = _pair(s, t)
    b, c = s.shape
    assume(np.all(np.ptp(s, axis=1) > 1e-6 * (np.abs(s).max() + 1))
           and np.all(np.ptp(t, axis=1) > 1e-6 * (np.abs(t).max() + 1)))
    y = torch.tensor(data.draw(st.lists(st.integers(0, c - 1), min_size=b, max_size=b)))
    (a1, b1), (a2, b2) = ms, mt
    kw = dict(temperature=tau, eps=0.0)
    np.testing.assert_allclose(float(lt.kd_loss(T(a1 * s + b1), T(a2 * t + b2), **kw)), float(lt.kd_loss(T(s), T(t), **kw)),
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(float(lt.dkd_loss(T(a1 * s + b1), T(a2 * t + b2), y, **kw)),
                               float(lt.dkd_loss(T(s), T(t), y, **kw)), rtol=1e-6, atol=1e-9)


@given(logit_batches(), logit_batches(), taus, ddofs)
def test_kd_nonnegative_and_equal_to_core(s, t, tau, ddof):
    s, t = _pair(s, t)
    for standardize in (True, False):
        kw = dict(temperature=tau, ddof=ddof, standardize=standardize, reduction="none")
        per = lt.kd_loss(T(s), T(t), **kw).numpy()
        assert np.all(per >= -1e-12)
        want = ls.kd_loss(s, t, **kw)
        np.testing.assert_allclose(per, want, rtol=1e-9, atol=1e-9 * max(1.0, float(np.abs(want).max())))


@given(logit_batches(), affine_maps(), taus)
def test_kd_zero_when_student_matches_teacher_up_to_affine_map(t, m, tau):
    a, b = m
    assert abs(float(lt.kd_loss(T(a * t + b), T(t), temperature=tau, eps=0.0))) <= 1e-9


@given(logit_batches(), logit_batches(), st.floats(0, 5), st.floats(0, 5), st.data())
def test_dkd_linear_in_alpha_beta(s, t, alpha, beta, data):
    s, t = _pair(s, t)
    b, c = s.shape
    y = torch.tensor(data.draw(st.lists(st.integers(0, c - 1), min_size=b, max_size=b)))
    tckd = lt.dkd_loss(T(s), T(t), y, alpha=1.0, beta=0.0, reduction="none").numpy()
    nckd = lt.dkd_loss(T(s), T(t), y, alpha=0.0, beta=1.0, reduction="none").numpy()
    both = lt.dkd_loss(T(s), T(t), y, alpha=alpha, beta=beta, reduction="none").numpy()
    np.testing.assert_allclose(both, alpha * tckd + beta * nckd, rtol=1e-9, atol=1e-12)
    want = ls.dkd_loss(s, t, y.numpy(), alpha=alpha, beta=beta, reduction="none")
    np.testing.assert_allclose(both, want, rtol=1e-9, atol=1e-9 * max(1.0, float(np.abs(want).max())))


@given(logit_batches(spread=False, min_classes=2), logit_batches(spread=False, min_classes=2), st.booleans(), ddofs,
       st.sampled_from([torch.float64, torch.float32, torch.bfloat16]), st.data())
def test_everything_finite_for_finite_input(s, t, standardize, ddof, dtype, data):
    s, t = _pair(s, t)
    b, c = s.shape
    if data.draw(st.booleans()):
        s[0] = s[0, 0]
    if data.draw(st.booleans()):
        t[-1] = 0.0
    y = torch.tensor(data.draw(st.lists(st.integers(0, c - 1), min_size=b, max_size=b)))
    x = torch.tensor(s).to(dtype).requires_grad_()
    tt = torch.tensor(t).to(dtype)
    assert torch.isfinite(lt.zscore(x, ddof=ddof)).all()
    assert torch.isfinite(lt.zscore(x, ddof=ddof, eps=0.0)).all()
    total = (lt.kd_loss(x, tt, standardize=standardize, ddof=ddof)
             + lt.dkd_loss(x, tt, y, standardize=standardize, ddof=ddof)
             + lt.mlkd_loss(x, x.flip(0), tt, tt.flip(0), standardize=standardize, ddof=ddof))
    assert torch.isfinite(total)
    total.backward()
    assert torch.isfinite(x.grad).all()
