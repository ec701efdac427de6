"""Per-unit moments over the data (independent of batching), the scores and the keep rule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_prune.core.odf2nna import (
    UNIT_STATISTICS,
    UnitMoments,
    collect_unit_moments,
    find_hidden_layers,
    keep_units,
    unit_std,
)
from tests.core.odf2nna.nets import GRID, known_net


def test_unit_scores_of_known_units() -> None:
    net = known_net()
    layers = find_hidden_layers(net, GRID[:1])
    moments = collect_unit_moments(net, layers, GRID.split(10))
    std = unit_std(moments["0"])
    expected = torch.stack([F.relu(GRID[:, 0]), torch.zeros(64), torch.full((64,), 3.0), F.relu(GRID.sum(1))], 1)
    torch.testing.assert_close(std, expected.double().std(0, unbiased=False))
    torch.testing.assert_close(moments["0"].mean, expected.double().mean(0))
    assert std[1] == 0
    assert std[2] == 0
    assert UNIT_STATISTICS["range"](moments["0"]).tolist() == pytest.approx([1.0, 0.0, 0.0, 2.0])
    assert keep_units(std, epsilon=0.1) == [0, 3]


def test_moments_do_not_depend_on_batching() -> None:
    values = torch.cat([GRID, GRID**2], 1) * 10 + 100
    whole = UnitMoments.of(values)
    merged = UnitMoments.of(values[:5]).merge(UnitMoments.of(values[5:40])).merge(UnitMoments.of(values[40:]))
    for name in ("count", "mean", "m2", "minimum", "maximum"):
        torch.testing.assert_close(getattr(merged, name), getattr(whole, name))
    torch.testing.assert_close(UnitMoments.from_tensor(whole.to_tensor()).m2, whole.m2)


def test_covariance_does_not_depend_on_batching() -> None:
    values = torch.cat([GRID, GRID**2, GRID[:, :1] * GRID[:, 1:]], 1) * 10 + 100
    whole = UnitMoments.of(values, covariance=True)
    parts = [UnitMoments.of(chunk, covariance=True) for chunk in values.split([5, 35, 24])]
    merged = parts[0].merge(parts[1]).merge(parts[2])
    expected = torch.cov(values.double().T, correction=0)
    torch.testing.assert_close(whole.covariance, expected)
    torch.testing.assert_close(merged.covariance, expected)
    torch.testing.assert_close(merged.covariance.diagonal(), merged.m2 / merged.count)


def test_covariance_needs_asking_for() -> None:
    with pytest.raises(ValueError, match="covariance=True"):
        _ = UnitMoments.of(GRID).covariance


def test_keep_units_rule() -> None:
    scores = torch.tensor([0.0, 0.2, 1.0, 0.5])
    assert keep_units(scores, 0.0) == [0, 1, 2, 3]
    assert keep_units(scores, 0.5) == [2, 3]
    assert keep_units(scores, 0.9, min_units=2) == [2, 3]
    assert keep_units(torch.zeros(3), 0.1) == [0]


def test_keep_units_reference_quantile_ignores_runaway_units() -> None:
    scores = torch.cat([torch.linspace(1.0, 2.0, 98), torch.tensor([20.0, 30.0])])
    assert keep_units(scores, 0.3) == [98, 99]  # 0.3 * max = 9: every ordinary unit looks constant
    assert keep_units(scores, 0.3, reference_quantile=1.0) == keep_units(scores, 0.3)
    assert len(keep_units(scores, 0.3, reference_quantile=0.97)) == 100  # reference ~2.0: all above 0.6
    assert keep_units(scores, 0.9, reference_quantile=0.97)[0] > 60  # the bar at 0.9 x ~2.0 still bites


@pytest.mark.parametrize("quantile", [0.0, -0.5, 1.5])
def test_keep_units_rejects_reference_quantile(quantile: float) -> None:
    with pytest.raises(ValueError, match="reference_quantile must be in"):
        keep_units(torch.ones(3), 0.1, reference_quantile=quantile)


@pytest.mark.parametrize("epsilon", [-0.1, 1.0, 2.0, float("nan")])
def test_keep_units_rejects_epsilon(epsilon: float) -> None:
    with pytest.raises(ValueError, match="epsilon must be in"):
        keep_units(torch.ones(3), epsilon)
