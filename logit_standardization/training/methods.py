r"""Distillation methods: the loss classes of :mod:`logit_standardization.torch` with an epoch clock.

A method is a small ``nn.Module`` (so that CTKD's learnable temperature is a registered
parameter: it goes into the optimizer and DDP synchronises its gradient). The engine calls

* :meth:`Method.start_epoch` once at the start of every 1-based epoch (DKD's warm-up factor,
  CTKD's gradient-reversal factor :math:`\lambda`), and
* :meth:`Method.forward` with the student's and the teacher's logits (float32) and the labels;
  it returns the total loss and a dict of its terms (already weighted, so they sum to the
  total).

A method's hyperparameters are the keyword arguments of its loss class, with the class's
defaults (:func:`method_keys` reads them from the signature): a recipe's ``method`` block is
``{"name": ..., **keyword arguments}``. Each loss class computes
:math:`w_{ce}\,\mathrm{CE} + w_{kd}\,\mathrm{distillation}` itself.

For two-view methods (MLKD, ``views == 2``) logits are ``(weak, strong)`` pairs.

=========  =============================================================================
method     loss
=========  =============================================================================
``ce``     :math:`w_{ce}\,\mathrm{CE}(s, y)` (a network trained alone: teachers, baselines)
``kd``     :math:`w_{ce}\,\mathrm{CE}(s, y) + w_{kd}\,\mathrm{KD}_\tau(s, t)`
``dkd``    :math:`w_{ce}\,\mathrm{CE}(s, y) + w_{kd}\,\min(e/e_w, 1)\,\mathrm{DKD}(\alpha, \beta, \tau)`
           (:math:`w_{kd}` scales :math:`\alpha` and :math:`\beta`: the reference's LS scaling)
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

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import torch as lskd
from .._checks import check_hyper

__all__ = ["Method", "CrossEntropy", "Distillation", "KD", "DKD", "MLKD", "CTKD", "build_method", "method_keys",
           "METHODS"]

# Constructor arguments of the loss classes that are not recipe settings: the training loop
# always averages over the batch, and checks its inputs once per epoch, not per step.
_ENGINE_ARGUMENTS = {"reduction": "mean", "check_finite": False}


class Method(nn.Module):
    """Base class: cross-entropy alone. Subclasses add a distillation term.

    Attributes:
        needs_teacher: whether :meth:`forward` needs teacher logits.
        views: number of augmented views per image the data loader must yield (1 or 2).
    """

    needs_teacher = True
    views = 1

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 1

    def start_epoch(self, epoch: int) -> dict[str, float]:
        """Set the 1-based epoch; return per-epoch values worth logging (e.g. CTKD's lambda)."""
        self.epoch = int(epoch)
        return {}

    def log_values(self) -> dict[str, float]:
        """Values of the method's state worth logging after an epoch (e.g. CTKD's temperature)."""
        return {}

    def forward(self, student: Any, teacher: Any, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError


class CrossEntropy(Method):
    """A network trained alone: :math:`w_{ce}\\,\\mathrm{CE}(s, y)`; the teacher is not used."""

    needs_teacher = False

    def __init__(self, *, ce_weight: float = 1.0) -> None:
        super().__init__()
        self.ce_weight = check_hyper("ce", ce_weight=ce_weight)["ce_weight"]

    def forward(self, student, teacher, labels):
        ce = self.ce_weight * F.cross_entropy(student, labels)
        return ce, {"ce": ce}

    def extra_repr(self) -> str:
        return f"ce_weight={self.ce_weight}"


class Distillation(Method):
    """A distillation method: its loss class (:attr:`loss_class`) built from the recipe's settings.

    Subclasses set :attr:`loss_class` and, where the loss needs more than
    ``(student, teacher, labels)``, override :meth:`forward`.
    """

    loss_class: type[nn.Module]

    def __init__(self, **settings: Any) -> None:
        super().__init__()
        accepted = inspect.signature(self.loss_class).parameters
        self.loss = self.loss_class(**settings, **{k: v for k, v in _ENGINE_ARGUMENTS.items() if k in accepted})

    def forward(self, student, teacher, labels):
        total = self.loss(student, teacher, labels)
        return total, dict(self.loss.last_terms)


class KD(Distillation):
    """KD(+LS): :class:`logit_standardization.torch.KDLoss`."""

    loss_class = lskd.KDLoss


class DKD(Distillation):
    """DKD(+LS) with its linear warm-up: :class:`logit_standardization.torch.DKDLoss`."""

    loss_class = lskd.DKDLoss

    def start_epoch(self, epoch: int) -> dict[str, float]:
        super().start_epoch(epoch)
        return {"dkd_warmup": lskd.dkd_warmup(self.epoch, warmup_epochs=self.loss.warmup_epochs)}

    def forward(self, student, teacher, labels):
        total = self.loss(student, teacher, labels, epoch=self.epoch)
        return total, dict(self.loss.last_terms)


class MLKD(Distillation):
    """MLKD(+LS) on a weak and a strong view: :class:`logit_standardization.torch.MLKDLoss`."""

    views = 2
    loss_class = lskd.MLKDLoss

    def forward(self, student, teacher, labels):
        (sw, ss), (tw, ts) = student, teacher
        total = self.loss(sw, ss, tw, ts, labels)
        return total, dict(self.loss.last_terms)


class CTKD(Distillation):
    """CTKD(+LS): :class:`logit_standardization.torch.CTKDLoss`, its :math:`\\lambda` set per epoch.

    The temperature parameter lives in :attr:`loss` (``raw_temperature``); the engine puts
    this module's parameters into the optimizer (same SGD settings as the student, as in
    the reference).
    """

    loss_class = lskd.CTKDLoss

    def start_epoch(self, epoch: int) -> dict[str, float]:
        super().start_epoch(epoch)
        loss = self.loss
        return {"ctkd_lambda": lskd.ctkd_lambda(self.epoch, loops=loss.loops, max_value=loss.max_value,
                                                min_value=loss.min_value, schedule=loss.schedule)}

    def log_values(self) -> dict[str, float]:
        with torch.no_grad():
            t = lskd.ctkd_temperature(self.loss.raw_temperature.detach(), t_start=self.loss.t_start,
                                      t_end=self.loss.t_end)
        return {"temperature": float(t.reshape(-1)[0])}

    def forward(self, student, teacher, labels):
        total = self.loss(student, teacher, labels, epoch=self.epoch)
        return total, dict(self.loss.last_terms)


METHODS: dict[str, type[Method]] = {"ce": CrossEntropy, "kd": KD, "dkd": DKD, "mlkd": MLKD, "ctkd": CTKD}
"""Method name (``method.name`` of a recipe) -> class."""


def method_keys(name: str) -> dict[str, Any]:
    """The settings of method ``name`` and their defaults, read from its loss class's signature.

    Example:
        >>> method_keys("kd")
        {'temperature': 2.0, 'standardize': True, 'ddof': 1, 'eps': 1e-07, 'kd_weight': 1.0, 'ce_weight': 0.0}
    """
    cls = METHODS[name]
    target = cls.loss_class if issubclass(cls, Distillation) else cls
    return {p.name: p.default for p in inspect.signature(target).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name not in _ENGINE_ARGUMENTS}


def build_method(cfg: dict[str, Any]) -> Method:
    """Build a method from a recipe's ``method`` block (``{"name": ..., **hyperparameters}``).

    Raises:
        ValueError: unknown method name (hyperparameters are checked by the loss classes).
    """
    cfg = dict(cfg)
    name = cfg.pop("name", "ce")
    if name not in METHODS:
        raise ValueError(f"build_method: unknown method {name!r}; known: {', '.join(METHODS)}")
    if "temperatures" in cfg:
        cfg["temperatures"] = tuple(cfg["temperatures"])
    return METHODS[name](**cfg)
