"""Offline teacher logits stored as top-k: compress_teacher_logits and topk_kd_loss."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from logit_standardization.torch import (  # noqa: E402
    TopKTeacher,
    compress_teacher_logits,
    kd_loss,
    topk_kd_loss,
    zscore,
)


def _logits(*shape, dtype=torch.float64, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype) * scale


@pytest.mark.parametrize("shape", [(7, 13), (2, 5, 13)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_compress_round_trip(shape, dtype):
    x = _logits(*shape).to(dtype)
    t = compress_teacher_logits(x, 4)
    values, indices = torch.topk(x, 4, dim=-1)
    assert t.indices.dtype == torch.int32 and torch.equal(t.indices.long(), indices)
    assert t.logits.dtype == dtype and torch.equal(t.logits, values)
    stat = torch.float64 if dtype == torch.float64 else torch.float32
    assert t.mean.dtype == stat and t.std.dtype == stat and t.mean.shape == shape[:-1]
    wide = x.to(torch.float64)
    torch.testing.assert_close(t.mean.double(), wide.mean(-1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(t.std.double(), wide.std(-1, correction=1), rtol=1e-6, atol=1e-6)
    assert t.vocab_size == shape[-1] and isinstance(t, TopKTeacher)


def test_compress_ddof_zero():
    x = _logits(4, 9)
    torch.testing.assert_close(compress_teacher_logits(x, 2, ddof=0).std, x.std(-1, correction=0))


@pytest.mark.parametrize("scale", [1e30, 1e37])
def test_huge_logits_in_float32(scale):
    x = (_logits(6, 11, scale=1.0) * scale).float()
    t = compress_teacher_logits(x, 5)
    wide = x.double()
    assert torch.isfinite(t.mean).all() and torch.isfinite(t.std).all()
    torch.testing.assert_close(t.mean.double(), wide.mean(-1), rtol=1e-5, atol=0)
    torch.testing.assert_close(t.std.double(), wide.std(-1), rtol=1e-5, atol=0)
    # the loss at k = V equals kd_loss, finite with a finite gradient
    s = (_logits(6, 11, seed=1, scale=1.0) * scale).float().requires_grad_()
    full = compress_teacher_logits(x, 11)
    loss = topk_kd_loss(s, full)
    torch.testing.assert_close(loss, kd_loss(s, x), rtol=1e-5, atol=1e-6)
    loss.backward()
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_full_k_equals_kd_loss(standardize, reduction):
    t = _logits(3, 4, 17, seed=1)
    s1 = _logits(3, 4, 17, seed=2).requires_grad_()
    s2 = s1.detach().clone().requires_grad_()
    kw = {"temperature": 3.0, "standardize": standardize, "reduction": reduction}
    got = topk_kd_loss(s1, compress_teacher_logits(t, 17), **kw)
    want = kd_loss(s2, t, **kw)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    got.sum().backward()
    want.sum().backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-9, atol=1e-12)


def test_topk_teacher_zscores_are_exact():
    """The teacher's standardized top-k logits from the stored statistics equal the Z-score's entries."""
    from logit_standardization.torch.topk import _standardized_topk

    x = _logits(5, 20, seed=3)
    t = compress_teacher_logits(x, 6)
    z = _standardized_topk(t.logits, t.mean[:, None], t.std[:, None], 1e-7, 2.0)
    torch.testing.assert_close(z, zscore(x, temperature=2.0).gather(1, t.indices.long()), rtol=1e-12, atol=1e-12)


def test_small_k_is_close_and_positive():
    t = _logits(8, 30, seed=4)
    s = _logits(8, 30, seed=5)
    full = float(kd_loss(s, t))
    approx = [float(topk_kd_loss(s, compress_teacher_logits(t, k))) for k in (1, 10, 29, 30)]
    assert all(a >= 0 for a in approx)
    assert abs(approx[-1] - full) < 1e-10
    assert abs(approx[-2] - full) < abs(approx[0] - full)


@pytest.mark.parametrize("standardize", [True, False])
def test_uniform_rest_is_exact_for_a_flat_tail(standardize):
    """rest="uniform" puts the rest at the mean of the non-top-k entries: exact when they are equal."""
    t = _logits(5, 16, seed=12)
    t[:, 4:] = t[:, 4:].mean(dim=-1, keepdim=True) - 5.0  # top-4 above a flat tail
    s = _logits(5, 16, seed=13).requires_grad_()
    s2 = s.detach().clone().requires_grad_()
    got = topk_kd_loss(s, compress_teacher_logits(t, 4), standardize=standardize)
    want = kd_loss(s2, t, standardize=standardize)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    got.backward()
    want.backward()
    torch.testing.assert_close(s.grad, s2.grad, rtol=1e-8, atol=1e-12)
    renorm = topk_kd_loss(s, compress_teacher_logits(t, 4), standardize=standardize, rest="renormalize")
    assert abs(float(renorm.detach()) - float(want.detach())) > 1e-6


def test_renormalize_is_the_kl_on_the_top_k_support():
    t = _logits(4, 12, seed=14)
    s = _logits(4, 12, seed=15)
    teacher = compress_teacher_logits(t, 3)
    z_t = zscore(t, temperature=2.0).gather(1, teacher.indices.long())
    log_p = torch.log_softmax(z_t, dim=-1)
    log_q = torch.log_softmax(zscore(s, temperature=2.0), dim=-1).gather(1, teacher.indices.long())
    want = 4.0 * (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    torch.testing.assert_close(topk_kd_loss(s, teacher, rest="renormalize"), want, rtol=1e-10, atol=1e-12)


def test_ignored_tokens_and_ce():
    t = _logits(2, 5, 11, seed=6)
    s = _logits(2, 5, 11, seed=7).requires_grad_()
    y = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(0))
    y[0, :2] = -100
    teacher = compress_teacher_logits(t, 11)
    loss = topk_kd_loss(s, teacher, y, ce_weight=0.5, kd_weight=2.0)
    keep = y != -100
    ce = torch.nn.functional.cross_entropy(s[keep], y[keep])
    want = 0.5 * ce + 2.0 * kd_loss(s[keep], t[keep])
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-12)
    loss.backward()
    assert float(s.grad[0, :2].abs().max()) == 0.0
    rows = topk_kd_loss(s, teacher, y, reduction="none")
    assert rows.shape == (2, 5) and float(rows.detach()[0, :2].abs().max()) == 0.0


def test_all_ignored_batch_is_zero():
    t = _logits(3, 9, seed=8)
    s = _logits(3, 9, seed=9).requires_grad_()
    y = torch.full((3,), -100)
    loss = topk_kd_loss(s, compress_teacher_logits(t, 4), y, ce_weight=1.0)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.isfinite(s.grad).all() and float(s.grad.abs().max()) == 0.0


def test_half_precision_student():
    t = _logits(4, 12, seed=10)
    s = _logits(4, 12, seed=11).to(torch.bfloat16).requires_grad_()
    loss = topk_kd_loss(s, compress_teacher_logits(t.to(torch.bfloat16), 12))
    assert loss.dtype == torch.float32
    loss.backward()
    assert s.grad.dtype == torch.bfloat16


# ----------------------------------------------------------------------------- errors
def test_compress_errors():
    x = _logits(3, 8)
    with pytest.raises(ValueError, match=r"^compress_teacher_logits: argument 'k' must be"):
        compress_teacher_logits(x, 0)
    with pytest.raises(ValueError, match=r"^compress_teacher_logits: argument 'k' must be at most the vocabulary"):
        compress_teacher_logits(x, 9)
    with pytest.raises(TypeError, match=r"^compress_teacher_logits: argument 'k' must be"):
        compress_teacher_logits(x, 2.5)
    with pytest.raises(TypeError, match=r"^compress_teacher_logits: argument 'logits' must be"):
        compress_teacher_logits("abc", 2)
    with pytest.raises(ValueError, match=r"^compress_teacher_logits: argument 'logits' must be"):
        compress_teacher_logits(torch.tensor([[1.0, float("nan")]]), 1)
    with pytest.raises(ValueError, match=r"^compress_teacher_logits: argument 'ddof' must be"):
        compress_teacher_logits(x, 2, ddof=8)
    with pytest.raises(ValueError, match=r"^compress_teacher_logits: argument 'eps' must be"):
        compress_teacher_logits(x, 2, eps=-1.0)


def test_loss_errors():
    t = compress_teacher_logits(_logits(3, 8), 2)
    s = _logits(3, 8, seed=1)
    with pytest.raises(TypeError, match=r"^topk_kd_loss: argument 'teacher' must be a TopKTeacher"):
        topk_kd_loss(s, _logits(3, 8))
    with pytest.raises(ValueError, match=r"^topk_kd_loss: argument 'teacher' must be"):
        topk_kd_loss(_logits(4, 8), t)
    with pytest.raises(ValueError, match=r"^topk_kd_loss: argument 'teacher' must be compressed from a vocabulary"):
        topk_kd_loss(_logits(3, 9), t)
    with pytest.raises(ValueError, match=r"^topk_kd_loss: argument 'teacher' must be indices in"):
        topk_kd_loss(s, t._replace(indices=t.indices + 7))
    with pytest.raises(ValueError, match=r"^topk_kd_loss: argument 'labels' must be token ids \(needed"):
        topk_kd_loss(s, t, ce_weight=1.0)
    with pytest.raises(ValueError, match=r"^topk_kd_loss: argument 'labels' must be token ids in"):
        topk_kd_loss(s, t, torch.tensor([0, 1, 8]))
    with pytest.raises(TypeError, match=r"^topk_kd_loss: argument 'labels' must be an integer tensor"):
        topk_kd_loss(s, t, torch.zeros(3))
    with pytest.raises(ValueError, match=r"^topk_kd_loss: argument 'temperature' must be"):
        topk_kd_loss(s, t, temperature=0.0)
    with pytest.raises(ValueError, match=r"^topk_kd_loss: argument 'reduction' must be"):
        topk_kd_loss(s, t, reduction="avg")
    with pytest.raises(ValueError, match=r"^topk_kd_loss: argument 'teacher' must be a TopKTeacher with finite std"):
        topk_kd_loss(s, t._replace(std=torch.full_like(t.std, float("inf"))))
    with pytest.raises(ValueError, match=r"^topk_kd_loss: argument 'rest' must be"):
        topk_kd_loss(s, t, rest="drop")
    with pytest.raises(TypeError, match=r"^topk_kd_loss: argument 'student_logits' must be"):
        topk_kd_loss("abc", t)
