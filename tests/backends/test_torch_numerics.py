"""PyTorch backend against the NumPy core: values and gradients in float64, finite differences of the
core, gradcheck of the custom autograd functions, the reference operation sequence, edge cases, and
the dtype tolerance table (documented in docs/pytorch.md)."""

import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import logit_standardization as ls
import logit_standardization.torch as lt
from logit_standardization.torch import _fused


pytestmark = pytest.mark.usefixtures("one_torch_thread")


F64 = torch.float64
SHAPES = [(1, 2), (3, 2), (4, 3), (7, 10), (8, 100), (5, 17)]


def rel(a, b, floor=1e-3):
    """Normwise relative error max|a - b| / max(max|b|, floor) (floor: near-zero values compare absolutely)."""
    a = np.asarray(a.detach().double() if isinstance(a, torch.Tensor) else a, dtype=float)
    b = np.asarray(b.detach().double() if isinstance(b, torch.Tensor) else b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), floor))


def rng(*key):
    """A generator seeded by ``key``: every test draws the same numbers in any order or worker."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def inputs(b, c, *key, scale=3.0):
    g = rng(b, c, *key)
    s = g.normal(size=(b, c)) * scale + g.normal() * 5
    t = g.normal(size=(b, c)) * scale * 2 - 1.0
    return s, t, g.integers(0, c, size=b)


def tt(x, dtype=F64, grad=False):
    return torch.tensor(np.asarray(x), dtype=dtype, requires_grad=grad)


# ----------------------------------------------------------------------------- reference operation sequences
def ref_z(x, ddof=1, eps=1e-7):
    """The published normalize(): mean, std (Bessel), subtract, divide by eps + std."""
    mean = x.mean(dim=-1, keepdim=True)
    std = x.std(dim=-1, keepdim=True, correction=ddof)
    return (x - mean) / (eps + std)


def ref_kd(s, t, temperature, standardize=True, ddof=1, eps=1e-7):
    """The published kd_loss: log_softmax, softmax, kl_div(reduction="none"), sum, mean, times T^2."""
    if standardize:
        s, t = ref_z(s, ddof, eps), ref_z(t, ddof, eps)
    log_q = F.log_softmax(s / temperature, dim=1)
    p = F.softmax(t / temperature, dim=1)
    return F.kl_div(log_q, p, reduction="none").sum(1).mean() * temperature**2


def ref_dkd(s, t, y, alpha, beta, temperature, standardize=True):
    """The published dkd_loss (masks, probability sums, the -1000 trick)."""
    if standardize:
        s, t = ref_z(s), ref_z(t)
    gt = F.one_hot(y, s.shape[1]).to(s.dtype)
    other = 1.0 - gt
    ps, pt = F.softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1)
    bs = torch.cat([(ps * gt).sum(1, keepdim=True), (ps * other).sum(1, keepdim=True)], dim=1)
    bt = torch.cat([(pt * gt).sum(1, keepdim=True), (pt * other).sum(1, keepdim=True)], dim=1)
    tckd = F.kl_div(torch.log(bs), bt, reduction="sum") * temperature**2 / y.shape[0]
    log_ps2 = F.log_softmax(s / temperature - 1000.0 * gt, dim=1)
    pt2 = F.softmax(t / temperature - 1000.0 * gt, dim=1)
    nckd = F.kl_div(log_ps2, pt2, reduction="sum") * temperature**2 / y.shape[0]
    return alpha * tckd + beta * nckd


def ref_mlkd(sw, ss, tw, ts, temps=(2.0, 3.0, 5.0, 2.0, 6.0), w=9.0):
    """The published MLKD loop (variant "reference"): one KD/CC/BC call per temperature, scalar masks."""
    with torch.no_grad():
        p = F.softmax(tw, dim=1)
        conf, cconf = p.max(dim=1).values, p.sum(dim=0)
        mask = (conf <= np.percentile(conf.numpy(), 50)).to(sw.dtype)
        cmask = (cconf <= np.percentile(cconf.numpy(), 50)).to(sw.dtype)

    def cc(s, t, T):
        ps, pt = F.softmax(s / T, dim=1), F.softmax(t / T, dim=1)
        return ((pt.T @ pt - ps.T @ ps) ** 2).sum() / s.shape[1]

    def bc(s, t, T):
        ps, pt = F.softmax(s / T, dim=1), F.softmax(t / T, dim=1)
        return ((pt @ pt.T - ps @ ps.T) ** 2).sum() / s.shape[0]

    kd = cc_ = bc_ = 0.0
    for j, T in enumerate(temps):
        kd = kd + (ref_kd(sw, tw, T) * mask).mean()
        kd = kd + (ref_kd(ss, ts, T) if j < 3 else ref_kd(sw, tw, T))
        cc_ = cc_ + (cc(sw, tw, T) * cmask).mean()
        bc_ = bc_ + (bc(sw, tw, T) * mask).mean()
    return w * kd + w * cc_ + w * bc_


def fd_grad(f, x, h=1e-6):
    """Central finite differences of a scalar NumPy function ``f`` at ``x`` (float64)."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        step = h * max(1.0, abs(x[idx]))
        xp, xm = x.copy(), x.copy()
        xp[idx] += step
        xm[idx] -= step
        g[idx] = (f(xp) - f(xm)) / (2 * step)
    return g


# ----------------------------------------------------------------------------- float64 values against the core
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ddof,eps,tau", [(1, 1e-7, 1.0), (0, 0.0, 2.0), (1, 1e-3, 0.5)])
def test_zscore_values(shape, ddof, eps, tau):
    x, _, _ = inputs(*shape, ddof, eps, tau)
    got = lt.zscore(tt(x), temperature=tau, ddof=ddof, eps=eps)
    assert got.dtype == F64 and got.shape == shape
    assert rel(got, ls.zscore(x, temperature=tau, ddof=ddof, eps=eps)) < 1e-9


def test_zscore_any_axis_and_shape():
    x = rng("axis").normal(size=(5, 3, 4))
    for axis in (0, 1, -1):
        assert rel(lt.zscore(tt(x), axis=axis), ls.zscore(x, axis=axis)) < 1e-12
    assert rel(lt.zscore(tt(x[0, 0])), ls.zscore(x[0, 0])) < 1e-12


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("standardize,ddof,eps,tau", [(True, 1, 1e-7, 2.0), (False, 1, 1e-7, 4.0), (True, 0, 0.0, 3.0),
                                                      (True, 1, 1e-7, 1.0)])
def test_kd_values(shape, standardize, ddof, eps, tau):
    s, t, _ = inputs(*shape, standardize, ddof, eps, tau)
    kw = dict(temperature=tau, standardize=standardize, ddof=ddof, eps=eps)
    for reduction in ("mean", "sum", "none"):
        got = lt.kd_loss(tt(s), tt(t), **kw, reduction=reduction)
        assert got.shape == ((shape[0],) if reduction == "none" else ())
        assert rel(got, ls.kd_loss(s, t, **kw, reduction=reduction)) < 1e-9


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("standardize,ddof,alpha,beta,tau", [(True, 1, 9.0, 72.0, 2.0), (False, 1, 1.0, 8.0, 4.0),
                                                             (True, 0, 1.0, 2.0, 3.0)])
def test_dkd_values(shape, standardize, ddof, alpha, beta, tau):
    s, t, y = inputs(*shape, standardize, ddof, alpha, beta, tau)
    kw = dict(alpha=alpha, beta=beta, temperature=tau, standardize=standardize, ddof=ddof)
    for reduction in ("mean", "sum", "none"):
        got = lt.dkd_loss(tt(s), tt(t), torch.from_numpy(y), **kw, reduction=reduction)
        assert rel(got, ls.dkd_loss(s, t, y, **kw, reduction=reduction)) < 1e-9


@pytest.mark.parametrize("shape", [(1, 2), (4, 3), (7, 10), (8, 100)])
@pytest.mark.parametrize("variant", ["reference", "corrected"])
@pytest.mark.parametrize("standardize,temps", [(True, (2.0, 3.0, 5.0, 2.0, 6.0)), (False, (4.0, 3.0, 5.0, 2.0, 6.0)),
                                               (True, (1.5,)), (True, (2.0, 2.0, 3.0))])
def test_mlkd_values(shape, variant, standardize, temps):
    views = [inputs(*shape, "mlkd", i)[i % 2] for i in range(4)]
    kw = dict(temperatures=temps, standardize=standardize, variant=variant, kd_weight=9.0)
    got = lt.mlkd_terms(*[tt(v) for v in views], **kw)
    want = ls.mlkd_terms(*views, **kw)
    assert set(got) == {"kd", "cc", "bc"}
    for k in want:
        assert got[k].shape == () and got[k].dtype == F64
        assert rel(got[k], want[k]) < 1e-9, k  # values below 1e-3 (pure cancellation at C = 2) absolutely
    assert rel(lt.mlkd_loss(*[tt(v) for v in views], **kw), ls.mlkd_loss(*views, **kw)) < 1e-9


def test_confidence_masks_match_core():
    for b, c in [(1, 2), (7, 10), (8, 5), (64, 100)]:
        tw = rng("masks", b, c).normal(size=(b, c)) * 3
        for got, want in zip(lt.confidence_masks(tt(tw)), ls.confidence_masks(tw)):
            np.testing.assert_array_equal(got.numpy(), want)


def test_ctkd_temperature_and_lambda():
    raw = rng("ctkd").normal(size=(5,)) * 4
    for kw in ({}, {"t_start": 2.0, "t_end": 30.0}):
        got = lt.ctkd_temperature(tt(raw), **kw)
        assert rel(got, ls.ctkd_temperature(raw, **kw)) < 1e-12
        assert rel(lt.ctkd_temperature(1.0, **kw), ls.ctkd_temperature(1.0, **kw)) < 1e-7  # float32
    assert lt.ctkd_temperature(torch.tensor([1.0], dtype=torch.float16)).dtype == torch.float32
    assert lt.ctkd_temperature(torch.tensor([2])).dtype == torch.get_default_dtype()
    for e in (0, 1, 5, 10, 50):
        assert lt.ctkd_lambda(e, loops=10) == ls.ctkd_lambda(e, loops=10)


# ----------------------------------------------------------------------------- float64 gradients
@pytest.mark.parametrize("shape", [(4, 3), (7, 10), (8, 100)])
@pytest.mark.parametrize("standardize,ddof,eps,tau", [(True, 1, 1e-7, 2.0), (False, 1, 1e-7, 4.0), (True, 0, 1e-3, 1.0)])
def test_kd_gradients_match_reference_sequence(shape, standardize, ddof, eps, tau):
    s, t, _ = inputs(*shape, "kd grad", standardize, ddof, eps, tau)
    a, b = tt(s, grad=True), tt(t, grad=True)
    ra, rb = tt(s, grad=True), tt(t, grad=True)
    got = lt.kd_loss(a, b, temperature=tau, standardize=standardize, ddof=ddof, eps=eps)
    want = ref_kd(ra, rb, tau, standardize, ddof, eps)
    got.backward()
    want.backward()
    assert rel(got, want) < 1e-12
    assert rel(a.grad, ra.grad) < 1e-9
    assert rel(b.grad, rb.grad) < 1e-9


@pytest.mark.parametrize("shape", [(4, 3), (7, 10)])
@pytest.mark.parametrize("standardize", [True, False])
def test_dkd_gradients_match_reference_sequence(shape, standardize):
    s, t, y = inputs(*shape, "dkd grad", standardize)
    a, ra = tt(s, grad=True), tt(s, grad=True)
    got = lt.dkd_loss(a, tt(t), torch.from_numpy(y), alpha=9.0, beta=72.0, temperature=2.0, standardize=standardize)
    # the teacher has no gradient here: the reference's -1000 mask underflows to a 0 target, whose
    # kl_div gradient is NaN (teacher gradients are checked against finite differences instead)
    want = ref_dkd(ra, tt(t), torch.from_numpy(y), 9.0, 72.0, 2.0, standardize)
    got.backward()
    want.backward()
    assert rel(got, want) < 1e-9
    assert rel(a.grad, ra.grad) < 1e-9


@pytest.mark.parametrize("shape", [(4, 3), (7, 10), (8, 20)])
def test_mlkd_gradients_match_reference_loop(shape):
    views = [inputs(*shape, "mlkd grad", i)[i % 2] + i for i in range(4)]
    ours = [tt(v, grad=True) for v in views]
    theirs = [tt(v, grad=True) for v in views]
    got = lt.mlkd_loss(*ours)
    want = ref_mlkd(*theirs)
    got.backward()
    want.backward()
    assert rel(got, want) < 1e-9
    for x, y in zip(ours, theirs):
        assert rel(x.grad, y.grad, floor=1e-12) < 1e-9


@pytest.mark.parametrize("ddof,eps,tau", [(1, 1e-7, 1.0), (0, 0.0, 2.0)])
def test_zscore_gradient_against_core_finite_differences(ddof, eps, tau):
    x, _, _ = inputs(3, 6, "zscore fd", ddof, eps, tau)
    g = rng("upstream", ddof, eps, tau).normal(size=x.shape)
    a = tt(x, grad=True)
    (lt.zscore(a, temperature=tau, ddof=ddof, eps=eps) * tt(g)).sum().backward()
    fd = fd_grad(lambda v: float(np.sum(ls.zscore(v, temperature=tau, ddof=ddof, eps=eps) * g)), x)
    assert rel(a.grad, fd) < 1e-6


@pytest.mark.parametrize("standardize", [True, False])
def test_kd_and_dkd_gradients_against_core_finite_differences(standardize):
    s, t, y = inputs(4, 7, "fd", standardize)
    for which in (0, 1):  # student and teacher
        a, b = tt(s, grad=True), tt(t, grad=True)
        lt.kd_loss(a, b, temperature=2.0, standardize=standardize).backward()
        if which == 0:
            fd = fd_grad(lambda v: ls.kd_loss(v, t, temperature=2.0, standardize=standardize), s)
        else:
            fd = fd_grad(lambda v: ls.kd_loss(s, v, temperature=2.0, standardize=standardize), t)
        assert rel((a, b)[which].grad, fd) < 1e-6
    a, b = tt(s, grad=True), tt(t, grad=True)
    lt.dkd_loss(a, b, torch.from_numpy(y), alpha=9.0, beta=72.0, standardize=standardize).backward()
    fd = fd_grad(lambda v: ls.dkd_loss(v, t, y, alpha=9.0, beta=72.0, standardize=standardize), s)
    assert rel(a.grad, fd) < 1e-6
    fd = fd_grad(lambda v: ls.dkd_loss(s, v, y, alpha=9.0, beta=72.0, standardize=standardize), t)
    assert rel(b.grad, fd) < 1e-6


@pytest.mark.parametrize("variant", ["reference", "corrected"])
def test_mlkd_gradients_against_core_finite_differences(variant):
    views = [inputs(5, 6, "mlkd fd", variant, i)[i % 2] + i for i in range(4)]
    sw, ss = tt(views[0], grad=True), tt(views[1], grad=True)
    lt.mlkd_loss(sw, ss, tt(views[2]), tt(views[3]), variant=variant).backward()
    fd_w = fd_grad(lambda v: ls.mlkd_loss(v, views[1], views[2], views[3], variant=variant), views[0])
    fd_s = fd_grad(lambda v: ls.mlkd_loss(views[0], v, views[2], views[3], variant=variant), views[1])
    assert rel(sw.grad, fd_w) < 1e-6
    assert rel(ss.grad, fd_s) < 1e-6


def test_temperature_gradient_against_core_finite_differences():
    s, t, _ = inputs(4, 7, "tau fd")
    # a learned scalar temperature
    tau = tt([2.5], grad=True)
    lt.kd_loss(tt(s), tt(t), temperature=tau).backward()
    fd = fd_grad(lambda v: ls.kd_loss(s, t, temperature=float(v[0])), np.array([2.5]))
    assert rel(tau.grad, fd) < 1e-6
    # per-sample temperatures
    taus = np.array([1.5, 2.0, 4.0, 7.0])
    tau = tt(taus, grad=True)
    lt.kd_loss(tt(s), tt(t), temperature=tau, reduction="sum").backward()
    fd = fd_grad(lambda v: float(sum(ls.kd_loss(s[i:i + 1], t[i:i + 1], temperature=float(v[i])) for i in range(4))),
                 taus)
    assert rel(tau.grad, fd) < 1e-6
    # CTKD: through the temperature map and the gradient reversal (factor lambda)
    ctkd = lt.CTKDLoss(init=0.3).double()
    ctkd(tt(s), tt(t), grl_lambda=-0.7).backward()
    # the derivative is small against the loss here: a wider step keeps rounding out of the difference
    fd = fd_grad(lambda v: ls.kd_loss(s, t, temperature=ls.ctkd_temperature(float(v[0]))), np.array([0.3]), h=1e-4)
    assert rel(ctkd.raw_temperature.grad, -0.7 * fd) < 1e-6
    raw = tt([0.3], grad=True)  # and the published sequence, differentiated by autograd
    temp = 1.0 + 20.0 * torch.sigmoid(raw)
    loss = ref_kd(tt(s), tt(t), temp)
    loss.backward()
    # dL/dT = 2 KL T - (projections) cancels to a small number: compare on the scale of its terms
    scale = float(loss.detach() / temp.detach() * 20.0 * 0.25)
    assert rel(ctkd.raw_temperature.grad, -0.7 * raw.grad, floor=scale) < 1e-9


def test_gradcheck_custom_functions():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 5, dtype=F64, generator=g, requires_grad=True)
    t = torch.randn(3, 5, dtype=F64, generator=g, requires_grad=True)
    for ddof, eps in ((1, 1e-7), (0, 0.0), (1, 0.5)):
        assert torch.autograd.gradcheck(lambda x: _fused.ZScore.apply(x, ddof, eps), (s,), fast_mode=ddof == 0)
    taus = [2.0,  # a number (no gradient)
            torch.tensor([[[1.7]]], dtype=F64, requires_grad=True),  # one learned temperature
            torch.tensor([1.0, 2.0, 3.5], dtype=F64).reshape(1, 3, 1).requires_grad_(),  # per sample
            torch.tensor([2.0, 3.0, 0.5, 6.0], dtype=F64).reshape(4, 1, 1).requires_grad_()]  # MLKD stack
    for i, tau in enumerate(taus):
        for standardize in (True, False):
            args = (s, t, tau) if isinstance(tau, torch.Tensor) else (s, t)
            fn = (lambda a, b, c, st=standardize: _fused.KDRows.apply(a, b, c, st, 1, 1e-7)) if len(args) == 3 else \
                (lambda a, b, st=standardize, c=tau: _fused.KDRows.apply(a, b, c, st, 1, 1e-7))
            # the full Jacobian once per function, the fast (random projection) check for the other cases
            assert torch.autograd.gradcheck(fn, args, fast_mode=i > 0 or not standardize)
    assert torch.autograd.gradcheck(lambda x: _fused.GradReverse.apply(x, 1.0), (s,))


def test_double_backward_is_refused():
    s = torch.randn(3, 5, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(lt.kd_loss(s, torch.randn(3, 5, dtype=F64)), s, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


# ----------------------------------------------------------------------------- edge cases
def test_constant_rows_finite_and_as_autograd_through_std():
    s = np.array([[2.0, 2.0, 2.0, 2.0], [0.0, 1.0, 3.0, 2.0], [0.1, 0.1, 0.1, 0.1]])
    t = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [3.0, 1.0, 2.0, 0.0]])
    a, b = tt(s, grad=True), tt(t, grad=True)
    ra, rb = tt(s, grad=True), tt(t, grad=True)
    got = lt.kd_loss(a, b)
    got.backward()
    ref_kd(ra, rb, 2.0).backward()
    assert torch.isfinite(got) and rel(got, ls.kd_loss(s, t)) < 1e-9
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    # (I - 11^T/C)/eps times the incoming gradient on the constant rows: about 1e7 times larger, not NaN
    assert rel(a.grad, ra.grad) < 1e-9 and rel(b.grad, rb.grad) < 1e-9
    assert a.grad[0].abs().max() > 1e5
    # eps = 0: zeros and zero gradient where torch.std would give NaN
    z = tt(s, grad=True)
    out = lt.zscore(z, eps=0.0)
    (out * tt(rng("constant").normal(size=s.shape))).sum().backward()
    assert torch.equal(out[0], torch.zeros(4, dtype=F64)) and torch.equal(z.grad[0], torch.zeros(4, dtype=F64))
    assert torch.isfinite(z.grad).all()
    teacher = torch.tensor([[4.0, -3.0, 0.0, 1.0, 2.0], [0.0, 5.0, 1.0, -2.0, 3.0]])
    x32 = torch.full((2, 5), 3.0, requires_grad=True)
    lt.dkd_loss(x32, teacher, torch.tensor([0, 4])).backward()
    assert x32.grad.abs().max() > 1e5  # beyond float16's range
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = torch.full((2, 5), 3.0, dtype=dtype, requires_grad=True)
        y = lt.dkd_loss(x, teacher.to(dtype), torch.tensor([0, 4]))
        y.backward()
        assert torch.isfinite(y) and torch.isfinite(x.grad).all()
        if dtype == torch.float16:  # saturated at the largest float16 instead of overflowing to inf
            limit = torch.finfo(torch.float16).max
            torch.testing.assert_close(x.grad.float(), x32.grad.clamp(-limit, limit).half().float())


def test_two_classes():
    s = np.array([[3.0, -1.0], [0.5, 0.5], [-2.0, 7.0]])
    t = np.array([[1.0, 2.0], [4.0, -4.0], [0.0, 1e-3]])
    y = np.array([0, 1, 1])
    assert rel(lt.kd_loss(tt(s), tt(t)), ls.kd_loss(s, t)) < 1e-9
    assert rel(lt.dkd_loss(tt(s), tt(t), torch.from_numpy(y)), ls.dkd_loss(s, t, y)) < 1e-9
    a, ra = tt(s, grad=True), tt(s, grad=True)
    lt.kd_loss(a, tt(t)).backward()
    ref_kd(ra, tt(t), 2.0).backward()
    # the gradient is pure cancellation (~1e-8 except at ties): compare on the scale of its terms
    assert torch.isfinite(a.grad).all()
    assert float((a.grad - ra.grad).abs().max()) < 1e-9 * float(ra.grad.abs().max()) + 1e-14


def test_saturated_logits():
    s = np.array([[800.0, -800.0, -800.0], [1e4, -1e4, 0.0]])
    t = np.array([[-800.0, 800.0, -800.0], [0.0, 1e4, -1e4]])
    y = np.array([0, 2])
    for standardize in (True, False):
        kw = dict(temperature=1.0, standardize=standardize)
        a = tt(s, grad=True)
        kd = lt.kd_loss(a, tt(t), **kw)
        dkd = lt.dkd_loss(a, tt(t), torch.from_numpy(y), **kw)
        (kd + dkd).backward()
        assert torch.isfinite(kd) and torch.isfinite(dkd) and torch.isfinite(a.grad).all()
        assert rel(kd, ls.kd_loss(s, t, **kw)) < 1e-9 and rel(dkd, ls.dkd_loss(s, t, y, **kw)) < 1e-9
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            b = torch.tensor(s).to(dtype).requires_grad_()
            out = lt.dkd_loss(b, torch.tensor(t).to(dtype), torch.from_numpy(y), **kw)
            out.backward()
            assert torch.isfinite(out) and torch.isfinite(b.grad).all()


def test_half_precision_does_not_overflow():
    # fp16 arithmetic would overflow here: the sum of squared deviations exceeds 65504
    x = torch.tensor([[6e4, -6e4, 3e4, 0.0, 1.0]], dtype=torch.float16)
    ref = ls.zscore(x.double().numpy())
    z = lt.zscore(x)
    assert z.dtype == torch.float32 and torch.isfinite(z).all()
    assert rel(z, ref) < 1e-6
    s = x.clone().requires_grad_()
    loss = lt.kd_loss(s, x.flip(1))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(s.grad).all()
    assert s.grad.dtype == torch.float16


# ----------------------------------------------------------------------------- the dtype tolerance table
# Normwise relative error of values and input gradients against float64 on the same (rounded) inputs,
# C >= 3 (at C = 2 the standardized gradient is pure rounding noise, see test_two_classes).
# The same table is in docs/pytorch.md.
TOLERANCE = {  # dtype: (values, gradients)
    torch.float32: (2e-6, 5e-6),
    torch.float16: (2e-6, 1e-2),
    torch.bfloat16: (2e-6, 1e-2),
}


def _cases(labels):
    return {
        "zscore": lambda v: (lt.zscore(v[0]) * torch.linspace(-1, 1, v[0].shape[1], dtype=torch.float32).to(
            v[0].device)).sum(),
        "kd": lambda v: lt.kd_loss(v[0], v[1]),
        "kd_raw": lambda v: lt.kd_loss(v[0], v[1], standardize=False, temperature=4.0),
        "dkd": lambda v: lt.dkd_loss(v[0], v[1], labels, alpha=9.0, beta=72.0),
        "mlkd": lambda v: lt.mlkd_loss(*v),
        "mlkd_corrected": lambda v: lt.mlkd_loss(*v, variant="corrected"),
    }


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("shape", [(4, 10), (16, 100), (16, 1000)])
def test_dtype_tolerance_table(dtype, shape):
    g = torch.Generator().manual_seed(shape[1])
    base = [torch.randn(shape, generator=g) * 3 + 2 for _ in range(4)]
    low = [x.to(dtype) for x in base]
    wide = [x.to(F64) for x in low]
    labels = torch.randint(0, shape[1], (shape[0],), generator=g)
    tol_v, tol_g = TOLERANCE[dtype]
    for name, f in _cases(labels).items():
        if name.startswith("mlkd") and shape[1] > 100:
            continue  # (C, C) class correlations: slow in float64 and nothing new at this size
        a = [x.clone().requires_grad_() for x in low]
        b = [x.clone().requires_grad_() for x in wide]
        va, vb = f(a), f(b)
        assert va.dtype == torch.promote_types(dtype, torch.float32), name
        va.backward()
        vb.backward()
        assert rel(va, vb) < tol_v, name
        assert a[0].grad.dtype == dtype
        assert rel(a[0].grad, b[0].grad, floor=1e-30) < tol_g, name
    # and the float64 path against the core itself
    s64, t64 = wide[0].numpy(), wide[1].numpy()
    assert rel(lt.kd_loss(wide[0], wide[1]), ls.kd_loss(s64, t64)) < 1e-9


def test_autocast_runs_the_losses_in_float32():
    g = torch.Generator().manual_seed(1)
    head = torch.nn.Linear(16, 10)
    feats = torch.randn(8, 16, generator=g)
    teacher = torch.randn(8, 10, generator=g) * 4
    labels = torch.arange(8) % 10
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(feats)
        assert logits.dtype == torch.bfloat16
        inside = {
            "kd": lt.kd_loss(logits, teacher),
            "dkd": lt.dkd_loss(logits, teacher, labels),
            "mlkd": lt.mlkd_loss(logits, logits, teacher, teacher),
            "z": lt.zscore(logits),
        }
    outside = {
        "kd": lt.kd_loss(logits, teacher),
        "dkd": lt.dkd_loss(logits, teacher, labels),
        "mlkd": lt.mlkd_loss(logits, logits, teacher, teacher),
        "z": lt.zscore(logits),
    }
    for k in inside:
        assert inside[k].dtype == torch.float32 and torch.isfinite(inside[k]).all()
        # bit-identical to the same bfloat16 logits outside autocast: nothing ran in reduced precision
        assert torch.equal(inside[k], outside[k]), k
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = lt.kd_loss(head(feats), teacher) + lt.mlkd_loss(head(feats), head(feats), teacher, teacher)
    loss.backward()
    assert torch.isfinite(head.weight.grad).all()


# ----------------------------------------------------------------------------- fused path vs the reference sequence
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
@pytest.mark.parametrize("shape", [(64, 100), (256, 1000)])
def test_fused_path_agrees_with_reference_sequence(dtype, tol, shape):
    g = torch.Generator().manual_seed(7)
    s = (torch.randn(shape, generator=g) * 4 + 1).to(dtype)
    t = (torch.randn(shape, generator=g) * 8).to(dtype)
    a, ra = s.clone().requires_grad_(), s.clone().requires_grad_()
    got, want = lt.kd_loss(a, t), ref_kd(ra, t, 2.0)
    got.backward()
    want.backward()
    assert rel(got, want) < tol
    assert rel(a.grad, ra.grad, floor=1e-30) < 10 * tol
