"""Shared test helpers: hypothesis strategies and a naive, loop-based oracle of the
reference code (official-code-notes §1–§5), written independently of the library."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


# ----------------------------------------------------------------------------- strategies
@st.composite
def logit_batches(draw, *, min_classes: int = 2, max_classes: int = 12, max_batch: int = 6, spread: bool = True):
    """(B, C) float64 logits: unit-scale base rows times a magnitude in [1e-3, 1e4] plus an offset up to ±1e4.

    With ``spread`` every row has max-min >= 0.05 of the magnitude (constant rows are tested separately).
    """
    b = draw(st.integers(1, max_batch))
    c = draw(st.integers(min_classes, max_classes))
    base = draw(hnp.arrays(np.float64, (b, c), elements=st.floats(-1.0, 1.0, allow_nan=False, allow_subnormal=False)))
    if spread:
        assume(bool(np.all(base.max(axis=1) - base.min(axis=1) >= 0.05)))
    magnitude = 10.0 ** draw(st.floats(-3.0, 4.0))
    offset = draw(st.floats(-1e4, 1e4))
    return base * magnitude + offset


@st.composite
def affine_maps(draw):
    """(a, b) with a > 0, spanning several orders of magnitude."""
    a = 10.0 ** draw(st.floats(-2.0, 2.0))
    b = draw(st.floats(-100.0, 100.0))
    return a, b


# ----------------------------------------------------------------------------- oracle
def o_zscore_row(row, ddof=1, eps=1e-7):
    c = len(row)
    m = sum(row) / c
    s = math.sqrt(sum((v - m) ** 2 for v in row) / (c - ddof))
    if eps + s == 0:
        return [0.0] * c
    return [(v - m) / (eps + s) for v in row]


def o_softmax(row):
    mx = max(row)
    e = [math.exp(v - mx) for v in row]
    z = sum(e)
    return [v / z for v in e]


def o_kl(p, q):
    """sum p (log p - log q) with 0 log 0 = 0."""
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0)


def o_prep(x, standardize, ddof, eps):
    return [o_zscore_row(list(r), ddof, eps) if standardize else list(map(float, r)) for r in x]


def o_kd_rows(s, t, T, standardize=True, ddof=1, eps=1e-7):
    s, t = o_prep(s, standardize, ddof, eps), o_prep(t, standardize, ddof, eps)
    out = []
    for rs, rt in zip(s, t):
        p = o_softmax([v / T for v in rt])
        q = o_softmax([v / T for v in rs])
        out.append(T * T * o_kl(p, q))
    return out


def o_kd(s, t, T, standardize=True, ddof=1, eps=1e-7):
    rows = o_kd_rows(s, t, T, standardize, ddof, eps)
    return sum(rows) / len(rows)


def o_dkd_rows(s, t, y, alpha, beta, T, standardize=True, ddof=1, eps=1e-7):
    s, t = o_prep(s, standardize, ddof, eps), o_prep(t, standardize, ddof, eps)
    out = []
    for rs, rt, g in zip(s, t, y):
        ps = o_softmax([v / T for v in rs])
        pt = o_softmax([v / T for v in rt])
        bs = [ps[g], sum(v for k, v in enumerate(ps) if k != g)]
        bt = [pt[g], sum(v for k, v in enumerate(pt) if k != g)]
        tckd = o_kl(bt, bs) * T * T
        ns = o_softmax([v / T for k, v in enumerate(rs) if k != g])
        nt = o_softmax([v / T for k, v in enumerate(rt) if k != g])
        nckd = o_kl(nt, ns) * T * T
        out.append(alpha * tckd + beta * nckd)
    return out


def o_percentile50(values):
    v = sorted(values)
    pos = (len(v) - 1) * 0.5
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def o_masks(tw):
    p = [o_softmax(list(r)) for r in tw]
    conf = [max(r) for r in p]
    cconf = [sum(p[i][k] for i in range(len(p))) for k in range(len(p[0]))]
    thr, cthr = o_percentile50(conf), o_percentile50(cconf)
    return [1.0 if c <= thr else 0.0 for c in conf], [1.0 if c <= cthr else 0.0 for c in cconf]


def _gram_sq(s, t, T, classes):
    ps = [o_softmax([v / T for v in r]) for r in s]
    pt = [o_softmax([v / T for v in r]) for r in t]
    b, c = len(ps), len(ps[0])
    if classes:
        n = c
        gs = [[sum(ps[i][k] * ps[i][l] for i in range(b)) for l in range(c)] for k in range(c)]
        gt = [[sum(pt[i][k] * pt[i][l] for i in range(b)) for l in range(c)] for k in range(c)]
    else:
        n = b
        gs = [[sum(ps[i][k] * ps[j][k] for k in range(c)) for j in range(b)] for i in range(b)]
        gt = [[sum(pt[i][k] * pt[j][k] for k in range(c)) for j in range(b)] for i in range(b)]
    return [[(gt[a][z] - gs[a][z]) ** 2 for z in range(n)] for a in range(n)]


def o_mlkd_terms(sw, ss, tw, ts, temps=(2.0, 3.0, 5.0, 2.0, 6.0), w=9.0, standardize=True, variant="reference", ddof=1, eps=1e-7):
    mask, cmask = o_masks(tw)
    b, c = len(sw), len(sw[0])
    mbar, cbar = sum(mask) / b, sum(cmask) / c
    kd = cc = bc = 0.0
    for j, T in enumerate(temps):
        weak = o_kd_rows(sw, tw, T, standardize, ddof, eps)
        strong = o_kd_rows(ss, ts, T, standardize, ddof, eps)
        if variant == "reference":
            kd += mbar * sum(weak) / b
            kd += (sum(strong) / b) if j < 3 else (sum(weak) / b)
            cc += cbar * sum(map(sum, _gram_sq(sw, tw, T, True))) / c
            bc += mbar * sum(map(sum, _gram_sq(sw, tw, T, False))) / b
        else:
            kd += sum(m * v for m, v in zip(mask, weak)) / b + sum(strong) / b
            for s_, t_ in ((sw, tw), (ss, ts)):
                g = _gram_sq(s_, t_, T, True)
                cc += sum(g[k][l] * cmask[l] for k in range(c) for l in range(c)) / c
                g = _gram_sq(s_, t_, T, False)
                bc += sum(g[i][j2] * mask[j2] for i in range(b) for j2 in range(b)) / b
    return {"kd": w * kd, "cc": w * cc, "bc": w * bc}


def o_ctkd_temperature(g, t_start=1.0, t_end=20.0):
    return t_start + t_end / (1.0 + math.exp(-g))


def o_ctkd_lambda(e, loops=10, vmax=0.0, vmin=-1.0, schedule="cosine"):
    if schedule == "cosine":
        e = min(max(e, 0), loops)
        return (math.cos(e * math.pi / loops) + 1.0) * 0.5 * (vmax - vmin) + vmin
    e = min(max(e, 0), loops - 1)
    return e * (-(vmax - vmin) / loops)
