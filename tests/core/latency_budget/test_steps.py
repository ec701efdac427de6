"""Lifting a plan measured far under its target, and the last step's corrections, on synthetic latencies."""

import pytest

from lightning_prune.core.latency_budget.steps import lift_plan, step_with_corrections


def test_lifting_bisects_when_latency_drops_off_a_cliff_near_the_smallest_network():
    """Prices 0.67..1 measure 0.28 at the bottom and 0.95+ above 0.9 (a ResNet-14 seen in the recipe)."""

    def attempt(planned):
        predicted = max(planned, 0.67)
        measured = 0.28 + (predicted - 0.67) / 0.23 * 0.67 if predicted < 0.9 else 0.95 + (predicted - 0.9) / 2
        return {
            "removals": {"g": list(range(round(1000 * (1 - predicted))))} if predicted < 1.0 else {},
            "predicted_ms": predicted,
            "current_ms": 1.0,
        }, measured

    plan = lift_plan(attempt, 0.6, tolerance=0.05, tries=6)
    assert 0.6 * 0.95 <= max(t["measured_ms"] for t in plan["lifts"] if t["measured_ms"] <= 0.6) <= 0.6
    assert plan["predicted_ms"] > 0.67
    assert lift_plan(attempt, 0.2, 0.05)["lifts"][0]["measured_ms"] > 0.2  # over at once: corrections' job


def test_a_plan_measured_twice_is_judged_by_its_higher_figure():
    """On a loaded host one network measured 1.96 and 4.6 against a 3.94 target: it is not kept as under."""
    figures = {0.5: iter([0.2]), 0.9: iter([0.3, 0.95])}

    def attempt(planned):
        predicted = 0.5 if planned < 0.9 else 0.9
        removals = {"g": [0] * round(10 * (1 - predicted))}
        return {"removals": removals, "predicted_ms": predicted}, next(figures[predicted])

    plan = lift_plan(attempt, 0.6, tolerance=0.05, tries=2)
    assert plan["predicted_ms"] == 0.5
    assert [t["measured_ms"] for t in plan["lifts"]] == [0.2, 0.3, 0.95]


def test_the_last_step_keeps_a_plan_measured_within_the_budget_though_above_its_aim():
    """A ResNet's plans measured 0.48, then 0.76 and 0.73 against a 0.72 aim (budget 0.78): the 0.48 one was kept."""

    def attempt(planned):
        predicted = round(planned, 4)
        measured = 0.48 if predicted < 0.74 else 0.76 if predicted < 0.8 else 0.98
        return {"removals": {"g": [0] * round(1000 * (1 - predicted))}, "predicted_ms": predicted}, measured

    within = lift_plan(attempt, 0.72, tolerance=0.15, tries=5, ceiling_ms=0.78)
    assert [t["measured_ms"] for t in within["lifts"]][-1] == 0.76
    assert 0.74 <= within["predicted_ms"] < 0.8
    aimed = lift_plan(attempt, 0.72, tolerance=0.15, tries=5)  # without the ceiling: only 0.48 counts as under
    assert aimed["predicted_ms"] < 0.74


def test_a_step_counts_the_channels_of_all_its_corrections():
    """A correction that removes nothing (the re-plan found no cheaper network) ends the corrections."""
    outcomes = iter([{"removed": 8, "measured_ms": 2.0}, {"removed": 3, "measured_ms": 1.8}, {"removed": 0}])
    asked = []

    def shrink(target_ms, rescale):
        asked.append((target_ms, rescale))
        return {"measured_ms": 1.5, **next(outcomes)}

    record = step_with_corrections(shrink, 3.0, budget_ms=1.0, last=True, max_corrections=5)
    assert record["corrections"] == 2
    assert record["removed"] == 8 + 3 + 0
    assert asked == [(3.0, True), (1.0, True), (1.0, True)]


@pytest.mark.parametrize(("last", "measured", "corrections"), [(False, 2.0, 0), (True, 0.9, 0), (True, 2.0, 2)])
def test_only_the_last_step_corrects_and_only_while_over_budget(last, measured, corrections):
    record = step_with_corrections(
        lambda target, rescale: {"measured_ms": measured, "removed": 1}, 3.0, 1.0, last, max_corrections=2
    )
    assert record["corrections"] == corrections
    assert record["removed"] == 1 + corrections


def test_a_last_step_within_budget_is_confirmed_and_corrected_when_the_second_figure_is_over():
    outcomes = iter([{"removed": 8, "measured_ms": 0.95}, {"removed": 2, "measured_ms": 0.9}])
    seconds = iter([1.1, 0.97])  # the first network's second opinion is over the budget, the next one's is not
    record = step_with_corrections(
        lambda target, rescale: next(outcomes), 1.0, 1.0, True, max_corrections=3, confirm=lambda m: next(seconds)
    )
    assert record["corrections"] == 1
    assert record["removed"] == 10
    assert record["measured_ms"] == 0.97
    assert [t.get("confirmed_ms") for t in record["tries"]] == [1.1, 0.97]
