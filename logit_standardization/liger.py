"""The standardized KD loss in Liger-Kernel's chunked distillation form.

`Liger-Kernel <https://github.com/linkedin/Liger-Kernel>`_'s chunked distillation losses
(``LigerFusedLinearJSDLoss`` and the others built on ``LigerFusedLinearDistillationBase``)
take the final hidden states and the language-model heads of a student and a teacher, process
the tokens in chunks with the head matmul fused, and compute the gradient in the forward pass;
TRL's GKD trainer and other Liger users plug such a loss in. :class:`LigerFusedLinearStandardizedKDLoss`
is this library's KD loss (logit standardization on by default) in that form: the same call,
``loss(student_input, student_weight, teacher_input, teacher_weight, true_labels,
student_bias=None, teacher_bias=None)``, and Liger's weights and options, with the distillation
term computed per chunk by :func:`logit_standardization.torch.kd_loss`.

It returns ``weight_hard_loss * CE + weight_soft_loss * tau^2 KL(softmax(Z(t)/tau) || softmax(Z(s)/tau))``
averaged over the tokens whose label is not ``ignore_index``: the value of
:func:`logit_standardization.torch.fused_linear_kd_loss` with ``ce_weight=weight_hard_loss`` and
``kd_weight=weight_soft_loss`` (the tests check values and gradients against it). Two
differences from Liger's own losses, both for standardization's sake:

- the temperature divides the Z-scores (the paper's ``Z(x) / tau``), not the raw logits; Liger's
  base class is called with temperature 1 and the loss applies ``tau`` itself;
- when the heads differ in size (padded vocabularies), both sides are cut to the first
  ``vocab_size`` entries (default: the smaller head) instead of padding the student's logits
  with zeros, which would shift every Z-score. The cross-entropy term is Liger's: over the
  student's whole head.

Needs ``liger-kernel`` (which needs Triton; the chunked losses run on the CPU too, with
``compiled=False``). Importing this module without it raises an ImportError that says so.
"""

from __future__ import annotations

from typing import Any

try:
    import torch
    from liger_kernel.chunked_loss.fused_linear_distillation import LigerFusedLinearDistillationBase
except ImportError as exc:  # pragma: no cover - exercised only without liger-kernel
    raise ImportError("logit_standardization.liger needs liger-kernel: pip install liger-kernel") from exc

from . import _checks
from .torch.functional import kd_loss

__all__ = ["LigerFusedLinearStandardizedKDFunction", "LigerFusedLinearStandardizedKDLoss"]

_FN = "LigerFusedLinearStandardizedKDLoss"


class LigerFusedLinearStandardizedKDFunction(LigerFusedLinearDistillationBase):
    """Liger's chunked distillation ``autograd.Function`` with the standardized KD term.

    ``apply(student_input, student_weight, teacher_input, teacher_weight, true_labels,
    student_bias, teacher_bias, weight_hard_loss, weight_soft_loss, ignore_index, temperature,
    standardize, ddof, eps, vocab_size, compiled, chunk_size, return_soft_hard_loss)``; use
    :class:`LigerFusedLinearStandardizedKDLoss`, which checks its arguments.
    """

    @staticmethod
    def distillation_loss_fn(student_logits, teacher_logits, target=None, ignore_index=-100, beta=None,
                             kd_temperature=2.0, standardize=True, ddof=1, eps=1e-7, vocab_size=None):
        """Sum over the chunk's kept tokens of the KD loss of the first ``vocab_size`` logits."""
        s, t = student_logits[..., :vocab_size], teacher_logits[..., :vocab_size]
        mask = None if target is None else target != ignore_index
        return kd_loss(s, t, temperature=kd_temperature, standardize=standardize, ddof=ddof, eps=eps,
                       reduction="sum", mask=mask, check_finite=False)

    @classmethod
    def forward(cls, ctx, student_input, student_weight, teacher_input, teacher_weight, true_labels,
                student_bias=None, teacher_bias=None, weight_hard_loss=0.5, weight_soft_loss=0.5,
                ignore_index=-100, temperature=2.0, standardize=True, ddof=1, eps=1e-7, vocab_size=None,
                compiled=True, chunk_size=1024, return_soft_hard_loss=False):
        return super().forward(
            cls=cls, ctx=ctx, student_input=student_input, student_weight=student_weight,
            teacher_input=teacher_input, teacher_weight=teacher_weight, target=true_labels,
            student_bias=student_bias, teacher_bias=teacher_bias, chunk_size=chunk_size,
            weight_hard_loss=weight_hard_loss, weight_soft_loss=weight_soft_loss, ignore_index=ignore_index,
            temperature=1.0, compiled=compiled, return_soft_hard_loss=return_soft_hard_loss,
            kd_temperature=temperature, standardize=standardize, ddof=ddof, eps=eps, vocab_size=vocab_size)

    @staticmethod
    def backward(ctx, grad_output, *args):
        grads = LigerFusedLinearDistillationBase.backward(ctx, grad_output, *args)[:6]
        return (*grads, *([None] * 12))  # teacher_bias and the eleven options


class LigerFusedLinearStandardizedKDLoss(torch.nn.Module):
    """Standardized KD in the form of Liger's ``LigerFusedLinear*Loss`` modules.

    Args:
        weight_hard_loss: weight of the cross-entropy with the labels (Liger's name; >= 0).
        weight_soft_loss: weight of the KD term (>= 0).
        ignore_index: label of tokens that do not count.
        temperature, standardize, ddof, eps: as for :func:`logit_standardization.torch.kd_loss`
            (the temperature divides the Z-scores).
        vocab_size: compare the first ``vocab_size`` entries of both heads (default: the smaller
            head's size).
        compiled: ``torch.compile`` the chunk step, as Liger does (needs a working compiler).
        chunk_size: tokens per chunk (Liger's chunking: ``max(1, N // chunk_size)`` chunks).
        return_soft_hard_loss: also return the KD and CE terms (unweighted means).

    The value is accumulated in float32 by Liger's base class (the gradients in the weights'
    dtype).

    ``forward(student_input, student_weight, teacher_input, teacher_weight, true_labels,
    student_bias=None, teacher_bias=None)`` takes ``(N, H)`` hidden states (``(B, T, H)`` are
    flattened), ``(V, H)`` head weights and ``(N,)`` labels.

    Example:
        >>> import torch
        >>> from logit_standardization.liger import LigerFusedLinearStandardizedKDLoss
        >>> from logit_standardization.torch import fused_linear_kd_loss
        >>> g = torch.Generator().manual_seed(0)
        >>> h = torch.randn(12, 8, generator=g, dtype=torch.float64)
        >>> w = torch.randn(30, 8, generator=g, dtype=torch.float64)
        >>> ht, wt = torch.randn(12, 16, generator=g, dtype=torch.float64), torch.randn(30, 16, generator=g, dtype=torch.float64)
        >>> y = torch.randint(0, 30, (12,), generator=g)
        >>> loss = LigerFusedLinearStandardizedKDLoss(compiled=False, chunk_size=4)(h, w, ht, wt, y)
        >>> ref = fused_linear_kd_loss(h, w, ht, wt, y, ce_weight=0.5, kd_weight=0.5)
        >>> loss.dtype, bool(torch.isclose(loss.double(), ref, rtol=1e-6))   # Liger sums the value in float32
        (torch.float32, True)
    """

    def __init__(self, weight_hard_loss: float = 0.5, weight_soft_loss: float = 0.5, ignore_index: int = -100,
                 temperature: float = 2.0, standardize: bool = True, ddof: int = 1, eps: float = 1e-7,
                 vocab_size: int | None = None, compiled: bool = True, chunk_size: int = 1024,
                 return_soft_hard_loss: bool = False) -> None:
        super().__init__()
        h = _checks.check_hyper(_FN, weight_hard_loss=weight_hard_loss, weight_soft_loss=weight_soft_loss,
                                temperature=temperature, standardize=standardize, eps=eps)
        self.weight_hard_loss, self.weight_soft_loss = h["weight_hard_loss"], h["weight_soft_loss"]
        self.temperature, self.standardize, self.eps = h["temperature"], h["standardize"], h["eps"]
        self.ddof = _checks.check_ddof(_FN, ddof)
        self.ignore_index = _checks.check_int(_FN, "ignore_index", ignore_index)
        self.vocab_size = None if vocab_size is None else _checks.check_int(_FN, "vocab_size", vocab_size, minimum=2)
        self.chunk_size = _checks.check_int(_FN, "chunk_size", chunk_size, minimum=1)
        self.compiled = bool(compiled)
        self.return_soft_hard_loss = bool(return_soft_hard_loss)

    def forward(self, student_input: torch.Tensor, student_weight: torch.Tensor, teacher_input: torch.Tensor,
                teacher_weight: torch.Tensor, true_labels: torch.Tensor, student_bias: torch.Tensor | None = None,
                teacher_bias: torch.Tensor | None = None) -> Any:
        vocab = min(student_weight.shape[0], teacher_weight.shape[0])
        if self.vocab_size is not None:
            if self.vocab_size > vocab:
                raise ValueError(f"{_FN}: vocab_size={self.vocab_size} exceeds a head's rows "
                                 f"(student {student_weight.shape[0]}, teacher {teacher_weight.shape[0]})")
            vocab = self.vocab_size
        _checks.check_ddof(_FN, self.ddof, vocab)
        if student_input.shape[:-1] != teacher_input.shape[:-1] or student_input.shape[:-1] != true_labels.shape:
            raise ValueError(f"{_FN}: student_input {tuple(student_input.shape)}, teacher_input "
                             f"{tuple(teacher_input.shape)} and true_labels {tuple(true_labels.shape)} must agree "
                             "in their token dimensions")
        return LigerFusedLinearStandardizedKDFunction.apply(
            student_input.reshape(-1, student_input.shape[-1]), student_weight,
            teacher_input.reshape(-1, teacher_input.shape[-1]), teacher_weight, true_labels.reshape(-1),
            student_bias, teacher_bias, self.weight_hard_loss, self.weight_soft_loss, self.ignore_index,
            self.temperature, self.standardize, self.ddof, self.eps, vocab, self.compiled, self.chunk_size,
            self.return_soft_hard_loss)
