"""Token-level logits ``(..., C)`` and position masks of kd_loss and dkd_loss (the NumPy core)."""

from __future__ import annotations

import numpy as np
import pytest

import logit_standardization as ls

RNG = np.random.default_rng(7)
S, T = RNG.normal(size=(3, 5, 6)) * 2, RNG.normal(size=(3, 5, 6)) * 2
Y = RNG.integers(0, 6, size=(3, 5))
M = RNG.random((3, 5)) < 0.6
M[0, 0] = True


def _call(name, s, t, y, **kw):
    return ls.kd_loss(s, t, **kw) if name == "kd_loss" else ls.dkd_loss(s, t, y, **kw)


@pytest.mark.parametrize("name", ["kd_loss", "dkd_loss"])
def test_tokens_are_rows(name):
    # (B, T, C) without a mask is the (B*T, C) loss: the mean runs over every position
    flat = _call(name, S.reshape(-1, 6), T.reshape(-1, 6), Y.reshape(-1), reduction="none")
    np.testing.assert_allclose(_call(name, S, T, Y, reduction="none"), flat.reshape(3, 5), rtol=0, atol=0)
    assert _call(name, S, T, Y) == pytest.approx(flat.mean(), rel=1e-15)
    assert _call(name, S, T, Y, reduction="sum") == pytest.approx(flat.sum(), rel=1e-15)


@pytest.mark.parametrize("name", ["kd_loss", "dkd_loss"])
def test_mask_selects_positions(name):
    kept = _call(name, S[M], T[M], Y[M], reduction="none")
    assert _call(name, S, T, Y, mask=M) == pytest.approx(kept.mean(), rel=1e-14)
    assert _call(name, S, T, Y, mask=M, reduction="sum") == pytest.approx(kept.sum(), rel=1e-14)
    rows = _call(name, S, T, Y, mask=M, reduction="none")
    assert rows.shape == (3, 5)
    assert np.all(rows[~M] == 0.0)
    np.testing.assert_array_equal(rows[M], kept)


@pytest.mark.parametrize("name", ["kd_loss", "dkd_loss"])
def test_all_false_mask_gives_zero(name):
    none = np.zeros((3, 5), dtype=bool)
    assert _call(name, S, T, Y, mask=none) == 0.0
    assert _call(name, S, T, Y, mask=none, reduction="sum") == 0.0
    assert not np.any(_call(name, S, T, Y, mask=none, reduction="none"))


def test_all_true_mask_is_no_mask():
    assert ls.kd_loss(S, T, mask=np.ones((3, 5), bool)) == pytest.approx(ls.kd_loss(S, T), rel=1e-15)
    assert ls.kd_loss(S[0], T[0], mask=np.ones(5, bool)) == pytest.approx(ls.kd_loss(S[0], T[0]), rel=1e-15)


def test_masked_positions_do_not_matter():
    s2 = S.copy()
    s2[~M] = RNG.normal(size=s2[~M].shape) * 50
    assert ls.kd_loss(s2, T, mask=M) == ls.kd_loss(S, T, mask=M)


def test_four_dimensional_logits():
    s, t = S.reshape(3, 5, 1, 6), T.reshape(3, 5, 1, 6)
    assert ls.kd_loss(s, t, mask=M[..., None]) == pytest.approx(ls.kd_loss(S, T, mask=M), rel=1e-15)


def test_standardized_wrapper_passes_the_mask():
    def masked_l2(s, t, *, mask):
        return float(np.mean(((s - t) ** 2)[mask]))

    assert ls.standardized(masked_l2)(S, 3 * S + 1, mask=M) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize(
    "call,exc,pattern",
    [
        (lambda: ls.kd_loss(S, T, mask=M[:, :4]), ValueError,
         r"kd_loss: argument 'mask' must be of the leading shape of the logits \(3, 5\); got shape \(3, 4\)"),
        (lambda: ls.dkd_loss(S, T, Y, mask=M.astype(np.int8)), TypeError,
         r"dkd_loss: argument 'mask' must be a boolean array; got dtype kind integer"),
        (lambda: ls.dkd_loss(S, T, Y[0]), ValueError,
         r"dkd_loss: argument 'labels' must be a 2-D array of shape \(3, 5\); got shape \(5,\)"),
        (lambda: ls.kd_loss(np.zeros((3, 0, 6)), np.zeros((3, 0, 6))), ValueError,
         r"kd_loss: argument 'student_logits' must be a non-empty batch; got shape \(3, 0, 6\)"),
        (lambda: ls.mlkd_terms(S, S, T, T), ValueError,
         r"mlkd_terms: argument 'student_logits' must be a 2-D array of shape \(batch, classes\)"),
    ],
)
def test_token_errors(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()
