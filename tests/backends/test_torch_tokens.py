"""PyTorch face: token-level logits ``(B, T, C)`` with position masks -- the fused and the plain
path against the core, per-sample temperatures over tokens, and the KDLoss/DKDLoss ``mask`` keyword."""

import numpy as np
import pytest
import torch

import logit_standardization as ls
import logit_standardization.torch as lt
from logit_standardization.torch import functional as F

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RNG = np.random.default_rng(11)
S, T = RNG.normal(size=(3, 4, 7)) * 2, RNG.normal(size=(3, 4, 7)) * 2
Y = RNG.integers(0, 7, size=(3, 4))
M = RNG.random((3, 4)) < 0.6
M[0, 0] = True


def _t(a, grad=False):
    return torch.tensor(a).requires_grad_(grad)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("name", ["kd_loss", "dkd_loss"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("masked", [False, True])
def test_values_and_gradients_match_the_rows(fused, name, reduction, masked, monkeypatch):
    monkeypatch.setattr(F, "_FUSED", fused)
    extra = (_t(Y),) if name == "dkd_loss" else ()
    mask = _t(M) if masked else None
    s = _t(S, grad=True)
    out = getattr(lt, name)(s, _t(T), *extra, reduction=reduction, mask=mask)
    want = getattr(ls, name)(S, T, *((Y,) if extra else ()), reduction=reduction, mask=M if masked else None)
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-12, atol=1e-14)
    out.sum().backward()
    # the gradient of the masked loss is that of the kept rows, zero elsewhere
    keep = M if masked else np.ones_like(M)
    rows = _t(S[keep], grad=True)
    ref = getattr(lt, name)(rows, _t(T[keep]), *((_t(Y[keep]),) if extra else ()), reduction="none")
    scale = 1.0 / keep.sum() if reduction == "mean" else 1.0
    (ref.sum() * scale).backward()
    g = s.grad.numpy()
    np.testing.assert_allclose(g[keep], rows.grad.numpy(), rtol=1e-10, atol=1e-14)
    assert np.all(g[~keep] == 0)


def test_all_false_mask_is_zero_with_zero_gradient():
    s = _t(S, grad=True)
    out = lt.kd_loss(s, _t(T), mask=torch.zeros(3, 4, dtype=torch.bool))
    out.backward()
    assert float(out.detach()) == 0.0
    assert torch.all(s.grad == 0)


@pytest.mark.parametrize("fused", [True, False])
def test_per_sample_temperature_applies_to_every_token(fused, monkeypatch):
    monkeypatch.setattr(F, "_FUSED", fused)
    tau = torch.tensor([1.5, 2.0, 4.0], dtype=torch.float64, requires_grad=True)
    out = lt.kd_loss(_t(S), _t(T), temperature=tau, mask=_t(M), reduction="sum")
    taus = tau.detach().tolist()
    want = sum(ls.kd_loss(S[i], T[i], temperature=taus[i], mask=M[i], reduction="sum") for i in range(3))
    assert float(out.detach()) == pytest.approx(want, rel=1e-12)
    out.backward()
    assert tau.grad.shape == (3,) and torch.all(torch.isfinite(tau.grad))


def test_kd_module_mask_and_cross_entropy():
    loss_fn = lt.KDLoss(kd_weight=2.0, ce_weight=0.5)
    out = loss_fn(_t(S), _t(T), _t(Y), mask=_t(M))
    s, y = torch.tensor(S[M]), torch.tensor(Y[M])
    ce = torch.nn.functional.cross_entropy(s, y)
    want = 0.5 * float(ce) + 2.0 * ls.kd_loss(S, T, mask=M)
    assert float(out) == pytest.approx(want, rel=1e-12)
    assert float(loss_fn.last_terms["ce"]) == pytest.approx(0.5 * float(ce), rel=1e-12)


def test_dkd_module_mask_and_warmup():
    loss_fn = lt.DKDLoss(ce_weight=1.0, reduction="none")
    out = loss_fn(_t(S), _t(T), _t(Y), mask=_t(M), epoch=10)
    assert out.shape == (3, 4) and torch.all(out[~torch.tensor(M)] == 0)
    want = 0.5 * ls.dkd_loss(S, T, Y, mask=M, reduction="none")
    np.testing.assert_allclose(loss_fn.last_terms["kd"].numpy(), want, rtol=1e-12)


def test_modules_refuse_a_bad_mask():
    with pytest.raises(ValueError, match=r"kd_loss: argument 'mask' must be of the leading shape"):
        lt.KDLoss()(_t(S), _t(T), mask=_t(M[:2]))
    with pytest.raises(TypeError, match=r"KDLoss: argument 'mask' must be a boolean array"):
        lt.KDLoss(ce_weight=1.0, kd_weight=0.0)._token_cross_entropy(_t(S), _t(Y), "mean", _t(M.astype(int)))
