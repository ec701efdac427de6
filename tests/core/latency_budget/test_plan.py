import pytest
import torch
from torch import nn

from lightning_prune.core.latency_budget.network import removal_indices, trace_network
from lightning_prune.core.latency_budget.plan import kept_value, min_keep, option_counts, plan_keep_counts, predict_ms
from lightning_prune.core.latency_budget.table import LatencyTable
from lightning_prune.core.schedules import exponential_latency
from lightning_prune.core.structured import remove_out_channels
from lightning_prune.core.timing import TimingSettings
from lightning_prune.models import MLP, ResNet


def macs_timer(layer, inputs):
    """A deterministic stand-in for the clock: milliseconds proportional to the layer's MACs, plus a floor."""
    first = layer[0] if isinstance(layer, nn.Sequential) else layer
    spatial = inputs[0, 0].numel() if inputs.dim() > 2 else 1
    return 0.01 + first.weight.numel() * spatial / 1e5


def table():
    return LatencyTable(torch.device("cpu"), TimingSettings(1, 3, threads=1), 8, timer=macs_timer)


def test_plan_fits_the_budget_and_beats_a_uniform_cut_of_equal_latency():
    torch.manual_seed(0)
    model = ResNet((1, 8, 8), 10, blocks=(2, 2), widths=(16, 32))
    example = torch.zeros(1, 1, 8, 8)
    network, lut = trace_network(model, example), table()
    dense = predict_ms(network, lut, {})
    budget = 0.5 * dense
    plan = plan_keep_counts(network, lut, budget, 1.0, round_to=4, min_channels=4)
    assert plan.feasible
    assert plan.predicted_ms <= budget
    assert plan.predicted_ms >= 0.9 * budget  # the slack is spent
    uniform_values = []
    for ratio in [r / 16 for r in range(16, 0, -1)]:
        keep = {g: max(4, 4 * round(size * ratio / 4)) for g, size in network.groups.items()}
        if predict_ms(network, lut, keep) <= budget:
            uniform_values.append(
                sum(float(network.scores[g].sort(descending=True).values[:k].sum()) for g, k in keep.items())
            )
            break
    assert plan.value >= uniform_values[0]

    removals = {g: removal_indices(network.scores[g], k) for g, k in plan.keep.items()}
    remove_out_channels(model, example, removals)
    shrunk = trace_network(model, example)
    assert shrunk.groups == {g: plan.keep[g] for g in shrunk.groups}
    assert predict_ms(shrunk, lut, {}) == pytest.approx(plan.predicted_ms)


def test_log_share_prices_each_group_by_the_share_it_loses():
    """SP-LAMP's sums favour the group with more channels whatever their share; log_share weighs shares alike."""
    harmonic = 1.0 / torch.arange(1, 17, dtype=torch.float64)  # a trained group's SP-LAMP tail, about 1/k
    assert kept_value(harmonic, [4, 16], "log_share")[1] == 0.0
    assert kept_value(harmonic, [4, 16]) == pytest.approx([2.0833, 3.3807], abs=1e-4)
    share = kept_value(harmonic, [1, 4, 8], "log_share")
    assert share == sorted(share)
    assert share[0] == pytest.approx(-1.2181, abs=1e-4)  # keeping the top channel of 16: 30 % of the score
    with pytest.raises(ValueError, match=r"value must be one of \['sp_lamp', 'log_share'\], got 'taylor'"):
        kept_value(harmonic, [4], "taylor")


def test_log_share_keeps_more_of_a_group_than_sp_lamp_under_the_same_budget():
    torch.manual_seed(0)
    model = ResNet((1, 8, 8), 10, blocks=(2, 2), widths=(16, 32))
    network, lut = trace_network(model, torch.zeros(1, 1, 8, 8)), table()
    budget = 0.4 * predict_ms(network, lut, {})
    plans = {v: plan_keep_counts(network, lut, budget, 1.0, 4, 4, value=v) for v in ("sp_lamp", "log_share")}
    assert all(plan.feasible and plan.predicted_ms <= budget for plan in plans.values())
    fewest = {v: min(k / network.groups[g] for g, k in plan.keep.items()) for v, plan in plans.items()}
    assert fewest["log_share"] > fewest["sp_lamp"]  # no group cut as deep


def test_unreachable_budget_gives_the_smallest_plan_marked_infeasible():
    network, lut = trace_network(MLP((4,), 2, hidden=(16,)), torch.zeros(1, 4)), table()
    smallest = predict_ms(network, lut, min_keep(network, 4, 4))
    plan = plan_keep_counts(network, lut, 0.5 * smallest, 1.0, round_to=4, min_channels=4)
    assert not plan.feasible
    assert plan.keep == {"layers.1": 4}


def test_option_counts_and_removal_indices():
    # On the grid (what a CPU's blocked kernels reward); below one grid step, powers of two from the fewest.
    assert option_counts(10, 4, 1) == [1, 2, 4, 8, 10]
    assert option_counts(16, 4, 6) == [6, 8, 12, 16]
    assert option_counts(3, 4, 4) == [3]
    assert option_counts(64, 16, 4) == [4, 8, 16, 32, 48, 64]
    assert option_counts(12, 16, 4) == [4, 8, 12]
    assert removal_indices(torch.tensor([0.5, 0.1, 1.0, 0.3]), keep=2) == [1, 3]


def test_exponential_latency_schedule():
    steps = exponential_latency(10.0, 2.5, 2)
    assert steps == pytest.approx([5.0, 2.5])
    assert exponential_latency(4.0, 1.0, 1) == [pytest.approx(1.0)]
    with pytest.raises(ValueError):
        exponential_latency(4.0, 0.0, 2)


def test_a_budget_below_the_fixed_part_returns_the_smallest_network_as_infeasible():
    """The planner passes ``target - overhead``: at or below zero nothing fits, the plan is the narrowest."""
    network = trace_network(MLP((1, 8, 8), 10, hidden=(32, 32)), torch.zeros(1, 1, 8, 8))
    lut = LatencyTable(torch.device("cpu"), TimingSettings(1, 3, threads=1), 8, timer=lambda layer, x: 1.0)
    plan = plan_keep_counts(network, lut, -0.5, 1.0, round_to=8, min_channels=4)
    assert not plan.feasible
    assert plan.keep == min_keep(network, 8, 4)
