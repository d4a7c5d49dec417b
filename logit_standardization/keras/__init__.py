"""Keras 3 face: logit standardization for ``model.compile(loss=...)``, an online
:class:`Distiller`, and :mod:`keras.distillation` interop.

Everything is written with :mod:`keras.ops` only, so one implementation serves every
Keras backend (tested on TensorFlow and PyTorch). The functions have the same names,
arguments and defaults as the NumPy core (:mod:`logit_standardization`), which holds
the math; this package is tested against it.

* :mod:`logit_standardization.keras.ops`: the functions :func:`zscore`, :func:`standardized`,
  :func:`kd_loss`, :func:`dkd_loss`, :func:`dkd_warmup`, :func:`mlkd_terms`, :func:`mlkd_loss`,
  :func:`confidence_masks`, :func:`ctkd_temperature`, :func:`ctkd_lambda`.
* :mod:`logit_standardization.keras.losses`: losses for ``model.compile``: :class:`KDLoss`,
  :class:`DKDLoss`, :class:`CTKDLoss` (the latter trains its temperature only inside
  :class:`Distiller`).
* :mod:`logit_standardization.keras.models`: :func:`pack_targets` (labels next to the teacher
  logits), :class:`Distiller` (online distillation), :class:`EpochSchedule` (DKD warm-up,
  CTKD :math:`\\lambda`), and :class:`StandardizedLogitsDistillation` for
  :class:`keras.distillation.Distiller`.

Numerics: statistics, softmaxes and losses are computed in float32 for float16 and
bfloat16 inputs (mixed precision), in the input's dtype for float32 and float64; rows are
scaled by a power of two before the Z-score, so logits up to the dtype's maximum give finite
values and gradients. Input checks are those of the core, with the same messages; value
checks (NaN/Inf, label range) run eagerly, and as ``tf.debugging.Assert`` ops inside
TensorFlow graphs (``fit``), which stop the step with the library's message.
"""

from __future__ import annotations

import keras  # noqa: F401  the Keras 3 package (absolute import; this package is logit_standardization.keras)

from . import losses, models, ops
from .losses import *  # noqa: F403
from .models import *  # noqa: F403
from .ops import *  # noqa: F403

# each public name is declared in the __all__ of the one module that defines it
__all__ = [*ops.__all__, *losses.__all__, *models.__all__]
