import pytest
import torch
from torch import nn

from lightning_prune.core.latency_budget.network import trace_network, weight_count
from lightning_prune.core.scores import sp_lamp
from lightning_prune.models import MLP, ResNet, SmallCNN


def test_sp_lamp_hand_checked_on_a_linear_layer():
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 4.0], [1.0, 0.0]]))
    network = trace_network(net, torch.zeros(1, 2))
    assert list(network.groups) == ["0"]  # the output layer is never pruned
    # squared norms 9, 16, 1: channel 1 is the largest (1), channel 0 is 9 / (9 + 16), channel 2 is 1 / 26
    torch.testing.assert_close(network.scores["0"], torch.tensor([9 / 25, 1.0, 1 / 26]))
    torch.testing.assert_close(sp_lamp(torch.tensor([3.0, 4.0, 1.0])), torch.tensor([9 / 25, 1.0, 1 / 26]))


def test_every_layer_contributes_one_top_channel_scoring_one():
    torch.manual_seed(0)
    model = ResNet((1, 8, 8), 10, blocks=(1, 1), widths=(8, 16))
    network = trace_network(model, torch.zeros(1, 1, 8, 8))
    inner = network.scores["stages.0.0.conv1"]
    assert inner.max() == pytest.approx(1.0)
    assert (inner <= 1).all()
    torch.testing.assert_close(inner, sp_lamp(model.stages[0][0].conv1.weight.flatten(1).norm(dim=1)))
    # the stem's group also holds stages.0.0.conv2 (residual add): two layers, two top channels
    stem = network.scores["stem.0"]
    expected = sp_lamp(model.stem[0].weight.flatten(1).norm(dim=1)) + sp_lamp(
        model.stages[0][0].conv2.weight.flatten(1).norm(dim=1)
    )
    torch.testing.assert_close(stem, expected)


@pytest.mark.parametrize(
    ("make", "groups", "head"),
    [
        (lambda: ResNet((1, 8, 8), 10, blocks=(2, 2), widths=(16, 32)), 6, "fc"),
        (lambda: SmallCNN((1, 8, 8), 10, widths=(8, 8, 16)), 3, "classifier"),
        (lambda: MLP((1, 8, 8), 10, hidden=(32, 16)), 2, "layers.5"),
    ],
)
def test_trace_finds_groups_and_the_head_reads_from_one(make, groups, head):
    network = trace_network(make(), torch.zeros(1, 1, 8, 8))
    assert len(network.groups) == groups
    last = network.layers[-1]
    assert last.name == head
    assert last.out_group is None
    assert last.in_group in network.groups
    assert all(layer.out_group is None or layer.c_out == network.groups[layer.out_group] for layer in network.layers)


def test_weight_count_counts_conv_and_linear_weights_only():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    assert weight_count(model) == 4 * 9 + 4 * 2


def test_a_causal_lm_is_traced_through_its_output_and_its_heads_are_groups_of_key_value_heads():
    """LlamaForCausalLM's output holds a cache tuple (torch-pruning read its .grad_fn), and torch-pruning never
    finished grouping its q/k/v projections (rotary embedding, grouped-query repeat): its MLPs are traced groups,
    its attention layers head groups found by layout, one unit per key/value head (two query heads each)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=16,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    example = {"input_ids": torch.randint(0, 32, (1, 16)), "attention_mask": torch.ones(1, 16, dtype=torch.long)}
    network = trace_network(model, example)
    assert network.groups == {
        "model.layers.0.mlp.up_proj": 64,
        "model.layers.1.mlp.up_proj": 64,
        "model.layers.0.self_attn": 2,
        "model.layers.1.self_attn": 2,
    }
    assert network.heads == ["model.layers.0.self_attn", "model.layers.1.self_attn"]
    assert network.attention == []
    attn = {layer.name.rpartition(".")[2]: layer for layer in network.layers if "layers.0.self_attn" in layer.name}
    assert {name: (layer.out_group, layer.out_per_channel) for name, layer in attn.items() if name != "o_proj"} == {
        "q_proj": ("model.layers.0.self_attn", 16),  # two query heads of size 8 per key/value head
        "k_proj": ("model.layers.0.self_attn", 8),
        "v_proj": ("model.layers.0.self_attn", 8),
    }
    assert (attn["o_proj"].in_group, attn["o_proj"].in_per_channel, attn["o_proj"].out_group) == (
        "model.layers.0.self_attn", 16, None,
    )  # fmt: skip
    mlp = {layer.name: layer for layer in network.layers if ".mlp." in layer.name and "layers.0" in layer.name}
    assert mlp["model.layers.0.mlp.gate_proj"].out_group == "model.layers.0.mlp.up_proj"
    assert mlp["model.layers.0.mlp.down_proj"].in_group == "model.layers.0.mlp.up_proj"
