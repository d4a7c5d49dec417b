"""The ``nn.Module`` losses of the PyTorch face.

Every loss class computes

.. math::

    \\mathcal{L} = w_{ce}\\,\\mathrm{CE}(s, y) + w_{kd}\\,\\mathcal{L}_\\mathrm{distill}

with ``ce_weight`` :math:`= w_{ce}` (default 0: no labels needed) and ``kd_weight``
:math:`= w_{kd}` (default 1; MLKD's ``kd_weight`` is :func:`mlkd_terms`' own, default 9), where
:math:`\\mathcal{L}_\\mathrm{distill}` is the functional form of
:mod:`logit_standardization.torch.functional` called with the module's hyperparameters (no
formula is written twice). Hyperparameters are checked when the module is built, tensors when
it is called. After each call :attr:`last_terms` holds the weighted terms (detached) for logging.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as nnf
from torch import nn

from .. import _checks
from .._mlkd import DEFAULT_TEMPERATURES
from . import functional as F
from ._fused import compute_dtype, full_precision, upcast

__all__ = ["CTKDLambdaSchedule", "CTKDLoss", "DKDLoss", "GradientReversal", "KDLoss", "MLKDLoss"]


class _DistillLoss(nn.Module):
    """Shared parts: the weights, the cross-entropy term and :attr:`last_terms`."""

    def _weights(self, fn: str, **values: Any) -> None:
        for name, value in _checks.check_hyper(fn, **values).items():
            setattr(self, name, value)
        self.last_terms: dict[str, torch.Tensor] = {}

    def _require_labels(self, labels: Any, why: str) -> None:
        if labels is None:
            _checks.fail(type(self).__name__, "labels", f"class indices ({why})", "None")

    def _cross_entropy(self, student_logits: Any, labels: Any, reduction: str) -> torch.Tensor:
        fn = type(self).__name__
        s = F._logits(fn, "student_logits", student_logits, check_finite=False)
        y = F._labels(fn, labels, s.shape[0], s.shape[1], s.device)
        with full_precision(s.device):
            return nnf.cross_entropy(upcast(s, compute_dtype(s.dtype)), y, reduction=reduction)

    def _token_cross_entropy(self, student_logits: Any, labels: Any, reduction: str, mask: Any) -> torch.Tensor:
        """Cross-entropy of ``(..., C)`` logits on labels of the leading shape, reduced over the
        positions where ``mask`` is True (as the functional losses reduce)."""
        fn = type(self).__name__
        s = F._logits(fn, "student_logits", student_logits, ndim=_checks.TOKENS, check_finite=False)
        lead = tuple(s.shape[:-1])
        y = F._labels(fn, labels, lead, s.shape[-1], s.device)
        m = F._mask(fn, mask, lead, s.device)
        with full_precision(s.device):
            rows = nnf.cross_entropy(upcast(s, compute_dtype(s.dtype)).reshape(-1, s.shape[-1]), y.reshape(-1),
                                     reduction="none")
            return F._reduce(rows.reshape(lead), reduction, m)

    def _ce_term(self, student_logits: Any, labels: Any, reduction: str, mask: Any = None) -> torch.Tensor | None:
        """``ce_weight * CE`` (``None`` when ``ce_weight`` is 0); token-level logits or a mask:
        per position, reduced over the counted positions."""
        if self.ce_weight == 0:
            return None
        self._require_labels(labels, "needed when ce_weight > 0")
        if mask is None and getattr(student_logits, "ndim", 2) == 2:
            return self.ce_weight * self._cross_entropy(student_logits, labels, reduction)
        return self.ce_weight * self._token_cross_entropy(student_logits, labels, reduction, mask)

    def _total(self, ce: torch.Tensor | None, **terms: torch.Tensor) -> torch.Tensor:
        """Sum of the weighted terms; keeps them, detached, in :attr:`last_terms`."""
        first = next(iter(terms.values()))
        ce_value = torch.zeros_like(first) if ce is None else ce
        self.last_terms = {"ce": ce_value.detach(), **{k: v.detach() for k, v in terms.items()}}
        total = None
        for v in terms.values():
            total = v if total is None else total + v
        return total if ce is None else ce + total


class KDLoss(_DistillLoss):
    """:func:`~logit_standardization.torch.kd_loss` as a module, with the class weights.

    ``forward(student_logits, teacher_logits, labels=None, *, mask=None)`` returns
    ``ce_weight * CE(student_logits, labels) + kd_weight * kd_loss(student_logits, teacher_logits)``
    (labels are needed only when ``ce_weight > 0``). :attr:`last_terms`: ``"ce"``, ``"kd"``.
    Token-level logits ``(B, T, C)`` (labels ``(B, T)``) and a boolean ``mask`` of the leading
    shape are accepted as by :func:`~logit_standardization.torch.kd_loss`: both terms are
    reduced over the positions where the mask is True.

    Example:
        >>> import torch
        >>> from logit_standardization.torch import KDLoss
        >>> loss_fn = KDLoss(temperature=2.0, kd_weight=9.0, ce_weight=0.1)
        >>> loss_fn
        KDLoss(temperature=2.0, standardize=True, ddof=1, eps=1e-07, kd_weight=9.0, ce_weight=0.1, reduction='mean')
        >>> s = torch.randn(8, 10, requires_grad=True)
        >>> loss = loss_fn(s, torch.randn(8, 10), torch.arange(8))
        >>> loss.backward()
        >>> sorted(loss_fn.last_terms), s.grad.shape
        (['ce', 'kd'], torch.Size([8, 10]))
    """

    def __init__(self, *, temperature: float = 2.0, standardize: bool = True, ddof: int = 1, eps: float = 1e-7,
                 kd_weight: float = 1.0, ce_weight: float = 0.0, reduction: str = "mean",
                 check_finite: bool = True) -> None:
        super().__init__()
        self._weights(type(self).__name__, temperature=temperature, standardize=standardize, ddof=ddof, eps=eps,
                      kd_weight=kd_weight, ce_weight=ce_weight, reduction=reduction, check_finite=check_finite)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                labels: torch.Tensor | None = None, *, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.ce_weight > 0:
            self._require_labels(labels, "needed when ce_weight > 0")
        kd = F.kd_loss(student_logits, teacher_logits, temperature=self.temperature, standardize=self.standardize,
                       ddof=self.ddof, eps=self.eps, reduction=self.reduction, mask=mask,
                       check_finite=self.check_finite)
        ce = self._ce_term(student_logits, labels, self.reduction, mask)
        return self._total(ce, kd=self.kd_weight * kd)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, standardize={self.standardize}, ddof={self.ddof}, "
                f"eps={self.eps}, kd_weight={self.kd_weight}, ce_weight={self.ce_weight}, "
                f"reduction={self.reduction!r}")


class DKDLoss(_DistillLoss):
    r""":func:`~logit_standardization.torch.dkd_loss` with DKD's linear warm-up and the class weights.

    ``forward(student_logits, teacher_logits, labels, *, epoch=None, mask=None)`` (labels required: without
    them the library's ``ValueError`` naming ``labels``) returns
    ``ce_weight * CE + kd_weight * dkd_warmup(epoch, warmup_epochs) * dkd_loss(...)``: with
    ``epoch`` given the loss is multiplied by :math:`\min(e / \text{warmup\_epochs}, 1)`
    (1-based epochs: 0.05, 0.10, ... up to 1 at epoch 20 with the CIFAR default; see
    :func:`~logit_standardization.dkd_warmup`); without it no factor is applied. A negative
    epoch is refused. The published LS settings are ``alpha=9, beta=72, temperature=2``
    (the KD weight multiplied in). :attr:`last_terms`: ``"ce"``, ``"kd"``. Token-level logits
    ``(B, T, C)`` with labels ``(B, T)`` and a boolean ``mask`` ``(B, T)`` work as in
    :func:`~logit_standardization.torch.dkd_loss` (both terms over the unmasked positions).

    Example:
        >>> import torch
        >>> from logit_standardization.torch import DKDLoss
        >>> loss_fn = DKDLoss(alpha=9.0, beta=72.0)
        >>> s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
        >>> bool(torch.isclose(loss_fn(s, t, y, epoch=2), 0.1 * loss_fn(s, t, y)))
        True
        >>> loss_fn.warmup_factor(2)
        0.1
    """

    def __init__(self, *, alpha: float = 1.0, beta: float = 8.0, temperature: float = 2.0, warmup_epochs: int = 20,
                 standardize: bool = True, ddof: int = 1, eps: float = 1e-7, kd_weight: float = 1.0,
                 ce_weight: float = 0.0, reduction: str = "mean", check_finite: bool = True) -> None:
        super().__init__()
        self._weights(type(self).__name__, alpha=alpha, beta=beta, temperature=temperature,
                      warmup_epochs=warmup_epochs, standardize=standardize, ddof=ddof, eps=eps, kd_weight=kd_weight,
                      ce_weight=ce_weight, reduction=reduction, check_finite=check_finite)

    def warmup_factor(self, epoch: float | None) -> float:
        """:func:`~logit_standardization.dkd_warmup` of ``epoch`` (``min(epoch / warmup_epochs, 1)``), or 1 without one."""
        if epoch is None:
            return 1.0
        e = _checks.check_hyper(type(self).__name__, epoch=epoch)["epoch"]
        return F.dkd_warmup(e, warmup_epochs=self.warmup_epochs)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                labels: torch.Tensor | None = None, *, epoch: float | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        self._require_labels(labels, "DKD separates the target class")
        factor = self.warmup_factor(epoch)
        dkd = F.dkd_loss(student_logits, teacher_logits, labels, alpha=self.alpha, beta=self.beta,
                         temperature=self.temperature, standardize=self.standardize, ddof=self.ddof, eps=self.eps,
                         reduction=self.reduction, mask=mask, check_finite=self.check_finite)
        ce = self._ce_term(student_logits, labels, self.reduction, mask)
        return self._total(ce, kd=(self.kd_weight * factor) * dkd)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}, "
                f"warmup_epochs={self.warmup_epochs}, standardize={self.standardize}, ddof={self.ddof}, "
                f"eps={self.eps}, kd_weight={self.kd_weight}, ce_weight={self.ce_weight}, "
                f"reduction={self.reduction!r}")


class MLKDLoss(_DistillLoss):
    """:func:`~logit_standardization.torch.mlkd_terms` as a module, with cross-entropy on both views.

    ``forward(student_weak, student_strong, teacher_weak, teacher_strong, labels=None)`` returns
    ``ce_weight * (CE(student_weak, labels) + CE(student_strong, labels)) + kd + cc + bc``, the
    three terms of :func:`~logit_standardization.torch.mlkd_terms` (``kd_weight`` is that
    function's own weight, already in each term). :attr:`last_terms`: ``"ce"``, ``"kd"``,
    ``"cc"``, ``"bc"``.

    Example:
        >>> import torch
        >>> from logit_standardization.torch import MLKDLoss
        >>> loss_fn = MLKDLoss()
        >>> views = [torch.randn(8, 10) for _ in range(4)]
        >>> loss = loss_fn(*views)
        >>> bool(torch.isclose(loss, sum(loss_fn.last_terms.values())))
        True
    """

    def __init__(self, *, temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES, kd_weight: float = 9.0,
                 standardize: bool = True, variant: str = "reference", ddof: int = 1, eps: float = 1e-7,
                 ce_weight: float = 0.0, check_finite: bool = True) -> None:
        super().__init__()
        self._weights(type(self).__name__, temperatures=temperatures, kd_weight=kd_weight, standardize=standardize,
                      variant=variant, ddof=ddof, eps=eps, ce_weight=ce_weight, check_finite=check_finite)

    def forward(self, student_weak: torch.Tensor, student_strong: torch.Tensor, teacher_weak: torch.Tensor,
                teacher_strong: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.ce_weight > 0:
            self._require_labels(labels, "needed when ce_weight > 0")
        terms = F.mlkd_terms(student_weak, student_strong, teacher_weak, teacher_strong,
                             temperatures=self.temperatures, kd_weight=self.kd_weight, standardize=self.standardize,
                             variant=self.variant, ddof=self.ddof, eps=self.eps, check_finite=self.check_finite)
        ce = None
        if self.ce_weight > 0:
            ce = self.ce_weight * (self._cross_entropy(student_weak, labels, "mean")
                                   + self._cross_entropy(student_strong, labels, "mean"))
        return self._total(ce, **terms)

    def extra_repr(self) -> str:
        return (f"temperatures={self.temperatures}, kd_weight={self.kd_weight}, standardize={self.standardize}, "
                f"variant={self.variant!r}, ddof={self.ddof}, eps={self.eps}, ce_weight={self.ce_weight}")


class GradientReversal(nn.Module):
    """:func:`~logit_standardization.torch.gradient_reversal` as a module: ``forward(x, lambda_)``.

    Example:
        >>> import torch
        >>> from logit_standardization.torch import GradientReversal
        >>> x = torch.ones(3, requires_grad=True)
        >>> GradientReversal()(x, -1.0).sum().backward()
        >>> x.grad
        tensor([-1., -1., -1.])
    """

    def forward(self, x: torch.Tensor, lambda_: float | torch.Tensor) -> torch.Tensor:
        return F.gradient_reversal(x, lambda_)


class CTKDLambdaSchedule:
    """CTKD's per-epoch gradient-reversal factor as a callable object: ``schedule(epoch) -> float``.

    A thin holder of :func:`~logit_standardization.ctkd_lambda`'s hyperparameters (checked here).

    Example:
        >>> from logit_standardization.torch import CTKDLambdaSchedule
        >>> schedule = CTKDLambdaSchedule(loops=10)
        >>> round(schedule(1), 5), schedule(10), schedule(11)
        (-0.02447, -1.0, -1.0)
    """

    def __init__(self, *, loops: int = 10, max_value: float = 0.0, min_value: float = -1.0,
                 schedule: str = "cosine") -> None:
        h = _checks.check_hyper(type(self).__name__, loops=loops, max_value=max_value, min_value=min_value,
                                schedule=schedule)
        self.loops, self.max_value, self.min_value, self.schedule = (h["loops"], h["max_value"], h["min_value"],
                                                                     h["schedule"])

    def __call__(self, epoch: float) -> float:
        return F.ctkd_lambda(epoch, loops=self.loops, max_value=self.max_value, min_value=self.min_value,
                             schedule=self.schedule)

    def __repr__(self) -> str:
        return (f"CTKDLambdaSchedule(loops={self.loops}, max_value={self.max_value}, min_value={self.min_value}, "
                f"schedule={self.schedule!r})")


class CTKDLoss(_DistillLoss):
    r"""KD at a learnable curriculum temperature (CTKD, notes §5), standardized by default.

    ``raw_temperature`` (``nn.Parameter`` of shape ``(1,)``, initialised to ``init``) goes
    through a gradient-reversal layer with factor :math:`\lambda` and then
    :math:`T = t_\mathrm{start} + t_\mathrm{end}\,\sigma(\cdot)`; the distillation term is
    :func:`~logit_standardization.torch.kd_loss` at :math:`T` (scaled by :math:`T^2`).

    ``forward(student_logits, teacher_logits, labels=None, *, epoch=None, grl_lambda=None)``
    returns ``ce_weight * CE + kd_weight * kd_loss(..., temperature=T)``. :math:`\lambda` is
    ``grl_lambda`` when given, else :func:`~logit_standardization.ctkd_lambda` of ``epoch``
    with the module's ``loops``, ``max_value``, ``min_value`` and ``schedule``; one of the two
    is required. Put the module's parameters in the optimizer; with a negative :math:`\lambda`
    the temperature ascends the distillation loss while the student descends it. Being a
    registered parameter, the temperature is synchronised by DDP like any weight.
    :attr:`last_terms`: ``"ce"``, ``"kd"``.

    ``instance_wise=True`` adds CTKD's instance-wise variant: a two-layer MLP on the
    (detached, standardized when ``standardize``) concatenated student and teacher logits
    predicts a per-sample offset of the raw temperature. Its last layer starts at zero, so
    every sample starts at the global initial temperature. Needs ``num_classes``, the class
    count of the logits.

    Args:
        t_start, t_end: temperature range :math:`(t_\mathrm{start}, t_\mathrm{start} + t_\mathrm{end})`.
        init: initial raw value (1.0: :math:`T \approx 15.62`).
        loops, max_value, min_value, schedule: the :math:`\lambda` schedule (see :func:`~logit_standardization.ctkd_lambda`).
        standardize, ddof, eps, reduction, check_finite: see :func:`~logit_standardization.torch.kd_loss`.
        kd_weight, ce_weight: weights of the distillation and cross-entropy terms.
        instance_wise: per-sample temperatures from an MLP.
        num_classes: ``C`` (instance-wise only).
        hidden_features: width of the MLP's hidden layer.

    Example:
        >>> import torch
        >>> from logit_standardization.torch import CTKDLoss
        >>> ctkd = CTKDLoss()
        >>> s = torch.randn(8, 10, requires_grad=True)
        >>> loss = ctkd(s, torch.randn(8, 10), epoch=10)   # lambda = ctkd_lambda(10) = -1
        >>> loss.backward()
        >>> round(float(ctkd.temperature), 4), ctkd.raw_temperature.grad.shape
        (15.6212, torch.Size([1]))
    """

    def __init__(self, *, t_start: float = 1.0, t_end: float = 20.0, init: float = 1.0, loops: int = 10,
                 max_value: float = 0.0, min_value: float = -1.0, schedule: str = "cosine", standardize: bool = True,
                 ddof: int = 1, eps: float = 1e-7, kd_weight: float = 1.0, ce_weight: float = 0.0,
                 reduction: str = "mean", check_finite: bool = True, instance_wise: bool = False,
                 num_classes: int | None = None, hidden_features: int = 128) -> None:
        super().__init__()
        fn = type(self).__name__
        self._weights(fn, t_start=t_start, t_end=t_end, loops=loops, max_value=max_value, min_value=min_value,
                      schedule=schedule, standardize=standardize, ddof=ddof, eps=eps, kd_weight=kd_weight,
                      ce_weight=ce_weight, reduction=reduction, check_finite=check_finite,
                      instance_wise=instance_wise, hidden_features=hidden_features)
        init = _checks.check_hyper(fn, init=init)["init"]
        self.num_classes = None
        if self.instance_wise or num_classes is not None:
            self.num_classes = _checks.check_hyper(fn, num_classes=num_classes)["num_classes"]
        self.raw_temperature = nn.Parameter(torch.full((1,), init))
        self.mlp: nn.Sequential | None = None
        if self.instance_wise:
            self.mlp = nn.Sequential(nn.Linear(2 * self.num_classes, self.hidden_features), nn.LeakyReLU(0.1),
                                     nn.Linear(self.hidden_features, 1))
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)
        self._last_temperature: torch.Tensor | None = None

    def raw(self, student_logits: torch.Tensor | None = None, teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
        """The raw temperature before the gradient reversal: ``(1,)``, or ``(B,)`` instance-wise."""
        if self.mlp is None:
            return self.raw_temperature
        fn = type(self).__name__
        x = []
        for name, logits in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
            logits = F._logits(fn, name, logits, check_finite=False)
            if logits.shape[1] != self.num_classes:
                _checks.fail(fn, name, f"an array with num_classes={self.num_classes} classes (the instance-wise "
                             "temperature's input size)", f"shape {tuple(logits.shape)}")
            x.append(logits)
        with torch.no_grad():
            feats = [(F.zscore(v, ddof=self.ddof, eps=self.eps, check_finite=False) if self.standardize else v)
                     for v in x]
            feats = torch.cat(feats, dim=1)
        w = self.mlp[0].weight
        return self.raw_temperature + self.mlp(feats.to(w.dtype)).squeeze(1)

    def grl_lambda(self, epoch: float) -> float:
        """:math:`\\lambda` of the module's schedule at ``epoch`` (:func:`~logit_standardization.ctkd_lambda`)."""
        e = _checks.check_hyper(type(self).__name__, epoch=epoch)["epoch"]
        return F.ctkd_lambda(e, loops=self.loops, max_value=self.max_value, min_value=self.min_value,
                             schedule=self.schedule)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None = None,
                *, epoch: float | None = None, grl_lambda: float | torch.Tensor | None = None) -> torch.Tensor:
        fn = type(self).__name__
        if grl_lambda is None:
            if epoch is None:
                _checks.fail(fn, "grl_lambda", "given, or 'epoch' to take it from the schedule", "neither")
            grl_lambda = self.grl_lambda(epoch)
        if self.ce_weight > 0:
            self._require_labels(labels, "needed when ce_weight > 0")
        raw = F.gradient_reversal(self.raw(student_logits, teacher_logits), grl_lambda)
        temperature = F.ctkd_temperature(raw, t_start=self.t_start, t_end=self.t_end, check_finite=self.check_finite)
        self._last_temperature = temperature.detach()
        kd = F.kd_loss(student_logits, teacher_logits, temperature=temperature, standardize=self.standardize,
                       ddof=self.ddof, eps=self.eps, reduction=self.reduction, check_finite=self.check_finite)
        ce = self._ce_term(student_logits, labels, self.reduction)
        return self._total(ce, kd=self.kd_weight * kd)

    @property
    def temperature(self) -> torch.Tensor:
        """The (detached) temperature of the last forward: ``(1,)``, or ``(B,)`` instance-wise.

        Before the first forward: the temperature of the current ``raw_temperature``.
        """
        if self._last_temperature is not None:
            return self._last_temperature
        with torch.no_grad():
            return F.ctkd_temperature(self.raw_temperature, t_start=self.t_start, t_end=self.t_end)

    def extra_repr(self) -> str:
        return (f"t_start={self.t_start}, t_end={self.t_end}, loops={self.loops}, max_value={self.max_value}, "
                f"min_value={self.min_value}, schedule={self.schedule!r}, standardize={self.standardize}, "
                f"ddof={self.ddof}, eps={self.eps}, kd_weight={self.kd_weight}, ce_weight={self.ce_weight}, "
                f"reduction={self.reduction!r}, instance_wise={self.instance_wise}")
