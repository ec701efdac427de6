import json

import pytest
import torch
from torch import nn

from lightning_prune.core.export import export_pruned, load_pruned, write_summary
from lightning_prune.core.odf2nna.tracing import trace_graph
from lightning_prune.core.structured import (
    architecture_spec,
    count_parameters,
    group_scores,
    inner_groups,
    l1_filter_scores,
    lowest_channels,
    remove_out_channels,
    resize_like,
)
from lightning_prune.models import MLP, ResNet

EXAMPLE = torch.randn(2, 1, 8, 8)


def resnet() -> ResNet:
    return ResNet((1, 8, 8), 10, blocks=(2, 2), widths=(8, 16)).eval()


def test_inner_groups_exclude_the_conv_feeding_the_residual_add():
    net = resnet()
    graph = trace_graph(net, EXAMPLE)
    assert inner_groups(net, graph, "stages.0.1") == ["stages.0.1.conv1"]


def test_removing_inner_channels_shrinks_the_block_and_keeps_the_net_working():
    net = resnet()
    before = count_parameters(net)
    remove_out_channels(net, EXAMPLE, {"stages.1.0.conv1": [0, 3, 5]})
    block = net.stages[1][0]
    assert (block.conv1.out_channels, block.bn1.num_features, block.conv2.in_channels) == (13, 13, 13)
    assert block.conv2.out_channels == 16
    assert count_parameters(net) < before
    assert net(EXAMPLE).shape == (2, 10)


def test_training_mode_is_restored_and_bn_stats_untouched_by_tracing():
    net = resnet().train()
    stats = net.stem[1].running_mean.clone()
    trace_graph(net, EXAMPLE * 100)
    assert net.training
    torch.testing.assert_close(net.stem[1].running_mean, stats)


def test_l1_scores_and_lowest_channels():
    conv = nn.Conv2d(1, 4, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([3.0, -1.0, 2.0, 0.5]).view(4, 1, 1, 1))
    torch.testing.assert_close(l1_filter_scores(conv), torch.tensor([3.0, 1.0, 2.0, 0.5]))
    assert lowest_channels(l1_filter_scores(conv), 0.5) == [1, 3]
    assert lowest_channels(l1_filter_scores(conv), 0.99) == [1, 2, 3]  # one channel always survives


def test_shrunk_state_dict_loads_into_a_fresh_model_with_identical_outputs():
    shrunk = resnet()
    remove_out_channels(shrunk, EXAMPLE, {"stages.0.0.conv1": [1, 2], "stages.1.1.conv1": list(range(10))})
    fresh = resnet()
    resized = resize_like(fresh, shrunk.state_dict())
    assert sorted(resized) == [
        "stages.0.0.bn1",
        "stages.0.0.conv1",
        "stages.0.0.conv2",
        "stages.1.1.bn1",
        "stages.1.1.conv1",
        "stages.1.1.conv2",
    ]
    fresh.load_state_dict(shrunk.state_dict())
    assert architecture_spec(fresh) == architecture_spec(shrunk)
    torch.testing.assert_close(fresh(EXAMPLE), shrunk(EXAMPLE))


def test_resize_like_handles_linear_stacks():
    wide, narrow = MLP((6,), 3, hidden=(8, 8)), MLP((6,), 3, hidden=(5, 2))
    resize_like(wide, narrow.state_dict())
    wide.load_state_dict(narrow.state_dict())
    assert [m.out_features for m in wide.modules() if isinstance(m, nn.Linear)] == [5, 2, 3]


def test_export_round_trip_with_weights_only(tmp_path):
    shrunk = resnet()
    remove_out_channels(shrunk, EXAMPLE, {"stages.0.1.conv1": [0, 1, 2]})
    path = export_pruned(shrunk, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["architecture"]["stages.0.1.conv1"]["out_channels"] == 5
    torch.testing.assert_close(load_pruned(resnet(), path)(EXAMPLE), shrunk(EXAMPLE))


def test_load_pruned_rejects_a_different_architecture(tmp_path):
    path = export_pruned(MLP((6,), 3, hidden=(5,)), tmp_path / "mlp.pt")
    with pytest.raises(RuntimeError, match=r"size mismatch|Missing key|Unexpected key"):
        load_pruned(MLP((6,), 3, hidden=(5, 5)), path)


def test_write_summary_merges_sections(tmp_path):
    path = tmp_path / "summary.json"
    write_summary(path, "a", {"x": torch.tensor([1.5]), "nan": float("nan")})
    write_summary(path, "b", {"y": (1, 2)})
    assert json.loads(path.read_text()) == {"a": {"x": [1.5], "nan": None}, "b": {"y": [1, 2]}}


def test_group_scores_count_the_batchnorm_scale_a_filter_norm_misses():
    net = resnet()
    block = net.stages[0][1]
    with torch.no_grad():
        block.conv1.weight.fill_(0.05)  # trained-filter sizes: 72 weights of 0.05, an L1 of 3.6
        block.conv2.weight.fill_(0.05)
        block.conv1.weight[2] *= 0.01  # the smallest filter ...
        block.bn1.weight.fill_(1.0)
        block.bn1.weight[2] = 20.0  # ... behind the largest BatchNorm scale
    graph = trace_graph(net, EXAMPLE)
    scores = group_scores(net, graph, "stages.0.1.conv1")
    assert l1_filter_scores(block.conv1).argmin() == 2
    assert scores.shape == (8,)
    assert scores.argmax() == 2
