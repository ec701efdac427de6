import time
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import lightning_prune.core.latency_budget.measure as measure
from lightning_prune.core.latency_budget.measure import LatencyMeter, correlation, frozen_copy, rescaled


class Sleeper(nn.Module):
    """A model whose forward takes ``ms`` milliseconds times the machine's current slowdown."""

    def __init__(self, ms, machine):
        super().__init__()
        self.ms, self.machine = ms, machine
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        time.sleep(self.ms * self.machine["slowdown"] / 1e3)
        return x


def test_bad_timing_settings_fail_at_construction():
    with pytest.raises(ValueError, match="repeats must be an integer >= 3"):
        LatencyMeter(batch_size=4, repeats=2)
    with pytest.raises(ValueError, match="amp_dtype must be None or one of"):
        LatencyMeter(batch_size=4, amp_dtype="fp8")


def test_a_surprising_dense_measurement_gets_second_opinions_and_the_lowest_is_kept(monkeypatch):
    readings = iter([5.0, 3.0, 4.0])
    calls = []

    def fake_measure(model, inputs, settings, device, rounds):
        calls.append(inputs.shape[0])
        return SimpleNamespace(quiet_p50_ms=next(readings))

    monkeypatch.setattr(measure, "measure_latency", fake_measure)
    monkeypatch.setattr(measure, "SECOND_OPINION_PAUSE_S", 0.0)
    meter = LatencyMeter(batch_size=8, repeats=3, rounds=1)
    assert meter.alone(nn.Linear(2, 2), torch.zeros(1, 2), expected_ms=1.0) == 3.0
    assert calls == [8, 8, 8]  # the first reading and two second opinions, at the meter's batch size


def test_an_expected_dense_measurement_is_taken_once(monkeypatch):
    readings = iter([1.1])
    monkeypatch.setattr(measure, "measure_latency", lambda *a, **k: SimpleNamespace(quiet_p50_ms=next(readings)))
    assert LatencyMeter(batch_size=2, repeats=3).alone(nn.Linear(2, 2), torch.zeros(1, 2), expected_ms=1.0) == 1.1


def test_side_by_side_reports_the_ratio_in_fit_start_milliseconds_when_the_machine_slows_down():
    machine = {"slowdown": 3.0}  # everything runs 3x slower than when dense_ms was measured
    meter = LatencyMeter(batch_size=1, repeats=3, rounds=2)
    taken = meter.side_by_side(Sleeper(1.0, machine), Sleeper(2.0, machine), torch.zeros(1, 1), dense_ms=2.0)
    assert taken["ratio_to_dense"] == pytest.approx(0.5, rel=0.25)
    assert taken["measured_ms"] == pytest.approx(taken["ratio_to_dense"] * 2.0)
    assert taken["dense_now_ms"] > 4.0  # the raw figure of the dense copy shows the slowdown


@pytest.mark.parametrize(
    ("measured", "force", "expected"),
    [
        (1.2, False, (1.2, True)),  # within MAX_RESCALE: follow the measurement
        (0.85, False, (0.85, True)),
        (2.0, False, (1.0, False)),  # far off after calibration: more likely load than the model
        (2.0, True, (1.25, True)),  # forced (the last step's corrections): clamped
        (0.1, True, (0.8, True)),
    ],
)
def test_rescaled_follows_close_measurements_and_clamps_forced_ones(measured, force, expected):
    scale, moved = rescaled(1.0, measured, 1.0, force)
    assert (scale, moved) == (pytest.approx(expected[0]), expected[1])


def test_frozen_copy_is_an_untrained_eval_copy():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
    copy = frozen_copy(model)
    assert model.training
    assert not copy.training
    assert not any(p.requires_grad for p in copy.parameters())
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert not torch.equal(copy[0].weight, model[0].weight)


def test_correlation_needs_three_points():
    assert correlation([1.0, 2.0], [1.0, 2.0]) is None
    assert correlation([1.0, 2.0, 3.0], [2.0, 4.0, 6.5]) == pytest.approx(0.9986, abs=1e-3)
