"""DistillationTrainer: a transformers.Trainer whose loss is the fused KD + LS loss of two causal LMs."""

from __future__ import annotations

import copy
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch.nn.functional as nnf  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, TrainingArguments  # noqa: E402

from logit_standardization.torch import kd_loss  # noqa: E402
from logit_standardization.transformers import DistillationTrainer  # noqa: E402

VOCAB, LENGTH, PAD = 101, 12, 0
TEMPERATURE, CE_WEIGHT, KD_WEIGHT = 2.0, 0.5, 1.0


def gpt2(layers: int, width: int) -> GPT2LMHeadModel:
    cfg = GPT2Config(n_layer=layers, n_embd=width, n_head=2, vocab_size=VOCAB, n_positions=32,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=1)
    return GPT2LMHeadModel(cfg)


def llama(layers: int, width: int) -> LlamaForCausalLM:
    cfg = LlamaConfig(num_hidden_layers=layers, hidden_size=width, intermediate_size=2 * width,
                      num_attention_heads=2, num_key_value_heads=1, vocab_size=VOCAB, max_position_embeddings=32,
                      bos_token_id=1, eos_token_id=1, pad_token_id=PAD)
    return LlamaForCausalLM(cfg)


class TokenBatches(torch.utils.data.Dataset):
    """Random sequences of LENGTH tokens: the last 3 are padding (mask 0, label -100) and 2 prompt
    tokens at a random place have label -100, so every example keeps the same number of tokens."""

    def __init__(self, n: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            ids = torch.randint(2, VOCAB, (LENGTH,), generator=gen)
            mask = torch.ones(LENGTH, dtype=torch.long)
            ids[-3:], mask[-3:] = PAD, 0
            labels = ids.clone()
            labels[-3:] = -100
            start = int(torch.randint(1, LENGTH - 5, (1,), generator=gen))
            labels[start:start + 2] = -100
            self.items.append({"input_ids": ids, "attention_mask": mask, "labels": labels})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def collate(items):
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def training_args(tmp_path, **overrides):
    kwargs = dict(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                  report_to=[], use_cpu=True, logging_steps=1, save_strategy="no", learning_rate=1e-2,
                  disable_tqdm=True, seed=0)
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def make_trainer(tmp_path, student, teacher, dataset=None, **overrides):
    return DistillationTrainer(model=student, args=training_args(tmp_path, **overrides), train_dataset=dataset,
                               data_collator=collate, teacher_model=teacher, temperature=TEMPERATURE,
                               ce_weight=CE_WEIGHT, kd_weight=KD_WEIGHT)


def materialised(student, teacher, batch):
    """The loss with full logits: CE + kd_loss on the kept shifted tokens."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    s = student(**inputs).logits[:, :-1].reshape(-1, VOCAB)
    with torch.no_grad():
        t = teacher(**inputs).logits[:, :-1].reshape(-1, VOCAB)
    y = batch["labels"][:, 1:].reshape(-1)
    kept = y != -100
    ce = nnf.cross_entropy(s, y, ignore_index=-100)
    return CE_WEIGHT * ce + KD_WEIGHT * kd_loss(s[kept], t[kept], temperature=TEMPERATURE)


@pytest.mark.parametrize("family", [gpt2, llama], ids=["gpt2", "llama"])
def test_loss_and_gradient_equal_the_materialised_computation(tmp_path, family):
    torch.manual_seed(0)
    student, teacher = family(1, 16), family(2, 32)
    trainer = make_trainer(tmp_path, student, teacher)
    batch = collate([TokenBatches(3)[i] for i in range(3)])
    loss = trainer.compute_loss(student, batch)
    loss.backward()
    fused_grads = [p.grad.clone() for p in student.parameters()]
    student.zero_grad()
    ref = materialised(student, teacher, batch)
    ref.backward()
    assert torch.allclose(loss, ref, rtol=1e-5, atol=1e-6), (loss.item(), ref.item())
    for g, p in zip(fused_grads, student.parameters()):
        assert torch.allclose(g, p.grad, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in teacher.parameters())


def test_training_runs_and_the_first_logged_loss_is_the_materialised_one(tmp_path):
    torch.manual_seed(0)
    student, teacher = gpt2(2, 32), gpt2(3, 48)
    initial, teacher_before = copy.deepcopy(student), copy.deepcopy(teacher.state_dict())
    # 4 examples: one optimizer step (2 micro-batches of 2) per epoch. Every example keeps the same
    # number of tokens, so the step's loss (the mean of the two micro-batch means) is the mean over
    # the 4 examples, whatever order the sampler draws them in.
    dataset = TokenBatches(4)
    trainer = make_trainer(tmp_path, student, teacher, dataset)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    # the weights changed, the teacher's did not; the teacher stayed frozen and in eval mode
    assert any(not torch.equal(a, b) for a, b in zip(initial.parameters(), student.parameters()))
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    with torch.no_grad():
        ref = torch.stack([materialised(initial, teacher, collate([dataset[i]])) for i in range(4)]).mean().item()
    assert losses[0] == pytest.approx(ref, rel=1e-5, abs=1e-6)


def test_all_padding_batch_gives_zero(tmp_path):
    torch.manual_seed(0)
    student, teacher = gpt2(1, 16), gpt2(1, 24)
    trainer = make_trainer(tmp_path, student, teacher)
    batch = collate([TokenBatches(2)[i] for i in range(2)])
    batch["labels"] = torch.full_like(batch["labels"], -100)
    loss = trainer.compute_loss(student, batch)
    assert loss.item() == 0.0
    loss.backward()
    assert all(torch.count_nonzero(p.grad) == 0 for p in student.parameters() if p.grad is not None)


def test_teacher_is_frozen_in_eval_mode_and_the_hyperparameters_are_checked(tmp_path):
    student, teacher = gpt2(1, 16), gpt2(1, 24)
    teacher.train()
    trainer = make_trainer(tmp_path, student, teacher)
    assert trainer.teacher_model is teacher and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ValueError, match="DistillationTrainer: argument 'temperature'"):
        DistillationTrainer(model=student, args=training_args(tmp_path), teacher_model=teacher, temperature=0.0)
    with pytest.raises(TypeError, match="DistillationTrainer: argument 'standardize'"):
        DistillationTrainer(model=student, args=training_args(tmp_path), teacher_model=teacher, standardize=1)
    with pytest.raises(TypeError, match="DistillationTrainer: argument 'teacher_model'"):
        DistillationTrainer(model=student, args=training_args(tmp_path), teacher_model=None)


def test_evaluate_reports_the_distillation_loss(tmp_path):
    torch.manual_seed(0)
    student, teacher = gpt2(1, 16), gpt2(1, 24)
    dataset = TokenBatches(4)
    trainer = DistillationTrainer(model=student, args=training_args(tmp_path, per_device_eval_batch_size=4),
                                  eval_dataset=dataset, data_collator=collate, teacher_model=teacher,
                                  temperature=TEMPERATURE, ce_weight=CE_WEIGHT, kd_weight=KD_WEIGHT)
    metrics = trainer.evaluate()
    with torch.no_grad():
        ref = materialised(student, teacher, collate([dataset[i] for i in range(4)])).item()
    assert metrics["eval_loss"] == pytest.approx(ref, rel=1e-5)


def test_without_transformers_the_import_names_the_extra():
    import subprocess
    import sys

    code = ("import sys; sys.modules['transformers'] = None\n"
            "try:\n    import logit_standardization.transformers\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "logit-standardization[llm]" in out.stdout, out.stdout + out.stderr


def test_gradient_accumulation_gives_the_update_of_the_whole_batch(tmp_path):
    torch.manual_seed(0)
    student, teacher = gpt2(1, 16), gpt2(1, 24)
    dataset = TokenBatches(4)  # equal kept-token counts: the mean of micro-batch means is the batch mean
    results = []
    for batch, accumulate in ((2, 2), (4, 1)):
        model = copy.deepcopy(student)
        trainer = make_trainer(tmp_path / f"b{batch}", model, teacher, dataset, max_steps=1,
                               per_device_train_batch_size=batch, gradient_accumulation_steps=accumulate,
                               optim="sgd", max_grad_norm=0.0)  # an update proportional to the gradient
        trainer.train()
        results.append(model)
    for a, b in zip(*(m.parameters() for m in results)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(student.parameters(), results[0].parameters()))


class PlainForwardGPT2(GPT2LMHeadModel):
    """A causal LM whose forward cannot keep only the last logits (as in older transformers)."""

    def forward(self, input_ids=None, attention_mask=None, labels=None):
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


def test_a_model_without_logits_to_keep_runs_its_base_model(tmp_path):
    torch.manual_seed(0)
    student = PlainForwardGPT2(gpt2(1, 16).config)
    teacher = gpt2(2, 24)
    trainer = make_trainer(tmp_path, student, teacher)
    batch = collate([TokenBatches(2)[i] for i in range(2)])
    loss = trainer.compute_loss(student, batch)
    with torch.no_grad():
        ref = materialised(student, teacher, batch)
    assert torch.allclose(loss, ref, rtol=1e-5, atol=1e-6)


def test_a_wrapped_model_runs_through_its_wrapper(tmp_path):
    torch.manual_seed(0)
    for student in (gpt2(1, 16), PlainForwardGPT2(gpt2(1, 16).config)):
        teacher = gpt2(2, 24)
        trainer = make_trainer(tmp_path, student, teacher)
        wrapper = torch.nn.DataParallel(student)  # on CPU: calls the module; has .module like DDP
        calls = []
        handle = wrapper.register_forward_pre_hook(lambda *_: calls.append(1))
        batch = collate([TokenBatches(2)[i] for i in range(2)])
        loss = trainer.compute_loss(wrapper, batch)
        handle.remove()
        with torch.no_grad():
            ref = materialised(student, teacher, batch)
        assert calls and torch.allclose(loss, ref, rtol=1e-5, atol=1e-6)
