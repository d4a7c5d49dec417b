"""PyTorch backend: the nn.Module losses, CTKD's learnable temperature, gradient reversal, torch.compile."""

import io
import math

import pytest
import torch

import logit_standardization as ls
import logit_standardization.torch as lt


pytestmark = pytest.mark.usefixtures("one_torch_thread")


F64 = torch.float64


def rand(*shape, seed=0, dtype=F64, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(dtype)


@pytest.mark.parametrize("warmup,epoch,factor", [(20, 1, 0.05), (20, 2, 0.10), (20, 10, 0.5), (20, 20, 1.0), (20, 35, 1.0),
                                                 (20, None, 1.0), (1, 1, 1.0), (5, 2.5, 0.5), (20, 0, 0.0)])
def test_dkd_warmup(warmup, epoch, factor):
    s, t = rand(5, 8, seed=3), rand(5, 8, seed=4)
    y = torch.tensor([0, 7, 3, 3, 1])
    module = lt.DKDLoss(alpha=9.0, beta=72.0, warmup_epochs=warmup)
    assert module.warmup_factor(epoch) == pytest.approx(factor)
    got = module(s, t, y, epoch=epoch)
    want = factor * ls.dkd_loss(s.numpy(), t.numpy(), y.numpy(), alpha=9.0, beta=72.0)
    assert got.shape == () and float(got) == pytest.approx(want, rel=1e-12, abs=1e-300)
    s.requires_grad_()
    module(s, t, y, epoch=epoch).backward()
    s2 = s.detach().clone().requires_grad_()
    lt.dkd_loss(s2, t, y, alpha=9.0, beta=72.0).backward()
    torch.testing.assert_close(s.grad, factor * s2.grad, rtol=1e-12, atol=0.0)


def test_gradient_reversal():
    x = torch.randn(4, requires_grad=True)
    for lam in (-1.0, 0.5, torch.tensor(-0.25)):
        x.grad = None
        y = lt.GradientReversal()(x, lam)
        assert torch.equal(y, x) and y is not x
        (y * torch.arange(4.0)).sum().backward()
        torch.testing.assert_close(x.grad, float(lam) * torch.arange(4.0))
    with pytest.raises(TypeError, match=r"gradient_reversal: argument 'lambda_' must be a real number"):
        lt.gradient_reversal(x, "1")


def test_lambda_schedule_matches_the_core():
    for kw in ({}, {"loops": 5}, {"schedule": "linear", "loops": 4}, {"max_value": 0.5, "min_value": -2.0}):
        schedule = lt.CTKDLambdaSchedule(**kw)
        for e in range(0, 14):
            assert schedule(e) == ls.ctkd_lambda(e, **kw) == lt.ctkd_lambda(e, **kw)
    assert lt.CTKDLambdaSchedule(loops=10)(1) == pytest.approx(-0.02447, abs=1e-5)


def test_ctkd_global_temperature():
    ctkd = lt.CTKDLoss().double()
    assert isinstance(ctkd.raw_temperature, torch.nn.Parameter) and ctkd.raw_temperature.shape == (1,)
    assert ctkd.raw_temperature.item() == 1.0
    assert float(ctkd.temperature) == pytest.approx(ls.ctkd_temperature(1.0), rel=1e-12)  # 15.62 before any forward
    s, t = rand(6, 10, seed=5).requires_grad_(), rand(6, 10, seed=6)
    loss = ctkd(s, t, grl_lambda=-1.0)
    temp = ls.ctkd_temperature(1.0)
    assert loss.shape == ()
    assert float(loss.detach()) == pytest.approx(ls.kd_loss(s.detach().numpy(), t.numpy(), temperature=temp), rel=1e-12)
    loss.backward()
    # the student sees plain KD at that temperature
    s2 = s.detach().clone().requires_grad_()
    lt.kd_loss(s2, t, temperature=temp).backward()
    torch.testing.assert_close(s.grad, s2.grad, rtol=1e-10, atol=0.0)
    # the temperature sees lambda times the true derivative
    raw = torch.ones(1, dtype=F64, requires_grad=True)
    lt.kd_loss(s.detach(), t, temperature=lt.ctkd_temperature(raw)).backward()
    torch.testing.assert_close(ctkd.raw_temperature.grad, -1.0 * raw.grad)
    assert float(ctkd.temperature) == pytest.approx(temp, rel=1e-12)


def test_ctkd_temperature_ascends_the_loss_with_negative_lambda():
    torch.manual_seed(0)
    s, t = torch.randn(16, 10), torch.randn(16, 10) * 3
    ctkd = lt.CTKDLoss(init=0.0)
    opt = torch.optim.SGD(ctkd.parameters(), lr=5.0)
    before = float(ctkd(s, t, grl_lambda=-1.0).detach())
    start = float(ctkd.temperature)
    for _ in range(3):
        opt.zero_grad()
        ctkd(s, t, grl_lambda=-1.0).backward()
        opt.step()
    after = float(ctkd(s, t, grl_lambda=-1.0).detach())
    assert after > before and float(ctkd.temperature) != start
    # lambda = 0 (epoch 0 of the schedule): the temperature does not move
    opt.zero_grad()
    ctkd(s, t, grl_lambda=lt.ctkd_lambda(0)).backward()
    assert ctkd.raw_temperature.grad.item() == 0.0


def test_ctkd_instance_wise():
    torch.manual_seed(0)
    b, c = 8, 10
    ctkd = lt.CTKDLoss(instance_wise=True, num_classes=c, hidden_features=16).double()
    s, t = torch.randn(b, c, dtype=F64, requires_grad=True), torch.randn(b, c, dtype=F64) * 2
    loss = ctkd(s, t, grl_lambda=-1.0)
    temps = ctkd.temperature
    assert temps.shape == (b,)
    torch.testing.assert_close(temps, torch.full((b,), ls.ctkd_temperature(1.0), dtype=F64))
    loss.backward()
    for p in ctkd.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert ctkd.mlp[2].weight.grad.abs().sum() > 0  # the per-sample head learns
    # per-sample temperatures: the same as KD with those temperatures, sample by sample
    with torch.no_grad():
        ctkd.mlp[2].weight.normal_()
    per = ctkd(s, t, grl_lambda=-1.0)
    temps = ctkd.temperature
    assert temps.unique().numel() > 1
    rows = [lt.kd_loss(s[i:i + 1], t[i:i + 1], temperature=float(temps[i])) for i in range(b)]
    torch.testing.assert_close(per, torch.stack(rows).mean(), rtol=1e-10, atol=0.0)
    with pytest.raises(ValueError, match=r"CTKDLoss: argument 'student_logits' must be a 2-D array"):
        ctkd(s[0], t[0], grl_lambda=-1.0)


def test_ctkd_state_dict_round_trip():
    ctkd = lt.CTKDLoss(init=0.25)
    buf = io.BytesIO()
    torch.save(ctkd.state_dict(), buf)
    buf.seek(0)
    other = lt.CTKDLoss()
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert other.raw_temperature.item() == 0.25
    assert list(ctkd.state_dict()) == ["raw_temperature"]


def test_modules_follow_dtype_and_hold_no_hidden_state():
    s, t = rand(4, 6, seed=7, dtype=torch.bfloat16), rand(4, 6, seed=8, dtype=torch.bfloat16)
    y = torch.tensor([0, 1, 2, 3])
    for module, args in ((lt.KDLoss(), (s, t)), (lt.DKDLoss(), (s, t, y)), (lt.MLKDLoss(), (s, s, t, t))):
        assert list(module.state_dict()) == []
        out = module(*args)
        assert out.dtype == torch.float32 and torch.isfinite(out)


def test_torch_compile():
    """One small compiled forward/backward against eager (fullgraph: no graph breaks without the NaN scan)."""
    s, t = rand(8, 10, seed=9, dtype=torch.float32), rand(8, 10, seed=10, dtype=torch.float32)

    def step(fn):
        x = s.clone().requires_grad_()
        out = fn(x, t)
        out.backward()
        return out.detach(), x.grad

    eager = step(lambda a, b: lt.kd_loss(a, b, check_finite=False))
    compiled = step(torch.compile(lambda a, b: lt.kd_loss(a, b, check_finite=False), fullgraph=True, dynamic=False))
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(compiled[1], eager[1], rtol=1e-5, atol=1e-7)
    assert math.isfinite(float(compiled[0]))


# ----------------------------------------------------------------------------- weights, labels, last_terms
def _ce(s, y, reduction="mean"):
    return torch.nn.functional.cross_entropy(s, y, reduction=reduction)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_kd_weights_and_labels(reduction):
    s, t = rand(6, 10, seed=21), rand(6, 10, seed=22)
    y = torch.tensor([0, 9, 3, 3, 1, 5])
    module = lt.KDLoss(kd_weight=9.0, ce_weight=0.1, reduction=reduction)
    got = module(s, t, y)
    kd = lt.kd_loss(s, t, reduction=reduction)
    want = 0.1 * _ce(s, y, reduction) + 9.0 * kd
    torch.testing.assert_close(got, want, rtol=1e-14, atol=0.0)
    assert set(module.last_terms) == {"ce", "kd"}
    torch.testing.assert_close(module.last_terms["kd"], 9.0 * kd)
    torch.testing.assert_close(module.last_terms["ce"], 0.1 * _ce(s, y, reduction))
    torch.testing.assert_close(module.last_terms["ce"] + module.last_terms["kd"], got)
    # the defaults: kd_weight=1, ce_weight=0, labels optional and unused
    assert torch.equal(lt.KDLoss(reduction=reduction)(s, t), kd)
    assert torch.equal(lt.KDLoss(reduction=reduction)(s, t, y), kd)


def test_dkd_weights_labels_and_warmup():
    s, t = rand(5, 8, seed=23), rand(5, 8, seed=24)
    y = torch.tensor([0, 7, 3, 3, 1])
    module = lt.DKDLoss(alpha=1.0, beta=8.0, warmup_epochs=10, kd_weight=9.0, ce_weight=1.0)
    got = module(s, t, y, epoch=4)
    dkd = lt.dkd_loss(s, t, y)
    assert module.last_terms["kd"].item() == pytest.approx(9.0 * 0.4 * dkd.item(), rel=1e-14)
    assert module.last_terms["ce"].item() == pytest.approx(_ce(s, y).item(), rel=1e-14)
    assert got.item() == pytest.approx((_ce(s, y) + 3.6 * dkd).item(), rel=1e-14)
    assert module.warmup_factor(4) == ls.dkd_warmup(4, warmup_epochs=10) == 0.4
    assert module.warmup_factor(None) == 1.0


@pytest.mark.parametrize("variant", ["reference", "corrected"])
def test_mlkd_weights_and_labels(variant):
    views = [rand(8, 10, seed=30 + i) for i in range(4)]
    y = torch.arange(8)
    module = lt.MLKDLoss(variant=variant, kd_weight=3.0, ce_weight=0.1)
    got = module(*views, y)
    terms = lt.mlkd_terms(*views, variant=variant, kd_weight=3.0)  # kd_weight applied once, by mlkd_terms
    ce = 0.1 * (_ce(views[0], y) + _ce(views[1], y))
    assert set(module.last_terms) == {"ce", "kd", "cc", "bc"}
    torch.testing.assert_close(module.last_terms["ce"], ce)
    for k in ("kd", "cc", "bc"):
        torch.testing.assert_close(module.last_terms[k], terms[k])
    torch.testing.assert_close(got, ce + terms["kd"] + terms["cc"] + terms["bc"])
    want = ls.mlkd_loss(*[v.numpy() for v in views], variant=variant, kd_weight=3.0)
    assert float(got - ce) == pytest.approx(want, rel=1e-10)


def test_ctkd_weights_labels_and_epoch():
    s, t = rand(6, 10, seed=25), rand(6, 10, seed=26)
    y = torch.tensor([0, 9, 3, 3, 1, 5])
    ctkd = lt.CTKDLoss(kd_weight=9.0, ce_weight=0.1, loops=4, schedule="linear").double()
    got = ctkd(s, t, y, grl_lambda=-1.0)
    temp = ls.ctkd_temperature(1.0)
    kd = ls.kd_loss(s.numpy(), t.numpy(), temperature=temp)
    assert ctkd.last_terms["kd"].item() == pytest.approx(9.0 * kd, rel=1e-12)
    assert got.item() == pytest.approx(0.1 * _ce(s, y).item() + 9.0 * kd, rel=1e-12)
    # lambda from the module's schedule when only the epoch is given
    for epoch in (0, 1, 2.5, 7):
        lam = ls.ctkd_lambda(epoch, loops=4, schedule="linear")
        assert ctkd.grl_lambda(epoch) == lam
        for explicit in (False, True):
            ctkd.zero_grad()
            kwargs = {"grl_lambda": lam} if explicit else {"epoch": epoch}
            ctkd(s, t, y, **kwargs).backward()
            if explicit:
                assert torch.equal(ctkd.raw_temperature.grad, want_grad)
            else:
                want_grad = ctkd.raw_temperature.grad.clone()
    # grl_lambda wins over epoch
    ctkd.zero_grad()
    ctkd(s, t, y, epoch=7, grl_lambda=0.0).backward()
    assert ctkd.raw_temperature.grad.item() == 0.0
    assert (ctkd.t_start, ctkd.t_end, ctkd.loops, ctkd.max_value, ctkd.min_value, ctkd.schedule) == (
        1.0, 20.0, 4, 0.0, -1.0, "linear")


def test_ctkd_instance_wise_with_an_epoch():
    ctkd = lt.CTKDLoss(instance_wise=True, num_classes=5)
    out = ctkd(torch.randn(4, 5), torch.randn(4, 5), epoch=3)
    assert out.shape == () and torch.isfinite(out)


def test_training_call_forms():
    """The forms logit_standardization.training.methods uses."""
    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
    assert torch.isfinite(lt.KDLoss(temperature=2.0, standardize=True, check_finite=False)(s, t))
    dkd = lt.DKDLoss(alpha=9.0, beta=72.0, temperature=2.0, warmup_epochs=20, standardize=True, check_finite=False)
    assert torch.isfinite(dkd(s, t, y, epoch=3)) and dkd.warmup_factor(3) == pytest.approx(0.15)
    mlkd = lt.MLKDLoss(temperatures=(2.0, 3.0), kd_weight=9.0, variant="reference", standardize=True,
                       check_finite=False)
    assert torch.isfinite(mlkd(s, s, t, t)) and {"kd", "cc", "bc"} <= set(mlkd.last_terms)
    ctkd = lt.CTKDLoss(t_start=1.0, t_end=20.0, init=1.0, standardize=True, check_finite=False)
    assert torch.isfinite(ctkd(s, t, grl_lambda=-0.5))
    assert ctkd.raw_temperature.shape == (1,) and (ctkd.t_start, ctkd.t_end) == (1.0, 20.0)
    schedule = lt.CTKDLambdaSchedule(loops=10, max_value=0.0, min_value=-1.0, schedule="cosine")
    assert schedule(10) == -1.0
