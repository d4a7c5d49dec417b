"""Keras loss classes for ``model.compile(loss=...)``: :class:`KDLoss`, :class:`DKDLoss`, :class:`CTKDLoss`.

``loss(y_true, y_pred)`` with ``y_pred`` the student logits ``(B, C)`` and ``y_true`` the
teacher logits ``(B, C)`` or :func:`~logit_standardization.keras.pack_targets` output
``(B, C + 1)`` (label in the last column). Per sample,

.. math::

    \\ell_i = w_{ce}\\,\\mathrm{CE}(s_i, y_i) + w_{kd}\\,\\mathrm{distill}_i

with the distillation term computed by the functional forms of
:mod:`logit_standardization.keras.ops`; then ``sample_weight``, masks and the ``reduction``
apply with Keras's meaning (``"sum"``: the sum over the batch; ``"sum_over_batch_size"``: that
sum over the batch size), computed in the loss ``dtype`` on every backend. The classes are registered Keras serializables (``logit_standardization>KDLoss``, ...).

Token-level logits and masks: the functions :func:`~logit_standardization.keras.kd_loss` and
:func:`~logit_standardization.keras.dkd_loss` take ``(..., C)`` logits and a ``mask`` keyword.
Keras's ``Loss`` call has no room for a mask argument, so the classes keep Keras's own masking:
flatten the positions into rows (``(B * T, C)``) and pass the position mask, flattened, as
``sample_weight``; ``reduction="mean_with_sample_weight"`` then averages over the unmasked
positions, the same value as the functions' ``mask``.
"""

from __future__ import annotations

import math
from typing import Any

import keras  # the Keras 3 package (absolute import; this module is logit_standardization.keras.losses)
import numpy as np
from keras import ops

from .. import _checks
from .._ctkd import ctkd_lambda
from .._dkd import dkd_warmup
from . import ops as _ops

try:  # the mask Keras attached to a tensor (an attribute, or a registry for tensors without one)
    from keras.src.backend import get_keras_mask as _get_keras_mask
except ImportError:  # pragma: no cover - Keras 3 versions without the helper

    def _get_keras_mask(x: Any) -> Any:
        return getattr(x, "_keras_mask", None)

__all__ = ["CTKDLoss", "DKDLoss", "KDLoss"]

_PACKAGE = "logit_standardization"
# Keras's own reduction names (keras.losses.Loss); None is Keras's "no reduction" too
KERAS_REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none")


def _register(cls):
    return keras.saving.register_keras_serializable(package=_PACKAGE)(cls)


def _epoch_variable(value: float, name: str) -> Any:
    """A non-trainable float32 scalar driven by the epoch (:class:`~logit_standardization.keras.EpochSchedule`)."""
    return keras.Variable(value, trainable=False, dtype="float32", name=name)


def _loss_dtype(fn: str, dtype: Any) -> Any:
    """Keras ``dtype`` argument of a loss, refusing half precision (targets would lose labels)."""
    if dtype is None:
        return None
    name = keras.dtype_policies.get(dtype).compute_dtype
    if name not in ("float32", "float64"):
        _checks.fail(fn, "dtype", "float32 or float64 (statistics need at least float32)", repr(dtype))
    return dtype


def _split_targets(fn: str, y_true: Any, y_pred: Any, *, labels_required: str | None) -> tuple[Any, Any]:
    """``(teacher_logits, labels or None)`` from plain ``(B, C)`` or packed ``(B, C+1)`` targets.

    ``labels_required`` names the reason labels are needed (``None`` if they are optional).
    """
    c = y_pred.shape[-1]
    shape = _ops._shape(y_true)
    packed = f"teacher logits and labels of shape (batch, {c + 1}) made by pack_targets"
    if len(shape) != 2 or shape[-1] not in (c, c + 1):
        _checks.fail(fn, "y_true", f"teacher logits of shape (batch, {c}) or {packed}", f"shape {shape}")
    if shape[-1] == c:
        if labels_required is not None:
            _checks.fail(fn, "y_true", f"{packed} ({labels_required})", f"shape {shape}")
        return y_true, None
    teacher, column = y_true[:, :c], y_true[:, c]
    expected = f"class indices in [0, {c}) in its last column"
    if _ops._concrete(column):
        v = _ops._value(column)
        bad = v[(v != np.round(v)) | (v < 0) | (v >= c)]
        if bad.size:
            _checks.fail(fn, "y_true", expected, f"label {float(bad.flat[0]):g}")
    elif _ops._tf_graph(column):
        import tensorflow as tf

        wrong = tf.logical_or(tf.logical_or(column != tf.round(column), column < 0), column >= c)
        column = _ops._assert(column, tf.logical_not(tf.reduce_any(wrong)),
                              _ops._message(fn, "y_true", expected, "a label that is not one"))
    return teacher, ops.cast(ops.round(column), "int32")


def _divide(num: Any, den: Any) -> Any:
    """``num / den``, 0 where ``den`` is 0 (``ops.divide_no_nan`` in the dtype of ``num``)."""
    ok = den != 0
    return ops.where(ok, num / ops.where(ok, den, ops.ones_like(den)), ops.zeros_like(num))


def _same_rank(x: Any, w: Any) -> tuple[Any, Any]:
    """Keras's ``squeeze_or_expand_to_same_rank``: ranks that differ by one trailing 1-sized axis."""
    rx, rw = len(x.shape), len(w.shape)
    if rx == rw + 1 and x.shape[-1] == 1:
        return (x, ops.expand_dims(w, -1)) if rw == 1 else (ops.squeeze(x, -1), w)
    if rw == rx + 1 and w.shape[-1] == 1:
        return (ops.expand_dims(x, -1), w) if rx == 1 else (x, ops.squeeze(w, -1))
    return x, w


def _per_replica(loss: Any) -> Any:
    """Keras's ``scale_loss_for_distribution``: a mean divided by the replicas of a ``tf.distribute`` strategy."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            loss = loss * ops.cast(1.0 / replicas, loss.dtype)
    return loss


def _reduce_weighted(values: Any, sample_weight: Any, mask: Any, reduction: str | None, dtype: str) -> Any:
    """Keras's ``reduce_weighted_values`` (mask and ``sample_weight`` merged into one weight, then
    ``reduction``) with every operation in ``dtype``."""
    values = ops.convert_to_tensor(values, dtype=dtype)
    weight = None if sample_weight is None else ops.convert_to_tensor(sample_weight, dtype=dtype)
    if mask is not None:
        mask = ops.cast(mask, "bool")
        if reduction in ("mean", "sum_over_batch_size"):  # valid entries weigh total / valid: a mean over them
            total = ops.cast(ops.size(mask), dtype)
            valid = ops.sum(ops.cast(mask, dtype))
            mask_weight = ops.where(mask, _divide(total, valid), ops.zeros_like(total))
        else:
            mask_weight = ops.cast(mask, dtype)
        if weight is None:
            weight = mask_weight
        else:
            mask_weight, weight = _same_rank(mask_weight, weight)
            weight = weight * mask_weight
    if weight is not None:
        values, weight = _same_rank(values, weight)
        values = values * weight
    if reduction in (None, "none") or tuple(values.shape) in ((), (0,)):
        return values
    loss = ops.sum(values)
    if reduction == "sum":
        return loss
    if reduction == "mean_with_sample_weight" and weight is not None:
        divisor = ops.sum(weight)
    else:
        divisor = ops.cast(ops.size(values), dtype)
    return _per_replica(_divide(loss, divisor))


class _DistillLoss(keras.losses.Loss):
    """Shared plumbing of the loss classes: checks, logits from ``y_pred``, weights, config."""

    _fn = "_DistillLoss"

    def __init__(self, *, standardize, ddof, eps, kd_weight, ce_weight, reduction, name, dtype):
        fn = self._fn
        if reduction is not None:
            _checks.check_choice(fn, "reduction", reduction, KERAS_REDUCTIONS)
        h = _checks.check_hyper(fn, standardize=standardize, ddof=ddof, eps=eps, kd_weight=kd_weight,
                                ce_weight=ce_weight)
        super().__init__(name=name, reduction=reduction, dtype=_loss_dtype(fn, dtype))
        self._dtype_argument = dtype
        self.standardize, self.ddof, self.eps = h["standardize"], h["ddof"], h["eps"]
        self.kd_weight, self.ce_weight = h["kd_weight"], h["ce_weight"]
        self.last_terms: dict[str, Any] = {}

    def __call__(self, y_true, y_pred, sample_weight=None):
        """Keras's ``Loss.__call__`` (inputs in the loss dtype, ``call``, mask and ``sample_weight``,
        ``reduction``), with the weighting and the reduction done here in the loss dtype: Keras's
        own reduction returns float32 for float64 losses on some backends (torch)."""
        mask = _get_keras_mask(y_pred)
        with keras.name_scope(self.name):
            y_pred, y_true = self._input(y_pred), self._input(y_true)
            losses = self.call(y_true, y_pred)
            out_mask = _get_keras_mask(losses)
            if mask is None:
                mask = out_mask
            elif out_mask is not None:
                mask = ops.logical_and(ops.cast(mask, "bool"), ops.cast(out_mask, "bool"))
            return _reduce_weighted(losses, sample_weight, mask, self.reduction, self.dtype)

    def _input(self, x):
        # Widen half-precision inputs here (Keras would cast them too): the gradient that goes
        # back to float16 logits then saturates instead of overflowing (see ops._widen).
        if _ops._is_tensor(x) and _ops._dtype(x) in _ops._HALF_MAX:
            x = _ops._widen(x, self.dtype)
        return ops.convert_to_tensor(x, dtype=self.dtype)

    def _labels_reason(self) -> str | None:
        return "ce_weight > 0 needs labels" if self.ce_weight else None

    def _distill_rows(self, s, t, labels):
        raise NotImplementedError

    def call(self, y_true, y_pred):
        fn = self._fn
        s = _ops._as_logits(fn, "y_pred", y_pred)
        _checks.check_ddof(fn, self.ddof, s.shape[-1])
        y_true = _ops._as_logits(fn, "y_true", y_true, like=_ops._shape(s)[:1] + (None,))
        t, labels = _split_targets(fn, y_true, s, labels_required=self._labels_reason())
        kd = self.kd_weight * self._distill_rows(s, ops.cast(t, s.dtype), labels)
        rows, terms = kd, {"ce": ops.zeros_like(kd), "kd": kd}
        if self.ce_weight and labels is not None:
            terms["ce"] = self.ce_weight * _ops._ce_rows(s, labels)
            rows = rows + terms["ce"]
        if _ops._concrete(rows):  # eager calls only: a traced step has no values to keep
            how = {"sum": "sum", "none": "none", None: "none"}.get(self.reduction, "mean")  # no sample weights
            self.last_terms = {k: ops.stop_gradient(_ops._reduce(v, how)) for k, v in terms.items()}
        return rows

    def get_config(self):
        config = super().get_config()
        config.update(standardize=self.standardize, ddof=self.ddof, eps=self.eps, kd_weight=self.kd_weight,
                      ce_weight=self.ce_weight, dtype=self._dtype_argument)
        return config


@_register
class KDLoss(_DistillLoss):
    r"""KD with logit standardization as a Keras loss: ``model.compile(loss=KDLoss(...))``.

    ``loss(y_true, y_pred)`` with ``y_pred`` the student logits ``(B, C)`` and
    ``y_true`` either the teacher logits ``(B, C)`` (offline distillation: precomputed
    or streamed) or :func:`~logit_standardization.keras.pack_targets` output ``(B, C + 1)``
    with the label in the last column. Per sample,

    .. math::

        \ell_i = w_{ce}\,\mathrm{CE}(s_i, y_i) + w_{kd}\,\tau^2\,\mathrm{KL}\big(\mathrm{softmax}(\tilde t_i/\tau)\,\|\,
            \mathrm{softmax}(\tilde s_i/\tau)\big)

    (:func:`~logit_standardization.keras.kd_loss` per sample; the cross-entropy uses the raw
    student logits and needs packed targets), then Keras's ``reduction``
    (``"sum_over_batch_size"``, the default, is the core's ``"mean"``) and ``sample_weight``
    apply. The published KD+LS recipe is ``KDLoss(temperature=2.0, kd_weight=9.0, ce_weight=0.1)``
    (Sun et al., CVPR 2024, supplementary §2). After an eager call, ``last_terms`` holds the
    weighted terms ``{"ce": ..., "kd": ...}`` (detached, reduced as the loss is, without sample
    weights; ``"ce"`` is 0 when it was not computed) for logging.

    Args:
        temperature: base temperature :math:`\tau > 0`.
        standardize: apply the Z-score pre-process to both logit sets.
        ddof: deviation convention of :func:`~logit_standardization.keras.zscore` (1: published code, 0: paper).
        eps: constant added to the deviation.
        kd_weight: :math:`w_{kd}`, the weight of the KD term.
        ce_weight: :math:`w_{ce}`, the weight of the cross-entropy (labels required when > 0).
        reduction: a Keras reduction (``"sum_over_batch_size"``, ``"sum"``, ``"mean"``,
            ``"mean_with_sample_weight"``, ``"none"`` or ``None``).
        name: loss name.
        dtype: computation dtype (float32 or float64; default ``keras.config.floatx()``).

    Example:
        >>> import numpy as np
        >>> from logit_standardization.keras import KDLoss, pack_targets
        >>> t = np.array([[2.0, 0.0, -2.0], [0.0, 1.0, 0.0]], dtype="float32")
        >>> round(float(KDLoss()(t, 0.5 * t - 1.0)), 6)
        0.0
        >>> loss = KDLoss(ce_weight=0.1)
        >>> float(loss(pack_targets(t, np.array([0, 1])), 0.5 * t)) > 0, sorted(loss.last_terms)
        (True, ['ce', 'kd'])
    """

    _fn = "KDLoss"

    def __init__(
        self,
        *,
        temperature: float = 2.0,
        standardize: bool = True,
        ddof: int = 1,
        eps: float = 1e-7,
        kd_weight: float = 1.0,
        ce_weight: float = 0.0,
        reduction: str = "sum_over_batch_size",
        name: str = "kd_loss",
        dtype: Any = None,
    ):
        self.temperature = _checks.check_hyper(self._fn, temperature=temperature)["temperature"]
        super().__init__(standardize=standardize, ddof=ddof, eps=eps, kd_weight=kd_weight, ce_weight=ce_weight,
                         reduction=reduction, name=name, dtype=dtype)

    def _distill_rows(self, s, t, labels):
        return _ops._kd(s, t, temperature=self.temperature, standardize=self.standardize, ddof=self.ddof, eps=self.eps)

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature)
        return config


@_register
class DKDLoss(_DistillLoss):
    r"""Decoupled KD with logit standardization as a Keras loss; targets from ``pack_targets``.

    ``loss(y_true, y_pred)`` with ``y_true = pack_targets(teacher_logits, labels)``
    ``(B, C + 1)`` and ``y_pred`` the student logits. Per sample

    .. math::

        \ell_i = w_{ce}\,\mathrm{CE}(s_i, y_i) + w_{kd}\,f(e)\,(\alpha\,\mathrm{TCKD}_i + \beta\,\mathrm{NCKD}_i)

    (:func:`~logit_standardization.keras.dkd_loss` per sample) with the warm-up factor
    :math:`f(e)` = :func:`~logit_standardization.keras.dkd_warmup` ``(e, warmup_epochs=W)``
    :math:`= \min(e/W, 1)` of the epoch :math:`e` held by the variable ``epoch``, which
    :class:`~logit_standardization.keras.EpochSchedule` sets at the start of every epoch
    (the :class:`~logit_standardization.keras.Distiller` adds that callback itself). While the
    epoch is unset (``NaN``, the initial value) the factor is 1. A negative epoch raises
    ``ValueError`` (from :meth:`set_epoch`, and from an eager call when the variable was
    assigned directly; in a TensorFlow graph an assertion stops the step). The published
    DKD+LS CIFAR recipe is ``DKDLoss(alpha=9, beta=72, temperature=2, warmup_epochs=20,
    ce_weight=1.0)``.

    Args:
        alpha: weight of TCKD.
        beta: weight of NCKD.
        temperature: base temperature :math:`\tau > 0`.
        warmup_epochs: :math:`W`, the length of the linear warm-up in epochs (an int >= 1;
            1 means no warm-up from epoch 1 on).
        standardize: apply the Z-score pre-process to both logit sets.
        ddof: deviation convention of :func:`~logit_standardization.keras.zscore`.
        eps: constant added to the deviation.
        kd_weight: weight of the DKD term.
        ce_weight: weight of the cross-entropy on the labels.
        reduction: a Keras reduction.
        name: loss name.
        dtype: computation dtype (float32 or float64).

    Example:
        >>> import numpy as np
        >>> from logit_standardization.keras import DKDLoss, pack_targets
        >>> y = pack_targets(np.array([[5.0, 0.0, 1.0]]), np.array([0]))
        >>> loss = DKDLoss(dtype="float64")
        >>> round(float(loss(y, np.array([[3.0, 1.0, 0.0]]))), 6)
        1.063133
        >>> loss.set_epoch(5); loss.warmup_factor
        0.25
    """

    _fn = "DKDLoss"

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 2.0,
        warmup_epochs: int = 20,
        standardize: bool = True,
        ddof: int = 1,
        eps: float = 1e-7,
        kd_weight: float = 1.0,
        ce_weight: float = 0.0,
        reduction: str = "sum_over_batch_size",
        name: str = "dkd_loss",
        dtype: Any = None,
    ):
        h = _checks.check_hyper(self._fn, alpha=alpha, beta=beta, temperature=temperature, warmup_epochs=warmup_epochs)
        super().__init__(standardize=standardize, ddof=ddof, eps=eps, kd_weight=kd_weight, ce_weight=ce_weight,
                         reduction=reduction, name=name, dtype=dtype)
        self.alpha, self.beta, self.temperature = h["alpha"], h["beta"], h["temperature"]
        self.warmup_epochs = h["warmup_epochs"]
        self.epoch = _epoch_variable(math.nan, "dkd_epoch")

    @property
    def variables(self) -> list:
        """``[epoch]`` (not trainable), for a model to track."""
        return [self.epoch]

    def _epoch_value(self) -> float | None:
        e = float(_ops._value(self.epoch))
        if math.isnan(e):
            return None
        return _checks.check_hyper(self._fn, epoch=e)["epoch"]

    @property
    def warmup_factor(self) -> float:
        """The factor :func:`~logit_standardization.keras.dkd_warmup` of the current epoch (1 while it is unset)."""
        e = self._epoch_value()
        return 1.0 if e is None else dkd_warmup(e, warmup_epochs=self.warmup_epochs)

    def set_epoch(self, epoch: float | None) -> None:
        """Set the (1-based) epoch that drives the warm-up (``None``: unset); called by ``EpochSchedule``."""
        value = math.nan if epoch is None else _checks.check_hyper(self._fn, epoch=epoch)["epoch"]
        self.epoch.assign(value)

    def _labels_reason(self) -> str | None:
        return "DKD needs labels"

    def _factor(self, dtype: str) -> Any:
        e = self.epoch.value
        if _ops._concrete(e):
            return self.warmup_factor  # the core's dkd_warmup, which also refuses a negative epoch
        e = ops.cast(e, dtype)
        if _ops._tf_graph(e):
            e = _ops._assert(e, ops.logical_not(e < 0), _ops._message(self._fn, "epoch", "finite and >= 0", "a negative epoch"))
        # dkd_warmup on the traced epoch: min(e / W, 1), and 1 while the epoch is unset
        return ops.where(ops.isnan(e), ops.ones_like(e), ops.minimum(e / self.warmup_epochs, 1.0))

    def _distill_rows(self, s, t, labels):
        rows = _ops._dkd(s, t, labels, alpha=self.alpha, beta=self.beta, temperature=self.temperature,
                         standardize=self.standardize, ddof=self.ddof, eps=self.eps)
        factor = self._factor(_ops._dtype(rows))
        if isinstance(factor, float):  # eager: the core's value, applied in the rows' dtype (no float32 detour)
            return rows * factor
        return rows * ops.cast(factor, rows.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(alpha=self.alpha, beta=self.beta, temperature=self.temperature, warmup_epochs=self.warmup_epochs)
        return config


@_register
class CTKDLoss(_DistillLoss):
    r"""Curriculum temperature KD (Li et al., AAAI 2023) with logit standardization.

    KD (as :class:`KDLoss`) at the learnable temperature
    :math:`T = t_\mathrm{start} + t_\mathrm{end}\,\sigma(g)`
    (:func:`~logit_standardization.keras.ctkd_temperature`), scaled by :math:`T^2`. The raw
    parameter :math:`g` (``raw_temperature``, initialised to ``init``) passes through a
    gradient-reversal layer whose factor :math:`\lambda` =
    :func:`~logit_standardization.keras.ctkd_lambda` of the epoch goes from 0 to -1 over
    ``loops`` epochs, so :math:`g` ascends the distillation loss while the student descends it.

    A Keras loss owns no trainable weights (``compile`` optimizes the model's weights only),
    so the temperature learns only when a model tracks ``raw_temperature``: pass the loss to
    :class:`~logit_standardization.keras.Distiller`, which does so and keeps :math:`\lambda`
    on schedule. In a plain ``model.compile`` it acts as KD at the fixed initial temperature.

    The Keras face learns one global temperature: ``instance_wise=True`` (a temperature per
    sample from a small network, in :class:`logit_standardization.torch.CTKDLoss`) is refused
    with a ``ValueError``; ``num_classes`` and ``hidden_features`` are checked and kept in the
    config so that the signature and configs match the PyTorch class.

    Args:
        t_start: lower end of the temperature range (>= 0).
        t_end: width of the temperature range (> 0).
        init: initial value of the raw parameter :math:`g`.
        loops: epochs over which :math:`\lambda` decays.
        max_value: :math:`\lambda_{max}`.
        min_value: :math:`\lambda_{min}`.
        schedule: ``"cosine"`` or ``"linear"``.
        standardize: apply the Z-score pre-process to both logit sets.
        ddof: deviation convention of :func:`~logit_standardization.keras.zscore`.
        eps: constant added to the deviation.
        kd_weight: weight of the KD term.
        ce_weight: weight of the cross-entropy on the labels.
        reduction: a Keras reduction.
        instance_wise: must be ``False`` here (see above).
        num_classes: ``None`` or an int >= 2 (used by the instance-wise PyTorch variant).
        hidden_features: an int >= 1 (used by the instance-wise PyTorch variant).
        name: loss name.
        dtype: computation dtype (float32 or float64).

    Example:
        >>> from logit_standardization.keras import CTKDLoss
        >>> loss = CTKDLoss()
        >>> round(loss.current_temperature, 4), round(loss.grl_lambda, 5)
        (15.6212, -0.02447)
    """

    _fn = "CTKDLoss"

    def __init__(
        self,
        *,
        t_start: float = 1.0,
        t_end: float = 20.0,
        init: float = 1.0,
        loops: int = 10,
        max_value: float = 0.0,
        min_value: float = -1.0,
        schedule: str = "cosine",
        standardize: bool = True,
        ddof: int = 1,
        eps: float = 1e-7,
        kd_weight: float = 1.0,
        ce_weight: float = 0.0,
        reduction: str = "sum_over_batch_size",
        instance_wise: bool = False,
        num_classes: int | None = None,
        hidden_features: int = 128,
        name: str = "ctkd_loss",
        dtype: Any = None,
    ):
        fn = self._fn
        h = _checks.check_hyper(fn, t_start=t_start, t_end=t_end, init=init, loops=loops, max_value=max_value,
                                min_value=min_value, schedule=schedule, instance_wise=instance_wise,
                                hidden_features=hidden_features)
        if num_classes is not None:
            num_classes = _checks.check_hyper(fn, num_classes=num_classes)["num_classes"]
        if h["instance_wise"]:
            _checks.fail(fn, "instance_wise", "False (the Keras CTKDLoss learns one global temperature; "
                         "the instance-wise variant is logit_standardization.torch.CTKDLoss)", "True")
        super().__init__(standardize=standardize, ddof=ddof, eps=eps, kd_weight=kd_weight, ce_weight=ce_weight,
                         reduction=reduction, name=name, dtype=dtype)
        self.t_start, self.t_end, self.init = h["t_start"], h["t_end"], h["init"]
        self.instance_wise, self.num_classes, self.hidden_features = False, num_classes, h["hidden_features"]
        self.schedule_config = {k: h[k] for k in ("loops", "max_value", "min_value", "schedule")}
        self.raw_temperature = keras.Variable(self.init, trainable=True, dtype="float32", name="ctkd_raw_temperature")
        self._lambda = _epoch_variable(ctkd_lambda(1, **self.schedule_config), "ctkd_lambda")

    @property
    def variables(self) -> list:
        """``[raw_temperature (trainable), lambda (not trainable)]``, for a model to track."""
        return [self.raw_temperature, self._lambda]

    @property
    def current_temperature(self) -> float:
        """The temperature the next call will use."""
        raw = self.raw_temperature.value
        return float(_ops._value(_ops._ctkd_temperature(raw, t_start=self.t_start, t_end=self.t_end)))

    @property
    def grl_lambda(self) -> float:
        """The current gradient-reversal factor."""
        return float(_ops._value(self._lambda))

    def set_epoch(self, epoch: float) -> None:
        """Set the (1-based) epoch that drives :math:`\\lambda`; called by ``EpochSchedule``."""
        self._lambda.assign(ctkd_lambda(epoch, **self.schedule_config))

    def _distill_rows(self, s, t, labels):
        raw = _ops._grad_reverse(ops.convert_to_tensor(self.raw_temperature), self._lambda)
        tau = ops.cast(_ops._ctkd_temperature(raw, t_start=self.t_start, t_end=self.t_end), s.dtype)
        return _ops._kd(s, t, temperature=tau, standardize=self.standardize, ddof=self.ddof, eps=self.eps)

    def get_config(self):
        config = super().get_config()
        config.update(t_start=self.t_start, t_end=self.t_end, init=self.init, **self.schedule_config,
                      instance_wise=False, num_classes=self.num_classes, hidden_features=self.hidden_features)
        return config
