from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_prune.core.units import (
    UNIT_STATISTICS,
    HiddenLayer,
    UnitMoments,
    collect_unit_moments,
    find_hidden_layers,
    keep_units,
    layer_widths,
    rebuild_layers,
    replacement,
    unit_std,
)

# A fixed, hand-checkable input: 64 points on a 8x8 grid in [-1, 1]^2.
GRID = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 8), torch.linspace(-1, 1, 8), indexing="ij"), -1).reshape(-1, 2)


def known_net() -> nn.Sequential:
    """Hidden units with known behaviour on GRID: 0 = relu(x0), 1 dead (always 0), 2 constant 3, 3 = relu(x0 + x1)."""
    first = nn.Linear(2, 4)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]))
        first.bias.copy_(torch.tensor([0.0, -1.0, 3.0, 0.0]))
    torch.manual_seed(0)
    return nn.Sequential(first, nn.ReLU(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))


def duplicate_unit_net() -> nn.Sequential:
    """Hidden unit 1 is a copy of unit 0, which varies over GRID; unit 2 = relu(x1)."""
    first = nn.Linear(2, 3)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 0.5], [1.0, 0.5], [0.0, 1.0]]))
        first.bias.zero_()
    torch.manual_seed(0)
    return nn.Sequential(first, nn.ReLU(), nn.Linear(3, 2))


class FunctionalNet(nn.Module):
    """A user-style module: names of its own, functional activations, norms in the chain."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(2, 16)
        self.norm = nn.BatchNorm1d(16)
        self.middle = nn.Linear(16, 12)
        self.layer_norm = nn.LayerNorm(12)
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.gelu(self.layer_norm(self.middle(F.relu(self.norm(self.encoder(x)))))))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(2, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.a(x))
        return self.head(h + F.relu(self.b(h)))


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(2, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.b(F.relu(self.b(F.relu(self.a(x)))))))


def test_find_hidden_layers_plain_stack_in_forward_order() -> None:
    layers = find_hidden_layers(known_net(), GRID[:1])
    assert layers == [HiddenLayer("0", "2"), HiddenLayer("2", "4")]


def test_find_hidden_layers_user_module_with_norms() -> None:
    layers = find_hidden_layers(FunctionalNet(), GRID[:2])
    assert layers == [HiddenLayer("encoder", "middle", ("norm",)), HiddenLayer("middle", "head", ("layer_norm",))]
    assert find_hidden_layers(FunctionalNet(), GRID[:2], include_names="^enc") == [layers[0]]


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (Residual(), "not part of a plain feed-forward stack.*branch"),
        (Shared(), "run more than once"),
        (nn.Sequential(nn.Linear(2, 3)), "no hidden layer"),
    ],
)
def test_find_hidden_layers_refuses(model: nn.Module, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        find_hidden_layers(model, GRID[:2])


def test_find_hidden_layers_include_names_matching_nothing() -> None:
    with pytest.raises(ValueError, match="include_names='nothing'"):
        find_hidden_layers(known_net(), GRID[:1], include_names="nothing")


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
