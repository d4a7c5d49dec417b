"""The core against a naive loop transcription of the reference code (tests/lskd_testing.py)."""

import itertools

import numpy as np
import pytest

import logit_standardization as ls
import lskd_testing as o

RNG = np.random.default_rng(20240617)
SHAPES = [(1, 2), (3, 2), (4, 3), (7, 10), (8, 100), (5, 17)]


def _inputs(b, c, scale=3.0):
    return (RNG.normal(size=(b, c)) * scale + RNG.normal() * 5, RNG.normal(size=(b, c)) * scale * 2 - 1.0,
            RNG.integers(0, c, size=b))


def rel(a, b):
    """Relative error; values below 1e-3 (near-zero losses, pure cancellation) are compared absolutely."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-3)) if a.size else 0.0


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ddof,eps,tau", [(1, 1e-7, 1.0), (0, 0.0, 2.0), (1, 1e-3, 0.5)])
def test_zscore(shape, ddof, eps, tau):
    x, _, _ = _inputs(*shape)
    got = ls.zscore(x, temperature=tau, ddof=ddof, eps=eps)
    want = [[v / tau for v in o.o_zscore_row(list(r), ddof, eps)] for r in x]
    assert rel(got, want) < 1e-9


def test_zscore_other_axis():
    x = RNG.normal(size=(5, 3, 4))
    got = ls.zscore(x, axis=1)
    want = np.moveaxis(ls.zscore(np.moveaxis(x, 1, -1)), -1, 1)
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("standardize,ddof,eps,tau", [(True, 1, 1e-7, 2.0), (False, 1, 1e-7, 4.0), (True, 0, 0.0, 3.0), (True, 1, 1e-7, 1.0)])
def test_kd(shape, standardize, ddof, eps, tau):
    s, t, _ = _inputs(*shape)
    kw = dict(temperature=tau, standardize=standardize, ddof=ddof, eps=eps)
    rows = o.o_kd_rows(s, t, tau, standardize, ddof, eps)
    assert rel(ls.kd_loss(s, t, **kw, reduction="none"), rows) < 1e-9
    assert rel(ls.kd_loss(s, t, **kw), sum(rows) / len(rows)) < 1e-9
    assert rel(ls.kd_loss(s, t, **kw, reduction="sum"), sum(rows)) < 1e-9


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("standardize,ddof,alpha,beta,tau", [(True, 1, 9.0, 72.0, 2.0), (False, 1, 1.0, 8.0, 4.0), (True, 0, 1.0, 2.0, 3.0)])
def test_dkd(shape, standardize, ddof, alpha, beta, tau):
    s, t, y = _inputs(*shape)
    kw = dict(alpha=alpha, beta=beta, temperature=tau, standardize=standardize, ddof=ddof)
    rows = o.o_dkd_rows(s, t, y, alpha, beta, tau, standardize, ddof)
    assert rel(ls.dkd_loss(s, t, y, **kw, reduction="none"), rows) < 1e-9
    assert rel(ls.dkd_loss(s, t, y, **kw), sum(rows) / len(rows)) < 1e-9
    assert rel(ls.dkd_loss(s, t, y, **kw, reduction="sum"), sum(rows)) < 1e-9


@pytest.mark.parametrize("shape", [(2, 3), (7, 10), (8, 20), (5, 2)])
@pytest.mark.parametrize("variant,standardize", list(itertools.product(["reference", "corrected"], [True, False])))
@pytest.mark.parametrize("temps,w", [((2.0, 3.0, 5.0, 2.0, 6.0), 9.0), ((4.0, 3.0, 5.0, 2.0, 6.0), 0.9), ((1.5, 2.5), 1.0)])
def test_mlkd(shape, variant, standardize, temps, w):
    b, c = shape
    sw, ss, tw, ts = (RNG.normal(size=(b, c)) * k for k in (1.0, 1.5, 3.0, 2.5))
    kw = dict(temperatures=temps, kd_weight=w, standardize=standardize, variant=variant)
    got = ls.mlkd_terms(sw, ss, tw, ts, **kw)
    want = o.o_mlkd_terms(sw, ss, tw, ts, temps, w, standardize, variant)
    for k in ("kd", "cc", "bc"):
        assert rel(got[k], want[k]) < 1e-9, k
    assert rel(ls.mlkd_loss(sw, ss, tw, ts, **kw), sum(want.values())) < 1e-9


@pytest.mark.parametrize("g", [-30.0, -2.0, 0.0, 1.0, 3.5, 40.0])
@pytest.mark.parametrize("t_start,t_end", [(1.0, 20.0), (2.0, 25.0)])
def test_ctkd_temperature(g, t_start, t_end):
    assert rel(ls.ctkd_temperature(g, t_start=t_start, t_end=t_end), o.o_ctkd_temperature(g, t_start, t_end)) < 1e-12
    arr = ls.ctkd_temperature(np.array([g, -g]), t_start=t_start, t_end=t_end)
    assert arr.shape == (2,)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("loops", [1, 5, 10])
def test_ctkd_lambda(schedule, loops):
    for e in [0, 1, 2, 4.5, loops - 1, loops, loops + 3, 240]:
        got = ls.ctkd_lambda(e, loops=loops, schedule=schedule, max_value=0.5, min_value=-2.0)
        want = o.o_ctkd_lambda(e, loops, 0.5, -2.0, schedule)
        assert abs(got - want) <= 1e-12
