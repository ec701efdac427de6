"""How the latency planner sees coupled channels: depthwise convs, residual adds, attention and grouped convs.

A depthwise conv's channels are its feeding pointwise conv's outputs, so cutting that group must price (and
remove) the expand conv's outputs, the depthwise conv and the project conv's inputs together; a residual add
ties every block of a stage to the stem's width; attention with a known layout (Hugging Face, timm) is a head
group whose units are whole key/value heads; ``nn.MultiheadAttention`` and grouped convs move only with the
residual width or in whole groups, so the planner keeps their channels and meets the budget through the rest.
"""

import pytest
import torch
from torch import nn

from lightning_prune.core.export import export_pruned, load_pruned
from lightning_prune.core.latency_budget.network import removal_indices, trace_network
from lightning_prune.core.latency_budget.plan import group_options, min_keep, predict_ms
from lightning_prune.core.structured import remove_channels_and_heads, remove_out_channels
from lightning_prune.models.depthwise import DepthwiseCNN
from lightning_prune.models.vit import ViT


class Lookups:
    """Stands in for the latency table: 1 ms per lookup, and records every (layer signature, c_in, c_out)."""

    def __init__(self):
        self.asked = []

    def __call__(self, spec, c_in, c_out):
        self.asked.append((spec.depthwise, c_in, c_out))
        return 1.0


def depthwise_net():
    return DepthwiseCNN((1, 8, 8), 10, widths=(16, 32), depth=2, expansion=2)


def test_a_depthwise_conv_shares_one_group_with_the_conv_that_feeds_it_and_the_conv_it_feeds():
    network = trace_network(depthwise_net(), torch.zeros(1, 1, 8, 8))
    layers = {layer.name: layer for layer in network.layers}
    for block in range(4):
        expand, dw, project = (layers[f"blocks.{block}.{part}.0"] for part in ("expand", "depthwise", "project"))
        assert dw.spec.depthwise
        assert expand.out_group == dw.out_group == project.in_group
        assert dw.in_group is None  # its inputs follow its outputs, one to one
    # the residual add of stage 0 ties both blocks' project outputs to the stem's width: one group
    assert (
        layers["stem.0"].out_group == layers["blocks.0.project.0"].out_group == layers["blocks.1.project.0"].out_group
    )


def test_cutting_a_depthwise_group_prices_the_expand_the_depthwise_and_the_project_conv_at_once():
    network = trace_network(depthwise_net(), torch.zeros(1, 1, 8, 8))
    group = next(layer.out_group for layer in network.layers if layer.name == "blocks.0.depthwise.0")
    lookups = Lookups()
    predict_ms(network, lookups, {group: 8})
    assert (False, 16, 8) in lookups.asked  # expand: 16 -> 8
    assert (True, 8, 8) in lookups.asked  # depthwise at 8 channels
    assert (False, 8, 16) in lookups.asked  # project reads 8


def test_removing_a_depthwise_group_shrinks_all_three_convs_and_the_net_still_runs():
    model = depthwise_net()
    example = torch.zeros(1, 1, 8, 8)
    network = trace_network(model, example)
    group = next(layer.out_group for layer in network.layers if layer.name == "blocks.1.depthwise.0")
    remove_out_channels(model, example, {group: removal_indices(network.scores[group], keep=8)})
    block = model.blocks[1]
    assert block.expand[0].out_channels == 8
    assert (block.depthwise[0].in_channels, block.depthwise[0].out_channels, block.depthwise[0].groups) == (8, 8, 8)
    assert block.project[0].in_channels == 8
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_attention_is_kept_whole_and_only_mlp_units_are_groups():
    model = ViT((1, 8, 8), 10, patch_size=4, dim=32, depth=2, heads=4, mlp_dim=64)
    network = trace_network(model, torch.zeros(1, 1, 8, 8))
    assert network.attention == ["blocks.0.attn", "blocks.1.attn"]
    assert sorted(network.groups) == ["blocks.0.mlp.0", "blocks.1.mlp.0"]
    assert set(network.groups.values()) == {64}


def test_a_grouped_conv_is_timed_at_its_shape_and_its_channels_are_kept():
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.ReLU(),
        nn.Conv2d(16, 32, 1), nn.ReLU(), nn.Conv2d(32, 8, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2),
    )  # fmt: skip
    network = trace_network(model, torch.zeros(1, 3, 8, 8))
    assert network.grouped == ["2"]
    assert "0" not in network.groups  # feeds the grouped conv: kept
    assert "2" not in network.groups  # the grouped conv's own outputs: kept
    assert set(network.groups) == {"4", "6"}
    grouped = next(layer for layer in network.layers if layer.name == "2")
    assert (grouped.spec.groups, grouped.in_group, grouped.out_group) == (4, None, None)


def tiny_bert(transformers):
    config = transformers.BertConfig(
        vocab_size=17, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=16, num_labels=3,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config).eval()


def test_bert_heads_are_a_group_priced_per_head_and_removed_with_the_mlp_units_in_one_plan(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = tiny_bert(transformers)
    ids = torch.randint(0, 17, (2, 16))
    example = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    network = trace_network(model, example)
    attn = "bert.encoder.layer.0.attention.self"
    assert network.heads == [attn, "bert.encoder.layer.1.attention.self"]
    assert network.attention == []
    assert network.groups[attn] == 4
    assert network.scores[attn].shape == (4,)
    assert group_options(network, 16, 4)[attn] == [1, 2, 3, 4]  # heads move one at a time, not on the channel grid
    assert min_keep(network, 16, 4)[attn] == 1
    lookups = Lookups()
    predict_ms(network, lookups, {attn: 1})
    query = next(layer for layer in network.layers if layer.name == f"{attn}.query")
    assert lookups.asked[network.layers.index(query)] == (False, 32, 8)  # one head of size 8: the query writes 8 rows
    output = next(layer for layer in network.layers if layer.name == "bert.encoder.layer.0.attention.output.dense")
    assert lookups.asked[network.layers.index(output)] == (False, 8, 32)  # the output projection reads 8 columns

    removals = {attn: removal_indices(network.scores[attn], keep=1)}
    removals["bert.encoder.layer.1.intermediate.dense"] = list(range(48))
    remove_channels_and_heads(model, example, removals)
    layer0, layer1 = model.bert.encoder.layer
    assert (layer0.attention.self.num_attention_heads, layer0.attention.self.all_head_size) == (1, 8)
    assert (layer0.attention.self.query.out_features, layer0.attention.output.dense.in_features) == (8, 8)
    assert layer1.attention.self.num_attention_heads == 4
    assert layer1.intermediate.dense.out_features == 16
    logits = model(**example).logits
    path = export_pruned(model, tmp_path / "pruned_model.pt")
    fresh = load_pruned(tiny_bert(transformers), path)  # resized from the export, weights_only
    assert fresh.bert.encoder.layer[0].attention.self.num_attention_heads == 1
    torch.testing.assert_close(fresh(**example).logits, logits)


def test_a_layout_named_in_exclude_names_keeps_its_heads():
    transformers = pytest.importorskip("transformers")
    model = tiny_bert(transformers)
    ids = torch.randint(0, 17, (1, 16))
    network = trace_network(model, {"input_ids": ids}, exclude_names=[r"layer\.1\.attention"])
    assert network.heads == ["bert.encoder.layer.0.attention.self"]
    assert network.attention == ["bert.encoder.layer.1.attention"]
