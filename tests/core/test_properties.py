"""The paper's four properties of the Z-score, and the loss properties that follow, as hypothesis tests."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import logit_standardization as ls
from lskd_testing import affine_maps, logit_batches

taus = st.sampled_from([0.5, 1.0, 2.0, 4.0])
ddofs = st.sampled_from([0, 1])


def _shrink(x, ddof, eps):
    """s / (s + eps): how far eps pulls the deviation below its exact value."""
    s = np.std(x, axis=-1, ddof=ddof, keepdims=True)
    return s / (s + eps)


@given(logit_batches(), taus, ddofs)
def test_zero_mean(x, tau, ddof):
    z = ls.zscore(x, temperature=tau, ddof=ddof)
    # float64 resolves x only to ~eps * max|x|; in z units that is eps * max|x| / std / tau
    resolution = np.finfo(float).eps * np.abs(x).max(axis=-1) / x.std(axis=-1) / tau
    assert np.all(np.abs(z.mean(axis=-1)) <= 1e-12 + 64 * resolution)


@given(logit_batches(), taus, ddofs, st.sampled_from([0.0, 1e-7, 1e-3]))
def test_population_std(x, tau, ddof, eps):
    z = ls.zscore(x, temperature=tau, ddof=ddof, eps=eps)
    c = x.shape[-1]
    unit = np.sqrt((c - 1) / c) if ddof == 1 else 1.0
    expected = unit / tau * _shrink(x, ddof, eps)[:, 0]
    np.testing.assert_allclose(z.std(axis=-1), expected, rtol=1e-7)


@given(logit_batches(spread=False), taus, ddofs)
def test_monotonic_and_ties_kept(x, tau, ddof):
    z = ls.zscore(x, temperature=tau, ddof=ddof)
    for row_x, row_z in zip(x, z):
        dx = row_x[:, None] - row_x[None, :]
        dz = row_z[:, None] - row_z[None, :]
        assert np.all(dz[dx == 0] == 0), "ties must stay ties"
        assert np.all(dz[dx > 0] >= 0), "order must be kept"
        scale = np.abs(row_x).max() + 1.0
        clear = dx > 1e-9 * scale
        assert np.all(dz[clear] > 0), "clearly ordered entries stay strictly ordered"


@given(logit_batches(spread=False), taus, ddofs)
def test_bounded(x, tau, ddof):
    c = x.shape[-1]
    bound = ((c - 1) / np.sqrt(c) if ddof == 1 else np.sqrt(c - 1)) / tau
    z = ls.zscore(x, temperature=tau, ddof=ddof)
    assert np.all(np.abs(z) <= bound * (1 + 1e-12))


def test_bound_is_attained():
    # one class far above the others: the extreme case of the bound
    c, tau = 7, 2.0
    x = np.zeros((1, c)); x[0, 0] = 5.0
    z = ls.zscore(x, temperature=tau, eps=0.0)
    np.testing.assert_allclose(z[0, 0], (c - 1) / np.sqrt(c) / tau, rtol=1e-12)
    z0 = ls.zscore(x, temperature=tau, eps=0.0, ddof=0)
    np.testing.assert_allclose(z0[0, 0], np.sqrt(c - 1) / tau, rtol=1e-12)


@given(logit_batches(min_classes=3), logit_batches(min_classes=3), affine_maps(), affine_maps(), taus, st.data())
def test_standardized_losses_invariant_under_affine_maps(s, t, ms, mt, tau, data):
    b, c = min(len(s), len(t)), min(s.shape[1], t.shape[1])
    s, t = s[:b, :c], t[:b, :c]
    from hypothesis import assume
    assume(np.all(np.ptp(s, axis=1) > 1e-6 * (np.abs(s).max() + 1)) and np.all(np.ptp(t, axis=1) > 1e-6 * (np.abs(t).max() + 1)))
    y = data.draw(st.lists(st.integers(0, c - 1), min_size=b, max_size=b))
    (a1, b1), (a2, b2) = ms, mt
    s2, t2 = a1 * s + b1, a2 * t + b2
    kw = dict(temperature=tau, eps=0.0)
    np.testing.assert_allclose(ls.kd_loss(s2, t2, **kw), ls.kd_loss(s, t, **kw), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ls.dkd_loss(s2, t2, y, **kw), ls.dkd_loss(s, t, y, **kw), rtol=1e-6, atol=1e-9)


@given(logit_batches(), logit_batches(), taus, ddofs)
def test_kd_nonnegative(s, t, tau, ddof):
    b, c = min(len(s), len(t)), min(s.shape[1], t.shape[1])
    s, t = s[:b, :c], t[:b, :c]
    for standardize in (True, False):
        per = ls.kd_loss(s, t, temperature=tau, ddof=ddof, standardize=standardize, reduction="none")
        assert np.all(per >= -1e-12)


@given(logit_batches(), affine_maps(), taus)
def test_kd_zero_when_student_matches_teacher_up_to_affine_map(t, m, tau):
    a, b = m
    assert abs(ls.kd_loss(a * t + b, t, temperature=tau, eps=0.0)) <= 1e-9


@given(logit_batches(), logit_batches(), st.floats(0, 5), st.floats(0, 5), st.data())
def test_dkd_linear_in_alpha_beta(s, t, alpha, beta, data):
    b, c = min(len(s), len(t)), min(s.shape[1], t.shape[1])
    s, t = s[:b, :c], t[:b, :c]
    y = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=b, max_size=b)))
    tckd = ls.dkd_loss(s, t, y, alpha=1.0, beta=0.0, reduction="none")
    nckd = ls.dkd_loss(s, t, y, alpha=0.0, beta=1.0, reduction="none")
    both = ls.dkd_loss(s, t, y, alpha=alpha, beta=beta, reduction="none")
    np.testing.assert_allclose(both, alpha * tckd + beta * nckd, rtol=1e-9, atol=1e-12)


@given(logit_batches(spread=False, min_classes=2), logit_batches(spread=False, min_classes=2), st.booleans(), ddofs, st.data())
def test_everything_finite_for_finite_input(s, t, standardize, ddof, data):
    b, c = min(len(s), len(t)), min(s.shape[1], t.shape[1])
    s, t = s[:b, :c], t[:b, :c]
    # make some rows constant
    if data.draw(st.booleans()):
        s[0] = s[0, 0]
    if data.draw(st.booleans()):
        t[-1] = 0.0
    y = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=b, max_size=b)))
    assert np.all(np.isfinite(ls.zscore(s, ddof=ddof)))
    assert np.all(np.isfinite(ls.zscore(s, ddof=ddof, eps=0.0)))
    assert np.isfinite(ls.kd_loss(s, t, standardize=standardize, ddof=ddof))
    assert np.isfinite(ls.dkd_loss(s, t, y, standardize=standardize, ddof=ddof))
    terms = ls.mlkd_terms(s, s[::-1], t, t[::-1], standardize=standardize, ddof=ddof)
    assert all(np.isfinite(v) for v in terms.values())


def test_constant_rows_map_to_zero():
    x = np.array([[2.0, 2.0, 2.0], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(ls.zscore(x), 0.0)
    np.testing.assert_array_equal(ls.zscore(x, eps=0.0), 0.0)


def test_saturated_raw_logits_stay_finite_in_dkd():
    # the published DKD takes log of an underflowed probability sum here (-inf / NaN)
    s = np.array([[800.0, -800.0, -800.0]])
    t = np.array([[-800.0, 800.0, -800.0]])
    value = ls.dkd_loss(s, t, np.array([0]), temperature=1.0, standardize=False)
    assert np.isfinite(value) and value > 1000
