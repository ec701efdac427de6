"""Decide the rebuild (which units stay, what replaces the rest) and apply it: narrower layers, in place.

:func:`plan_rebuild` is the decision, made once (on rank 0 under DDP) from the collected moments;
:func:`rebuild_layers` applies it on every rank: each replacement is added to the next layer's weights
and bias, then the units are removed physically through
:func:`~lightning_prune.core.structured.remove_out_channels` (torch-pruning slices the Linear, its norms
and the next Linear's inputs consistently). The graph is traced by
:func:`~lightning_prune.core.odf2nna.tracing.trace_graph`, so dict inputs and ``ModelOutput`` outputs trace too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from lightning_prune.core.odf2nna.graph import HiddenLayer
from lightning_prune.core.odf2nna.replacement import REPLACEMENTS, Replacement, apply_replacement, replacement
from lightning_prune.core.odf2nna.tracing import eval_forward, trace_graph, two_samples
from lightning_prune.core.odf2nna.units import UNIT_STATISTICS, UnitMoments, keep_units

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
    example_inputs: Any,
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
    remove_units(model, example_inputs, removals)
    try:
        eval_forward(model, [example_inputs])
    except RuntimeError as error:
        raise ValueError(
            f"the rebuilt model no longer runs its example input ({error}); is it a plain stack?"
        ) from error


def remove_units(model: nn.Module, example_inputs: Any, removals: Mapping[str, Sequence[int]]) -> None:
    """Physically remove the given output units of each named Linear, with everything coupled to them.

    torch-pruning's group slices the Linear, its chain's norms, a gated sibling (the product couples them)
    and the next Linear's inputs.

    Raises:
        ValueError: when a removal would leave a coupled layer empty.
    """
    graph = trace_graph(model, example_inputs)
    for name, idxs in removals.items():
        if not idxs:
            continue
        module = model.get_submodule(name)
        group = graph.get_pruning_group(module, graph.get_pruner_of_module(module).prune_out_channels, list(idxs))
        if not graph.check_pruning_group(group):
            raise ValueError(f"removing {len(idxs)} units of {name!r} would leave a coupled layer empty")
        group.prune()
