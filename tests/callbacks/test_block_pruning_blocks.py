"""BlockPruning on the blocks of mobile and modern CNNs: depthwise-separable, squeeze-excitation, ConvNeXt."""

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lightning_prune import BlockPruning
from lightning_prune.models import Classifier, DepthwiseCNN


class SEBlock(nn.Module):
    """MobileNetV3's inverted residual: 1x1 expand, depthwise 3x3, squeeze-excitation over it, 1x1 project."""

    def __init__(self, channels: int, hidden: int, squeeze: int) -> None:
        super().__init__()
        from torchvision.ops import SqueezeExcitation

        self.expand = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU())
        self.depthwise = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.BatchNorm2d(hidden))
        self.se = SqueezeExcitation(hidden, squeeze)
        self.project = nn.Sequential(nn.Conv2d(hidden, channels, 1), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.se(self.depthwise(self.expand(x))))


class ResidualConv(nn.Module):
    """A block whose one conv is on the residual width: nothing in it can shrink on its own."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


def _classifier(*blocks: nn.Module, width: int = 8) -> Classifier:
    stem, head = nn.Conv2d(1, width, 3, padding=1), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Classifier(nn.Sequential(stem, *blocks, head, nn.Linear(width, 10)), 10, (1, 8, 8))


def _fit(model: pl.LightningModule, block_types: list[str], digits, trainer_kwargs) -> BlockPruning:
    pruning = BlockPruning(step_ratio=0.5, block_types=block_types, warmup_epochs=1, finetune_epochs=0, export_dir=None)
    trainer = pl.Trainer(max_epochs=2, callbacks=[pruning], limit_train_batches=2, **trainer_kwargs)
    trainer.fit(model, datamodule=digits)
    return pruning


def test_depthwise_block_loses_half_of_its_expanded_channels_once(digits, trainer_kwargs):
    model = Classifier(DepthwiseCNN((1, 8, 8), 10, widths=(8, 16), depth=1, expansion=2), 10, (1, 8, 8))
    pruning = _fit(model, ["DepthwiseSeparableBlock"], digits, trainer_kwargs)
    assert [r["block"] for r in pruning.pruning_state.history] == ["net.blocks.0", "net.blocks.1"]
    for block, (width, hidden) in zip(model.net.blocks, [(8, 16), (16, 16)]):
        dw = block.depthwise[0]
        assert (block.expand[0].out_channels, dw.out_channels, dw.groups) == (hidden // 2,) * 3  # half, not a quarter
        assert block.project[0].out_channels == width  # the block's output width is untouched


def test_squeeze_excitation_channels_go_with_the_depthwise_group(digits, trainer_kwargs):
    pytest.importorskip("torchvision")
    model = _classifier(SEBlock(8, 16, 8))
    _fit(model, ["SEBlock"], digits, trainer_kwargs)
    block = model.net[1]
    assert (block.expand[0].out_channels, block.depthwise[0].out_channels, block.se.fc2.out_channels) == (8, 8, 8)
    assert (block.se.fc1.in_channels, block.se.fc1.out_channels, block.project[0].in_channels) == (8, 4, 8)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_convnext_block_loses_mlp_hidden_units(digits, trainer_kwargs):
    cnblock = pytest.importorskip("torchvision.models.convnext").CNBlock
    model = _classifier(cnblock(8, 1e-6, 0.0))
    params = sum(p.numel() for p in model.parameters())
    _fit(model, ["CNBlock"], digits, trainer_kwargs)
    dwconv, _, _, up, _, down, _ = model.net[1].block
    assert (up.out_features, down.in_features) == (16, 16)  # 32 hidden units, half removed
    assert dwconv.out_channels == down.out_features == 8  # the residual width is untouched
    assert sum(p.numel() for p in model.parameters()) < params


def test_refuses_a_block_with_nothing_inner_before_training(digits, trainer_kwargs):
    pruning = BlockPruning(block_types=["ResidualConv"], export_dir=None)
    trainer = pl.Trainer(max_epochs=4, callbacks=[pruning], **trainer_kwargs)
    with pytest.raises(ValueError, match=r"block\(s\) \['net.1'\] hold nothing it can remove.*residual width"):
        trainer.fit(_classifier(ResidualConv(8)), datamodule=digits)
    assert trainer.global_step == 0
