"""What stands in for the removed units: an affine function of the kept ones, folded into the next layer.

:func:`replacement` describes the removed units' outputs as an affine function of the kept units'
outputs: their mean (``"mean"``), or their least-squares reconstruction from the kept units over the
training data (``"least_squares"``, the "reweighting" of Mariet & Sra, *Diversity Networks*, ICLR 2016).
Removed units of a trained layer are rarely constant; their correlated part survives in the kept units.
:func:`apply_replacement` adds it to the next layer's weights and bias before the units are cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_prune.core.odf2nna.graph import HiddenLayer
from lightning_prune.core.odf2nna.units import UnitMoments
from lightning_prune.core.validate import check_choice

REPLACEMENTS = ("least_squares", "mean")

# Ridge on the kept units' covariance, relative to their mean variance: kept units of a wide layer are
# often nearly collinear, and an unregularised solve turns that into huge opposite-signed weights.
_RIDGE = 1e-3


@dataclass
class Replacement:
    """What stands in for a layer's removed units: ``removed ≈ weight @ kept + bias`` (float64)."""

    weight: Tensor  # (removed, kept)
    bias: Tensor  # (removed,)


def replacement(moments: UnitMoments, kept: Sequence[int], method: str = "least_squares") -> Replacement:
    """The removed units' outputs as an affine function of the kept units' outputs, over the training data.

    ``"mean"``: each removed unit becomes its mean (exact for a constant unit, a dead ReLU).
    ``"least_squares"``: the best affine reconstruction from the kept units (ridge-regularised regression
    on the collected covariance); its constant part is still the mean for constant units, and a removed
    unit that duplicates a kept one moves its outgoing weights onto it. Needs ``covariance=True`` moments.

    Example::

        >>> values = torch.tensor([[0.0, 0.0, 3.0], [1.0, 2.0, 3.0], [2.0, 4.0, 3.0]])  # unit 1 = 2 * unit 0
        >>> swap = replacement(UnitMoments.of(values, covariance=True), kept=[0])
        >>> swap.weight.squeeze().round(decimals=2).tolist(), swap.bias.round(decimals=2).tolist()
        ([2.0, 0.0], [0.0, 3.0])
    """
    check_choice("replacement method", method, REPLACEMENTS)
    kept_index = torch.as_tensor(sorted(set(kept)), dtype=torch.long)
    removed_mask = torch.ones_like(moments.mean, dtype=torch.bool)
    removed_mask[kept_index] = False
    removed_index = removed_mask.nonzero().flatten()
    if method == "mean" or not len(removed_index):  # nothing to reconstruct: no solve
        return Replacement(moments.mean.new_zeros(len(removed_index), len(kept_index)), moments.mean[removed_index])
    covariance = moments.covariance
    kept_covariance = covariance[kept_index][:, kept_index]
    ridge = _RIDGE * kept_covariance.diagonal().mean() + torch.finfo(torch.float64).tiny
    kept_covariance = kept_covariance + ridge * torch.eye(len(kept_index), dtype=torch.float64)
    weight = torch.linalg.solve(kept_covariance, covariance[kept_index][:, removed_index]).T
    return Replacement(weight, moments.mean[removed_index] - weight @ moments.mean[kept_index])


def apply_replacement(model: nn.Module, layer: HiddenLayer, kept: Sequence[int], swap: Replacement) -> None:
    """Route the removed units' outgoing weights through their replacement, before they are cut.

    ``swap`` must come from :func:`replacement` with the same ``kept`` units (both sort them).

    The consumer computes ``W_kept @ kept + W_removed @ removed + b``; with ``removed ≈ A @ kept + c``
    that is ``(W_kept + W_removed @ A) @ kept + (b + W_removed @ c)``. A consumer without a bias has
    nowhere to put ``c``: only the weights change.
    """
    consumer = model.get_submodule(layer.consumer)
    width = consumer.weight.shape[1]
    kept_index = torch.as_tensor(sorted(set(kept)), device=consumer.weight.device)
    removed = sorted(set(range(width)) - set(kept))
    if not removed:
        return
    removed_index = torch.as_tensor(removed, device=consumer.weight.device)
    with torch.no_grad():
        outgoing = consumer.weight[:, removed_index].double()
        rerouted = consumer.weight[:, kept_index].double() + outgoing @ swap.weight.to(outgoing.device)
        consumer.weight[:, kept_index] = rerouted.to(consumer.weight.dtype)
        if consumer.bias is not None:
            consumer.bias.add_((outgoing @ swap.bias.to(outgoing.device)).to(consumer.bias.dtype))
