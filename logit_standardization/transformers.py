"""Hugging Face ``transformers`` integration: a ``Trainer`` that distils a causal language model.

:class:`DistillationTrainer` is a :class:`transformers.Trainer` whose loss is
``ce_weight * CE + kd_weight * KD`` with logit standardization, computed by
:func:`logit_standardization.torch.fused_linear_kd_loss` from the final hidden states and the
language-model heads of the student and the teacher: the ``(tokens, vocabulary)`` logits of
either model are never materialised. Everything else (optimizer, scheduler, gradient
accumulation, mixed precision, logging, checkpoints, distributed training) is the Trainer's.

Needs the ``llm`` extra: ``pip install "logit-standardization[llm]"``.
"""

from __future__ import annotations

import inspect
from typing import Any

try:
    import torch
    import transformers
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "logit_standardization.transformers needs PyTorch and Hugging Face transformers: "
        'pip install "logit-standardization[llm]"'
    ) from exc

from . import _checks
from .torch.fused_linear import fused_linear_kd_loss

__all__ = ["DistillationTrainer"]

_FN = "DistillationTrainer"
# arguments of the model's forward that keep only the last positions' logits (newer / older names)
_KEEP_ARGS = ("logits_to_keep", "num_logits_to_keep")


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP / DataParallel / compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def _body(model: torch.nn.Module) -> torch.nn.Module:
    """The model without its head, whose first output is the final (normed) hidden states:
    ``transformer`` for GPT-2, ``model`` for Llama-style models (``base_model_prefix``)."""
    body = getattr(model, "base_model", None)
    if not isinstance(body, torch.nn.Module) or body is model:
        raise TypeError(
            f"{_FN}: the model {type(model).__name__} has no base model (a transformers causal LM "
            "such as GPT2LMHeadModel or LlamaForCausalLM is expected)"
        )
    return body


def _head(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    head = model.get_output_embeddings()
    if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor):
        raise TypeError(f"{_FN}: the model {type(model).__name__} has no linear output layer (get_output_embeddings)")
    return head.weight, getattr(head, "bias", None)


def _first(outputs: Any) -> torch.Tensor:
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs["last_hidden_state"]


def _model_inputs(inputs: dict) -> dict:
    return {k: v for k, v in inputs.items() if k not in ("labels", "shift_labels")}


class DistillationTrainer(transformers.Trainer):
    """A :class:`transformers.Trainer` that distils ``teacher_model`` into the trained model.

    The loss of a batch is ``fused_linear_kd_loss(student_hidden[:, :-1], student_head,
    teacher_hidden[:, :-1], teacher_head, labels[:, 1:], ...)``: the next-token distributions
    of both causal LMs at every position whose (shifted) label is not ``-100``, with the
    student's cross-entropy weighted by ``ce_weight`` and the KD term (with logit
    standardization when ``standardize``) by ``kd_weight``. It is the mean over the kept tokens
    of the micro-batch (0 when there is none); the Trainer divides it by the gradient
    accumulation steps, as for any custom loss.

    The student's final hidden states are taken from its base model (``model.base_model``:
    ``transformer`` for GPT-2, ``model`` for Llama-style models) while the model itself is
    called with ``logits_to_keep=1`` where its forward accepts it, so that distributed
    wrappers see an ordinary forward and only one position's logits are formed (a model
    without that argument: its base model is called directly, or, inside a wrapper, the
    wrapped model with all its logits). The head is
    ``model.get_output_embeddings()`` (weight and bias). Models whose logits are not a plain
    linear head of the base model's output (final logit soft-capping, logit scaling) are not
    covered.

    The teacher is frozen (``requires_grad_(False)``), kept in eval mode and moved to the
    student's device; it runs under ``torch.no_grad``.

    Args:
        *args: the arguments of :class:`transformers.Trainer` (``model``, ``args``,
            ``train_dataset``, ...).
        teacher_model: the teacher, a ``transformers`` causal LM with the same tokenizer.
        temperature: KD temperature (> 0).
        standardize: Z-score the logits of both models before the softmax (logit standardization).
        kd_weight: weight of the KD term (>= 0).
        ce_weight: weight of the student's cross-entropy on the labels (>= 0).
        vocab_size: compare the first ``vocab_size`` entries of both heads (for heads padded to
            different sizes); ``None``: both heads must have the same number of rows.
        chunk_size: tokens per chunk of the fused loss (``None``: chosen from the shapes).
        **kwargs: keyword arguments of :class:`transformers.Trainer`.

    Example:
        >>> import tempfile, torch
        >>> from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments
        >>> cfg = dict(n_positions=16, vocab_size=31, n_head=2, bos_token_id=0, eos_token_id=0)
        >>> student = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, **cfg))
        >>> teacher = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, **cfg))
        >>> args = TrainingArguments(output_dir=tempfile.mkdtemp(), report_to=[], use_cpu=True)
        >>> trainer = DistillationTrainer(model=student, args=args, teacher_model=teacher, temperature=2.0)
        >>> batch = {"input_ids": torch.randint(0, 31, (2, 8))}
        >>> batch["labels"] = batch["input_ids"].clone()
        >>> bool(torch.isfinite(trainer.compute_loss(student, batch)))
        True
    """

    def __init__(
        self,
        *args: Any,
        teacher_model: torch.nn.Module | None = None,
        temperature: float = 2.0,
        standardize: bool = True,
        kd_weight: float = 1.0,
        ce_weight: float = 1.0,
        vocab_size: int | None = None,
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        hyper = _checks.check_hyper(_FN, temperature=temperature, standardize=standardize,
                                    kd_weight=kd_weight, ce_weight=ce_weight)
        if vocab_size is not None:
            hyper.update(_checks.check_hyper(_FN, vocab_size=vocab_size))
        if chunk_size is not None:
            hyper.update(_checks.check_hyper(_FN, chunk_size=chunk_size))
        if not isinstance(teacher_model, torch.nn.Module):
            _checks.fail(_FN, "teacher_model", "a torch.nn.Module (a transformers causal LM)",
                         type(teacher_model).__name__, TypeError)
        super().__init__(*args, **kwargs)
        self.temperature = hyper["temperature"]
        self.standardize = hyper["standardize"]
        self.kd_weight = hyper["kd_weight"]
        self.ce_weight = hyper["ce_weight"]
        self.vocab_size = hyper.get("vocab_size")
        self.chunk_size = hyper.get("chunk_size")
        # The loss is a per-micro-batch mean: the Trainer divides it by the accumulation steps
        # and does not pass the model a token count.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        teacher_model.requires_grad_(False)
        teacher_model.eval()
        self.teacher_model = teacher_model

    # ------------------------------------------------------------------ the two models' hidden states
    def _student_hidden(self, model: torch.nn.Module, inputs: dict) -> torch.Tensor:
        """Final hidden states of the student: captured from its base model while the model (as
        wrapped by the Trainer) runs with only the last position's logits."""
        unwrapped = _unwrap(model)
        body = _body(unwrapped)
        kwargs = _model_inputs(inputs)
        params = inspect.signature(unwrapped.forward).parameters
        keep = next((name for name in _KEEP_ARGS if name in params), None)
        if keep is None and model is unwrapped:  # the model would form all logits: run its base model only
            return _first(body(**kwargs))
        # through the wrapper (a distributed wrapper needs its own forward), all logits if it must
        captured: list[torch.Tensor] = []
        handle = body.register_forward_hook(lambda _m, _i, out: captured.append(_first(out)))
        try:
            model(**kwargs, **({} if keep is None else {keep: 1}))
        finally:
            handle.remove()
        return captured[-1]

    def _teacher_hidden(self, inputs: dict, device: torch.device) -> torch.Tensor:
        teacher = self.teacher_model
        first = next(teacher.parameters(), None)
        if first is not None and first.device != device:
            teacher.to(device)
        teacher.eval()
        with torch.no_grad():
            return _first(_body(teacher)(**_model_inputs(inputs)))

    # ------------------------------------------------------------------ the loss
    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        """``ce_weight * CE + kd_weight * KD`` (logit standardization) of the batch's shifted tokens.

        The mean over the positions whose next-token label is not ``-100`` (all positions but
        the last of each row when the batch has no ``labels``; then ``ce_weight`` must be 0).
        ``num_items_in_batch`` is accepted for the Trainer's signature and not used: the loss is
        a per-micro-batch mean. With ``return_outputs`` the model's ordinary outputs (with all
        logits, for evaluation) come back as well.
        """
        labels = inputs.get("labels")
        hidden = self._student_hidden(model, inputs)
        weight, bias = _head(_unwrap(model))
        t_hidden = self._teacher_hidden(inputs, hidden.device)
        t_weight, t_bias = _head(self.teacher_model)
        shifted = None if labels is None else labels[..., 1:].to(hidden.device)
        loss = fused_linear_kd_loss(
            hidden[..., :-1, :],
            weight,
            t_hidden[..., :-1, :],
            t_weight,
            shifted,
            temperature=self.temperature,
            standardize=self.standardize,
            ce_weight=self.ce_weight,
            kd_weight=self.kd_weight,
            vocab_size=self.vocab_size,
            student_bias=bias,
            teacher_bias=t_bias,
            chunk_size=self.chunk_size,
        )
        if return_outputs:
            with torch.no_grad():
                outputs = model(**_model_inputs(inputs))
            return loss, outputs
        return loss
