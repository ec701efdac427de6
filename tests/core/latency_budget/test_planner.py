from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lightning_prune.core.latency_budget.measure import LatencyMeter, frozen_copy
from lightning_prune.core.latency_budget.planner import BudgetPlanner
from lightning_prune.core.latency_budget.table import LatencyTable
from lightning_prune.core.structured import architecture_spec
from lightning_prune.core.timing import TimingSettings
from lightning_prune.models import MLP


def macs_timer(layer, inputs):
    first = layer[0] if isinstance(layer, nn.Sequential) else layer
    return 0.01 + first.weight.numel() / 1e4


def planner_for(model, tmp_path):
    table = LatencyTable(torch.device("cpu"), TimingSettings(1, 3, threads=1), 8, tmp_path / "lut.json", macs_timer)
    meter = LatencyMeter(batch_size=8, threads=1, repeats=3, rounds=2)
    return BudgetPlanner(frozen_copy(model), table, meter, round_to=4, min_channels=4, resolution=200)


def test_calibrate_measures_the_dense_model_and_saves_the_table(tmp_path):
    model = MLP((16,), 4, hidden=(64, 64))
    planner = planner_for(model, tmp_path)
    numbers = planner.calibrate(model, torch.zeros(1, 16), budget_for=lambda dense: 0.5 * dense)
    assert numbers["dense"] > 0
    assert numbers["smallest"] > 0
    # The whole model is fitted through the dense and the smallest network: overhead + scale x table.
    tabled = 3 * 0.01 + (16 * 64 + 64 * 64 + 64 * 4) / 1e4
    assert numbers["overhead"] >= 0
    assert numbers["scale"] > 0
    assert numbers["overhead"] + numbers["scale"] * tabled == pytest.approx(numbers["dense"])
    # Calibration is bounded: the three linears share one signature, fitted from at most 5 timed shapes.
    assert numbers["calibration"]["layer_shapes"] == 1
    assert numbers["calibration"]["entries_timed"] <= 5
    assert numbers["calibration"]["calibration_s"] >= 0
    assert (tmp_path / "lut.json").exists()


def test_decide_plans_removals_without_touching_the_model(tmp_path):
    model = MLP((16,), 4, hidden=(64, 64))
    before = architecture_spec(model)
    planner, timed = planner_for(model, tmp_path), []
    decision = planner.decide(model, torch.zeros(1, 16), target_ms=0.2, scale=1.0, on_timed=lambda: timed.append(1))
    assert decision["feasible"]
    assert decision["predicted_ms"] <= 0.2
    assert set(decision["removals"]) <= {"layers.1", "layers.3"}
    assert sum(len(idxs) for idxs in decision["removals"].values()) > 0
    assert architecture_spec(model) == before
    assert timed  # the progress callback saw every entry the table timed
    assert planner.table.on_timed is None


def test_a_plan_measured_far_under_its_target_is_replanned_upward(tmp_path, monkeypatch):
    """The over-cut: the table prices plans well above what they measure, so the knapsack cuts far too deep.

    Here every network measures 0.4 x its table price: the plain plan for 0.15 ms measures ~0.06 ms (the
    dense one 0.23 ms). The measured decision re-plans on copies until one lands within the tolerance under it.
    """
    model = MLP((16,), 4, hidden=(64, 64))
    before = architecture_spec(model)
    planner = planner_for(model, tmp_path)

    def measure(net, example, dense_ms, calls_factor=1):
        weights = sum(m.weight.numel() for m in net.modules() if isinstance(m, nn.Linear))
        return {"measured_ms": 0.4 * (3 * 0.01 + weights / 1e4)}

    monkeypatch.setattr(planner, "measure", measure)
    example, target = torch.zeros(1, 16), 0.15
    plain = planner.decide(model, example, target_ms=target, scale=1.0)
    lifted = planner.decide_measured(model, example, target, scale=1.0, dense_ms=1.0, tolerance=0.1)
    tries = lifted["lifts"]
    assert tries[0]["measured_ms"] < 0.9 * target  # the plain plan over-cuts ...
    assert len(tries) > 1  # ... so the target is raised
    assert tries[-1]["planned_ms"] > target
    kept = max(t["measured_ms"] for t in tries if t["measured_ms"] <= target)
    assert 0.9 * target <= kept <= target
    removed = sum(len(idxs) for idxs in lifted["removals"].values())
    assert 0 < removed < sum(len(idxs) for idxs in plain["removals"].values())
    assert architecture_spec(model) == before  # every try was built on a copy


def test_calibration_shows_its_progress_and_reports_its_cost(tmp_path):
    """Every entry calibration times advances the bar whose total it announced; a second calibration times none."""
    from contextlib import contextmanager

    shown = []

    @contextmanager
    def progress(description, total):
        shown.append({"description": description, "total": total, "advanced": 0})

        def advance(steps=1):
            shown[-1]["advanced"] += steps

        yield advance

    model = MLP((16,), 4, hidden=(64, 32))
    planner = planner_for(model, tmp_path)
    numbers = planner.calibrate(model, torch.zeros(1, 16), lambda dense: 0.5 * dense, progress)
    timed = numbers["calibration"]["entries_timed"]
    assert shown == [{"description": "latency table", "total": timed, "advanced": 4 + 1}]
    again = planner_for(model, tmp_path).calibrate(model, torch.zeros(1, 16), lambda dense: 0.5 * dense, progress)
    assert again["calibration"]["entries_timed"] == 0  # the saved table already holds every sampled shape
    assert len(shown) == 1


@pytest.mark.parametrize(("figures", "budget", "kept", "calls"), [([0.9, 0.5], 0.6, 0.5, 2), ([0.5, 0.9], 0.6, 0.5, 1)])
def test_a_smallest_network_over_the_budget_is_measured_again_before_it_is_refused(
    tmp_path, monkeypatch, figures, budget, kept, calls
):
    """One noisy side-by-side reading must not refuse a reachable budget; one under it needs no second."""
    model = MLP((16,), 4, hidden=(64, 64))
    planner = planner_for(model, tmp_path)
    readings = iter(figures)
    asked = []

    def measure(candidate, example, dense_ms, calls_factor=1):
        asked.append(candidate)
        return {"measured_ms": next(readings) * dense_ms}

    monkeypatch.setattr(planner, "meter", SimpleNamespace(alone=lambda *args, **kwargs: 1.0))
    monkeypatch.setattr(planner, "measure", measure)
    numbers = planner.calibrate(model, torch.zeros(1, 16), budget_for=lambda dense: budget * dense)
    assert numbers["smallest"] == pytest.approx(kept)
    assert len(asked) == calls
