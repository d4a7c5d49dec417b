"""``logit_standardization.liger``: the standardized KD loss in Liger-Kernel's chunked distillation form."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("liger_kernel")

from logit_standardization.liger import LigerFusedLinearStandardizedKDLoss  # noqa: E402
from logit_standardization.torch import fused_linear_kd_loss  # noqa: E402


def _inputs(n=23, h=8, ht=12, v=40, vt=40, seed=0, bias=False):
    g = torch.Generator().manual_seed(seed)
    d = torch.float64
    sh = torch.randn(n, h, generator=g, dtype=d, requires_grad=True)
    sw = torch.randn(v, h, generator=g, dtype=d, requires_grad=True)
    th, tw = torch.randn(n, ht, generator=g, dtype=d) * 2, torch.randn(vt, ht, generator=g, dtype=d)
    y = torch.randint(0, min(v, vt), (n,), generator=g)
    y[::4] = -100
    sb = torch.randn(v, generator=g, dtype=d, requires_grad=True) if bias else None
    tb = torch.randn(vt, generator=g, dtype=d) if bias else None
    return sh, sw, th, tw, y, sb, tb


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, [t for t in tensors if t is not None])


@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("chunk_size", [1, 5, 7, 64])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("hard", [0.0, 0.3])
def test_equals_the_library_fused_loss(standardize, chunk_size, bias, hard):
    sh, sw, th, tw, y, sb, tb = _inputs(bias=bias)
    liger = LigerFusedLinearStandardizedKDLoss(weight_hard_loss=hard, weight_soft_loss=0.7, temperature=3.0,
                                               standardize=standardize, compiled=False, chunk_size=chunk_size)
    loss = liger(sh, sw, th, tw, y, sb, tb)
    ref = fused_linear_kd_loss(sh, sw, th, tw, y, student_bias=sb, teacher_bias=tb, temperature=3.0,
                               standardize=standardize, ce_weight=hard, kd_weight=0.7)
    # Liger accumulates the value in float32, and its cross-entropy term runs in float32; the KD
    # term's gradients keep the inputs' float64
    assert torch.isclose(loss.double(), ref, rtol=1e-6, atol=0)
    for a, b in zip(_grads(loss, sh, sw, sb), _grads(ref, sh, sw, sb)):
        if hard:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max()))
        else:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_padded_teacher_vocabulary_is_cut_not_zero_padded():
    sh, sw, th, tw, y, _, _ = _inputs(v=40, vt=45)
    loss = LigerFusedLinearStandardizedKDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, compiled=False,
                                              chunk_size=6)(sh, sw, th, tw, y)
    ref = fused_linear_kd_loss(sh, sw, th, tw, y, vocab_size=40)
    assert torch.isclose(loss.double(), ref, rtol=1e-6, atol=0)
    torch.testing.assert_close(_grads(loss, sh, sw), _grads(ref, sh, sw), rtol=1e-10, atol=1e-12)
    # an explicit vocab_size smaller than both heads
    loss = LigerFusedLinearStandardizedKDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, vocab_size=33,
                                              compiled=False)(sh, sw, th, tw, y.clamp(max=32))
    ref = fused_linear_kd_loss(sh, sw, th, tw, y.clamp(max=32), vocab_size=33)
    assert torch.isclose(loss.double(), ref, rtol=1e-6, atol=0)


def test_token_dimensions_soft_hard_terms_and_all_ignored():
    sh, sw, th, tw, y, _, _ = _inputs(n=24)
    fn = LigerFusedLinearStandardizedKDLoss(weight_hard_loss=0.25, weight_soft_loss=2.0, compiled=False,
                                            chunk_size=5, return_soft_hard_loss=True)
    h3 = sh.detach().reshape(2, 12, 8).requires_grad_()
    loss, soft, hard = fn(h3, sw, th.reshape(2, 12, 12), tw, y.reshape(2, 12))
    kd = fused_linear_kd_loss(sh, sw, th, tw, y)
    ce = fused_linear_kd_loss(sh, sw, th, tw, y, ce_weight=1.0, kd_weight=0.0)
    assert torch.isclose(soft.double(), kd, rtol=1e-6) and torch.isclose(hard.double(), ce, rtol=1e-6)
    assert torch.isclose(loss, 2.0 * soft + 0.25 * hard, rtol=1e-6)
    loss.backward()
    assert h3.grad.shape == (2, 12, 8) and torch.isfinite(h3.grad).all()
    # every token ignored (prompt masking, gradient accumulation): 0, zero gradients, no NaN
    sh.grad = sw.grad = None
    loss = LigerFusedLinearStandardizedKDLoss(compiled=False)(sh, sw, th, tw, torch.full_like(y, -100))
    loss.backward()
    assert float(loss.detach()) == 0.0 and not sh.grad.any() and not sw.grad.any()


def test_bad_arguments_get_the_library_errors():
    with pytest.raises(ValueError, match="temperature"):
        LigerFusedLinearStandardizedKDLoss(temperature=0.0)
    with pytest.raises(ValueError, match="weight_soft_loss"):
        LigerFusedLinearStandardizedKDLoss(weight_soft_loss=-1.0)
    with pytest.raises(TypeError, match="chunk_size"):
        LigerFusedLinearStandardizedKDLoss(chunk_size=2.5)
    sh, sw, th, tw, y, _, _ = _inputs()
    with pytest.raises(ValueError, match="vocab_size=41 exceeds"):
        LigerFusedLinearStandardizedKDLoss(vocab_size=41, compiled=False)(sh, sw, th, tw, y)
    with pytest.raises(ValueError, match="token dimensions"):
        LigerFusedLinearStandardizedKDLoss(compiled=False)(sh, sw, th[:-1], tw, y)
