"""LatencyBudgetPruning's warnings for a cut far beyond what a budget's speed-up suggests (issue 21: a run
ending far below plain training says why)."""

import pytest

from lightning_prune.callbacks.latency_budget.checks import deep_cut_warning, warn_deep_cut
from lightning_prune.callbacks.latency_budget.report import overshoot_warning


def test_a_budget_near_the_smallest_network_warns_with_the_budget_that_asks_half():
    # the zoo's depthwise CNN at batch 64: the smallest network measures 0.68 of dense
    message = deep_cut_warning(0.8, 1.0, 0.68, "on cpu at batch 64")
    assert "asks for 62% of what removing channels can save" in message
    assert "measures 0.68 of the dense model's 1 ms on cpu at batch 64" in message
    assert "a budget of at least 0.84 ms (0.84 of dense)" in message


@pytest.mark.parametrize(("smallest", "warns"), [(0.6, False), (0.61, True), (0.2, False)])
def test_the_warning_starts_past_half_of_what_channels_can_save(smallest, warns):
    # a 0.8 budget asks 0.2 / (1 - smallest) of the room: half at 0.6 (DEEP_CUT)
    assert (deep_cut_warning(0.8, 1.0, smallest, "here") is not None) is warns


def test_warn_deep_cut_raises_a_user_warning():
    with pytest.warns(UserWarning, match="the smallest network allowed still measures 0.90"):
        warn_deep_cut(0.8, 1.0, 0.9 - 1e-9, "here")  # below the budget by a hair: reachable, yet 100 % of the room


@pytest.mark.parametrize(("measured", "warns"), [(0.55, True), (0.67, True), (0.69, False), (0.8, False), (0.9, False)])
def test_a_final_latency_under_the_budget_by_more_than_the_tolerance_warns(measured, warns):
    message = overshoot_warning(measured, 0.8, 0.15, 0.9)  # the band is [0.68, 0.8] (and the tolerance above)
    assert (message is not None) is warns
    if warns:
        assert "90% of the parameters were removed" in message
