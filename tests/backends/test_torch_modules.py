"""PyTorch backend: the nn.Module losses, CTKD's learnable temperature, gradient reversal, torch.compile."""

import io
import math

import numpy as np
import pytest
import torch

import logit_standardization as ls
import logit_standardization.torch as lt


pytestmark = pytest.mark.usefixtures("one_torch_thread")


F64 = torch.float64


def rand(*shape, seed=0, dtype=F64, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(dtype)


def test_kd_module_is_the_function():
    s, t = rand(6, 10, seed=1), rand(6, 10, seed=2)
    for kw in ({}, {"temperature": 4.0, "standardize": False}, {"ddof": 0, "eps": 0.0, "reduction": "none"}):
        got = lt.KDLoss(**kw)(s, t)
        assert torch.equal(got, lt.kd_loss(s, t, **kw))
        want = ls.kd_loss(s.numpy(), t.numpy(), **kw)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)


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


@pytest.mark.parametrize("variant", ["reference", "corrected"])
def test_mlkd_module_sum_and_terms(variant):
    views = [rand(8, 10, seed=10 + i) for i in range(4)]
    module = lt.MLKDLoss(variant=variant)
    loss = module(*views)
    want = ls.mlkd_terms(*[v.numpy() for v in views], variant=variant)
    assert set(module.last_terms) == {"kd", "cc", "bc"}
    for k, v in module.last_terms.items():
        assert not v.requires_grad
        assert float(v) == pytest.approx(want[k], rel=1e-10)
    assert float(loss) == pytest.approx(sum(want.values()), rel=1e-10)
    assert float(lt.mlkd_loss(*views, variant=variant)) == pytest.approx(float(loss), rel=1e-14)


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
