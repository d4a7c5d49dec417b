"""PyTorch face: ``fused_linear_kd_loss`` / ``FusedLinearKDLoss`` (KD + CE of a language-model head over
token chunks) against the materialised computation: the logits ``h @ W.T + b`` formed in full, then
the library's ``kd_loss`` and ``torch.nn.functional.cross_entropy``, differentiated by autograd."""

import pytest
import torch
import torch.nn.functional as nnf

import logit_standardization.torch as lt
from logit_standardization.torch import fused_linear as fl

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def make(*, lead=(13,), hidden=6, t_hidden=5, vocab=17, t_vocab=None, dtype=F64, bias=False, ignored=(),
         seed=0, scale=1.0):
    """Student/teacher hidden states and heads (teacher rows beyond ``vocab`` are padding), labels."""
    g = _gen(seed)
    t_vocab = t_vocab or vocab
    d = {
        "hs": torch.randn(*lead, hidden, generator=g, dtype=F64) * scale,
        "ws": torch.randn(vocab, hidden, generator=g, dtype=F64),
        "ht": torch.randn(*lead, t_hidden, generator=g, dtype=F64) * scale,
        "wt": torch.randn(t_vocab, t_hidden, generator=g, dtype=F64) * 2,
        "bs": torch.randn(vocab, generator=g, dtype=F64) if bias else None,
        "bt": torch.randn(t_vocab, generator=g, dtype=F64) if bias else None,
        "y": torch.randint(0, min(vocab, t_vocab), lead, generator=g),
    }
    flat = d["y"].reshape(-1)
    for i in ignored:
        flat[i] = -100
    return {k: (v.to(dtype) if v is not None and v.is_floating_point() else v) for k, v in d.items()}


def leaf(x):
    return None if x is None else x.detach().clone().requires_grad_()


def reference(d, *, vocab=None, teacher_logits=None, reduction="mean", ce_weight=0.0, kd_weight=1.0,
              ignore_index=-100, use_labels=True, **kw):
    """Materialised: value and the gradients of (hidden, weight, bias) by autograd."""
    hs, ws, bs = leaf(d["hs"]), leaf(d["ws"]), leaf(d["bs"])
    v = vocab or ws.shape[0]
    lead = tuple(hs.shape[:-1])
    s = nnf.linear(hs, ws[:v], None if bs is None else bs[:v]).reshape(-1, v)
    if teacher_logits is None:
        t = nnf.linear(d["ht"], d["wt"][:v], None if d["bt"] is None else d["bt"][:v]).reshape(-1, v)
    else:
        t = teacher_logits.reshape(-1, teacher_logits.shape[-1])[:, :v]
    y = d["y"].reshape(-1) if use_labels else None
    kept = torch.ones(s.shape[0], dtype=torch.bool) if y is None else y != ignore_index
    kd_rows = torch.zeros(s.shape[0], dtype=s.dtype)
    kd_rows = kd_rows.masked_scatter(kept, lt.kd_loss(s[kept], t[kept], reduction="none", **kw))
    ce_rows = torch.zeros_like(kd_rows)
    if ce_weight:
        ce_rows = nnf.cross_entropy(s, y, ignore_index=ignore_index, reduction="none")
    rows = ce_weight * ce_rows + kd_weight * kd_rows
    if reduction == "none":
        out = rows.reshape(lead)
        out.backward(torch.linspace(-1, 2, out.numel(), dtype=out.dtype).reshape(lead))
    else:
        out = rows.sum() / (kept.sum() if reduction == "mean" else 1)
        out.backward()
    return out.detach(), hs.grad, ws.grad, None if bs is None else bs.grad


def fused(d, *, teacher_logits=None, reduction="mean", use_labels=True, **kw):
    hs, ws, bs = leaf(d["hs"]), leaf(d["ws"]), leaf(d["bs"])
    teacher = {"teacher_logits": teacher_logits} if teacher_logits is not None else {
        "teacher_hidden": d["ht"], "teacher_weight": d["wt"], "teacher_bias": d["bt"]}
    out = lt.fused_linear_kd_loss(hs, ws, labels=d["y"] if use_labels else None, student_bias=bs,
                                  reduction=reduction, **teacher, **kw)
    if reduction == "none":
        out.backward(torch.linspace(-1, 2, out.numel(), dtype=out.dtype).reshape(out.shape))
    else:
        out.backward()
    return out.detach(), hs.grad, ws.grad, None if bs is None else bs.grad


def assert_same(got, want, tol):
    for g, w in zip(got, want):
        if w is None:
            assert g is None
            continue
        assert g.shape == w.shape and g.dtype == w.dtype
        err = float((g.double() - w.double()).abs().max())
        assert err <= tol * max(1.0, float(w.double().abs().max())), err


# ----------------------------------------------------------------------------- equals the materialised computation
CASES = {
    "plain": ({}, {}),
    "ignored": ({"ignored": (0, 4, 5, 12)}, {}),
    "btH": ({"lead": (3, 5), "ignored": (2, 7)}, {}),
    "bias_ce": ({"bias": True, "ignored": (1,)}, {"ce_weight": 0.7, "kd_weight": 2.5}),
    "raw": ({"bias": True}, {"standardize": False, "temperature": 4.0}),
    "ddof0_eps": ({}, {"ddof": 0, "eps": 1e-3, "temperature": 1.0}),
    "no_labels": ({}, {"use_labels": False}),
    "ce_only": ({"ignored": (3,)}, {"ce_weight": 1.0, "kd_weight": 0.0}),
    "large_logits": ({"scale": 1e3, "ignored": (2,)}, {"ce_weight": 0.1}),
}


@pytest.mark.parametrize("chunk", [1, 4, 5, 13, 64, None])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_equals_the_materialised_computation(case, chunk, reduction):
    data_kw, loss_kw = CASES[case]
    d = make(**data_kw)
    want = reference(d, reduction=reduction, **loss_kw)
    got = fused(d, chunk_size=chunk, reduction=reduction, **loss_kw)
    assert_same(got, want, 1e-10)


@pytest.mark.parametrize("chunk", [1, 7, None])
def test_padded_teacher_vocabulary(chunk):
    # the teacher's head has 4 padding rows (as 152064 vs 151936), the student's 1
    d = make(vocab=18, t_vocab=21, lead=(2, 6), ignored=(3,))
    want = reference(d, vocab=17, ce_weight=0.3)
    got = fused(d, vocab_size=17, ce_weight=0.3, chunk_size=chunk)
    assert_same(got, want, 1e-10)
    assert float(got[2][17:].abs().max()) == 0.0  # no gradient to the padding rows


@pytest.mark.parametrize("vocab_size", [None, 15])
def test_teacher_given_as_logits(vocab_size):
    d = make(bias=True, lead=(2, 7), ignored=(0, 9))
    d["y"] = torch.where(d["y"] >= 0, d["y"] % 15, d["y"])  # within the compared vocabulary
    t = torch.randn(2, 7, 17, generator=_gen(5), dtype=F64) * 3
    t_before = t.clone()
    want = reference(d, vocab=vocab_size, teacher_logits=t, ce_weight=0.2)
    got = fused(d, vocab_size=vocab_size, teacher_logits=t, ce_weight=0.2, chunk_size=3)
    assert_same(got, want, 1e-10)
    assert torch.equal(t, t_before)  # the caller's tensor is not written


def test_only_the_student_gets_gradients():
    d = make(bias=True)
    ht, wt, bt = leaf(d["ht"]), leaf(d["wt"]), leaf(d["bt"])
    hs = leaf(d["hs"])
    lt.fused_linear_kd_loss(hs, d["ws"], ht, wt, d["y"], teacher_bias=bt, chunk_size=4).backward()
    assert hs.grad is not None and ht.grad is None and wt.grad is None and bt.grad is None


def test_incoming_gradient_scales_the_stored_gradients():
    d = make(ignored=(2,))
    hs, ws = leaf(d["hs"]), leaf(d["ws"])
    (3.0 * lt.fused_linear_kd_loss(hs, ws, d["ht"], d["wt"], d["y"], chunk_size=4)).backward()
    _, gh, gw, _ = fused(d, chunk_size=4)
    assert torch.allclose(hs.grad, 3 * gh, rtol=1e-13, atol=0) and torch.allclose(ws.grad, 3 * gw, rtol=1e-13, atol=0)


def test_float32_matches_float64():
    d = make(lead=(4, 9), vocab=300, hidden=16, t_hidden=12, ignored=(1, 30), bias=True)
    want = fused(d, ce_weight=0.5)
    got = fused({k: v.float() if v is not None and v.is_floating_point() else v for k, v in d.items()},
                ce_weight=0.5, chunk_size=5)
    for g, w in zip(got, want):
        assert g.dtype == torch.float32
        assert torch.allclose(g.double(), w, rtol=1e-4, atol=1e-5 * float(w.abs().max()))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_close_to_float32(dtype):
    d32 = make(lead=(4, 8), vocab=257, hidden=32, t_hidden=24, ignored=(3,), bias=True, dtype=torch.float32)
    half = {k: v.to(dtype) if v is not None and v.is_floating_point() else v for k, v in d32.items()}
    # the float32 computation on the very same (rounded) inputs
    want = fused({k: v.float() if v is not None and v.is_floating_point() else v for k, v in half.items()},
                 ce_weight=0.5)
    got = fused(half, ce_weight=0.5, chunk_size=6)
    assert got[0].dtype == torch.float32  # the loss in the compute dtype, gradients in the inputs' dtype
    assert [g.dtype for g in got[1:]] == [dtype] * 3
    # the logits are formed in the inputs' precision (8 bits of mantissa for bfloat16): a bf16 tolerance
    tol = 3e-2 if dtype == torch.bfloat16 else 4e-3
    assert abs(float(got[0]) - float(want[0])) <= tol * abs(float(want[0]))
    for g, w in zip(got[1:], want[1:]):
        err = float((g.float() - w).norm() / w.norm())
        assert err <= tol, err


def test_all_ignored_batch_gives_zero_and_zero_gradients():
    d = make(ignored=range(13), bias=True)
    for reduction in ("mean", "sum", "none"):
        out, gh, gw, gb = fused(d, ce_weight=0.5, reduction=reduction)
        assert torch.all(out == 0) and not torch.isnan(out).any()
        for g in (gh, gw, gb):
            assert torch.all(g == 0)


def test_constant_row_and_huge_logits_stay_finite():
    d = make(bias=True)
    d["hs"][2] = 0.0  # a constant row of logits (the bias alone... made constant below)
    d["bs"] = torch.zeros_like(d["bs"])
    d["hs"][5] *= 1e150
    want = reference(d, ce_weight=0.0)
    got = fused(d, chunk_size=3)
    assert all(torch.isfinite(g).all() for g in got[1:3])
    assert_same(got, want, 1e-10)


def test_module_form_and_last_terms():
    d = make(lead=(2, 5), ignored=(1,), bias=True)
    loss_fn = lt.FusedLinearKDLoss(temperature=3.0, ce_weight=0.25, kd_weight=4.0, chunk_size=3)
    assert "chunk_size=3" in repr(loss_fn)
    hs = leaf(d["hs"])
    loss = loss_fn(hs, d["ws"], d["ht"], d["wt"], d["y"], student_bias=d["bs"], teacher_bias=d["bt"])
    want = reference(d, temperature=3.0, ce_weight=0.25, kd_weight=4.0)
    assert torch.allclose(loss.detach(), want[0], rtol=1e-12)
    assert torch.allclose(loss_fn.last_terms["ce"] + loss_fn.last_terms["kd"], loss.detach(), rtol=1e-12)
    assert not loss_fn.last_terms["ce"].requires_grad
    loss.backward()
    assert torch.allclose(hs.grad, want[1], rtol=1e-10, atol=1e-12)


def test_default_chunk_size_is_bounded():
    assert fl._default_chunk_size(2048, 1024, 32000) == 64
    assert fl._default_chunk_size(8192, 4096, 128256) == 256
    assert fl._default_chunk_size(10, 8, 5) == 10  # at most the token count
    assert fl._default_chunk_size(1 << 24, 4096, 256000) * 256000 <= 1 << 26
    assert fl._default_chunk_size(1, 1, 2) == 1


def test_double_backward_is_refused():
    d = make()
    hs = leaf(d["hs"])
    loss = lt.fused_linear_kd_loss(hs, d["ws"], d["ht"], d["wt"])
    (g,) = torch.autograd.grad(loss, hs, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


# ----------------------------------------------------------------------------- errors
def _call(**over):
    d = make()
    kw = {"student_hidden": d["hs"], "student_weight": d["ws"], "teacher_hidden": d["ht"],
          "teacher_weight": d["wt"], "labels": d["y"]}
    kw.update(over)
    return lt.fused_linear_kd_loss(**kw)


@pytest.mark.parametrize("over,exc,match", [
    ({"student_hidden": torch.ones(13, 6, dtype=torch.int64)}, TypeError, "'student_hidden' must be a floating"),
    ({"student_hidden": "h"}, TypeError, "'student_hidden' must be a floating"),
    ({"student_hidden": torch.ones(6)}, ValueError, "'student_hidden' must be a 2-D or 3-D"),
    ({"student_weight": torch.ones(17, 5, dtype=F64)}, ValueError, "'student_weight' must be of shape"),
    ({"teacher_hidden": torch.ones(12, 5, dtype=F64)}, ValueError, "'teacher_hidden' must be of shape"),
    ({"teacher_weight": torch.ones(17, 4, dtype=F64)}, ValueError, "'teacher_weight' must be of shape"),
    ({"teacher_weight": torch.ones(19, 5, dtype=F64)}, ValueError, "'vocab_size' must be given"),
    ({"teacher_weight": torch.ones(19, 5, dtype=F64), "vocab_size": 18}, ValueError, "'vocab_size' must be at most"),
    ({"vocab_size": 1}, ValueError, "'vocab_size' must be an int >= 2"),
    ({"vocab_size": 2.0}, TypeError, "'vocab_size' must be an int"),
    ({"teacher_hidden": None, "teacher_weight": None}, ValueError, "'teacher_hidden' must be given"),
    ({"teacher_logits": torch.ones(13, 17, dtype=F64)}, ValueError, "'teacher_logits' must be given without"),
    ({"teacher_hidden": None, "teacher_weight": None, "teacher_logits": torch.ones(13, 16, 1, dtype=F64)},
     ValueError, "'teacher_logits' must be a 2-D"),
    ({"labels": torch.full((13,), 17)}, ValueError, r"'labels' must be token ids in \[0, 17\)"),
    ({"labels": torch.full((13,), -1)}, ValueError, "got label -1"),
    ({"labels": torch.zeros(12, dtype=torch.int64)}, ValueError, "'labels' must be of shape"),
    ({"labels": torch.zeros(13)}, TypeError, "'labels' must be an integer"),
    ({"labels": None, "ce_weight": 1.0}, ValueError, "'labels' must be token ids"),
    ({"student_bias": torch.ones(16, dtype=F64)}, ValueError, "'student_bias' must be of shape"),
    ({"temperature": 0.0}, ValueError, "'temperature' must be finite and > 0"),
    ({"ddof": 17}, ValueError, "'ddof' must be an int in"),
    ({"eps": -1.0}, ValueError, "'eps'"),
    ({"ce_weight": -1.0}, ValueError, "'ce_weight'"),
    ({"kd_weight": "1"}, TypeError, "'kd_weight'"),
    ({"standardize": 1}, TypeError, "'standardize' must be a bool"),
    ({"reduction": "batchmean"}, ValueError, "'reduction' must be one of"),
    ({"ignore_index": 1.5}, TypeError, "'ignore_index' must be an int"),
    ({"chunk_size": 0}, ValueError, "'chunk_size' must be an int >= 1"),
])
def test_bad_input_gets_the_library_error(over, exc, match):
    with pytest.raises(exc, match=match) as info:
        _call(**over)
    assert str(info.value).startswith("fused_linear_kd_loss: argument '")


def test_class_errors_name_the_class():
    with pytest.raises(ValueError, match="^FusedLinearKDLoss: argument 'chunk_size'"):
        lt.FusedLinearKDLoss(chunk_size=0)
    with pytest.raises(ValueError, match="^FusedLinearKDLoss: argument 'labels'"):
        d = make()
        lt.FusedLinearKDLoss(ce_weight=1.0)(d["hs"], d["ws"], d["ht"], d["wt"])
