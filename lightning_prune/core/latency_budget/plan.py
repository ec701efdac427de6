"""Deciding how many channels each group keeps under a latency budget (SP-LAMP + LUT + group knapsack).

A network (:class:`Network`: channel groups and timed layers) is predicted as the sum of its layers'
latencies in the :class:`LatencyTable` at their (c_in, c_out), times a ``scale``; the planner adds the
whole model's fixed part (``overhead``, fitted through the dense and the smallest network's measurements,
:func:`~lightning_prune.core.latency_budget.measure.whole_model_fit`) by planning for ``target - overhead``.

The choice per group is a group knapsack: options "keep the top k channels" (k on a ``round_to``
grid), value = the SP-LAMP scores kept (or the log of their share of the group's, ``value="log_share"``),
cost = the latency of the layers writing to the group (and of those reading from it whose output no group
decides, such as the head). A layer's cost also depends on its *input* group, which the knapsack must fix:
as in HALP it is first taken at the current width (an over-estimate, so the plan fits), then at narrower
guesses, each refined with the widths its plan implies; the best plan whose exact prediction fits is then
widened greedily into the remaining slack.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_prune.core.latency_budget.knapsack import group_knapsack
from lightning_prune.core.latency_budget.network import Network, TimedLayer
from lightning_prune.core.latency_budget.table import LatencyTable

# What an option is worth to the knapsack (see :func:`kept_value`).
VALUES = ("sp_lamp", "log_share")


@dataclass
class LatencyPlan:
    """Channels kept per group, with the table's prediction of the resulting latency."""

    keep: dict[str, int]
    predicted_ms: float
    value: float
    feasible: bool


def option_counts(size: int, round_to: int, min_channels: int) -> list[int]:
    """Channel counts a group of ``size`` may keep: multiples of ``round_to``, and all; below one step, powers of 2.

    Counts off the grid (20, 28, 36 on a 16-grid) are left out: a CPU's kernels are blocked by ``round_to``
    and such a count costs about what the next multiple does (a depthwise 3x3 at 28 channels measured ~1.5x
    its time at 32 here). Below ``round_to`` the powers of two from ``min_channels`` stay options (sub-blocks
    of a vector), so the smallest network is not held at a full block per group.

    Example::

        >>> option_counts(64, 16, 4), option_counts(12, 16, 4), option_counts(10, 4, 1)
        ([4, 8, 16, 32, 48, 64], [4, 8, 12], [1, 2, 4, 8, 10])
    """
    lowest = min(size, max(1, min_channels))
    grid = {k for k in range(round_to, size + 1, round_to) if k >= lowest}
    below = {1 << p for p in range(round_to.bit_length()) if lowest <= 1 << p < min(round_to, size)}
    return sorted(grid | below | {size, lowest})


def group_options(network: Network, round_to: int, min_channels: int) -> dict[str, list[int]]:
    """Every group's keep-counts: channels on the ``round_to`` grid; heads one key/value group at a time."""
    return {
        g: option_counts(size, 1, 1) if g in network.heads else option_counts(size, round_to, min_channels)
        for g, size in network.groups.items()
    }


def predict_ms(network: Network, table: LatencyTable, keep: Mapping[str, int], scale: float = 1.0) -> float:
    """``scale`` x the table's latency of ``network`` with ``keep[g]`` channels in group ``g`` (others as are)."""
    total = 0.0
    for layer in network.layers:
        c_out = _c_out(layer, keep)
        total += table(layer.spec, _c_in(layer, keep, c_out), c_out)
    return scale * total


def _c_out(layer: TimedLayer, keep: Mapping[str, int]) -> int:
    if layer.out_group is None or layer.out_group not in keep:
        return layer.c_out
    return keep[layer.out_group] * layer.out_per_channel


def _c_in(layer: TimedLayer, keep: Mapping[str, int], c_out: int) -> int:
    if layer.spec.depthwise:
        return c_out
    if layer.in_group is None or layer.in_group not in keep:
        return layer.c_in
    return keep[layer.in_group] * layer.in_per_channel


def plan_keep_counts(
    network: Network,
    table: LatencyTable,
    budget_ms: float,
    scale: float,
    round_to: int,
    min_channels: int,
    resolution: int = 1000,
    rounds: int = 3,
    value: str = "sp_lamp",
) -> LatencyPlan:
    """The keep-counts of most value (:func:`kept_value`) whose predicted latency fits ``budget_ms``.

    The knapsack needs each layer's input width fixed. It is solved from a ladder of guesses: the current
    widths (an over-estimate, so its plan fits whenever the table is monotone), then every width shrunk
    by sqrt(budget / current latency) (a uniform cut's need, latency ~ c_in x c_out) and by further
    factors of 0.8; from each guess it is re-solved up to ``rounds`` times with the input widths the
    previous plan implies.

    The best plan whose exact prediction fits, and the smallest network, are then each widened greedily
    into the remaining slack (:func:`_fill`); the higher-value result is returned. If nothing fits (the
    budget is below the smallest network), the plan predicted fastest, ``feasible=False``.
    """
    options = group_options(network, round_to, min_channels)
    values = {g: kept_value(network.scores[g], options[g], value) for g in options}
    smallest = {g: counts[0] for g, counts in options.items()}
    floor_ms = predict_ms(network, table, smallest, scale)
    candidates = [
        LatencyPlan(smallest, floor_ms, _value(values, options, smallest), floor_ms <= budget_ms * (1 + 1e-9))
    ]
    for ratio in _width_ladder(network, table, budget_ms, scale, min(smallest.values())):
        guess = {g: max(smallest[g], round(size * ratio)) for g, size in network.groups.items()}
        assumed_in = _input_widths(network, guess)
        for _ in range(rounds):
            costs, constant = _option_costs(network, table, options, assumed_in)
            picked = group_knapsack(
                list(costs.values()), list(values.values()), budget_ms / scale - constant, resolution
            )
            if picked is None:
                break
            keep = {g: options[g][j] for g, j in zip(options, picked)}
            predicted = predict_ms(network, table, keep, scale)
            feasible = predicted <= budget_ms * (1 + 1e-9)
            candidates.append(LatencyPlan(keep, predicted, _value(values, options, keep), feasible))
            if _input_widths(network, keep) == assumed_in:
                break
            assumed_in = _input_widths(network, keep)
    feasible = [plan for plan in candidates if plan.feasible]
    if not feasible:
        return min(candidates, key=lambda plan: plan.predicted_ms)
    starts = [max(feasible, key=lambda plan: (plan.value, -plan.predicted_ms)), candidates[0]]
    filled = [_fill(network, table, plan, options, values, budget_ms, scale) for plan in starts if plan.feasible]
    return max(filled, key=lambda plan: (plan.value, -plan.predicted_ms))


def _value(values: Mapping[str, list[float]], options: Mapping[str, list[int]], keep: Mapping[str, int]) -> float:
    return sum(values[g][options[g].index(k)] for g, k in keep.items())


def _fill(
    network: Network,
    table: LatencyTable,
    plan: LatencyPlan,
    options: Mapping[str, list[int]],
    values: Mapping[str, list[float]],
    budget_ms: float,
    scale: float,
) -> LatencyPlan:
    """Spend the slack the fixed-input-width knapsack leaves: widen one group a step at a time.

    Each move takes the group whose next option adds the most value per exactly predicted millisecond
    and still fits, until none does.
    """
    keep, predicted = dict(plan.keep), plan.predicted_ms
    while True:
        moves = []
        for g, counts in options.items():
            j = counts.index(keep[g])
            if j + 1 == len(counts):
                continue
            trial = {**keep, g: counts[j + 1]}
            cost = predict_ms(network, table, trial, scale)
            if cost <= budget_ms:
                gain = values[g][j + 1] - values[g][j]
                moves.append((gain / max(cost - predicted, 1e-9), g, counts[j + 1], cost))
        if not moves:
            break
        _, g, count, predicted = max(moves)
        keep[g] = count
    return LatencyPlan(keep, predicted, _value(values, options, keep), True)


def _width_ladder(network: Network, table: LatencyTable, budget_ms: float, scale: float, fewest: int) -> list[float]:
    """Width ratios to assume for layer inputs: 1, then sqrt(budget / now), shrinking by 0.8 per rung."""
    ladder = [1.0]
    # a budget at or below the fixed part (a planner's target minus its overhead) asks for the narrowest rung
    ratio = min(1.0, (max(budget_ms, 0.0) / max(predict_ms(network, table, {}, scale), 1e-12)) ** 0.5)
    floor = fewest / max(network.groups.values(), default=1)
    while ratio > floor and len(ladder) < 8:
        ladder.append(ratio)
        ratio *= 0.8
    return ladder


def _input_widths(network: Network, keep: Mapping[str, int]) -> dict[str, int]:
    return {layer.name: _c_in(layer, keep, _c_out(layer, keep)) for layer in network.layers}


def kept_value(scores: Tensor, counts: Sequence[int], value: str = "sp_lamp") -> list[float]:
    """What keeping the top ``k`` channels of a group is worth, for each ``k`` in ``counts``.

    ``"sp_lamp"``: the SP-LAMP scores kept (the paper's knapsack). The strongest channel scores 1 and the rest a
    harmonic-like tail, so a group's last channels add little and the knapsack empties groups for small latency
    gains (measured: an 8-channel floor was needed, and at 0.4 of dense ours lost 1.8 pt to a uniform cut).
    ``"log_share"``: the log of the share of the group's score kept: each group is priced by the fraction of its
    own importance it loses (0 kept whole), concave, so a deep cut in one group costs more than shallow cuts in
    several, unless its latency is that much cheaper.

    Example::

        >>> scores = torch.tensor([1.0, 0.5, 0.25, 0.25])
        >>> kept_value(scores, [1, 2, 4]), [round(v, 3) for v in kept_value(scores, [1, 2, 4], "log_share")]
        ([1.0, 1.5, 2.0], [-0.693, -0.288, 0.0])

    Raises:
        ValueError: for a ``value`` not in :data:`VALUES`.
    """
    if value not in VALUES:
        raise ValueError(f"value must be one of {list(VALUES)}, got {value!r}")
    cumulative = torch.cumsum(torch.sort(scores, descending=True).values.double(), 0)
    kept = [float(cumulative[k - 1]) for k in counts]
    total = float(cumulative[-1])  # 0 only for a group whose weights are all zero: nothing to lose by cutting it
    if value == "sp_lamp":
        return kept
    return [math.log(k / total) for k in kept] if total > 0 else [0.0] * len(kept)


def _option_costs(
    network: Network, table: LatencyTable, options: Mapping[str, list[int]], assumed_in: Mapping[str, int]
) -> tuple[dict[str, list[float]], float]:
    """Per group, the latency of the layers it decides at each option; plus the layers no group decides."""
    costs = {g: [0.0] * len(counts) for g, counts in options.items()}
    constant = 0.0
    for layer in network.layers:
        if layer.out_group is not None:
            for j, k in enumerate(options[layer.out_group]):
                c_out = k * layer.out_per_channel
                c_in = c_out if layer.spec.depthwise else assumed_in[layer.name]
                costs[layer.out_group][j] += table(layer.spec, c_in, c_out)
        elif layer.in_group is not None:
            for j, k in enumerate(options[layer.in_group]):
                costs[layer.in_group][j] += table(layer.spec, k * layer.in_per_channel, layer.c_out)
        else:
            constant += table(layer.spec, layer.c_in, layer.c_out)
    return costs, constant


def min_keep(network: Network, round_to: int, min_channels: int) -> dict[str, int]:
    """The smallest keep-count of every group: what "unreachable budget" is measured against."""
    return {g: counts[0] for g, counts in group_options(network, round_to, min_channels).items()}
