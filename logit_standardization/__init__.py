"""Logit standardization for knowledge distillation (Sun et al., CVPR 2024).

The NumPy core: the executable specification of the Z-score pre-process and of
the KD, DKD, MLKD and CTKD losses it is applied to. It imports no deep-learning
framework; the backends live in :mod:`logit_standardization.torch` and
:mod:`logit_standardization.keras`.
"""

from ._ctkd import ctkd_lambda, ctkd_temperature
from ._dkd import dkd_loss, dkd_warmup
from ._kd import kd_loss
from ._mlkd import DEFAULT_TEMPERATURES, confidence_masks, mlkd_loss, mlkd_terms
from ._zscore import standardized, zscore

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TEMPERATURES",
    "confidence_masks",
    "ctkd_lambda",
    "ctkd_temperature",
    "dkd_loss",
    "dkd_warmup",
    "kd_loss",
    "mlkd_loss",
    "mlkd_terms",
    "standardized",
    "zscore",
]
