"""Exports that carry the record to rebuild their model: load_model on plain and physically shrunk models, sizes."""

import json
from collections.abc import Sequence

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lightning_prune import load_model, load_pruned
from lightning_prune.core.export import count_macs, export_pruned, model_record, model_size
from lightning_prune.core.structured import architecture_spec, remove_out_channels
from lightning_prune.models import ResNet
from tests.helpers import cnn_classifier

EXAMPLE = torch.randn(4, 1, 8, 8)


class ResNetModule(pl.LightningModule):
    """A user's LightningModule that builds its net from saved hyper-parameters (so it can be rebuilt by name)."""

    def __init__(self, blocks: Sequence[int] = (2, 2), widths: Sequence[int] = (8, 16), scale: float = 1.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = ResNet((1, 8, 8), 10, blocks=blocks, widths=widths)
        self.example_input_array = torch.zeros(1, 1, 8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.hparams.scale


class Wrapper(pl.LightningModule):
    """Takes a module as an argument and records it with its own hyper-parameters left out."""

    def __init__(self, inner: nn.Module, bias: float) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["inner"])
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + self.hparams.bias


def test_physically_shrunk_resnet_rebuilds_from_its_record(tmp_path):
    model = ResNetModule(widths=(8, 16), scale=0.5).eval()
    remove_out_channels(model, EXAMPLE, {"net.stages.0.0.conv1": [1, 2, 5], "net.stages.1.1.conv1": list(range(9))})
    assert model.net.stages[1][1].conv1.out_channels == 7
    path = export_pruned(model, tmp_path / "pruned_model.pt")
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["model"] == {
        "_target_": "tests.core.test_export.ResNetModule",
        "blocks": [2, 2],
        "widths": [8, 16],
        "scale": 0.5,
    }
    assert record["size"]["params"] == sum(p.numel() for p in model.parameters())
    loaded = load_model(path)
    assert isinstance(loaded, ResNetModule)
    assert not loaded.training
    assert architecture_spec(loaded) == architecture_spec(model)
    torch.testing.assert_close(loaded(EXAMPLE), model(EXAMPLE))


def test_a_module_argument_with_its_own_record_nests(tmp_path):
    inner = ResNetModule(widths=(4, 8)).eval()
    model = Wrapper(inner, bias=2.0).eval()
    assert model_record(model)["model"] == {
        "_target_": "tests.core.test_export.Wrapper",
        "inner": {"_target_": "tests.core.test_export.ResNetModule", "blocks": [2, 2], "widths": [4, 8], "scale": 1.0},
        "bias": 2.0,
    }
    loaded = load_model(export_pruned(model, tmp_path / "m.pt").with_suffix(".json"))
    torch.testing.assert_close(loaded(EXAMPLE), model(EXAMPLE))


class PlainNet(nn.Module):
    """A user's net that records nothing about how it was built."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(64, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (PlainNet(4), "PlainNet is a PlainNet, a plain nn.Module"),
        (Wrapper(PlainNet(4), bias=1.0), "Wrapper.inner is a PlainNet, a plain nn.Module"),
    ],
    ids=["plain nn.Module", "LightningModule around a plain nn.Module"],
)
def test_without_a_record_the_weights_still_export_and_load_model_names_the_fix(tmp_path, model, reason):
    path = export_pruned(model, tmp_path / "pruned_model.pt")
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["model"] is None
    assert reason in record["reason"]
    assert record["load"] == "lightning_prune.load_pruned(model, path)"
    with pytest.raises(ValueError, match=rf"cannot rebuild the model: {reason}.*call load_pruned\(model, "):
        load_model(path)
    fresh = PlainNet(4) if isinstance(model, PlainNet) else Wrapper(PlainNet(4), bias=1.0)
    torch.testing.assert_close(load_pruned(fresh, path).state_dict(), model.state_dict())


@pytest.mark.parametrize(
    "model",
    [ResNet((1, 8, 8), 10, blocks=(1,), widths=(4,)), cnn_classifier()],
    ids=["ResNet", "Classifier(net=SmallCNN) in your own Trainer"],
)
def test_the_zoo_nets_record_their_constructor_so_load_model_rebuilds_them(tmp_path, model):
    model.eval()
    loaded = load_model(export_pruned(model, tmp_path / "pruned_model.pt"))
    assert type(loaded) is type(model)
    torch.testing.assert_close(loaded(EXAMPLE), model(EXAMPLE))


def test_load_model_without_a_record_says_what_to_do(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"architecture": {}, "state_dict": {}}, path)
    with pytest.raises(FileNotFoundError, match=r"old.json: no model record .* load_pruned\(model, '.*old.pt'\)"):
        load_model(path)


def test_macs_count_conv_and_linear_per_example():
    conv = nn.Conv2d(1, 2, 3, padding=1)  # 4x4 output, 2 channels, 9 MACs each
    assert count_macs(conv, torch.zeros(3, 1, 4, 4)) == 2 * 16 * 9
    depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)  # one 3x3 input channel per output
    assert count_macs(depthwise, torch.zeros(1, 4, 4, 4)) == 4 * 16 * 9
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.ReLU(), nn.Linear(3, 2))
    assert count_macs(net, torch.zeros(5, 1, 4, 4)) == 16 * 3 + 3 * 2
    assert count_macs(net, torch.zeros(1, 7)) is None  # the forward fails: not computable
    assert count_macs(net, None) is None


def test_model_size_counts_zeros_and_shrinking():
    model = ResNetModule(widths=(8, 16)).eval()
    before = model_size(model, EXAMPLE)
    with torch.no_grad():
        model.net.stem[0].weight[:4] = 0
    zeroed = model_size(model, EXAMPLE)
    assert zeroed["params"] == before["params"]
    assert zeroed["params_nonzero"] == before["params_nonzero"] - 4 * 9
    assert zeroed["macs"] == before["macs"]  # zeros are still multiplied
    remove_out_channels(model, EXAMPLE, {"net.stages.1.0.conv1": list(range(8))})
    shrunk = model_size(model, EXAMPLE)
    assert shrunk["params"] < before["params"]
    assert shrunk["macs"] < before["macs"]


def test_a_module_built_from_positional_args_is_not_recorded_as_empty(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    record = model_record(model)
    assert record["model"] is None
    assert "Sequential, built from positional *args" in record["reason"]
    with pytest.raises(ValueError, match=r"cannot rebuild the model: .*positional \*args"):
        load_model(export_pruned(model, tmp_path / "m.pt"))
