"""PyTorch backend: what the conformance suite (tests/backends/test_conformance.py, values and
gradients of every function against the core for every dtype) does not cover: the published
operation sequences, tensor temperatures, gradcheck of the custom autograd functions, double
backward, constant rows, saturated logits and autocast."""

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


def test_ctkd_temperature_dtypes():
    assert lt.ctkd_temperature(torch.tensor([1.0], dtype=torch.float16)).dtype == torch.float32
    assert lt.ctkd_temperature(torch.tensor([2])).dtype == torch.get_default_dtype()
    assert lt.ctkd_temperature(1.0).dtype == torch.get_default_dtype()


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
