"""Language-model distillation study: student alone, KD and KD+LS on the King James Bible, 3 seeds, on 2 CPU cores.

Run ``python benchmarks/lm_study.py`` (``make study-lm``). It

1. builds the corpus: the King James Version (1611, public domain) as shipped by the Debian
   packages ``bible-kjv`` and ``bible-kjv-text`` (the text printed by ``bible "Gen1:1-Rev22:21"``),
   verse numbers and chapter headings removed, one verse per line; every 10th chapter
   (chapters 10, 20, ... in canonical order) is the held-out validation set, the rest the
   training set. ``--corpus FILE`` takes a plain UTF-8 text instead (units: paragraphs separated
   by blank lines, or lines when there is a single paragraph; every 10th unit is held out);
2. trains a byte-level BPE tokenizer (``tokenizers``) on the training split only
   (``--vocab-size``, default 8192);
3. trains a GPT-2 teacher (``transformers.GPT2Config``, random initialisation, tied embeddings)
   once, seed 0, on next-token cross-entropy, and computes its final hidden states for every
   training window once (no gradient, stored in float16);
4. for every seed trains the smaller GPT-2 student three times with identical initialisation,
   batch order, optimizer, schedule and step count: alone, with KD and with KD+LS (KD on
   Z-scored logits). KD and KD+LS use ``logit_standardization.torch.fused_linear_kd_loss`` on the
   student's final hidden states and head weight (its logits exist one chunk of tokens at a
   time), with the stored teacher hidden states and the teacher's head weight; the student alone
   trains on the cross-entropy of its own logits (``--alone-loss ce``, the default; ``fused`` is
   the same fused call with ``kd_weight=0``, equal up to rounding);
5. evaluates every model on the validation split: perplexity ``exp(mean token cross-entropy)``
   and next-token top-1 accuracy.

Budget (defaults): windows of 128 tokens, 16 per step (2048 tokens); the teacher (4 layers,
width 256, 5.3M parameters) trains 800 steps (1.9 epochs), every student run (2 layers, width 128,
1.46M parameters) 250 steps (0.58 epoch); the fused loss runs with ``--chunk-size 1024``. With 300
teacher and 100 student steps the whole study took 16.7 minutes on one thread while another
two-process job shared the two cores; the defaults cost about 2.6 times as much (the page records
the measured time of its run).

Finished runs are stored in ``OUTPUT`` (``--output``, default ``runs/lm_study``) and reused when
the script is started again with the same settings (``--fresh`` starts over). At the end the table
is printed and written to ``OUTPUT/results.json`` and, unless ``--no-doc``, to the page
``docs/lm_study.md`` (``--doc``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(REPO))
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from fashion_mnist import _write_atomic, cpu_seconds, fmt_difference, fmt_mean_std, machine_info  # noqa: E402

METHODS = ["student", "kd", "kd_ls"]
"""The student runs per seed, in table order."""

LABELS = {"teacher": "teacher", "student": "student alone", "kd": "KD", "kd_ls": "KD+LS"}

BIBLE_RANGE = "Gen1:1-Rev22:21"
EOS = "<|endoftext|>"
VALID_EVERY = 10
"""Every 10th unit (chapter, paragraph or line) is in the validation split."""


# ------------------------------------------------------------------------------------ corpus
def parse_bible(text: str) -> list[str]:
    """The chapters of the output of ``bible``, one string each, one verse per line, without verse numbers.

    A chapter heading is a line between two empty lines (``"Genesis 1"``); a verse starts with two
    spaces and its number; other non-empty lines continue the verse above.

    Example:
        >>> out = "\\nGenesis 1\\n\\n  1 In the beginning\\nGod created.\\n  2 And the earth.\\n\\nGenesis 2\\n\\n  1 Thus.\\n"
        >>> parse_bible(out)
        ['In the beginning God created.\\nAnd the earth.', 'Thus.']
    """
    lines = text.split("\n")
    chapters: list[list[str]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        prev_empty = i == 0 or not lines[i - 1].strip()
        next_empty = i + 1 >= len(lines) or not lines[i + 1].strip()
        if not line.startswith(" ") and prev_empty and next_empty:
            chapters.append([])  # a heading
            continue
        if not chapters:
            chapters.append([])
        stripped = line.strip()
        head, _, rest = stripped.partition(" ")
        if line.startswith("  ") and head.isdigit():
            chapters[-1].append(rest.strip())
        elif chapters[-1]:
            chapters[-1][-1] += " " + stripped
        else:
            chapters[-1].append(stripped)
    return ["\n".join(v) for v in chapters if v]


def split_units(text: str) -> list[str]:
    """Units of a plain text: paragraphs (blank-line separated), or lines when there is only one paragraph.

    Example:
        >>> split_units("a b\\nc\\n\\nd e\\n"), split_units("one\\ntwo\\n")
        (['a b\\nc', 'd e'], ['one', 'two'])
    """
    paragraphs = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    if len(paragraphs) > 1:
        return paragraphs
    return [line.strip() for line in text.splitlines() if line.strip()]


def split_train_val(units: Sequence[str]) -> tuple[list[str], list[str]]:
    """Every :data:`VALID_EVERY`-th unit (1-based: the 10th, 20th, ...) to validation, the rest to training.

    Example:
        >>> tr, va = split_train_val([str(i) for i in range(1, 21)])
        >>> va, len(tr)
        (['10', '20'], 18)
    """
    train = [u for i, u in enumerate(units) if (i + 1) % VALID_EVERY]
    val = [u for i, u in enumerate(units) if (i + 1) % VALID_EVERY == 0]
    return train, val


def load_corpus(path: Path | None) -> dict[str, Any]:
    """``{"name", "source", "units", "train", "val", "sha256"}`` of the Bible or of ``path``."""
    if path is None:
        exe = shutil.which("bible")
        if exe is None:
            raise SystemExit("lm_study: the program `bible` was not found; install the Debian packages bible-kjv and "
                             "bible-kjv-text (apt-get install bible-kjv bible-kjv-text), or pass --corpus FILE")
        proc = subprocess.run([exe, BIBLE_RANGE], capture_output=True, text=True, encoding="utf-8")
        if proc.returncode != 0 or not proc.stdout.strip():
            raise SystemExit(f"lm_study: `bible {BIBLE_RANGE}` failed (exit {proc.returncode}): {proc.stderr.strip()}; "
                             "are the Debian packages bible-kjv and bible-kjv-text installed?")
        units = parse_bible(proc.stdout)
        name, source, kind = "kjv", f"bible {BIBLE_RANGE}", "chapters"
    else:
        units = split_units(Path(path).read_text(encoding="utf-8"))
        name, source, kind = Path(path).name, str(Path(path).resolve()), "units"
    train, val = split_train_val(units)
    if not train or not val:
        raise SystemExit(f"lm_study: the corpus has {len(units)} {kind}; at least {VALID_EVERY} are needed "
                         f"(every {VALID_EVERY}th is held out for validation)")
    digest = hashlib.sha256("\n\n".join(units).encode("utf-8")).hexdigest()
    return {"name": name, "source": source, "kind": kind, "units": len(units), "train": train, "val": val,
            "sha256": digest}


# --------------------------------------------------------------------------------- tokenizer
def train_tokenizer(texts: Sequence[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on ``texts`` (with the special token :data:`EOS`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    return tok


def encode(tok, units: Sequence[str]):
    """The token stream of ``units``, each followed by :data:`EOS` (int64 tensor)."""
    import torch

    eos = tok.token_to_id(EOS)
    ids: list[int] = []
    for enc in tok.encode_batch(list(units)):
        ids.extend(enc.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def windows(stream, context: int):
    """Non-overlapping windows: inputs ``(N, context)`` and their next tokens ``(N, context)``."""
    n = (stream.numel() - 1) // context
    if n < 1:
        raise SystemExit(f"lm_study: {stream.numel()} tokens are fewer than one window of --context {context} + 1")
    return stream[: n * context].view(n, context), stream[1: n * context + 1].view(n, context)


# ------------------------------------------------------------------------------------ models
def gpt2(vocab: int, context: int, layers: int, width: int, heads: int, seed: int):
    """A randomly initialised GPT-2 (tied embeddings, no dropout), created under ``torch.manual_seed(seed)``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab, n_positions=context, n_embd=width, n_layer=layers, n_head=heads,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
                     bos_token_id=vocab - 1, eos_token_id=vocab - 1)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg)
    model.config.use_cache = False
    return model


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights are counted once


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 10 % of ``peak``.

    Example:
        >>> lr_at(0, 100, 1.0, 10), lr_at(9, 100, 1.0, 10), round(lr_at(99, 100, 1.0, 10), 3)
        (0.1, 1.0, 0.1)
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - 1 - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac))))


def batch_order(n_windows: int, steps: int, batch: int, seed: int):
    """Window indices ``(steps, batch)``: concatenated random permutations from a generator seeded with ``seed``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    need = steps * batch
    parts, have = [], 0
    while have < need:
        parts.append(torch.randperm(n_windows, generator=g))
        have += n_windows
    return torch.cat(parts)[:need].view(steps, batch)


class Progress:
    """Prints ``[phase] step i/n, loss, tokens/s, ETA`` at most every ``every`` seconds (and at the end)."""

    def __init__(self, phase: str, total: int, tokens_per_step: int, every: float = 15.0):
        self.phase, self.total, self.tps, self.every = phase, total, tokens_per_step, every
        self.t0 = time.perf_counter()
        self.last = self.t0

    def __call__(self, step: int, loss: float | None = None) -> None:
        now = time.perf_counter()
        done = step + 1
        if now - self.last < self.every and done != self.total:
            return
        self.last = now
        el = now - self.t0
        rate = done * self.tps / el if el > 0 else float("nan")
        eta = (self.total - done) * el / done
        extra = f", loss {loss:.3f}" if loss is not None else ""
        print(f"  [{self.phase}] step {done}/{self.total}{extra}, {rate:,.0f} tokens/s, elapsed {el:.0f} s, "
              f"ETA {eta:.0f} s", flush=True)

    def rate(self) -> float:
        el = time.perf_counter() - self.t0
        return self.total * self.tps / el if el > 0 else float("nan")



# ---------------------------------------------------------------------------------- training
def fit(model, loss_of, *, steps: int, lr: float, seed: int, label: str, n_windows: int, args) -> dict[str, Any]:
    """Train ``model`` for ``steps`` steps on ``loss_of(model, window indices)``: AdamW, warm-up then
    cosine decay of ``lr``, gradient clipping, batch order from ``seed``; returns the training record."""
    import torch

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)
    order = batch_order(n_windows, steps, args.batch_size, seed=seed)
    warmup = max(1, round(args.warmup * steps))
    prog = Progress(label, steps, args.batch_size * args.context, args.log_every)
    losses: list[float] = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        loss = loss_of(model, order[step])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        losses.append(loss.item())
        prog(step, statistics.fmean(losses[-20:]))
    tail = losses[-max(1, len(losses) // 10):]
    return {"train_loss_end": statistics.fmean(tail), "tokens_per_s": prog.rate()}


def train_teacher(X, Y, args, vocab: int) -> tuple[Any, dict[str, Any]]:
    """The teacher, trained from seed 0 on next-token cross-entropy (materialised logits, batch order seed 0)."""
    import torch.nn.functional as nnf

    def loss_of(model, idx):
        logits = model(input_ids=X[idx]).logits
        return nnf.cross_entropy(logits.reshape(-1, logits.shape[-1]), Y[idx].reshape(-1))

    model = gpt2(vocab, args.context, args.teacher_layers, args.teacher_width, args.teacher_heads, seed=0)
    return model, fit(model, loss_of, steps=args.teacher_steps, lr=args.teacher_lr, seed=0, label="teacher",
                      n_windows=X.shape[0], args=args)


def teacher_hidden_states(model, X, batch: int, log_every: float):
    """The teacher's final hidden states (after the last layer norm) of the windows ``X``, float16 ``(N, T, H)``."""
    import torch

    model.eval()
    n = X.shape[0]
    out = torch.empty(n, X.shape[1], model.config.n_embd, dtype=torch.float16)
    steps = math.ceil(n / batch)
    prog = Progress("teacher hidden states", steps, batch * X.shape[1], log_every)
    with torch.no_grad():
        for i in range(steps):
            sl = slice(i * batch, min(n, (i + 1) * batch))
            out[sl] = model.transformer(input_ids=X[sl]).last_hidden_state.to(torch.float16)
            prog(i)
    return out, prog.rate()


def train_student(key: str, seed: int, X, Y, teacher_hidden, row_of, teacher_weight, args, vocab: int):
    """One student run: ``key`` in :data:`METHODS`; returns the model and its training record.

    ``teacher_hidden[row_of[i]]`` holds the teacher's hidden states of training window ``i``. KD and
    KD+LS call ``fused_linear_kd_loss`` with the same arguments except ``standardize``; the student
    alone uses the cross-entropy of its materialised logits (``--alone-loss ce``, the default) or the
    same fused call with ``kd_weight=0`` (``--alone-loss fused``): equal up to rounding.
    """
    import torch.nn.functional as nnf

    from logit_standardization.torch import fused_linear_kd_loss

    kd_weight = 0.0 if key == "student" else args.kd_weight
    tw = teacher_weight.detach()

    def loss_of(model, idx):
        hidden = model.transformer(input_ids=X[idx]).last_hidden_state
        if key == "student" and args.alone_loss == "ce":
            logits = model.lm_head(hidden)
            return args.ce_weight * nnf.cross_entropy(logits.reshape(-1, vocab), Y[idx].reshape(-1))
        return fused_linear_kd_loss(hidden, model.lm_head.weight, teacher_hidden=teacher_hidden[row_of[idx]],
                                    teacher_weight=tw, labels=Y[idx], temperature=args.temperature,
                                    standardize=key == "kd_ls", ce_weight=args.ce_weight, kd_weight=kd_weight,
                                    ignore_index=-100, chunk_size=args.chunk_size)

    model = gpt2(vocab, args.context, args.student_layers, args.student_width, args.student_heads, seed=seed)
    return model, fit(model, loss_of, steps=args.student_steps, lr=args.student_lr, seed=seed,
                      label=f"{LABELS[key]}, seed {seed}", n_windows=X.shape[0], args=args)


def evaluate(model, X, Y, batch: int) -> dict[str, float]:
    """Validation perplexity ``exp(mean token CE)``, next-token top-1 (%) and mean CE over all windows."""
    import torch
    import torch.nn.functional as nnf

    model.eval()
    total, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for a in range(0, X.shape[0], batch):
            x, y = X[a:a + batch], Y[a:a + batch]
            logits = model.lm_head(model.transformer(input_ids=x).last_hidden_state).float()
            total += float(nnf.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
            count += y.numel()
    ce = total / count
    return {"perplexity": math.exp(ce), "top1": 100.0 * correct / count, "ce": ce, "tokens": count}


# ------------------------------------------------------------------------------------ tables
Results = dict[str, dict[int, dict[str, float]]]
"""``{key: {seed: {"perplexity": ..., "top1": ...}}}`` for ``"teacher"`` and :data:`METHODS`."""


def paired(results: Results, a: str, b: str, metric: str) -> list[float]:
    """Per-seed differences ``a - b`` of ``metric`` over the common seeds, in seed order."""
    seeds = sorted(set(results.get(a, {})) & set(results.get(b, {})))
    return [results[a][s][metric] - results[b][s][metric] for s in seeds]


def _signs(d: Sequence[float]) -> str:
    return " ".join("+" if v > 0 else "−" if v < 0 else "0" for v in d)


def build_table(results: Results, parameters: dict[str, int] | None = None) -> str:
    """The Markdown table of the study (the paired columns: KD+LS minus KD, same seed).

    Example:
        >>> r = {"student": {0: {"perplexity": 60.0, "top1": 20.0}, 1: {"perplexity": 62.0, "top1": 19.0}},
        ...      "kd": {0: {"perplexity": 55.0, "top1": 21.0}, 1: {"perplexity": 57.0, "top1": 20.0}},
        ...      "kd_ls": {0: {"perplexity": 56.0, "top1": 21.5}, 1: {"perplexity": 56.0, "top1": 19.5}}}
        >>> print(build_table(r))
        | network / method | seeds | parameters | val perplexity | val top-1 (%) | KD+LS − KD, perplexity (paired) | KD+LS − KD, top-1 (paired) | per-seed sign, perplexity / top-1 |
        |---|--:|--:|--:|--:|--:|--:|:-:|
        | student alone | 2 |  | 61.00 ± 1.41 | 19.50 ± 0.71 |  |  |  |
        | KD | 2 |  | 56.00 ± 1.41 | 20.50 ± 0.71 |  |  |  |
        | KD+LS | 2 |  | 56.00 ± 0.00 | 20.50 ± 1.41 | +0.00 ± 1.41 | +0.00 ± 0.71 | + − / + − |
    """
    parameters = parameters or {}
    lines = ["| network / method | seeds | parameters | val perplexity | val top-1 (%) | KD+LS − KD, perplexity (paired) "
             "| KD+LS − KD, top-1 (paired) | per-seed sign, perplexity / top-1 |", "|---|--:|--:|--:|--:|--:|--:|:-:|"]
    for key in ["teacher", *METHODS]:
        runs = results.get(key)
        if not runs:
            continue
        seeds = sorted(runs)
        ppl = fmt_mean_std([runs[s]["perplexity"] for s in seeds])
        top1 = fmt_mean_std([runs[s]["top1"] for s in seeds])
        cols = ["", "", ""]
        if key == "kd_ls" and results.get("kd"):
            dp, dt = paired(results, "kd_ls", "kd", "perplexity"), paired(results, "kd_ls", "kd", "top1")
            if dp:
                cols = [fmt_difference(dp), fmt_difference(dt), f"{_signs(dp)} / {_signs(dt)}"]
        n_par = parameters.get("teacher" if key == "teacher" else "student")
        par = f"{n_par:,}" if n_par else ""
        lines.append(f"| {LABELS[key]} | {len(seeds)} | {par} | {ppl} | {top1} | {cols[0]} | {cols[1]} | {cols[2]} |")
    return "\n".join(lines)


def _compare(results: Results, a: str, b: str) -> str | None:
    dp, dt = paired(results, a, b, "perplexity"), paired(results, a, b, "top1")
    if not dp:
        return None
    n = len(dp)

    def describe(d: Sequence[float], sign: int, better: str) -> str:
        good, bad = sum(v * sign > 0 for v in d), sum(v * sign < 0 for v in d)
        eq = n - good - bad
        parts = [f"{better} in {good} of {n} seed{'s' if n > 1 else ''}"]
        if bad:
            parts.append(f"{'higher' if better.startswith('lower') else 'lower'} in {bad}")
        if eq:
            parts.append(f"equal in {eq}")
        verdict = "consistent" if n > 1 and (good == n or bad == n) else "within noise"
        return ", ".join(parts) + f"; {verdict}"

    return (f"{LABELS[a]} vs {LABELS[b]}: perplexity {statistics.fmean(dp):+.2f} "
            f"({describe(dp, -1, 'lower (better)')}), top-1 {statistics.fmean(dt):+.2f} points "
            f"({describe(dt, 1, 'higher')}).")


def findings(results: Results) -> list[str]:
    """Plain statements the numbers support, whatever they are.

    A difference is *consistent* when every common seed has the same sign, *within noise* otherwise.

    Example:
        >>> r = {"teacher": {0: {"perplexity": 40.0, "top1": 25.0}},
        ...      "student": {0: {"perplexity": 60.0, "top1": 20.0}, 1: {"perplexity": 62.0, "top1": 19.0}},
        ...      "kd": {0: {"perplexity": 55.0, "top1": 21.0}, 1: {"perplexity": 57.0, "top1": 20.0}},
        ...      "kd_ls": {0: {"perplexity": 56.0, "top1": 21.5}, 1: {"perplexity": 58.0, "top1": 20.5}}}
        >>> for line in findings(r): print(line)
        KD+LS vs KD: perplexity +1.00 (lower (better) in 0 of 2 seeds, higher in 2; consistent), top-1 +0.50 points (higher in 2 of 2 seeds; consistent).
        KD vs student alone: perplexity -5.00 (lower (better) in 2 of 2 seeds; consistent), top-1 +1.00 points (higher in 2 of 2 seeds; consistent).
        KD+LS vs student alone: perplexity -4.00 (lower (better) in 2 of 2 seeds; consistent), top-1 +1.50 points (higher in 2 of 2 seeds; consistent).
        Lowest mean perplexity among the students: KD (56.00); the teacher's is 40.00. Highest mean top-1: KD+LS (21.00 %); the teacher's is 25.00 %.
        Per seed (perplexity / top-1): student alone 60.00 / 20.00, 62.00 / 19.00; KD 55.00 / 21.00, 57.00 / 20.00; KD+LS 56.00 / 21.50, 58.00 / 20.50.
    """
    out = []
    for a, b in (("kd_ls", "kd"), ("kd", "student"), ("kd_ls", "student")):
        line = _compare(results, a, b)
        if line:
            out.append(line)
    bad = [f"{LABELS[k]} seed {s}" for k in METHODS for s, v in (results.get(k) or {}).items()
           if not math.isfinite(v["perplexity"])]
    if bad:
        out.append("Non-finite validation perplexity (the training diverged): " + ", ".join(bad) + ".")
    keys = [k for k in METHODS if results.get(k)]
    if keys:
        def avg(k, m):
            return statistics.fmean(v[m] for v in results[k].values())

        best_p = min(keys, key=lambda k: avg(k, "perplexity"))
        best_t = max(keys, key=lambda k: avg(k, "top1"))
        text = f"Lowest mean perplexity among the students: {LABELS[best_p]} ({avg(best_p, 'perplexity'):.2f})"
        if results.get("teacher"):
            text += f"; the teacher's is {avg('teacher', 'perplexity'):.2f}"
        text += f". Highest mean top-1: {LABELS[best_t]} ({avg(best_t, 'top1'):.2f} %)"
        if results.get("teacher"):
            text += f"; the teacher's is {avg('teacher', 'top1'):.2f} %"
        out.append(text + ".")
        out.append("Per seed (perplexity / top-1): " + "; ".join(
            f"{LABELS[k]} " + ", ".join(f"{v['perplexity']:.2f} / {v['top1']:.2f}" for _, v in sorted(results[k].items()))
            for k in keys) + ".")
    return out


# -------------------------------------------------------------------------------------- page
def render_page(*, results: Results, command: str, settings: dict[str, Any], machine: dict[str, Any],
                timing: dict[str, Any]) -> str:
    """The Markdown (MyST) page ``docs/lm_study.md``."""
    s, c = settings, settings["corpus"]
    tcfg, scfg = s["teacher"], s["student"]
    seeds = s["seeds"]
    load = timing.get("load_average", {})
    load_text = ", ".join(f"{k}: {v[0]:.1f} / {v[1]:.1f} / {v[2]:.1f}" for k, v in load.items())
    tokens_per_step = s["batch_size"] * s["context"]
    if c["name"] == "kjv":
        corpus_text = (
            "The King James Version of the Bible (the 1611 translation, public domain), as shipped by the Debian "
            "packages `bible-kjv` and `bible-kjv-text`: the output of `bible \"Gen1:1-Rev22:21\"` with the "
            "chapter headings and verse numbers removed, one verse per line, each chapter followed by the "
            f"`{EOS}` token. Split by chapter: every {VALID_EVERY}th of the {c['units']} chapters in canonical "
            f"order (Genesis 10, Genesis 20, ...) is the validation set ({len_text(c, 'val')}), the others the "
            f"training set ({len_text(c, 'train')}).")
    else:
        corpus_text = (f"`{c['name']}` ({c['units']} {c['kind']}); every {VALID_EVERY}th is the validation set "
                       f"({len_text(c, 'val')}), the others the training set ({len_text(c, 'train')}).")
    per_run = timing.get("run_seconds", {})
    method_time = {k: sum(v for name, v in per_run.items() if name.split("/")[0] == k) for k in METHODS}
    rates = timing.get("run_tokens_per_s", {})
    method_rate = {k: statistics.fmean([v for name, v in rates.items() if name.split("/")[0] == k] or [0.0])
                   for k in METHODS}
    lines = [
        "# Language-model distillation study: KD and KD+LS on the King James Bible",
        "",
        "A CPU-scale check of logit standardization (LS) for language-model distillation: a small GPT-2 "
        f"student ({s['parameters']['student']:,} parameters) trained alone, with KD and with KD+LS from a larger "
        f"GPT-2 teacher ({s['parameters']['teacher']:,} parameters), {len(seeds)} seeds, scored by validation "
        "perplexity and next-token top-1 accuracy. The three student runs of a seed differ only in the loss: "
        "same initialisation, same batch order, same optimizer, schedule and number of steps.",
        "",
        "## Command",
        "",
        "```bash",
        command,
        "```",
        "",
        "`make study-lm` runs `python benchmarks/lm_study.py` with the default settings.",
        "",
        "## Results",
        "",
        f"Validation perplexity (`exp` of the mean next-token cross-entropy; lower is better) and next-token "
        f"top-1 accuracy (%) over the {c['val_tokens']:,} validation tokens, mean ± sample standard deviation "
        f"over seeds {', '.join(map(str, seeds))}, measured after the last step. The paired columns are the "
        "per-seed differences KD+LS minus KD (same seed), averaged over the seeds; the last column gives the "
        "sign of each seed's difference (for perplexity, − is better; for top-1, + is better). The teacher is "
        "trained once (seed 0) and shared by every student.",
        "",
        build_table(results, s["parameters"]),
        "",
        "## What the numbers show",
        "",
        *[f"- {n}" for n in findings(results)],
        f"- Caveats: {len(seeds)} seeds, {s['student_steps']} student steps ({s['student_steps'] * tokens_per_step:,} "
        f"training tokens, {s['student_steps'] * tokens_per_step / max(1, c['train_tokens']):.2f} epochs) and one "
        "temperature and one pair of loss weights, not tuned for either method; a difference is only called "
        "consistent when every seed has the same sign.",
        "",
        "## Corpus and tokenizer",
        "",
        f"- Corpus: {corpus_text}",
        f"- Tokenizer: byte-level BPE (Hugging Face `tokenizers`, `ByteLevel` pre-tokenizer, minimum pair "
        f"frequency 2) trained on the training split only; {s['vocab_size']:,} entries requested, "
        f"{s['vocab']:,} obtained (including `{EOS}`).",
        f"- Windows: the token stream of each split cut into non-overlapping windows of {s['context']} tokens, "
        f"the targets shifted by one token: {c['train_windows']:,} training and {c['val_windows']:,} validation "
        "windows (a last partial window is dropped).",
        "",
        "## Models and training",
        "",
        f"- Teacher: `GPT2Config(n_layer={tcfg['layers']}, n_embd={tcfg['width']}, n_head={tcfg['heads']}, "
        f"n_positions={s['context']}, vocab_size={s['vocab']})`, tied input and output embeddings, no dropout, "
        f"random initialisation (`torch.manual_seed(0)`), {s['parameters']['teacher']:,} parameters.",
        f"- Student: `GPT2Config(n_layer={scfg['layers']}, n_embd={scfg['width']}, n_head={scfg['heads']}, "
        f"n_positions={s['context']}, vocab_size={s['vocab']})`, likewise, {s['parameters']['student']:,} "
        "parameters; `torch.manual_seed(seed)` before it is built.",
        f"- Teacher training: {s['teacher_steps']} steps of {s['batch_size']} windows ({tokens_per_step:,} tokens "
        f"per step, {s['teacher_steps'] * tokens_per_step / max(1, c['train_tokens']):.2f} epochs), next-token "
        f"cross-entropy, AdamW lr {s['teacher_lr']:g}.",
        f"- Student training: {s['student_steps']} steps of {s['batch_size']} windows, AdamW lr {s['student_lr']:g}; "
        "the batch order is random permutations of the training windows drawn from a generator seeded with the "
        "run's seed.",
        f"- Both: AdamW betas (0.9, 0.95), weight decay {s['weight_decay']:g}, linear warm-up over the first "
        f"{s['warmup'] * 100:g} % of the steps, then cosine decay to 10 % of the peak learning rate, gradient norm "
        f"clipped at {s['clip']:g}, float32.",
        f"- Loss of the {'KD and KD+LS runs' if s['alone_loss'] == 'ce' else 'student runs'}: "
        "`logit_standardization.torch.fused_linear_kd_loss(h, student.lm_head.weight, "
        "teacher_hidden=h_t, teacher_weight=teacher.lm_head.weight, labels=y, temperature=T, standardize=..., "
        "ce_weight=..., kd_weight=..., ignore_index=-100)` on the student's final hidden states `h` "
        "(`student.transformer(x).last_hidden_state`), so the student's logits are never materialised beyond one "
        f"chunk of {s['chunk_size']:,} tokens (`chunk_size`). "
        f"T = {s['temperature']:g}, ce_weight = {s['ce_weight']:g}; KD: kd_weight = {s['kd_weight']:g}, "
        f"standardize=False; KD+LS: kd_weight = {s['kd_weight']:g}, standardize=True (Z-score of each token's "
        "logits over the vocabulary, student and teacher, before the softmax at temperature T). Student alone: "
        + ("the cross-entropy of its logits `student.lm_head(h)` times ce_weight (`--alone-loss ce`; equal, up to "
           "rounding, to the fused call with kd_weight = 0, which would also form the teacher's logits)."
           if s["alone_loss"] == "ce" else
           "the same fused call with kd_weight = 0 (`--alone-loss fused`; its gradient is that of the "
           "cross-entropy)."),
        "- Teacher hidden states `h_t`: computed once, after the teacher is trained, for the training windows "
        "the distillation runs draw (evaluation mode, no gradient) and stored in float16; the loss forms the "
        "teacher's logits from them in float32.",
        "",
        "## Machine and time",
        "",
        f"- CPU: {machine['cpu']}, {machine['cores']} cores available, {machine['memory_gib']} GiB; "
        f"{s['threads']} PyTorch thread(s); Python {machine['python']}, PyTorch {machine['torch']}, "
        f"transformers {machine.get('transformers', '?')}, tokenizers {machine.get('tokenizers', '?')}; "
        f"{machine['platform']}.",
        f"- Wall time: {timing['total_s'] / 60:.1f} min in total: corpus and tokenizer {timing['data_s']:.0f} s, "
        f"teacher training {timing['teacher_s'] / 60:.1f} min ({timing.get('teacher_tokens_per_s', 0):,.0f} "
        f"tokens/s), teacher hidden states {timing['teacher_hidden_s']:.0f} s, student runs "
        f"{timing['students_s'] / 60:.1f} min (per method, summed over seeds, including evaluation: "
        + ", ".join(f"{LABELS[k]} {method_time[k] / 60:.1f} min" for k in METHODS) + "; training speed, mean over "
        "seeds: " + ", ".join(f"{LABELS[k]} {method_rate[k]:,.0f} tokens/s" for k in METHODS if method_rate[k])
        + f"); runs reused from an earlier invocation: {timing['reused']}.",
        f"- Load average (1 / 5 / 15 min) {load_text}. A load above {machine['cores']} means the cores were shared "
        "with other work, which inflates the wall time.",
        "",
    ]
    return "\n".join(lines)


def len_text(c: dict[str, Any], split: str) -> str:
    return f"{c[split + '_units']:,} {c['kind']}, {c[split + '_chars']:,} characters, {c[split + '_tokens']:,} tokens"


# -------------------------------------------------------------------------------------- runs
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _same(a: Any, b: Any) -> bool:
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/lm_study.py",
        description="Language-model distillation study: a GPT-2 student alone, with KD and with KD+LS "
        "(fused_linear_kd_loss) from a GPT-2 teacher on the King James Bible; validation perplexity and top-1.")
    p.add_argument("--output", type=Path, default=Path("runs/lm_study"), help="run directory (default runs/lm_study)")
    p.add_argument("--doc", type=Path, default=REPO / "docs" / "lm_study.md", help="the page to write "
                   "(default docs/lm_study.md)")
    p.add_argument("--no-doc", action="store_true", help="do not write the page")
    p.add_argument("--corpus", type=Path, default=None, help="plain UTF-8 text instead of the King James Bible "
                   "(Debian packages bible-kjv, bible-kjv-text)")
    p.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary (default 8192)")
    p.add_argument("--context", type=int, default=128, help="tokens per window (default 128)")
    p.add_argument("--batch-size", type=int, default=16, help="windows per step (default 16)")
    p.add_argument("--teacher-steps", type=int, default=800, help="teacher training steps (default 800)")
    p.add_argument("--student-steps", type=int, default=250, help="steps of every student run (default 250)")
    p.add_argument("--teacher-layers", type=int, default=4)
    p.add_argument("--teacher-width", type=int, default=256)
    p.add_argument("--teacher-heads", type=int, default=4)
    p.add_argument("--student-layers", type=int, default=2)
    p.add_argument("--student-width", type=int, default=128)
    p.add_argument("--student-heads", type=int, default=2)
    p.add_argument("--teacher-lr", type=float, default=2e-3, help="teacher peak learning rate (default 2e-3)")
    p.add_argument("--student-lr", type=float, default=3e-3, help="student peak learning rate (default 3e-3)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=float, default=0.05, help="warm-up fraction of the steps (default 0.05)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping (default 1)")
    p.add_argument("--temperature", type=float, default=2.0, help="KD temperature (default 2)")
    p.add_argument("--ce-weight", type=float, default=1.0, help="cross-entropy weight (default 1)")
    p.add_argument("--kd-weight", type=float, default=1.0, help="KD weight of KD and KD+LS (default 1)")
    p.add_argument("--chunk-size", type=int, default=1024, help="tokens per chunk of fused_linear_kd_loss "
                   "(default 1024)")
    p.add_argument("--alone-loss", choices=["ce", "fused"], default="ce", help="loss of the student alone: "
                   "cross-entropy of the materialised logits (ce, default) or fused_linear_kd_loss with kd_weight=0 "
                   "(fused; equal up to rounding, slower: it also forms the teacher's logits)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="student seeds (default 0 1 2)")
    p.add_argument("--threads", type=int, default=2, help="PyTorch threads (default 2)")
    p.add_argument("--eval-batch", type=int, default=64, help="windows per evaluation batch (default 64)")
    p.add_argument("--log-every", type=float, default=15.0, help="seconds between progress lines (default 15)")
    p.add_argument("--fresh", action="store_true", help="delete OUTPUT first instead of reusing finished runs")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    for name in ("vocab_size", "context", "batch_size", "teacher_steps", "student_steps", "threads", "eval_batch",
                 "teacher_layers", "teacher_width", "teacher_heads", "student_layers", "student_width",
                 "student_heads", "chunk_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    if args.vocab_size < 257:
        raise SystemExit("--vocab-size must be at least 257 (256 bytes and the end-of-text token)")
    default_doc = (REPO / "docs" / "lm_study.md").resolve()
    if not args.no_doc and args.doc.resolve() == default_doc and (args.vocab_size < 8000 or args.corpus):
        raise SystemExit("lm_study: the documented study uses the King James Bible and --vocab-size >= 8000; "
                         "pass --no-doc or another --doc for other settings")
    import tokenizers
    import torch
    import transformers
    from tokenizers import Tokenizer

    torch.set_num_threads(args.threads)
    args.output = args.output.resolve()
    command = "python benchmarks/lm_study.py" + (" " + shlex.join(argv) if argv else "")
    if args.fresh and args.output.exists():
        shutil.rmtree(args.output)
    args.output.mkdir(parents=True, exist_ok=True)
    loads = {"start": os.getloadavg()}
    started = time.perf_counter()
    cpu0 = cpu_seconds()
    print(f"LM distillation study -> {args.output}; {args.threads} thread(s); load average at start "
          f"{loads['start'][0]:.1f}", flush=True)

    # 1. corpus and tokenizer (trained on the training split only)
    corpus = load_corpus(args.corpus)
    tok_path, tok_meta_path = args.output / "tokenizer.json", args.output / "tokenizer_meta.json"
    tok_meta = {"corpus_sha256": corpus["sha256"], "vocab_size": args.vocab_size, "tokenizers": tokenizers.__version__}
    if tok_path.is_file() and _same(_read_json(tok_meta_path), tok_meta):
        tok = Tokenizer.from_file(str(tok_path))
    else:
        tok = train_tokenizer(corpus["train"], args.vocab_size)
        tok.save(str(tok_path))
        _write_atomic(tok_meta_path, json.dumps(tok_meta, indent=2) + "\n")
    vocab = tok.get_vocab_size()
    train_stream, val_stream = encode(tok, corpus["train"]), encode(tok, corpus["val"])
    X, Y = windows(train_stream, args.context)
    Xv, Yv = windows(val_stream, args.context)
    cinfo = {"name": corpus["name"], "source": corpus["source"], "kind": corpus["kind"], "units": corpus["units"],
             "sha256": corpus["sha256"], "train_units": len(corpus["train"]), "val_units": len(corpus["val"]),
             "train_chars": sum(map(len, corpus["train"])), "val_chars": sum(map(len, corpus["val"])),
             "train_tokens": int(train_stream.numel()), "val_tokens": int(Yv.numel()),
             "val_stream_tokens": int(val_stream.numel()), "train_windows": int(X.shape[0]),
             "val_windows": int(Xv.shape[0])}
    t_data = time.perf_counter() - started
    print(f"[1/3] corpus {cinfo['name']}: {cinfo['units']} {cinfo['kind']}; train {cinfo['train_chars']:,} chars, "
          f"{cinfo['train_tokens']:,} tokens; validation {cinfo['val_chars']:,} chars, {cinfo['val_tokens']:,} "
          f"tokens; BPE vocabulary {vocab} ({t_data:.1f} s)", flush=True)

    # 2. the teacher, once
    teacher_cfg = {"corpus_sha256": corpus["sha256"], "vocab_size": args.vocab_size, "vocab": vocab,
                   "context": args.context, "layers": args.teacher_layers, "width": args.teacher_width,
                   "heads": args.teacher_heads, "steps": args.teacher_steps, "batch_size": args.batch_size,
                   "lr": args.teacher_lr, "weight_decay": args.weight_decay, "warmup": args.warmup,
                   "clip": args.clip, "seed": 0}
    t_json, t_pt = args.output / "teacher.json", args.output / "teacher.pt"
    old = _read_json(t_json)
    t1 = time.perf_counter()
    teacher = gpt2(vocab, args.context, args.teacher_layers, args.teacher_width, args.teacher_heads, seed=0)
    if old and _same(old.get("config"), teacher_cfg) and t_pt.is_file():
        teacher.load_state_dict(torch.load(t_pt, map_location="cpu"))
        t_record, t_reused = old, True
        print(f"[2/3] teacher: reusing {t_pt} (val perplexity {old['val']['perplexity']:.2f})", flush=True)
    else:
        print(f"[2/3] teacher: {args.teacher_layers} layers x {args.teacher_width}, "
              f"{parameter_count(teacher):,} parameters, {args.teacher_steps} steps", flush=True)
        t_start = time.perf_counter()
        teacher, info = train_teacher(X, Y, args, vocab)
        val = evaluate(teacher, Xv, Yv, args.eval_batch)
        torch.save(teacher.state_dict(), t_pt)
        t_record = {"config": teacher_cfg, "val": val, **info, "seconds": time.perf_counter() - t_start,
                    "parameters": parameter_count(teacher)}
        _write_atomic(t_json, json.dumps(t_record, indent=2) + "\n")
        t_reused = False
        print(f"  teacher: val perplexity {val['perplexity']:.2f}, top-1 {val['top1']:.2f} %", flush=True)
    t_teacher = time.perf_counter() - t1
    teacher.eval()

    # 3. the student runs
    common = {"teacher": teacher_cfg, "layers": args.student_layers, "width": args.student_width,
              "heads": args.student_heads, "steps": args.student_steps, "batch_size": args.batch_size,
              "lr": args.student_lr, "weight_decay": args.weight_decay, "warmup": args.warmup, "clip": args.clip,
              "temperature": args.temperature, "ce_weight": args.ce_weight, "kd_weight": args.kd_weight,
              "teacher_hidden_dtype": "float16", "alone_loss": args.alone_loss,
              "chunk_size": args.chunk_size}
    plan = [(key, seed) for seed in args.seeds for key in METHODS]
    records: dict[tuple[str, int], dict[str, Any]] = {}
    todo = []
    for key, seed in plan:
        path = args.output / "runs" / key / f"seed{seed}.json"
        old = _read_json(path)
        if old and _same(old.get("config"), {**common, "method": key, "seed": seed}):
            records[(key, seed)] = {**old, "reused": True}
        else:
            todo.append((key, seed))
    print(f"[3/3] {len(plan)} student runs ({len(plan) - len(todo)} reused), {args.student_steps} steps each",
          flush=True)
    t_hidden = 0.0
    t_students0 = time.perf_counter()
    hidden_rate = None
    if todo:
        t2 = time.perf_counter()
        # the teacher's hidden states of the windows the remaining distillation runs draw, computed once
        kd_seeds = sorted({seed for key, seed in todo if key != "student" or args.alone_loss == "fused"})
        used = torch.zeros(X.shape[0], dtype=torch.bool)
        for seed in kd_seeds:
            used[batch_order(X.shape[0], args.student_steps, args.batch_size, seed).reshape(-1)] = True
        needed = used.nonzero().squeeze(1)
        row_of = torch.full((X.shape[0],), -1, dtype=torch.long)
        row_of[needed] = torch.arange(needed.numel())
        th, hidden_rate = (teacher_hidden_states(teacher, X[needed], args.eval_batch, args.log_every) if kd_seeds
                           else (None, None))
        t_hidden = time.perf_counter() - t2
        tw = teacher.lm_head.weight.detach()
        print(f"  teacher hidden states of the {needed.numel():,} of {X.shape[0]:,} training windows the runs draw: "
              f"{(0, args.context) if th is None else tuple(th.shape)} float16, "
              f"{0 if th is None else th.numel() * 2 / 2**20:.0f} MiB, {t_hidden:.0f} s", flush=True)
        t3 = time.perf_counter()
        for i, (key, seed) in enumerate(todo, 1):
            r0 = time.perf_counter()
            print(f"  run {i}/{len(todo)}: {LABELS[key]}, seed {seed}", flush=True)
            model, info = train_student(key, seed, X, Y, th, row_of, tw, args, vocab)
            val = evaluate(model, Xv, Yv, args.eval_batch)
            rec = {"config": {**common, "method": key, "seed": seed}, "val": val, **info,
                   "seconds": time.perf_counter() - r0, "parameters": parameter_count(model)}
            _write_atomic(args.output / "runs" / key / f"seed{seed}.json", json.dumps(rec, indent=2) + "\n")
            records[(key, seed)] = {**rec, "reused": False}
            done = time.perf_counter() - t3
            print(f"  run {i}/{len(todo)} done: {LABELS[key]}, seed {seed}: val perplexity {val['perplexity']:.2f}, "
                  f"top-1 {val['top1']:.2f} % ({rec['seconds']:.0f} s; ETA of the remaining runs "
                  f"{done / i * (len(todo) - i):.0f} s)", flush=True)
    t_students = time.perf_counter() - t_students0 - t_hidden
    loads["end"] = os.getloadavg()
    total = time.perf_counter() - started

    results: Results = {"teacher": {0: {k: t_record["val"][k] for k in ("perplexity", "top1")}}}
    for (key, seed), rec in sorted(records.items(), key=lambda kv: (METHODS.index(kv[0][0]), kv[0][1])):
        results.setdefault(key, {})[seed] = {k: rec["val"][k] for k in ("perplexity", "top1")}
    student_params = next(iter(records.values()))["parameters"]
    settings = {
        "seeds": list(args.seeds), "corpus": cinfo, "vocab_size": args.vocab_size, "vocab": vocab,
        "context": args.context, "batch_size": args.batch_size, "teacher_steps": args.teacher_steps,
        "student_steps": args.student_steps, "teacher_lr": args.teacher_lr, "student_lr": args.student_lr,
        "weight_decay": args.weight_decay, "warmup": args.warmup, "clip": args.clip,
        "temperature": args.temperature, "ce_weight": args.ce_weight, "kd_weight": args.kd_weight,
        "threads": args.threads, "teacher_hidden_dtype": "float16",
        "teacher": {"layers": args.teacher_layers, "width": args.teacher_width, "heads": args.teacher_heads},
        "student": {"layers": args.student_layers, "width": args.student_width, "heads": args.student_heads},
        "parameters": {"teacher": t_record["parameters"], "student": student_params},
        "alone_loss": args.alone_loss, "chunk_size": args.chunk_size,
    }
    reused = int(t_reused) + sum(bool(r.get("reused")) for r in records.values())
    timing = {"total_s": total, "data_s": t_data, "teacher_s": t_teacher, "teacher_hidden_s": t_hidden,
              "students_s": t_students, "reused": reused, "cpu_s": cpu_seconds() - cpu0, "load_average": loads,
              "teacher_tokens_per_s": t_record.get("tokens_per_s"), "teacher_hidden_tokens_per_s": hidden_rate,
              "run_seconds": {f"{k}/seed{s}": r["seconds"] for (k, s), r in records.items()},
              "run_tokens_per_s": {f"{k}/seed{s}": r["tokens_per_s"] for (k, s), r in records.items()}}
    table = build_table(results, settings["parameters"])
    print("\n" + table + "\n")
    for line in findings(results):
        print("- " + line)
    print(f"\nwall time {total / 60:.1f} min (data {t_data:.0f} s, teacher {t_teacher / 60:.1f} min, teacher hidden "
          f"states {t_hidden:.0f} s, students {t_students / 60:.1f} min); load average start {loads['start'][0]:.1f}, "
          f"end {loads['end'][0]:.1f}")
    machine = {**machine_info(), "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}
    previous = _read_json(args.output / "results.json")
    if reused == 1 + len(records) and previous:
        # nothing was trained now: keep the time and load of the invocation that trained the runs
        if _same(previous.get("settings"), settings) and previous["timing"].get("reused", 1) == 0:
            timing, command = previous["timing"], previous["command"]
            print(f"all runs reused: keeping the time of the invocation that trained them ({command})")
    _write_atomic(args.output / "results.json", json.dumps(
        {"command": command, "results": {k: {str(s): v for s, v in r.items()} for k, r in results.items()},
         "settings": settings, "machine": machine, "timing": timing}, indent=2) + "\n")
    print(f"wrote {args.output / 'results.json'}")
    if not args.no_doc:
        _write_atomic(args.doc, render_page(results=results, command=command, settings=settings, machine=machine,
                                            timing=timing))
        print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
