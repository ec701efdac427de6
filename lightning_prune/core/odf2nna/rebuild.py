"""Decide the rebuild (which units stay, what replaces the rest) and apply it: narrower layers, in place.

:func:`plan_rebuild` is the decision, made once (on rank 0 under DDP) from the collected moments;
:func:`rebuild_layers` applies it on every rank: each replacement is added to the next layer's weights
and bias, then the units are removed physically through
:func:`~lightning_prune.core.structured.remove_out_channels` (torch-pruning slices the Linear, its norms
and the next Linear's inputs consistently).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from lightning_prune.core.odf2nna.graph import HiddenLayer, eval_forward, two_samples
from lightning_prune.core.odf2nna.replacement import REPLACEMENTS, Replacement, apply_replacement, replacement
from lightning_prune.core.odf2nna.units import UNIT_STATISTICS, UnitMoments, keep_units
from lightning_prune.core.structured import remove_out_channels

# What replaces the removed units' input to the next layer; "none" drops it (the paper's plain transfer).
COMPENSATIONS = (*REPLACEMENTS, "none")


@dataclass
class RebuildPlan:
    """Per layer, the kept units and what replaces the removed ones (CPU tensors; ``None``: dropped)."""

    kept: dict[str, list[int]]
    replacements: dict[str, Replacement] | None


def plan_rebuild(
    moments: Mapping[str, UnitMoments],
    statistic: str = "std",
    epsilon: float = 0.5,
    min_units: int = 1,
    reference_quantile: float = 1.0,
    compensation: str = "least_squares",
) -> RebuildPlan:
    """Score each layer's units with ``statistic``, keep them by :func:`keep_units`, describe the replacement.

    ``compensation="least_squares"`` needs moments collected with ``covariance=True``.
    """
    score = UNIT_STATISTICS[statistic]
    kept = {name: keep_units(score(moments[name]), epsilon, min_units, reference_quantile) for name in moments}
    replacements = None
    if compensation != "none":
        replacements = {name: replacement(moments[name].cpu(), kept[name], compensation) for name in moments}
    return RebuildPlan(kept, replacements)


def rebuild_layers(
    model: nn.Module,
    example_inputs: Tensor,
    layers: Sequence[HiddenLayer],
    kept: Mapping[str, Sequence[int]],
    replacements: Mapping[str, Replacement] | None = None,
) -> None:
    """Shrink every layer to its ``kept`` units, in place, trained weights transferred.

    ``replacements`` (per layer, from :func:`~lightning_prune.core.odf2nna.replacement.replacement`) are
    applied to the consumers first; pass ``None`` to drop removed units without compensation.

    Raises:
        ValueError: when a kept index is out of range, or the shrunk model no longer runs the example.
    """
    keeps, removals = {}, {}
    for layer in layers:  # every layer checked before any weight changes
        width = model.get_submodule(layer.name).out_features
        keeps[layer.name] = set(kept.get(layer.name, range(width)))
        if not keeps[layer.name] or not keeps[layer.name] <= set(range(width)):
            raise ValueError(f"kept units of {layer.name!r} must be a non-empty subset of range({width})")
        removals[layer.name] = sorted(set(range(width)) - keeps[layer.name])
    if replacements is not None:
        for layer in layers:
            apply_replacement(model, layer, sorted(keeps[layer.name]), replacements[layer.name])
    example_inputs = two_samples(example_inputs)
    remove_out_channels(model, example_inputs, removals)
    try:
        eval_forward(model, [example_inputs])
    except RuntimeError as error:
        raise ValueError(
            f"the rebuilt model no longer runs its example input ({error}); is it a plain stack?"
        ) from error
