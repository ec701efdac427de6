"""What replaces the removed units, the plan, and the in-place rebuild (norms sliced, weights transferred)."""

from __future__ import annotations

import pytest
import torch

from lightning_prune.core.odf2nna import (
    UnitMoments,
    collect_unit_moments,
    find_hidden_layers,
    keep_units,
    layer_widths,
    plan_rebuild,
    rebuild_layers,
    replacement,
    unit_std,
)
from tests.core.odf2nna.nets import GRID, FunctionalNet, duplicate_unit_net, known_net


def test_least_squares_replacement_recovers_an_affine_unit() -> None:
    x0, x1 = GRID[:, 0], GRID[:, 1]
    values = torch.stack([x0, x1, 2 * x0 - x1 + 5, torch.full_like(x0, 3.0)], 1)
    swap = replacement(UnitMoments.of(values, covariance=True), kept=[1, 0])
    torch.testing.assert_close(
        swap.weight, torch.tensor([[2.0, -1.0], [0.0, 0.0]], dtype=torch.double), atol=0.01, rtol=0
    )
    torch.testing.assert_close(swap.bias, torch.tensor([5.0, 3.0], dtype=torch.double), atol=0.01, rtol=0)
    mean = replacement(UnitMoments.of(values), kept=[0, 1], method="mean")
    assert mean.weight.abs().sum() == 0
    torch.testing.assert_close(mean.bias, values[:, 2:].double().mean(0))
    with pytest.raises(ValueError, match=r"replacement method must be one of \['least_squares', 'mean'\]"):
        replacement(UnitMoments.of(values), kept=[0], method="median")


def test_plan_rebuild_keeps_by_the_rule_and_describes_the_replacement() -> None:
    net = known_net().eval()
    layers = find_hidden_layers(net, GRID[:1])
    moments = collect_unit_moments(net, layers, [GRID], covariance=True)
    plan = plan_rebuild(moments, "std", epsilon=0.1)
    assert plan.kept == {name: keep_units(unit_std(moments[name]), 0.1) for name in moments}
    assert plan.kept["0"] == [0, 3]
    assert plan.replacements["0"].weight.shape == (2, 2)  # removed x kept
    assert plan_rebuild(moments, "range", epsilon=0.1, compensation="none").replacements is None


@pytest.mark.parametrize("builder", [known_net, FunctionalNet])
def test_rebuild_keeping_every_unit_is_identical(builder) -> None:
    net = builder()
    net(GRID)  # BatchNorm running statistics that are not the defaults
    net.eval()
    layers = find_hidden_layers(net, GRID[:2])
    moments = collect_unit_moments(net, layers, [GRID])
    before = net(GRID)
    kept = {layer.name: keep_units(unit_std(moments[layer.name]), 0.0) for layer in layers}
    replacements = {name: replacement(m, kept[name], "mean") for name, m in moments.items()}
    rebuild_layers(net, GRID[:2], layers, kept, replacements)
    torch.testing.assert_close(net(GRID), before, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["least_squares", "mean"])
def test_rebuild_removing_constant_units_replaces_them_exactly(method: str) -> None:
    net = known_net().eval()
    layers = find_hidden_layers(net, GRID[:1])
    moments = collect_unit_moments(net, layers, [GRID], covariance=True)
    before = net(GRID)
    kept = {"0": keep_units(unit_std(moments["0"]), 0.1), "2": [0, 1, 2]}
    rebuild_layers(
        net, GRID[:1], layers, kept, {name: replacement(m, kept[name], method) for name, m in moments.items()}
    )
    assert layer_widths(net, layers) == {"0": 2, "2": 3}
    assert (net[0].weight.shape, net[2].weight.shape) == ((2, 2), (3, 2))
    torch.testing.assert_close(net(GRID), before)


def test_rebuild_without_replacement_changes_outputs_of_constant_units() -> None:
    net = known_net().eval()
    layers = find_hidden_layers(net, GRID[:1])
    before = net(GRID)
    rebuild_layers(net, GRID[:1], layers, {"0": [0, 3]}, replacements=None)
    assert not torch.allclose(net(GRID), before)  # unit 2's constant 3 is gone from the next layer


def test_least_squares_removes_a_duplicate_unit_exactly_where_the_mean_cannot() -> None:
    """Unit 1 copies unit 0 (a varying unit): the mean replacement loses it, least squares moves its weights."""
    errors = {}
    for method in ("least_squares", "mean"):
        net = duplicate_unit_net().eval()
        before = net(GRID)
        layers = find_hidden_layers(net, GRID[:1])
        moments = collect_unit_moments(net, layers, [GRID], covariance=True)
        rebuild_layers(net, GRID[:1], layers, {"0": [0, 2]}, {"0": replacement(moments["0"], [0, 2], method)})
        errors[method] = (net(GRID) - before).abs().max().item()
    assert errors["least_squares"] < 1e-3
    assert errors["mean"] > 0.05


def test_rebuild_slices_norms_and_transfers_weights() -> None:
    net = FunctionalNet().eval()
    layers = find_hidden_layers(net, GRID[:2])
    encoder_weight, norm_mean = net.encoder.weight.detach().clone(), net.norm.running_mean.clone()
    head_weight = net.head.weight.detach().clone()
    rebuild_layers(net, GRID[:2], layers, {"encoder": [1, 4, 7], "middle": [0, 11]}, replacements=None)
    torch.testing.assert_close(net.encoder.weight, encoder_weight[[1, 4, 7]])
    torch.testing.assert_close(net.norm.running_mean, norm_mean[[1, 4, 7]])
    assert net.middle.weight.shape == (2, 3)
    assert net.layer_norm.normalized_shape == (2,)
    torch.testing.assert_close(net.head.weight, head_weight[:, [0, 11]])


def test_rebuild_rejects_bad_kept_units() -> None:
    net = known_net()
    layers = find_hidden_layers(net, GRID[:1])
    with pytest.raises(ValueError, match=r"non-empty subset of range\(4\)"):
        rebuild_layers(net, GRID[:1], layers, {"0": [0, 9]})
