"""Small cases with numbers worked out by hand (closed forms for C = 2 and C = 3)."""

import math

import numpy as np
import pytest

import logit_standardization as ls


def test_zscore_three_classes():
    # mean 2, unbiased std sqrt((1 + 0 + 1) / 2) = 1
    z = ls.zscore(np.array([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(z, [[-1 / (1 + 1e-7), 0.0, 1 / (1 + 1e-7)]], rtol=1e-15)
    # population std sqrt(2/3): the paper's formula gives ±sqrt(3/2)
    z0 = ls.zscore(np.array([[1.0, 2.0, 3.0]]), ddof=0, eps=0.0, temperature=2.0)
    np.testing.assert_allclose(z0, [[-0.6123724356957945, 0.0, 0.6123724356957945]], rtol=1e-15)


def test_zscore_two_classes_is_plus_minus_one_over_sqrt2():
    for a, b in [(0.0, 1.0), (-300.0, 5000.0), (1e-3, 2e-3)]:
        z = ls.zscore(np.array([[a, b]]), eps=0.0)
        np.testing.assert_allclose(z, [[-0.7071067811865476, 0.7071067811865476]], rtol=1e-12)


def test_kd_two_classes_opposite_order():
    # z = ±1/sqrt(2); at tau = 2 the logits are ±a with a = 1/(2 sqrt 2);
    # KL = 2a tanh(a), times tau^2 = 4: 0.9603163417089096
    s = np.array([[3.0, -1.0]]); t = np.array([[-10.0, 10.0]])
    assert ls.kd_loss(s, t, temperature=2.0, eps=0.0) == pytest.approx(0.9603163417089096, rel=1e-14)
    assert ls.kd_loss(s, -s, temperature=2.0, eps=0.0) == pytest.approx(0.9603163417089096, rel=1e-14)


def test_kd_unstandardized_three_classes():
    # student uniform, teacher [ln 2, 0, 0] at tau = 1: p = (1/2, 1/4, 1/4)
    # KL = 1/2 ln(3/2) + 2 * 1/4 ln(3/4) = 1/2 ln(9/8)
    s = np.zeros((1, 3)); t = np.array([[math.log(2.0), 0.0, 0.0]])
    assert ls.kd_loss(s, t, temperature=1.0, standardize=False) == pytest.approx(0.05889151782819173, rel=1e-14)


def test_dkd_three_classes_label_0():
    # b_t = (1/2, 1/2), b_s = (1/3, 2/3): TCKD = 1/2 ln(9/8); non-target parts both uniform: NCKD = 0
    s = np.zeros((1, 3)); t = np.array([[math.log(2.0), 0.0, 0.0]])
    got = ls.dkd_loss(s, t, np.array([0]), alpha=2.0, beta=5.0, temperature=1.0, standardize=False)
    assert got == pytest.approx(2 * 0.05889151782819173, rel=1e-14)


def test_dkd_three_classes_label_1():
    # b_t = (1/4, 3/4), b_s = (1/3, 2/3): TCKD = 1/4 ln(3/4) + 3/4 ln(9/8) = 0.01641675862934236
    # non-target teacher (2/3, 1/3) vs student (1/2, 1/2): NCKD = 2/3 ln(4/3) + 1/3 ln(2/3) = 0.056633012265132426
    s = np.zeros((1, 3)); t = np.array([[math.log(2.0), 0.0, 0.0]])
    got = ls.dkd_loss(s, t, np.array([1]), alpha=1.0, beta=8.0, temperature=1.0, standardize=False, reduction="none")
    np.testing.assert_allclose(got, [0.01641675862934236 + 8 * 0.056633012265132426], rtol=1e-14)


def test_ctkd_values():
    assert ls.ctkd_temperature(1.0) == pytest.approx(15.621171572600097, rel=1e-15)
    assert ls.ctkd_lambda(1) == pytest.approx(-0.024471741852423234, rel=1e-14)
    assert ls.ctkd_lambda(5, loops=10) == pytest.approx(-0.5, rel=1e-14)
    assert ls.ctkd_lambda(3, loops=10, schedule="linear") == pytest.approx(-0.3, rel=1e-14)
    assert ls.ctkd_lambda(12, loops=10, schedule="linear") == pytest.approx(-0.9, rel=1e-14)


def test_mlkd_masks_act_through_their_means():
    # B = 7 distinct confidences: 4 of 7 are <= the median; B = 8: half
    rng = np.random.default_rng(3)
    for b, mbar in [(7, 4 / 7), (8, 0.5)]:
        tw = rng.normal(size=(b, 10)) * np.arange(1, b + 1)[:, None]
        mask, cmask = ls.confidence_masks(tw)
        assert mask.mean() == pytest.approx(mbar)
        assert cmask.mean() == pytest.approx(0.5)


def test_mlkd_reference_uses_weak_logits_for_last_two_strong_terms():
    rng = np.random.default_rng(4)
    sw, ss, tw, ts = (rng.normal(size=(6, 5)) for _ in range(4))
    # temperatures only at positions 4 and 5: the "strong" terms see the weak view, so the strong inputs do not matter
    a = ls.mlkd_terms(sw, ss, tw, ts, temperatures=(0.0 + 1, 1, 1, 2.0, 6.0))
    weak_only = ls.mlkd_terms(sw, ss * 3, tw, ts - 1, temperatures=(1.0, 1.0, 1.0, 2.0, 6.0))
    assert a["kd"] != weak_only["kd"]  # positions 1-3 use the strong view
    b1 = ls.mlkd_terms(sw, ss, tw, ts, temperatures=(1, 1, 1, 2.0, 6.0))
    b2 = ls.mlkd_terms(sw, ss, tw, ts, temperatures=(1, 1, 1))
    kd_weak_only = ls.kd_loss(sw, tw, temperature=2.0) + ls.kd_loss(sw, tw, temperature=6.0)
    mbar = ls.confidence_masks(tw)[0].mean()
    expected_extra = 9.0 * (mbar + 1.0) * kd_weak_only
    assert b1["kd"] - b2["kd"] == pytest.approx(expected_extra, rel=1e-12)


def test_dkd_warmup_is_the_reference_ramp():
    assert [ls.dkd_warmup(e) for e in (0, 1, 2, 10, 20, 21, 240)] == [0.0, 0.05, 0.1, 0.5, 1.0, 1.0, 1.0]
    assert ls.dkd_warmup(1, warmup_epochs=1) == 1.0 and ls.dkd_warmup(2.5, warmup_epochs=5) == 0.5


@pytest.mark.parametrize("scale", [1e-300, 1e-150, 1.0, 1e150, 1e154, 1e300, 5e307])
def test_zscore_is_scale_invariant_up_to_the_largest_float(scale):
    # a Z-score does not depend on the scale of its row: the statistics are computed on the row
    # scaled by a power of two, so no finite input overflows (eps=0 so that no eps term enters)
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.25]])
    ref = ls.zscore(x, eps=0.0)
    got = ls.zscore(x * scale, eps=0.0)
    np.testing.assert_allclose(got, ref, rtol=1e-14)
    assert np.isfinite(ls.kd_loss(x * scale, -x * scale))


def test_zscore_rows_near_the_largest_float_and_ordinary_bits():
    big = np.finfo(np.float64).max
    np.testing.assert_allclose(ls.zscore(np.array([[big, -big, 0.0]])), [[1.0, -1.0, 0.0]], rtol=1e-15)
    # ordinary inputs: the same bits as the textbook formula (power-of-two scaling is exact)
    x = np.random.default_rng(3).normal(size=(64, 100)) * 40 + 7
    c = x - x.mean(axis=1, keepdims=True)
    textbook = c / ((1e-7 + np.sqrt((c * c).sum(axis=1, keepdims=True) / 99)) * 2.0)
    assert np.array_equal(ls.zscore(x, temperature=2.0), textbook)
