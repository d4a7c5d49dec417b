r"""Distillation methods: cross-entropy combined with the losses of :mod:`logit_standardization.torch`.

A method is a small ``nn.Module`` (so that CTKD's learnable temperature is a registered
parameter: it goes into the optimizer and DDP synchronises its gradient). The engine calls

* :meth:`Method.start_epoch` once at the start of every 1-based epoch (DKD's warm-up factor,
  CTKD's gradient-reversal factor :math:`\lambda`), and
* :meth:`Method.forward` with the student's and the teacher's logits (float32) and the labels;
  it returns the total loss and a dict of its terms (already weighted, so they sum to the
  total).

For two-view methods (MLKD, ``views == 2``) logits are ``(weak, strong)`` pairs.

=========  =============================================================================
method     loss
=========  =============================================================================
``ce``     :math:`w_{ce}\,\mathrm{CE}(s, y)` (a network trained alone: teachers, baselines)
``kd``     :math:`w_{ce}\,\mathrm{CE}(s, y) + w_{kd}\,\mathrm{KD}_\tau(s, t)`
``dkd``    :math:`w_{ce}\,\mathrm{CE}(s, y) + \min(e/e_w, 1)\,\mathrm{DKD}(\alpha w, \beta w, \tau)`
           (:math:`w` = ``kd_weight``, the reference's LS scaling of :math:`\alpha, \beta`)
``mlkd``   :math:`w_{ce}\,[\mathrm{CE}(s_w, y) + \mathrm{CE}(s_s, y)] + \mathrm{kd} + \mathrm{cc} + \mathrm{bc}`
``ctkd``   :math:`w_{ce}\,\mathrm{CE}(s, y) + w_{kd}\,\mathrm{KD}_{T(g)}(s, t)` with the learnable
           temperature :math:`T(g)` behind a gradient reversal of factor :math:`\lambda(e)`
=========  =============================================================================

Example:
    >>> import torch
    >>> from logit_standardization.training.methods import build_method
    >>> method = build_method({"name": "kd", "ce_weight": 0.1, "kd_weight": 9.0, "temperature": 2.0,
    ...                        "standardize": True})
    >>> method.start_epoch(1)
    {}
    >>> s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
    >>> total, terms = method(s, t, y)
    >>> sorted(terms), bool(torch.isclose(total, terms["ce"] + terms["kd"]))
    (['ce', 'kd'], True)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import torch as lskd

__all__ = ["Method", "CrossEntropy", "KD", "DKD", "MLKD", "CTKD", "build_method", "METHODS"]


class Method(nn.Module):
    """Base class: cross-entropy alone. Subclasses add a distillation term.

    Attributes:
        needs_teacher: whether :meth:`forward` needs teacher logits.
        views: number of augmented views per image the data loader must yield (1 or 2).
    """

    needs_teacher = True
    views = 1

    def __init__(self, *, ce_weight: float = 1.0) -> None:
        super().__init__()
        self.ce_weight = float(ce_weight)
        self.epoch = 1

    def start_epoch(self, epoch: int) -> dict[str, float]:
        """Set the 1-based epoch; return per-epoch values worth logging (e.g. CTKD's lambda)."""
        self.epoch = int(epoch)
        return {}

    def log_values(self) -> dict[str, float]:
        """Values of the method's state worth logging after an epoch (e.g. CTKD's temperature)."""
        return {}

    def ce(self, student: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.ce_weight * F.cross_entropy(student, labels)

    def forward(self, student: Any, teacher: Any, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"ce_weight={self.ce_weight}"


class CrossEntropy(Method):
    """A network trained alone: :math:`w_{ce}\\,\\mathrm{CE}(s, y)`; the teacher is not used."""

    needs_teacher = False

    def forward(self, student, teacher, labels):
        ce = self.ce(student, labels)
        return ce, {"ce": ce}


class KD(Method):
    """KD(+LS): cross-entropy plus ``kd_weight`` times :class:`logit_standardization.torch.KDLoss`."""

    def __init__(self, *, ce_weight: float = 0.1, kd_weight: float = 9.0, temperature: float = 2.0,
                 standardize: bool = True) -> None:
        super().__init__(ce_weight=ce_weight)
        self.kd_weight = float(kd_weight)
        self.loss = lskd.KDLoss(temperature=temperature, standardize=standardize, check_finite=False)

    def forward(self, student, teacher, labels):
        ce = self.ce(student, labels)
        kd = self.kd_weight * self.loss(student, teacher)
        return ce + kd, {"ce": ce, "kd": kd}

    def extra_repr(self) -> str:
        return f"ce_weight={self.ce_weight}, kd_weight={self.kd_weight}"


class DKD(Method):
    """DKD(+LS) with linear warm-up; ``alpha`` and ``beta`` are multiplied by ``kd_weight``."""

    def __init__(self, *, ce_weight: float = 1.0, alpha: float = 1.0, beta: float = 8.0, kd_weight: float = 1.0,
                 temperature: float = 4.0, warmup_epochs: int = 20, standardize: bool = False) -> None:
        super().__init__(ce_weight=ce_weight)
        self.loss = lskd.DKDLoss(alpha=alpha * kd_weight, beta=beta * kd_weight, temperature=temperature,
                                 warmup_epochs=warmup_epochs, standardize=standardize, check_finite=False)

    def start_epoch(self, epoch: int) -> dict[str, float]:
        super().start_epoch(epoch)
        return {"dkd_warmup": self.loss.warmup_factor(self.epoch)}

    def forward(self, student, teacher, labels):
        ce = self.ce(student, labels)
        kd = self.loss(student, teacher, labels, epoch=self.epoch)
        return ce + kd, {"ce": ce, "kd": kd}


class MLKD(Method):
    """MLKD(+LS) on a weak and a strong view: CE on both views plus the kd/cc/bc terms."""

    views = 2

    def __init__(self, *, ce_weight: float = 0.1, kd_weight: float = 9.0,
                 temperatures: tuple[float, ...] = lskd.DEFAULT_TEMPERATURES, variant: str = "reference",
                 standardize: bool = True) -> None:
        super().__init__(ce_weight=ce_weight)
        self.loss = lskd.MLKDLoss(temperatures=tuple(temperatures), kd_weight=kd_weight, variant=variant,
                                  standardize=standardize, check_finite=False)

    def forward(self, student, teacher, labels):
        (sw, ss), (tw, ts) = student, teacher
        ce = self.ce_weight * (F.cross_entropy(sw, labels) + F.cross_entropy(ss, labels))
        distill = self.loss(sw, ss, tw, ts)
        return ce + distill, {"ce": ce, **self.loss.last_terms}


class CTKD(Method):
    """CTKD(+LS): KD at a learnable temperature trained adversarially through gradient reversal.

    The temperature parameter lives in :attr:`loss` (``raw_temperature``); the engine puts
    this module's parameters into the optimizer (same SGD settings as the student, as in
    the reference). :math:`\\lambda` is updated once per epoch.
    """

    def __init__(self, *, ce_weight: float = 0.1, kd_weight: float = 9.0, t_start: float = 1.0, t_end: float = 20.0,
                 init: float = 1.0, lambda_max: float = 0.0, lambda_min: float = -1.0, lambda_loops: int = 10,
                 lambda_schedule: str = "cosine", standardize: bool = True) -> None:
        super().__init__(ce_weight=ce_weight)
        self.kd_weight = float(kd_weight)
        self.loss = lskd.CTKDLoss(t_start=t_start, t_end=t_end, init=init, standardize=standardize,
                                  check_finite=False)
        self.schedule = lskd.CTKDLambdaSchedule(loops=lambda_loops, max_value=lambda_max, min_value=lambda_min,
                                                schedule=lambda_schedule)
        self.grl_lambda = self.schedule(1)

    def start_epoch(self, epoch: int) -> dict[str, float]:
        super().start_epoch(epoch)
        self.grl_lambda = self.schedule(self.epoch)
        return {"ctkd_lambda": self.grl_lambda}

    def log_values(self) -> dict[str, float]:
        with torch.no_grad():
            t = lskd.ctkd_temperature(self.loss.raw_temperature.detach(), t_start=self.loss.t_start,
                                      t_end=self.loss.t_end)
        return {"temperature": float(t.reshape(-1)[0])}

    def forward(self, student, teacher, labels):
        ce = self.ce(student, labels)
        kd = self.kd_weight * self.loss(student, teacher, grl_lambda=self.grl_lambda)
        return ce + kd, {"ce": ce, "kd": kd}

    def extra_repr(self) -> str:
        return f"ce_weight={self.ce_weight}, kd_weight={self.kd_weight}, schedule={self.schedule!r}"


METHODS: dict[str, type[Method]] = {"ce": CrossEntropy, "kd": KD, "dkd": DKD, "mlkd": MLKD, "ctkd": CTKD}
"""Method name (``method.name`` of a recipe) -> class."""


def build_method(cfg: dict[str, Any]) -> Method:
    """Build a method from a recipe's ``method`` block (``{"name": ..., **hyperparameters}``).

    Raises:
        ValueError: unknown method name (hyperparameters are checked by the loss modules).
    """
    cfg = dict(cfg)
    name = cfg.pop("name", "ce")
    if name not in METHODS:
        raise ValueError(f"build_method: unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name](**cfg)
