"""Score hidden units over the training data and decide which stay.

:func:`collect_unit_moments` streams the training data once and keeps per-unit count, mean, M2, min and
max of what the next layer *receives* (the unit after its norm and activation), so any statistic in
:data:`UNIT_STATISTICS` can be computed without holding the activations; on request also the units'
covariance, for the least-squares :func:`~lightning_prune.core.odf2nna.replacement.replacement`.
:func:`keep_units` applies the rule ``statistic >= epsilon * max over the layer`` (or a high quantile of
the layer's scores instead of the max, so a few runaway units cannot set every other unit's bar).

The statistic is the one open choice: the paper scores "the variability of the output of the unit's
subnet" and the exact formula is not in the sources we could read. The default is the standard
deviation of the post-activation output, relative to the layer's largest (scale-free, so one epsilon
fits every layer); ``variance`` and ``range`` are there to compare.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_prune.core.odf2nna.graph import HiddenLayer
from lightning_prune.core.odf2nna.tracing import eval_forward
from lightning_prune.core.validate import check_fraction


@dataclass
class UnitMoments:
    """Streaming per-unit moments (float64): count, mean, M2 (sum of squared deviations), min, max.

    ``comoment`` (``units x units`` sums of products of deviations, M2 on its diagonal) is kept only when
    asked for: it costs ``units**2`` floats per layer. Batches and ranks merge with Chan et al.'s parallel
    formula, so the result does not depend on how the data was split.
    """

    count: Tensor
    mean: Tensor
    m2: Tensor
    minimum: Tensor
    maximum: Tensor
    comoment: Tensor | None = None

    @classmethod
    def of(cls, values: Tensor, covariance: bool = False) -> UnitMoments:
        """Moments of ``values`` of shape ``(samples, units)``."""
        values = values.detach().double()
        mean = values.mean(0)
        deviations = values - mean
        return cls(
            torch.full_like(mean, values.shape[0]),
            mean,
            (deviations**2).sum(0),
            values.amin(0),
            values.amax(0),
            deviations.T @ deviations if covariance else None,
        )

    def merge(self, other: UnitMoments) -> UnitMoments:
        count = self.count + other.count
        delta = other.mean - self.mean
        weight = self.count * other.count / count
        comoment = None
        if self.comoment is not None and other.comoment is not None:
            comoment = self.comoment + other.comoment + torch.outer(delta, delta) * weight[0]
        return UnitMoments(
            count,
            self.mean + delta * other.count / count,
            self.m2 + other.m2 + delta**2 * weight,
            torch.minimum(self.minimum, other.minimum),
            torch.maximum(self.maximum, other.maximum),
            comoment,
        )

    @property
    def covariance(self) -> Tensor:
        """Population covariance of the units (needs ``comoment``)."""
        if self.comoment is None:
            raise ValueError("these moments were collected without covariance=True")
        return self.comoment / self.count[0]

    def to_tensor(self) -> Tensor:
        """``(5, units)``: what ranks exchange (``comoment`` travels on its own)."""
        return torch.stack([self.count, self.mean, self.m2, self.minimum, self.maximum])

    @classmethod
    def from_tensor(cls, stacked: Tensor, comoment: Tensor | None = None) -> UnitMoments:
        return cls(*stacked.double().unbind(0), None if comoment is None else comoment.double())

    def cpu(self) -> UnitMoments:
        return UnitMoments.from_tensor(self.to_tensor().cpu(), None if self.comoment is None else self.comoment.cpu())


def unit_std(moments: UnitMoments) -> Tensor:
    """Population standard deviation of each unit's output (the default score)."""
    return (moments.m2 / moments.count).clamp_min(0).sqrt()


def unit_variance(moments: UnitMoments) -> Tensor:
    return moments.m2 / moments.count


def unit_range(moments: UnitMoments) -> Tensor:
    """Max minus min: sensitive to a single outlier, but zero exactly for constant units too."""
    return moments.maximum - moments.minimum


UNIT_STATISTICS: dict[str, Callable[[UnitMoments], Tensor]] = {
    "std": unit_std,
    "variance": unit_variance,
    "range": unit_range,
}


def collect_unit_moments(
    model: nn.Module, layers: Sequence[HiddenLayer], inputs: Iterable[Any], covariance: bool = False
) -> dict[str, UnitMoments]:
    """Moments of every hidden unit over ``inputs``, read at the consumer's input, model in eval mode.

    Reading what the next Linear receives makes the score the unit's output after its norm and
    activation, whether those are modules or functional calls in ``forward``. ``covariance`` also
    keeps the units' comoment matrix (what a least-squares replacement needs).
    """
    moments: dict[str, UnitMoments] = {}

    def hook_for(layer: HiddenLayer) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            batch = UnitMoments.of(args[0].reshape(-1, args[0].shape[-1]), covariance)
            moments[layer.name] = moments[layer.name].merge(batch) if layer.name in moments else batch

        return hook

    handles = [model.get_submodule(layer.consumer).register_forward_pre_hook(hook_for(layer)) for layer in layers]
    try:
        eval_forward(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return moments


def keep_units(scores: Tensor, epsilon: float, min_units: int = 1, reference_quantile: float = 1.0) -> list[int]:
    """Indices of the useful units: ``score >= epsilon * reference``, and never a constant unit when epsilon > 0.

    The reference is the ``reference_quantile`` of the layer's scores: 1.0 is the largest (methods.md's
    rule); 0.99 ignores the top 1 %, because a long-trained layer can grow a handful of units whose
    output varies ten times more than the rest, and against their max every other unit looks constant.
    At least ``min_units`` are kept (the highest-scoring ones), so no layer becomes empty.

    Example::

        >>> keep_units(torch.tensor([0.0, 1.0, 0.05, 0.5]), epsilon=0.1)
        [1, 3]
        >>> keep_units(torch.tensor([0.0, 0.0, 0.0]), epsilon=0.1)
        [0]
        >>> keep_units(torch.tensor([1.0, 1.0, 1.0, 10.0]), epsilon=0.5, reference_quantile=0.5)
        [0, 1, 2, 3]
    """
    check_fraction("epsilon", epsilon, closed_low=True)
    check_fraction("reference_quantile", reference_quantile, closed_high=True)
    useful = scores >= epsilon * torch.quantile(scores, reference_quantile)  # quantile 1.0 is the max
    if epsilon > 0:
        useful &= scores > 0
    kept = useful.nonzero().flatten().tolist()
    if len(kept) < min_units:
        kept = sorted(torch.argsort(scores, descending=True, stable=True)[:min_units].tolist())
    return kept
