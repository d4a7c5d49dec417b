"""ONNX Runtime side: execution providers, verification against the source model, latency.

Works with whichever ONNX Runtime build is installed (``onnxruntime`` or ``onnxruntime-gpu``);
the provider that actually ran is always reported, since ONNX Runtime silently falls back to
the CPU when a GPU provider cannot start.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ._errors import ProviderUnavailableError

__all__ = [
    "PROVIDERS",
    "TOP1_THRESHOLDS",
    "Verification",
    "LatencyRow",
    "Benchmark",
    "resolve_providers",
    "make_session",
    "verify",
    "benchmark",
    "compare_logits",
]

PROVIDERS = ("auto", "cpu", "cuda")
_CPU, _CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"

TOP1_THRESHOLDS: dict[str, float] = {"fp16": 0.99, "int8-dynamic": 0.90, "int8-static": 0.90}
"""Minimum top-1 agreement with the float32 source model, per reduced precision."""

Reference = Callable[[np.ndarray], np.ndarray]


def resolve_providers(choice: str = "auto") -> list[str]:
    """Execution providers for ``choice``: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``.

    Raises:
        ValueError: unknown choice.
        ProviderUnavailableError: ``"cuda"`` requested but the installed ONNX Runtime has no
            CUDA provider.

    Example:
        >>> resolve_providers("cpu")
        ['CPUExecutionProvider']
    """
    import onnxruntime as ort

    if choice not in PROVIDERS:
        raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}; got {choice!r}")
    available = ort.get_available_providers()
    if choice == "cpu":
        return [_CPU]
    if _CUDA in available:
        return [_CUDA, _CPU]
    if choice == "cuda":
        raise ProviderUnavailableError(
            f"--provider cuda: the installed ONNX Runtime {ort.__version__} has no CUDAExecutionProvider "
            f"(available: {', '.join(available)}). Install onnxruntime-gpu instead of onnxruntime "
            "(never both) on a machine with CUDA."
        )
    return [_CPU]


def make_session(path: str | Path, provider: str = "auto", *, threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` on ``provider`` and the name of the provider that runs it.

    Args:
        path: the ``.onnx`` file.
        provider: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        threads: intra-op threads (None: ONNX Runtime's default).

    Returns:
        ``(session, provider_name)``, e.g. ``(..., "CPUExecutionProvider")``.

    Raises:
        ProviderUnavailableError: CUDA was required but the session fell back to the CPU.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=resolve_providers(provider))
    running = session.get_providers()[0]
    if provider == "cuda" and running != _CUDA:
        raise ProviderUnavailableError(
            f"--provider cuda: ONNX Runtime could not start the CUDA provider and fell back to {running} "
            "(check the CUDA/cuDNN libraries that onnxruntime-gpu needs)"
        )
    return session, running


@dataclass
class Verification:
    """Outcome of comparing an exported graph with its source model on random inputs.

    Attributes:
        precision: ``"fp32"``, ``"fp16"``, ``"int8-dynamic"`` or ``"int8-static"``.
        batch_sizes: sizes of the random batches that were compared.
        max_abs_diff: largest absolute difference between the two sets of logits.
        max_abs_logit: largest absolute logit of the source model (the scale of the diff).
        top1_agreement: fraction of samples whose arg-max class agrees.
        criterion: the pass criterion, e.g. ``"max_abs_diff <= 0.0001"``.
        passed: whether the criterion holds.
        provider: the ONNX Runtime execution provider that ran.
        inputs: ``"random"`` (standard normal, i.e. normalized-image statistics) or
            ``"calibration"``.
    """

    precision: str
    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    max_abs_logit: float
    top1_agreement: float
    criterion: str
    passed: bool
    provider: str
    inputs: str = "random"

    def describe(self) -> str:
        """One line with the numbers, e.g. for the console."""
        status = "ok" if self.passed else "FAILED"
        return (
            f"verify {self.precision:<12} {status:<6} max|diff| {self.max_abs_diff:.3g} "
            f"(max|logit| {self.max_abs_logit:.3g}), "
            f"top-1 agreement {self.top1_agreement:.4f} on {sum(self.batch_sizes)} {self.inputs} inputs "
            f"(batches {', '.join(map(str, self.batch_sizes))}); criterion {self.criterion}; {self.provider}"
        )


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """Max absolute difference and top-1 agreement of two ``(N, classes)`` logit arrays.

    Example:
        >>> import numpy as np
        >>> a = np.array([[1.0, 2.0], [3.0, 0.0]])
        >>> compare_logits(a, a + [[0.0, 0.5], [0.0, 4.0]])
        (4.0, 0.5)
    """
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"compare_logits: shapes differ: reference {reference.shape}, candidate {candidate.shape}")
    diff = float(np.max(np.abs(reference - candidate))) if reference.size else 0.0
    agree = float(np.mean(reference.argmax(axis=-1) == candidate.argmax(axis=-1)))
    return diff, agree


def _random_batch(rng: np.random.Generator, batch: int, input_size: Sequence[int]) -> np.ndarray:
    # inputs are normalized images: zero mean, unit variance per channel
    return rng.standard_normal((batch, *input_size), dtype=np.float32)


def _input_dtype(session) -> type:
    """float16 for graphs exported with float16 I/O, else float32."""
    return np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32


def verify(
    onnx_path: str | Path,
    reference: Reference,
    input_size: Sequence[int],
    *,
    precision: str = "fp32",
    batch_sizes: Sequence[int] = (1, 4, 16),
    atol: float = 1e-4,
    min_top1: float | None = None,
    provider: str = "auto",
    seed: int = 0,
    inputs: Sequence[np.ndarray] | None = None,
) -> Verification:
    """Run the ONNX graph and the source model on the same random batches and compare.

    Float32 graphs pass when :math:`\\max |z_{onnx} - z_{ref}| \\le` ``atol``; reduced-precision
    graphs pass when the top-1 agreement is at least ``min_top1`` (default
    :data:`TOP1_THRESHOLDS`), the max difference being reported only.

    Args:
        onnx_path: the ``.onnx`` file (input ``input``, output ``logits``).
        reference: maps a float32 batch to the source model's logits.
        input_size: one input without the batch axis.
        precision: the graph's precision (selects the criterion).
        batch_sizes: sizes of the random batches.
        atol: absolute tolerance for float32.
        min_top1: minimum top-1 agreement for reduced precision.
        provider: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        seed: seed of the random inputs.
        inputs: batches to use instead of random ones (``batch_sizes`` is then ignored);
            static int8 graphs are verified on their calibration data, since their
            activation ranges were fitted to it.

    A graph with float16 input receives the same batches rounded to float16.

    Returns:
        A :class:`Verification`.
    """
    sess, running = make_session(onnx_path, provider)
    rng = np.random.default_rng(seed)
    dtype = _input_dtype(sess)
    batches = list(inputs) if inputs is not None else [_random_batch(rng, int(b), input_size) for b in batch_sizes]
    refs, outs = [], []
    for x in batches:
        x = np.asarray(x, dtype=np.float32)
        refs.append(np.asarray(reference(x), dtype=np.float32))
        outs.append(np.asarray(sess.run(["logits"], {"input": x.astype(dtype)})[0], dtype=np.float32))
    ref_all = np.concatenate(refs)
    diff, agree = compare_logits(ref_all, np.concatenate(outs))
    if precision == "fp32":
        criterion, passed = f"max_abs_diff <= {atol:g}", diff <= atol
    else:
        threshold = TOP1_THRESHOLDS[precision] if min_top1 is None else float(min_top1)
        criterion, passed = f"top1_agreement >= {threshold:g}", agree >= threshold
    return Verification(
        precision, tuple(len(x) for x in batches), diff, float(np.abs(ref_all).max()), agree, criterion,
        bool(passed), running, "random" if inputs is None else "calibration",
    )  # fmt: skip


@dataclass
class LatencyRow:
    """Median latency of one batch size, in milliseconds per call, over ``repeats`` repetitions."""

    batch_size: int
    reference_ms: float
    onnx_ms: float
    repeats: int

    @property
    def speedup(self) -> float:
        """``reference_ms / onnx_ms``: how many times faster ONNX Runtime is."""
        return self.reference_ms / self.onnx_ms


@dataclass
class Benchmark:
    """Latency of the source model (eager) and ONNX Runtime, measured interleaved.

    Attributes:
        reference: what ran the source model, e.g. ``"PyTorch eager (cpu)"``.
        provider: the ONNX Runtime execution provider.
        threads: intra-op threads given to both.
        rows: one :class:`LatencyRow` per batch size.
    """

    reference: str
    provider: str
    threads: int
    rows: list[LatencyRow]

    def table(self) -> str:
        """A Markdown table of the rows."""
        lines = [
            f"| batch | {self.reference} ms | ONNX Runtime ({self.provider}) ms | speed-up |",
            "|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r.batch_size} | {r.reference_ms:.3f} | {r.onnx_ms:.3f} | {r.speedup:.2f}x |" for r in self.rows
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        out = asdict(self)
        for row, r in zip(out["rows"], self.rows):
            row["speedup"] = r.speedup
        return out


def benchmark(
    onnx_path: str | Path,
    reference: Reference,
    input_size: Sequence[int],
    *,
    reference_name: str = "PyTorch eager",
    batch_sizes: Sequence[int] = (1, 64),
    provider: str = "auto",
    threads: int | None = None,
    budget_s: float = 2.0,
    min_repeats: int = 5,
    max_repeats: int = 200,
    warmup: int = 3,
    seed: int = 0,
) -> Benchmark:
    """Median latency of ``reference`` and of the ONNX graph, measured interleaved.

    For each batch size both run ``warmup`` times; then repetitions alternate between the
    two (the order flips every repetition, so neither always follows the other) for about
    ``budget_s`` seconds, bounded by ``min_repeats`` and ``max_repeats``. In a repetition a
    side first makes one untimed call (its caches were just used by the other runtime),
    then ``inner`` timed back-to-back calls (enough for ~20 ms of the faster side at small
    batches, one at large batches); the repetition's value is their mean. Each side's
    median over the repetitions is reported: a steady-state latency, with slow drifts of
    the machine's load hitting both sides alike.

    Args:
        onnx_path: the ``.onnx`` file.
        reference: the source model as a NumPy function.
        input_size: one input without the batch axis.
        reference_name: label of the reference in the table.
        batch_sizes: batch sizes to time.
        provider: ONNX Runtime provider choice.
        threads: intra-op threads for ONNX Runtime; defaults to ``torch.get_num_threads()``
            when PyTorch is importable (so both sides use the same number), else ONNX
            Runtime's default.
        budget_s: time budget per batch size.
        min_repeats: minimum repetitions.
        max_repeats: maximum repetitions.
        warmup: untimed calls of each side first.
        seed: seed of the random input.

    Returns:
        A :class:`Benchmark`.
    """
    if threads is None:
        try:
            import torch

            threads = torch.get_num_threads()
        except ImportError:  # pragma: no cover - Keras-only installs
            threads = 0
    sess, running = make_session(onnx_path, provider, threads=threads or None)
    rng = np.random.default_rng(seed)
    rows = []
    for b in batch_sizes:
        x = _random_batch(rng, int(b), input_size)
        x_onnx = x.astype(_input_dtype(sess))

        def run_onnx(x=x_onnx) -> None:
            sess.run(["logits"], {"input": x})

        def run_ref(x=x) -> None:
            reference(x)

        for _ in range(warmup):
            run_ref()
            run_onnx()
        single = []
        for fn in (run_ref, run_onnx):
            t0 = time.perf_counter()
            fn()
            single.append(max(time.perf_counter() - t0, 1e-7))
        inner = max(1, min(100, int(0.02 / min(single))))
        per_repeat = (inner + 1) * sum(single)
        repeats = int(min(max_repeats, max(min_repeats, budget_s / per_repeat)))
        times: dict[Callable, list[float]] = {run_ref: [], run_onnx: []}
        for i in range(repeats):
            for fn in (run_ref, run_onnx) if i % 2 == 0 else (run_onnx, run_ref):
                fn()
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn()
                times[fn].append((time.perf_counter() - t0) / inner)
        rows.append(
            LatencyRow(
                int(b), 1e3 * statistics.median(times[run_ref]), 1e3 * statistics.median(times[run_onnx]), repeats
            )
        )
    return Benchmark(reference_name, running, int(threads or 0), rows)
