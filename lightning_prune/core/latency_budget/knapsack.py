"""The group (multiple-choice) knapsack: one option per class, maximal value, total cost within budget.

In latency-aware pruning a class is a channel group and its options are "keep the top k channels":
value = the importance kept, cost = the latency the table predicts. HALP and SP-LAMP solve it by dynamic
programming over an integerised latency axis; so does :func:`group_knapsack`, exactly for the
discretised costs. Costs are rounded *up* to the grid, so whatever the DP returns also fits the real
(float) budget; the price is at most one grid step per class of lost slack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def group_knapsack(
    costs: Sequence[Sequence[float]],
    values: Sequence[Sequence[float]],
    budget: float,
    resolution: int = 2000,
) -> list[int] | None:
    """Choose one option per class maximising the summed value with summed cost <= ``budget``.

    Each class's cheapest option is taken as the baseline, so the grid of ``resolution`` steps only has
    to span the budget left after those baselines (the part the choice is about).

    Args:
        costs: ``costs[c][j]``, the cost of option ``j`` of class ``c`` (>= 0).
        values: ``values[c][j]``, its value.
        budget: the cost limit.
        resolution: number of grid steps the remaining budget is cut into (more: finer, slower).

    Returns:
        The chosen option index per class, or ``None`` when even the cheapest options exceed the budget.

    Raises:
        ValueError: for mismatched shapes, an empty class, negative costs or ``resolution < 1``.

    Example::

        >>> group_knapsack([[1, 2, 3], [1, 3]], [[0, 5, 6], [0, 4]], budget=5, resolution=3)
        [1, 1]
    """
    _check(costs, values, resolution)
    baseline = [min(c) for c in costs]
    spare = budget - sum(baseline)
    if spare < -1e-12 * max(1.0, abs(budget)):
        return None
    step = max(spare, 0.0) / resolution if spare > 0 else 1.0
    grid = resolution if spare > 0 else 0
    units = [[math.ceil((cost - base) / step - 1e-9) for cost in options] for options, base in zip(costs, baseline)]
    best = np.full(grid + 1, -np.inf)
    best[0] = 0.0
    choices = []
    for class_units, class_values in zip(units, values):
        best, choice = _add_class(best, class_units, class_values)
        choices.append(choice)
    end = int(np.argmax(best))
    picked = []
    for class_units, choice in zip(reversed(units), reversed(choices)):
        option = int(choice[end])
        picked.append(option)
        end -= class_units[option]
    return picked[::-1]


def _add_class(best: np.ndarray, units: list[int], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """One DP stage: new best value at each exact grid cost, and which option achieved it."""
    new = np.full_like(best, -np.inf)
    choice = np.full(best.shape, -1, dtype=np.int64)
    for option, (unit, value) in enumerate(zip(units, values)):
        if unit >= best.size:
            continue
        shifted = np.full_like(best, -np.inf)
        shifted[unit:] = best[: best.size - unit] + value
        better = shifted > new
        new[better] = shifted[better]
        choice[better] = option
    return new, choice


def _check(costs: Sequence[Sequence[float]], values: Sequence[Sequence[float]], resolution: int) -> None:
    if len(costs) != len(values) or any(len(c) != len(v) for c, v in zip(costs, values)):
        raise ValueError("costs and values must have the same number of classes and options per class")
    if any(len(c) == 0 for c in costs):
        raise ValueError("every class needs at least one option")
    if any(cost < 0 for options in costs for cost in options):
        raise ValueError("costs must be >= 0")
    if not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be an integer >= 1, got {resolution!r}")
