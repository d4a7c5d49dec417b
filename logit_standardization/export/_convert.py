"""Graph production: PyTorch and Keras to ONNX, metadata, float16 and int8 conversions.

Every function here reads and writes files in a private working directory; the public
entry point (:func:`logit_standardization.export.export_onnx`) moves the finished file into
place atomically.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import CalibrationDataError, ConversionError

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "export_torch",
    "export_keras",
    "finalize",
    "to_fp16",
    "to_int8",
    "read_calibration_data",
    "read_metadata",
]

#: Name of the exported graph's input: normalized images ``(batch, *input_size)``.
INPUT_NAME = "input"
#: Name of the exported graph's output: the logits ``(batch, num_classes)``.
OUTPUT_NAME = "logits"
#: Name of the dynamic batch axis of the input and the output.
BATCH_DIM = "batch"
# above this many bytes of weights the graph cannot be one protobuf file (2 GiB limit)
_SINGLE_FILE_LIMIT = 1_800_000_000


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporters' progress prints, log records and warnings (failures still raise)."""
    loggers = [logging.getLogger(name) for name in ("torch", "onnxscript", "onnx_ir", "tf2onnx", "root")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(exc: BaseException) -> str:
    """``Type: first line`` of the innermost cause of ``exc`` (the informative one)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [ln.strip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


# --------------------------------------------------------------------------------------------
# PyTorch


def export_torch(
    model,
    input_size: tuple[int, ...],
    path: Path,
    *,
    opset: int | None,
    batch: int | None,
    exporter: str = "auto",
    log: Callable[[str], None] | None = None,
) -> tuple[str, bool, list[str]]:
    """Export ``model`` with ``torch.onnx.export``.

    Args:
        model: a module in eval mode mapping ``(N, *input_size)`` to logits.
        input_size: one input without the batch axis.
        path: the ``.onnx`` file to write.
        opset: ONNX opset, or None for the exporter's default.
        batch: a fixed batch size, or None for a dynamic batch axis.
        exporter: ``"auto"`` (the ``torch.export``-based exporter, falling back to the
            TorchScript exporter with a note), ``"dynamo"`` or ``"torchscript"``.
        log: called with one-line progress notes.

    Returns:
        ``(exporter_used, external_data, notes)``.

    Raises:
        ConversionError: the requested exporter(s) failed.
    """
    import torch

    n_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    external = n_bytes > _SINGLE_FILE_LIMIT
    sample = torch.randn(batch or 2, *input_size)
    notes: list[str] = []
    if external:
        notes.append(f"weights ({n_bytes / 2**30:.1f} GiB) exceed the 2 GiB protobuf limit: stored beside the graph")

    def dynamo() -> None:
        shapes = None if batch else ({0: torch.export.Dim(BATCH_DIM)},)
        with _quiet():
            torch.onnx.export(
                model, (sample,), str(path), dynamo=True, verbose=False, optimize=True,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
                dynamic_shapes=shapes, external_data=external,
            )  # fmt: skip

    def torchscript() -> None:
        axes = None if batch else {INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}}
        with _quiet():
            torch.onnx.export(
                model, (sample,), str(path), dynamo=False, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], opset_version=opset, dynamic_axes=axes, do_constant_folding=True,
            )  # fmt: skip

    with torch.no_grad():
        if exporter in ("auto", "dynamo"):
            try:
                dynamo()
                return "dynamo", external, notes
            except Exception as exc:  # noqa: BLE001 - any exporter failure leads to the fallback
                if exporter == "dynamo":
                    raise ConversionError(f"the torch.export-based ONNX exporter failed: {_first_line(exc)}") from exc
                note = f"note: the torch.export-based exporter failed ({_first_line(exc)}); using the TorchScript exporter"
                notes.append(note)
                if log:
                    log(note)
                for leftover in path.parent.glob(path.name + "*"):
                    leftover.unlink()
        try:
            torchscript()
        except Exception as exc:  # noqa: BLE001
            raise ConversionError(f"the TorchScript ONNX exporter failed: {_first_line(exc)}") from exc
        return "torchscript", external, notes


# --------------------------------------------------------------------------------------------
# Keras


def export_keras(model, path: Path, *, opset: int | None, batch: int | None) -> str:
    """Export a Keras 3 model through ``model.export(path, format="onnx")`` (tf2onnx on TensorFlow).

    Returns:
        The exporter description, e.g. ``"keras (tensorflow backend)"``.
    """
    import keras

    spec = model.inputs[0]
    sample_shape = tuple(spec.shape)[1:]
    signature = None
    if batch:
        signature = [keras.InputSpec(shape=(batch, *sample_shape), dtype="float32", name=spec.name)]
    try:
        with _quiet():
            model(np.zeros((batch or 1, *sample_shape), dtype=np.float32), training=False)  # a loaded model must be called once
            model.export(str(path), format="onnx", verbose=False, input_signature=signature, opset_version=opset)
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"Keras ONNX export failed: {_first_line(exc)}") from exc
    return f"keras ({keras.backend.backend()} backend)"


# --------------------------------------------------------------------------------------------
# graph editing


def _rename_value(graph, old: str, new: str) -> None:
    if old == new:
        return
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.name == old:
            value.name = new


def _topological_sort(graph) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs."""
    known = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in known for name in n.input)]
        if not ready:  # inputs from an outer scope or a cycle: keep the rest as it is
            ordered += pending
            break
        for node in ready:
            known.update(node.output)
        ordered += ready
        pending = [n for n in pending if not any(n is r for r in ready)]
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def _name_batch_axis(value, batch: int | None) -> None:
    dims = value.type.tensor_type.shape.dim
    if dims and batch is None:
        dims[0].dim_param = BATCH_DIM
    elif dims:
        dims[0].dim_value = batch


def finalize(path: Path, metadata: dict[str, Any], *, batch: int | None, external_data: bool = False) -> Any:
    """Name the I/O ``input``/``logits``, name the batch axis, write metadata, check, save in place.

    Args:
        path: an ``.onnx`` file with one input and one output.
        metadata: entries for ``metadata_props`` (non-strings are JSON-encoded).
        batch: the fixed batch size, or None for a dynamic batch axis.
        external_data: keep the weights in a side file (models over 2 GiB).

    Returns:
        The checked ``onnx.ModelProto``.

    Raises:
        ConversionError: the graph has several inputs/outputs or fails ``onnx.checker``.
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ConversionError(
            f"expected a graph with one input and one output; got inputs {[v.name for v in inputs]}, "
            f"outputs {[v.name for v in graph.output]}"
        )
    _rename_value(graph, inputs[0].name, INPUT_NAME)
    _rename_value(graph, graph.output[0].name, OUTPUT_NAME)
    _name_batch_axis(inputs[0], batch)
    _name_batch_axis(graph.output[0], batch)
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    how = "normalized with metadata 'normalization'" if metadata.get("normalization") else "(no normalization recorded)"
    model.doc_string = (
        f"{metadata.get('arch', 'model')} classifier: input '{INPUT_NAME}' "
        f"{metadata.get('input_layout', '')} {how}, output '{OUTPUT_NAME}'."
    )
    tmp = path.with_name(path.name + ".tmp")
    if external_data:
        onnx.save(model, str(tmp), save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save(model, str(tmp))
    try:
        onnx.checker.check_model(str(tmp), full_check=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises several checker error types
        tmp.unlink()
        raise ConversionError(f"onnx.checker rejected the exported graph: {_first_line(exc)}") from exc
    os.replace(tmp, path)
    return model


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``metadata_props`` of an ``.onnx`` file, JSON values decoded.

    Example:
        The entries written by ``lskd-export``::

            {"arch": "resnet8x4", "dataset": "cifar100", "num_classes": 100,
             "input_size": [3, 32, 32], "input_layout": "NCHW",
             "normalization": {"mean": [...], "std": [...]}, "precision": "fp32", ...}
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {}
    for entry in model.metadata_props:
        try:
            out[entry.key] = json.loads(entry.value)
        except ValueError:
            out[entry.key] = entry.value
    return out


# --------------------------------------------------------------------------------------------
# reduced precision


def to_fp16(src: Path, dst: Path, *, keep_io_types: bool = True) -> None:
    """Convert weights and activations to float16 (``onnxruntime.transformers.float16``).

    Args:
        src: float32 ``.onnx`` file.
        dst: output file.
        keep_io_types: keep ``input`` and ``logits`` float32 (casts are inserted inside).
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        with _quiet():
            model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=keep_io_types)
        _topological_sort(model.graph)  # the converter appends the input casts at the end
        onnx.save(model, str(dst))
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"float16 conversion failed: {_first_line(exc)}") from exc


def to_int8(src: Path, dst: Path, *, calibration: list[np.ndarray] | None = None) -> str:
    """Quantize to int8 with ``onnxruntime.quantization``.

    Dynamic quantization (no data) stores int8 weights and quantizes activations at run time;
    static quantization (``calibration`` batches given) calibrates activation ranges on the
    batches (MinMax) and writes a QDQ graph with per-channel int8 weights.

    Args:
        src: float32 ``.onnx`` file.
        dst: output file.
        calibration: input batches for static quantization, or None for dynamic.

    Returns:
        ``"int8-dynamic"`` or ``"int8-static"``.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst.with_name(dst.stem + ".pre.onnx")
    try:
        with _quiet():
            quant_pre_process(str(src), str(pre))
            if calibration is None:
                quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8)
                kind = "int8-dynamic"
            else:

                class _Reader(CalibrationDataReader):
                    def __init__(self) -> None:
                        self._batches = iter(calibration)

                    def get_next(self) -> dict[str, np.ndarray] | None:
                        batch = next(self._batches, None)
                        return None if batch is None else {INPUT_NAME: batch}

                quantize_static(
                    str(pre), str(dst), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                )  # fmt: skip
                kind = "int8-static"
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"int8 quantization failed: {_first_line(exc)}") from exc
    finally:
        pre.unlink(missing_ok=True)
    return kind


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def read_calibration_data(
    directory: str | Path,
    *,
    input_size: tuple[int, ...],
    layout: str,
    normalization: dict[str, list[float]] | None,
    batch: int | None,
    max_batch: int = 32,
) -> list[np.ndarray]:
    """Read calibration inputs for static int8 quantization.

    The directory holds, in any mix (read in sorted file-name order):

    * ``.npy`` files with float arrays shaped like the network input, one sample
      ``input_size`` or a batch ``(N, *input_size)``, **already normalized** (exactly what the
      network receives);
    * images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.webp``), resized to the input size
      (bilinear), scaled to ``[0, 1]`` and normalized with the model's mean/std.

    Args:
        directory: the folder.
        input_size: one input without the batch axis, in the model's layout.
        layout: ``"NCHW"`` or ``"NHWC"``.
        normalization: mean/std for images (None: images are refused).
        batch: fixed batch size of the graph (batches are cut to exactly this), or None.
        max_batch: batch size used for a dynamic graph.

    Returns:
        Float32 batches.

    Raises:
        CalibrationDataError: not a directory, no usable files, or a wrongly shaped array.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CalibrationDataError(f"calibration data {str(directory)!r} is not a directory")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in (".npy", *_IMAGE_SUFFIXES))
    if not files:
        raise CalibrationDataError(
            f"calibration data {str(directory)!r} holds no .npy arrays or images "
            f"({', '.join(_IMAGE_SUFFIXES)})"
        )
    size = tuple(int(d) for d in input_size)
    samples: list[np.ndarray] = []
    for f in files:
        if f.suffix.lower() == ".npy":
            try:
                arr = np.load(f, allow_pickle=False)
            except ValueError as exc:
                raise CalibrationDataError(f"calibration file {str(f)!r} cannot be read: {exc}") from None
            if arr.dtype.kind not in "fiu":
                raise CalibrationDataError(
                    f"calibration file {str(f)!r} must hold a numeric array; got dtype {arr.dtype}"
                )
            if arr.shape == size:
                arr = arr[None]
            if arr.ndim != len(size) + 1 or tuple(arr.shape[1:]) != size:
                raise CalibrationDataError(
                    f"calibration file {str(f)!r} must hold an array of shape {size} or (N, {', '.join(map(str, size))}) "
                    f"({layout} without/with the batch axis); got {arr.shape}"
                )
            samples.extend(np.asarray(arr, dtype=np.float32))
        else:
            samples.append(_read_image(f, size, layout, normalization))
    data = np.stack(samples).astype(np.float32)
    step = batch or max_batch
    if batch and len(data) < batch:
        raise CalibrationDataError(
            f"calibration data {str(directory)!r} has {len(data)} samples; the graph has a fixed batch of {batch}"
        )
    stop = len(data) - len(data) % batch if batch else len(data)
    return [data[i : i + step] for i in range(0, stop, step)]


def _read_image(path: Path, size: tuple[int, ...], layout: str, normalization) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if normalization is None:
        raise CalibrationDataError(
            f"calibration image {str(path)!r} cannot be normalized: the model has no recorded mean/std "
            "(pass --dataset, or give already-normalized .npy arrays)"
        )
    channels, height, width = (size[0], size[1], size[2]) if layout == "NCHW" else (size[2], size[0], size[1])
    if channels not in (1, 3):
        raise CalibrationDataError(f"calibration images need a 1- or 3-channel input; the model takes {channels}")
    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if channels == 3 else "L").resize((width, height), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise CalibrationDataError(f"calibration image {str(path)!r} cannot be read: {exc}") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    mean = np.asarray(normalization["mean"], dtype=np.float32)
    std = np.asarray(normalization["std"], dtype=np.float32)
    arr = (arr - mean) / std
    return arr.transpose(2, 0, 1) if layout == "NCHW" else arr
