"""How a step turns plans into a measured network: lift a plan measured far under its target, correct the last step.

The table prices plans, the device decides: every plan is built on a copy and timed
(:meth:`~lightning_prune.core.latency_budget.planner.BudgetPlanner.decide_measured`). :func:`lift_plan` searches the
planned target until a plan measures just under the step's target; :func:`step_with_corrections` re-plans the last
step while its measurement is over the budget. Both are pure functions of callables, tested on synthetic latencies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Re-plans (each built on a copy and measured) a step may take to lift a plan measured far under its target.
LIFT_TRIES = 5
Attempt = Callable[[float], tuple[dict[str, Any], float]]  # planned_ms -> (decision, measured_ms)


def lift_plan(
    attempt: Attempt, target_ms: float, tolerance: float, tries: int = LIFT_TRIES, ceiling_ms: float | None = None
) -> dict[str, Any]:
    """The plan measured closest to ``target_ms`` from below, raising the planned target while far under it.

    ``attempt(planned_ms)`` plans for ``planned_ms`` (on a copy) and returns ``(decision, measured_ms)``;
    a decision holds its ``predicted_ms`` and may hold ``current_ms``, the prediction of the network as
    it is (no plan can be slower). A plan measured below ``target_ms x (1 - tolerance)`` is re-planned for
    a higher target, up to ``tries`` times. The search runs on the predicted axis (every target between a
    plan's prediction and the one asked gives that plan, and an infeasible target gives the smallest
    network, predicted above it): proportionally (``predicted x aim / measured``, ``aim`` the middle of
    the band, at most ``current_ms``) until a try lands over ``target_ms``, then by bisection between the
    highest-priced plan under and the lowest-priced over (a ResNet-14 whose table priced its smallest
    network at 0.67 of its current one measured it at 0.28, and plans up to 0.9 at 0.95 or more: a secant
    stalls there). On a loaded host one plan can measure 2x apart: a plan met again is judged by its
    highest figure, and of the plans under ``target_ms`` the one priced highest is kept. The decision
    returned gets ``lifts``: every try's ``planned_ms``, ``predicted_ms`` and ``measured_ms``.

    ``ceiling_ms`` (default ``target_ms``) is what counts as under: the last step aims below the budget for the
    final check's noise, but a plan measured between that aim and the budget meets it. Without it, a ResNet whose
    plans measured 0.48, 0.76 and 0.73 ms against a 0.72 ms aim (budget 0.78) kept the 0.48 ms one: 96 % of its
    parameters removed for a 0.8 budget.

    Example::

        >>> plan = lift_plan(lambda t: ({"removals": {"g": [0] * round(10 / t)}, "predicted_ms": t}, 0.5 * t), 2.0, 0.1)
        >>> round(plan["lifts"][-1]["measured_ms"], 3), len(plan["lifts"])
        (1.9, 2)
    """
    floor, aim = target_ms * (1.0 - tolerance), target_ms * (1.0 - tolerance / 2)
    ceiling = target_ms if ceiling_ms is None else max(ceiling_ms, target_ms)
    lifts: list[dict[str, float]] = []
    plans: dict[tuple, tuple[dict[str, Any], list[float]]] = {}  # a plan met again keeps all its figures
    planned = target_ms
    for _ in range(tries + 1):
        decision, measured = attempt(planned)
        predicted = decision["predicted_ms"]
        lifts.append({"planned_ms": planned, "predicted_ms": predicted, "measured_ms": measured})
        plans.setdefault(_plan_key(decision), (decision, []))[1].append(measured)
        # a plan is judged by its highest figure; among those under target the one priced highest is kept
        under = [(d["predicted_ms"], max(m), d) for d, m in plans.values() if max(m) <= ceiling]
        if not under:  # over target at the first try: the step's own corrections handle that
            return {**decision, "lifts": lifts}
        low = max(under, key=lambda item: (item[0], item[1]))
        if low[1] >= floor or not low[2]["removals"]:
            break
        over = [d["predicted_ms"] for d, m in plans.values() if max(m) > ceiling and d["predicted_ms"] > low[0]]
        if over:  # bisect: measured latency is far from linear in the prediction near the smallest network
            planned = (low[0] + min(over)) / 2
        else:
            planned = min(low[0] * aim / max(low[1], 1e-12), decision.get("current_ms", float("inf")))
    return {**low[2], "lifts": lifts}


def _plan_key(decision: dict[str, Any]) -> tuple:
    return tuple(sorted((g, len(idxs)) for g, idxs in decision["removals"].items()))


Shrink = Callable[[float, bool], dict[str, Any]]


def step_with_corrections(
    shrink: Shrink,
    target_ms: float,
    budget_ms: float,
    last: bool,
    max_corrections: int,
    margin: float = 0.0,
    confirm: Callable[[float], float] | None = None,
) -> dict[str, Any]:
    """One pruning step: ``shrink(target_ms, rescale)`` and, on the ``last`` step, corrections toward the budget.

    ``shrink`` removes channels, measures, and returns at least ``measured_ms`` and ``removed``. The last
    step always rescales the table (its corrections must plan with what it just measured), then re-plans
    for ``budget_ms`` itself (the tolerance is the final check's room for timing noise) up to
    ``max_corrections`` times while the measurement exceeds it, stopping early when a re-plan removes
    nothing. ``removed`` counts the whole step: a correction that removes nothing must not hide the first cut.
    With ``margin``, the last step and its corrections plan for ``budget_ms x (1 - margin)`` (still stopping
    once a measurement is within ``budget_ms``): the final check is one more noisy measurement, and a plan
    aimed exactly at the budget lands above it about half the time. With ``confirm`` (``measured_ms -> a
    second measurement``), a last-step network measured within the budget is measured once more before the
    step ends, and corrected when that second figure is over it: on a loaded host two side-by-side
    measurements of the same pair can differ by 15 %.

    Example::

        >>> outcomes = iter([{"measured_ms": 2.0, "removed": 8}, {"measured_ms": 1.5, "removed": 3}])
        >>> record = step_with_corrections(lambda target, rescale: next(outcomes), 1.8, 1.0, True, max_corrections=1)
        >>> record["measured_ms"], record["removed"], record["corrections"], len(record["tries"])
        (1.5, 11, 1, 2)
    """
    aim = budget_ms * (1.0 - margin)
    record = {**shrink(target_ms * (1.0 - margin) if last else target_ms, last), "corrections": 0}
    tries = [_try(record)]
    confirmed = confirm is None
    while last and record["corrections"] < max_corrections:
        if record["measured_ms"] <= budget_ms:
            if confirmed:
                break
            confirmed, again = True, confirm(record["measured_ms"])
            tries[-1]["confirmed_ms"] = record["measured_ms"] = again
            if again <= budget_ms:
                break
        outcome = shrink(aim, True)
        tries.append(_try(outcome))
        removed = record["removed"] + outcome["removed"]
        record.update(outcome, removed=removed, corrections=record["corrections"] + 1)
        confirmed = confirm is None  # a new network needs its own second opinion
        if not outcome["removed"]:
            break
    if len(tries) > 1 or "confirmed_ms" in tries[0] or len(tries[0].get("lifts", ())) > 1:
        record["tries"] = tries
    return record


def _try(outcome: dict[str, Any]) -> dict[str, Any]:
    """What one plan of a step predicted, measured and removed (the summary keeps every correction's)."""
    return {key: outcome[key] for key in ("predicted_ms", "measured_ms", "removed", "lifts") if key in outcome}
