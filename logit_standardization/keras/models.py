"""Training with Keras: :class:`Distiller` (online distillation), :class:`EpochSchedule`,
:func:`pack_targets` (labels next to teacher logits), and :class:`StandardizedLogitsDistillation`
for :class:`keras.distillation.Distiller`.
"""

from __future__ import annotations

from typing import Any

import keras  # the Keras 3 package (absolute import; this module is logit_standardization.keras.models)
from keras import ops

from .. import _checks
from . import ops as _ops
from .losses import KDLoss, _register

__all__ = ["Distiller", "EpochSchedule", "StandardizedLogitsDistillation", "pack_targets"]


# ----------------------------------------------------------------------------- targets
def pack_targets(teacher_logits: Any, labels: Any) -> Any:
    """Put integer labels next to teacher logits: ``(B, C)`` and ``(B,)`` → ``(B, C + 1)``.

    The loss classes read a ``(B, C + 1)`` target as teacher logits plus the label
    in the last column (they tell the two formats apart by the width). The result
    is float32 (float64 for float64 teacher logits), which holds every label up to
    :math:`2^{24}` exactly. NumPy inputs give a NumPy array (for ``fit`` or a
    ``tf.data``/``PyDataset`` pipeline), tensors a tensor.

    Args:
        teacher_logits: ``(B, C)`` floating-point teacher logits.
        labels: ``(B,)`` (or ``(B, 1)``) integer class indices in ``[0, C)``.

    Returns:
        ``(B, C + 1)`` targets.

    Example:
        >>> import numpy as np
        >>> from logit_standardization.keras import pack_targets
        >>> pack_targets(np.array([[0.5, -1.0, 2.0]]), np.array([2]))
        array([[ 0.5, -1. ,  2. ,  2. ]])
    """
    fn = "pack_targets"
    numpy_in = not (_ops._is_tensor(teacher_logits) or _ops._is_tensor(labels))
    t = _ops._as_logits(fn, "teacher_logits", teacher_logits)
    y = _ops._tensor(labels)
    if _ops._is_tensor(y) and len(_ops._shape(y)) == 2 and _ops._shape(y)[1] == 1:
        y = ops.reshape(y, (-1,))
    y = _ops._as_labels(fn, "labels", y, _ops._shape(t)[0], t.shape[-1])
    dtype = "float64" if _ops._dtype(t) == "float64" else "float32"
    packed = ops.concatenate([ops.cast(t, dtype), ops.expand_dims(ops.cast(y, dtype), -1)], axis=-1)
    return ops.convert_to_numpy(packed) if numpy_in else packed


# ----------------------------------------------------------------------------- callbacks, Distiller
def _epoch_losses(model: Any) -> list:
    found = []
    for candidate in (getattr(model, "loss", None), getattr(model, "distillation_loss", None)):
        if candidate is None:
            continue
        for item in keras.tree.flatten(candidate):
            if hasattr(item, "set_epoch") and item not in found:
                found.append(item)
    return found


class EpochSchedule(keras.callbacks.Callback):
    """Tell the epoch-driven losses of the model which epoch starts (1-based).

    Drives the :class:`~logit_standardization.keras.DKDLoss` warm-up and the :class:`~logit_standardization.keras.CTKDLoss` :math:`\\lambda`
    schedule, for a model compiled with such a loss or a :class:`Distiller` (which
    adds this callback itself). Use ``initial_epoch`` of ``fit`` to resume.

    Example:
        >>> from logit_standardization.keras import DKDLoss, EpochSchedule
        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> model.compile(loss=DKDLoss(warmup_epochs=20))
        >>> cb = EpochSchedule(); cb.set_model(model); cb.on_epoch_begin(4)
        >>> model.loss.warmup_factor
        0.25
    """

    def on_epoch_begin(self, epoch, logs=None):
        for loss in _epoch_losses(self.model):
            loss.set_epoch(epoch + 1)


@_register
class Distiller(keras.Model):
    r"""Online distillation: a frozen teacher runs in inference mode, the student trains.

    A :class:`keras.Model` whose ``call`` is the student, so ``fit``, ``evaluate``,
    ``predict`` and callbacks work as for any model; ``compute_loss`` runs the teacher
    (``training=False``, no gradient) on the same inputs and returns

    .. math::

        \mathcal{L} = \mathrm{loss}(\mathrm{pack\_targets}(t, y),\, s)
            + w_{ce}\,\mathrm{CE}(s, y) + \text{student regularizers}

    with Keras's reduction and ``sample_weight``. Without labels (``fit(x)``) the loss
    sees the plain teacher logits and the cross-entropy is left out. The default
    ``loss`` with ``ce_weight=0.1`` is the published KD+LS recipe
    (``KDLoss(temperature=2.0, kd_weight=9.0)``). A :class:`~logit_standardization.keras.CTKDLoss`'s temperature
    becomes a weight of the distiller; :class:`EpochSchedule` is added to ``fit``.

    Save or export the student alone with ``distiller.student.save(...)`` /
    ``distiller.student.export(...)``; the distiller itself also saves and reloads.

    Args:
        teacher: a trained :class:`keras.Model` giving logits; frozen here.
        student: the :class:`keras.Model` to train, giving logits of the same shape.
        loss: a :class:`~logit_standardization.keras.KDLoss`, :class:`~logit_standardization.keras.DKDLoss`, :class:`~logit_standardization.keras.CTKDLoss` or any Keras loss
            taking ``(targets, student_logits)``; default ``KDLoss(kd_weight=9.0)``.
        ce_weight: weight of the cross-entropy of the student on the labels.
        **kwargs: :class:`keras.Model` arguments (``name``...).

    Example:
        >>> import keras, numpy as np
        >>> from logit_standardization.keras import Distiller
        >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> distiller = Distiller(teacher, student)
        >>> distiller.compile(optimizer="adam", metrics=["accuracy"])
        >>> x, y = np.ones((8, 4), "float32"), np.zeros(8, "int32")
        >>> history = distiller.fit(x, y, epochs=1, verbose=0)
        >>> sorted(history.history)
        ['accuracy', 'loss']
    """

    def __init__(self, teacher, student, *, loss=None, ce_weight: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(teacher, keras.Model):
            _checks.fail("Distiller", "teacher", "a keras.Model", type(teacher).__name__, TypeError)
        if not isinstance(student, keras.Model):
            _checks.fail("Distiller", "student", "a keras.Model", type(student).__name__, TypeError)
        if loss is None:
            loss = KDLoss(kd_weight=9.0)
        if not callable(loss):
            _checks.fail("Distiller", "loss", "a Keras loss", repr(loss), TypeError)
        self.ce_weight = _checks.check_hyper("Distiller", ce_weight=ce_weight)["ce_weight"]
        self.teacher = teacher
        self.student = student
        self.teacher.trainable = False
        self.distillation_loss = loss
        self._loss_variables = list(getattr(loss, "variables", []) or [])
        reduction = getattr(loss, "reduction", "sum_over_batch_size")
        self._ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction, name="ce")

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        """Configure training like :meth:`keras.Model.compile`; the loss is the distiller's own."""
        if loss is not None:
            _checks.fail("Distiller.compile", "loss", "left out (pass it as Distiller(..., loss=...))",
                          repr(loss))
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Re-compile from a saved compile config (used when a saved distiller is loaded)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y_pred is None:
            y_pred = self(x, training=training)
        teacher_logits = ops.stop_gradient(self.teacher(x, training=False))
        if y is not None:
            y = ops.reshape(y, (-1,)) if len(_ops._shape(y)) == 2 and _ops._shape(y)[1] == 1 else y
            targets = pack_targets(teacher_logits, y)  # checks the labels (and the teacher logits)
            y = ops.cast(targets[:, -1], "int32")  # the checked labels: the cross-entropy runs after the check
        else:
            targets = teacher_logits
        total = self.distillation_loss(targets, y_pred, sample_weight)
        if self.ce_weight and y is not None:
            total = total + self.ce_weight * self._ce(y, y_pred, sample_weight)
        for extra in self.student.losses:
            total = total + ops.cast(ops.sum(extra), total.dtype)
        return total

    def fit(self, *args, callbacks=None, **kwargs):
        """:meth:`keras.Model.fit`, with :class:`EpochSchedule` added when the loss needs the epoch."""
        callbacks = list(callbacks or [])
        if _epoch_losses(self) and not any(isinstance(cb, EpochSchedule) for cb in callbacks):
            callbacks.append(EpochSchedule())
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def get_config(self):
        def model_config(model):  # the distiller's own compile config governs; drop the models' ones
            config = keras.saving.serialize_keras_object(model)
            config.pop("compile_config", None)
            return config

        return {
            "name": self.name,
            "teacher": model_config(self.teacher),
            "student": model_config(self.student),
            "loss": keras.saving.serialize_keras_object(self.distillation_loss),
            "ce_weight": self.ce_weight,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        de = keras.saving.deserialize_keras_object
        teacher, student, loss = de(config.pop("teacher")), de(config.pop("student")), de(config.pop("loss"))
        return cls(teacher, student, loss=loss, **config)


# ----------------------------------------------------------------------------- keras.distillation
def _loss_function(item: Any) -> Any:
    """A loss from a string identifier, a loss object/function, or ``None`` (as ``LogitsDistillation``)."""
    if item is None or not isinstance(item, str):
        return item
    loss = keras.losses.get(item)
    if loss is None:
        _checks.fail("StandardizedLogitsDistillation", "loss", "a Keras loss identifier", repr(item))
    return loss


def _is_kl(loss: Any) -> bool:
    return loss is keras.losses.kl_divergence or isinstance(loss, keras.losses.KLDivergence)


@_register
class StandardizedLogitsDistillation(keras.distillation.DistillationLoss):
    r"""Logit-standardized KD for :class:`keras.distillation.Distiller`.

    The drop-in counterpart of :class:`keras.distillation.LogitsDistillation`, with the same
    arguments ``temperature`` and ``loss`` (plus keyword-only ``kd_weight``, ``standardize``,
    ``ddof``, ``eps``). ``compute_loss(teacher_outputs, student_outputs)`` standardizes both
    sides (:func:`~logit_standardization.keras.zscore`, each row with its own statistics) and
    then, for each output:

    * ``loss="kl_divergence"`` (the default; also ``keras.losses.kl_divergence`` or a
      ``keras.losses.KLDivergence``): :func:`~logit_standardization.keras.kd_loss`, the exact
      :math:`\tau^2\,\mathrm{KL}(\mathrm{softmax}(\tilde t/\tau)\,\|\,\mathrm{softmax}(\tilde s/\tau))`
      batch mean (``LogitsDistillation`` also scales KL by :math:`\tau^2`);
    * any other loss (an identifier or a loss object/function):
      ``mean(loss(Z(t)/τ, Z(s)/τ))``, as ``LogitsDistillation`` applies it to ``logits/τ``;
    * ``None`` skips that output.

    ``loss`` is one loss for every output, or a structure matching the outputs of a
    multi-output model. The terms are summed and multiplied by ``kd_weight``. That
    Distiller passes no labels to its distillation losses, so DKD does not fit there; use
    :class:`Distiller` with :class:`~logit_standardization.keras.DKDLoss`.

    Args:
        temperature: base temperature :math:`\tau > 0`.
        loss: ``"kl_divergence"``, another Keras loss (identifier or object), ``None``, or a
            structure of these matching the model outputs.
        kd_weight: weight of the distillation term.
        standardize: apply the Z-score pre-process (``False``: plain logits divided by :math:`\tau`).
        ddof: deviation convention of :func:`~logit_standardization.keras.zscore`.
        eps: constant added to the deviation.

    Example:
        >>> import numpy as np
        >>> from logit_standardization.keras import StandardizedLogitsDistillation
        >>> t = np.array([[2.0, 0.0, -2.0]], dtype="float32")
        >>> round(float(StandardizedLogitsDistillation().compute_loss(t, 3 * t)), 6)
        0.0
        >>> round(float(StandardizedLogitsDistillation(loss="mse").compute_loss(t, 3 * t - 1)), 6)
        0.0
    """

    def __init__(self, temperature: float = 2.0, loss: Any = "kl_divergence", *, kd_weight: float = 1.0,
                 standardize: bool = True, ddof: int = 1, eps: float = 1e-7):
        fn = "StandardizedLogitsDistillation"
        h = _checks.check_hyper(fn, temperature=temperature, kd_weight=kd_weight, standardize=standardize,
                                ddof=ddof, eps=eps)
        self.temperature, self.kd_weight = h["temperature"], h["kd_weight"]
        self.standardize, self.ddof, self.eps = h["standardize"], h["ddof"], h["eps"]
        self.loss = keras.tree.map_structure(_loss_function, loss)
        if all(item is None for item in keras.tree.flatten(self.loss)):
            _checks.fail(fn, "loss", "a loss, or a structure of losses with at least one that is not None", repr(loss))
        for item in keras.tree.flatten(self.loss):
            if item is not None and not callable(item):
                _checks.fail(fn, "loss", "a Keras loss (identifier, object or function) or None", repr(item), TypeError)

    def _one(self, loss: Any, teacher: Any, student: Any) -> Any:
        if loss is None:
            return None
        teacher = ops.stop_gradient(_ops._tensor(teacher))
        kw = {"ddof": self.ddof, "eps": self.eps}
        if _is_kl(loss):
            return _ops.kd_loss(student, teacher, temperature=self.temperature, standardize=self.standardize, **kw)
        if self.standardize:
            zt, zs = (_ops.zscore(v, temperature=self.temperature, **kw) for v in (teacher, student))
        else:
            zt, zs = (ops.divide(v, self.temperature) for v in (teacher, _ops._tensor(student)))
        return ops.mean(loss(zt, zs))

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """The weighted, summed distillation loss of every output (see the class docstring)."""
        if keras.tree.is_nested(self.loss):
            values = keras.tree.map_structure(self._one, self.loss, teacher_outputs, student_outputs)
        else:
            values = keras.tree.map_structure(lambda t, s: self._one(self.loss, t, s), teacher_outputs,
                                              student_outputs)
        terms = [v for v in keras.tree.flatten(values) if v is not None]
        total = terms[0] if len(terms) == 1 else ops.sum(ops.stack([ops.cast(v, "float32") for v in terms]))
        return self.kd_weight * total

    def get_config(self):
        """``temperature``, ``loss`` (serialized as ``LogitsDistillation`` does) and the LS arguments."""
        return {"temperature": self.temperature, "loss": keras.saving.serialize_keras_object(self.loss),
                "kd_weight": self.kd_weight, "standardize": self.standardize, "ddof": self.ddof, "eps": self.eps}

    @classmethod
    def from_config(cls, config):
        """Rebuild from :meth:`get_config`."""
        config = dict(config)
        loss = config.pop("loss", "kl_divergence")
        if isinstance(loss, (list, tuple)):
            loss = [None if item is None else keras.losses.deserialize(item) for item in loss]
        elif loss is not None:
            loss = keras.losses.deserialize(loss)
        return cls(loss=loss, **config)
