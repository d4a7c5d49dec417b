"""PyTorch backend: the losses of :mod:`logit_standardization` as functions and ``nn.Module`` s.

Same names, arguments and defaults as the NumPy core (the specification; the math is
written there), plus one keyword, ``check_finite``, on every function that takes logits.
Everything follows the inputs' device; nothing here moves data to another device.

Functions (:mod:`logit_standardization.torch.functional`): :func:`zscore`, :func:`kd_loss`,
:func:`dkd_loss`, :func:`mlkd_terms`, :func:`mlkd_loss`, :func:`ctkd_temperature`, plus
:func:`standardized`, :func:`confidence_masks` and :func:`gradient_reversal`; the core's
schedules :func:`ctkd_lambda` and :func:`dkd_warmup` (functions of an epoch number) are
re-exported as they are.

Modules (:mod:`logit_standardization.torch.modules`): :class:`KDLoss`, :class:`DKDLoss`,
:class:`MLKDLoss`, :class:`CTKDLoss` (each ``ce_weight * CE + kd_weight * distillation``),
:class:`GradientReversal`, :class:`CTKDLambdaSchedule`.

Large vocabularies (:mod:`logit_standardization.torch.fused_linear`):
:func:`fused_linear_kd_loss` and :class:`FusedLinearKDLoss`, CE + KD of a language-model head
``h @ W.T + b`` computed over chunks of tokens, without materialising the logits.

Offline teacher logits (:mod:`logit_standardization.torch.topk`): :func:`compress_teacher_logits`
(top-k logits and indices plus the full vocabulary's mean and deviation, a :class:`TopKTeacher`)
and :func:`topk_kd_loss`, the KD + LS loss against such a teacher.

Layout: ``functional`` translates the core operation by operation (differentiable by
autograd); ``_fused`` holds the fused autograd Functions with analytic backward passes that
the functions use where they apply (tested against the plain translation); ``modules`` holds
the classes, which call the functions.

Numerics:

* Compute dtype: float32 for float16/bfloat16 inputs (also under ``torch.autocast``, which
  is switched off inside these functions), the input dtype for float32/float64 (the wider
  one if student and teacher differ). Statistics, softmaxes and reductions run in it and
  the returned values have it; gradients reach the inputs in their own dtype.
* The Z-score is computed on rows scaled by a power of two (``eps`` alike), as in the core:
  no overflow for any finite logits, up to each dtype's largest value.
* A constant row standardizes to zeros, with a finite gradient (``(I - 11^T/C)/eps`` times
  the incoming gradient, as autograd through ``torch.std`` gives; 0 when ``eps=0``).
* The fused backward passes are first-order only (double backward raises).

Bad input raises the core's ``TypeError``/``ValueError`` with the same message, before
anything is computed. ``check_finite=False`` skips the one check that reads tensor values
(NaN/Inf in the logits, which costs a pass over the data and, on an accelerator, a
synchronisation); labels are always range-checked.
"""

from __future__ import annotations

from . import functional, fused_linear, modules, topk
from .functional import *  # noqa: F401,F403  (the names of functional.__all__)
from .fused_linear import *  # noqa: F401,F403  (the names of fused_linear.__all__)
from .modules import *  # noqa: F401,F403  (the names of modules.__all__)
from .topk import *  # noqa: F401,F403  (the names of topk.__all__)

# one list per submodule: a new public name is added to its module's __all__ only
__all__ = [*functional.__all__, *modules.__all__, *fused_linear.__all__, *topk.__all__]
