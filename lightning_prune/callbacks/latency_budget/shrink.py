"""One shrink of a latency-budget step: plan on rank 0, apply on every rank, measure, rescale the table.

Functions of the callback (``cb``, a :class:`~lightning_prune.callbacks.latency_budget.callback.LatencyBudgetPruning`)
as :mod:`~lightning_prune.callbacks.latency_budget.report` is: the step's schedule and corrections
(:func:`~lightning_prune.core.latency_budget.steps.step_with_corrections`) call :func:`shrink_to` and :func:`remeasure`.
"""

from __future__ import annotations

import functools
from typing import Any

import lightning.pytorch as pl
from torch import Tensor

from lightning_prune.callbacks._carry import carried_optimizer
from lightning_prune.callbacks._trainer import broadcast
from lightning_prune.core.latency_budget.measure import rescaled
from lightning_prune.core.latency_budget.planner import BudgetPlanner
from lightning_prune.core.structured import architecture_spec, remove_channels_and_heads
from lightning_prune.progress import progress


def shrink_to(
    cb: Any, trainer: pl.Trainer, pl_module: pl.LightningModule, example: Tensor, target_ms: float, rescale: bool
) -> dict[str, Any]:
    """Plan on rank 0, apply everywhere, measure, and rescale the table's prediction to the measurement."""
    planner = cb._rank_zero(trainer, pl_module)
    decision = broadcast(trainer, planner and decide(cb, planner, pl_module, example, target_ms))
    lifts = decision.pop("lifts", [])
    decision.pop("current_ms", None)
    if decision["removals"]:
        # the optimizer's surviving state and the schedulers' place carry over (a fresh configure_optimizers
        # would restart a cosine at its top, as BlockPruning measured: ResNet-18 -19 pt -> -2 pt)
        # the same removal runs on the optimizer carry's probe copy, then on the module
        shrink = functools.partial(remove_channels_and_heads, removals=decision["removals"])
        with carried_optimizer(trainer, pl_module, shrink, example, carry=True):
            shrink(pl_module, example)
        cb._budget.architecture = architecture_spec(pl_module)
    taken = broadcast(trainer, planner and planner.measure(pl_module, example, cb._budget.dense_ms))
    predicted, measured = decision["predicted_ms"], taken["measured_ms"]
    fixed = cb._budget.overhead  # the rescale moves the part that shrinks with channels
    cb._budget.scale, recalibrated = rescaled(cb._budget.scale, measured - fixed, predicted - fixed, rescale)
    return {
        "predicted_ms": predicted,
        "measured_ms": measured,
        "ratio_to_dense": taken["ratio_to_dense"],
        "removed": sum(len(idxs) for idxs in decision["removals"].values()),
        "feasible": decision["feasible"],
        "recalibrated": recalibrated,
        **({"lifts": lifts} if len(lifts) > 1 else {}),
    }


def remeasure(cb: Any, trainer: pl.Trainer, pl_module: pl.LightningModule, example: Tensor, before: float) -> float:
    """A second side-by-side measurement of the last step's network; the table's scale follows it."""
    planner = cb._rank_zero(trainer, pl_module)
    measured = broadcast(trainer, planner and planner.measure(pl_module, example, cb._budget.dense_ms))
    fixed = cb._budget.overhead
    cb._budget.scale, _ = rescaled(cb._budget.scale, measured["measured_ms"] - fixed, before - fixed, True)
    return measured["measured_ms"]


def decide(
    cb: Any, planner: BudgetPlanner, pl_module: pl.LightningModule, example: Tensor, target_ms: float
) -> dict[str, Any]:
    """Rank 0: SP-LAMP scores, table lookups (timing what is missing) and the knapsack, as a plan.

    Each plan is built on a copy and measured first; one far under ``target_ms`` (by more than the
    tolerance) is re-planned for a higher target (:func:`~lightning_prune.core.latency_budget.steps.lift_plan`);
    on the last step a plan measured within the budget counts as under, though the step aims below it.
    """
    state, budget = cb.pruning_state, cb._budget
    ceiling = budget.budget_ms if state.step + 1 == state.num_steps else None  # the last step: the budget
    with progress("latency table + knapsack") as advance:
        rules = (budget.scale, budget.dense_ms, cb.tolerance, advance, budget.overhead)
        return planner.decide_measured(pl_module, example, target_ms, *rules, ceiling_ms=ceiling)
