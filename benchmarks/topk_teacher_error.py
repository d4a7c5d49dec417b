"""Error of the top-k teacher loss (``topk_kd_loss``) against the full-vocabulary ``kd_loss``, on the
logits of trained language models.

A byte-level GPT-2 teacher (2 layers, width 96, vocabulary 256) and a smaller, less trained student
(1 layer, width 48) are trained from ``transformers`` configurations with next-byte cross-entropy on
a corpus that ships with Python (the standard library's ``LICENSE.txt`` and the Zen of Python
from ``this.py``), then both are evaluated on held-out windows. For each ``k`` the teacher's logits are
compressed with ``compress_teacher_logits`` and the loss and its gradient with respect to the
student logits are compared with ``kd_loss`` on the full logits (both logit-standardized, ``tau=2``,
mean over tokens), and the same without standardization:

* ``loss rel. err``: ``|L_k - L| / L``;
* ``grad cosine``: cosine similarity of the flattened gradients;
* ``grad rel. err``: ``||g_k - g|| / ||g||``;
* ``top-k mass``: the teacher's standardized probability mass ``sum_{top-k} softmax(Z(t)/tau)``
  (mean over tokens): what the renormalisation discards is ``1 -`` this.

Run (CPU, about a minute)::

    python benchmarks/topk_teacher_error.py

Example (the comparison on random logits; ``k = V`` is exact):

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> s, t = torch.randn(4, 8, generator=g, dtype=torch.float64), torch.randn(4, 8, generator=g, dtype=torch.float64)
    >>> row = compare(s, t, 8)
    >>> row["loss_rel_err"] < 1e-12, round(row["grad_cosine"], 6)
    (True, 1.0)
"""

from __future__ import annotations

import argparse
import codecs
import sys
import sysconfig
import time
from pathlib import Path

import torch

from logit_standardization.torch import compress_teacher_logits, kd_loss, topk_kd_loss


def corpus() -> bytes:
    """The standard library's LICENSE.txt and the decoded Zen of Python, as bytes."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    source = (stdlib / "this.py").read_text(encoding="utf-8")  # read, not imported (importing prints)
    text = codecs.decode(source.split('"""')[1], "rot13")
    lic = stdlib / "LICENSE.txt"
    if lic.exists():
        text += "\n" + lic.read_text(encoding="utf-8", errors="replace")
    return text.encode("utf-8")


def train(data: torch.Tensor, *, layers: int, width: int, steps: int, seq: int, batch: int, seed: int):
    """A byte-level GPT-2 trained for ``steps`` steps of next-byte prediction on random windows."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=256, n_positions=seq, n_embd=width, n_layer=layers, n_head=4,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        start = torch.randint(0, len(data) - seq - 1, (batch,), generator=g)
        x = torch.stack([data[i:i + seq] for i in start])
        out = model(input_ids=x, labels=x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return model.eval()


def compare(s: torch.Tensor, t: torch.Tensor, k: int, *, temperature: float = 2.0, rest: str = "uniform",
            standardize: bool = True) -> dict:
    """Loss and student-logit gradient of ``topk_kd_loss`` at ``k`` against ``kd_loss`` (full logits)."""
    s_full = s.detach().clone().requires_grad_()
    full = kd_loss(s_full, t, temperature=temperature, standardize=standardize)
    (g_full,) = torch.autograd.grad(full, s_full)
    s_k = s.detach().clone().requires_grad_()
    teacher = compress_teacher_logits(t, k)
    approx = topk_kd_loss(s_k, teacher, temperature=temperature, rest=rest, standardize=standardize)
    (g_k,) = torch.autograd.grad(approx, s_k)
    p = torch.softmax(kd_zscore(t, temperature) if standardize else t / temperature, dim=-1)
    mass = p.gather(-1, teacher.indices.long()).sum(-1).mean()
    return {
        "k": k,
        "loss": float(approx.detach()),
        "full": float(full.detach()),
        "loss_rel_err": abs(float(approx.detach()) - float(full.detach())) / abs(float(full.detach())),
        "grad_cosine": float(torch.nn.functional.cosine_similarity(g_k.flatten(), g_full.flatten(), dim=0)),
        "grad_rel_err": float((g_k - g_full).norm() / g_full.norm()),
        "mass": float(mass),
    }


def kd_zscore(t: torch.Tensor, temperature: float) -> torch.Tensor:
    from logit_standardization.torch import zscore

    return zscore(t, temperature=temperature)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher-steps", type=int, default=250)
    ap.add_argument("--student-steps", type=int, default=60)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--eval-windows", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    raw = corpus()
    data = torch.tensor(list(raw), dtype=torch.long)
    split = int(0.9 * len(data))
    train_data, held = data[:split], data[split:]
    t0 = time.perf_counter()
    teacher = train(train_data, layers=2, width=96, steps=args.teacher_steps, seq=args.seq, batch=args.batch, seed=0)
    student = train(train_data, layers=1, width=48, steps=args.student_steps, seq=args.seq, batch=args.batch, seed=1)
    g = torch.Generator().manual_seed(2)
    start = torch.randint(0, len(held) - args.seq - 1, (args.eval_windows,), generator=g)
    x = torch.stack([held[i:i + args.seq] for i in start])
    with torch.no_grad():
        t_out, s_out = teacher(input_ids=x, labels=x), student(input_ids=x, labels=x)
    t_logits = t_out.logits.reshape(-1, 256).double()
    s_logits = s_out.logits.reshape(-1, 256).double()
    print(f"corpus {len(raw)} bytes; teacher held-out CE {float(t_out.loss):.3f} nats/byte, student "
          f"{float(s_out.loss):.3f}; {t_logits.shape[0]} tokens, vocabulary 256; trained in "
          f"{time.perf_counter() - t0:.0f} s")
    for standardize in (True, False):
        full = float(kd_loss(s_logits, t_logits, temperature=2.0, standardize=standardize))
        print(f"\nstandardize={standardize}: full kd_loss {full:.4f}")
        print("| k | top-k mass | rest | loss rel. err | grad cosine | grad rel. err |")
        print("|---:|---:|---|---:|---:|---:|")
        for k in (1, 5, 20, 50, 100, 256):
            for rest in ("uniform", "renormalize"):
                r = compare(s_logits, t_logits, k, rest=rest, standardize=standardize)
                name = f"{k} (full)" if k == 256 else str(k)
                print(f"| {name} | {r['mass']:.4f} | {rest} | {r['loss_rel_err']:.2e} | {r['grad_cosine']:.6f} | "
                      f"{r['grad_rel_err']:.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
