"""A MobileNet-style depthwise-separable CNN with residual blocks, GELU and BatchNorm.

The shape users bring from MobileNet/EfficientNet/ConvNeXt: a depthwise 3x3 convolution (``groups`` equal to
its channels) couples its input and output channels one to one, so structured pruning and the latency planner
must remove a depthwise conv's channels together with the pointwise conv that feeds it.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class DepthwiseSeparableBlock(nn.Module):
    """``pw 1x1 expand -> dw 3x3 -> pw 1x1 project`` (BN + GELU between), residual add when the shape holds."""

    def __init__(self, in_channels: int, channels: int, expansion: int = 2, stride: int = 1) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expand = nn.Sequential(nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.GELU())
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.GELU(),
        )
        self.project = nn.Sequential(nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.residual = stride == 1 and in_channels == channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.residual else out


class DepthwiseCNN(nn.Module):
    """Stem conv, then one stage of :class:`DepthwiseSeparableBlock` per width (stride 2 between stages).

    Example::

        >>> import torch
        >>> DepthwiseCNN((1, 8, 8), 10, widths=(8, 16), depth=2)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        widths: Sequence[int] = (16, 32, 64),
        depth: int = 2,
        expansion: int = 2,
    ) -> None:
        super().__init__()
        # Constructor arguments as plain data: an export records them, so load_model rebuilds this net.
        self.hparams = {
            "input_shape": list(input_shape),
            "num_classes": num_classes,
            "widths": list(widths),
            "depth": depth,
            "expansion": expansion,
        }
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.GELU()
        )
        blocks: list[nn.Module] = []
        channels = widths[0]
        for stage, width in enumerate(widths):
            for index in range(depth):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(DepthwiseSeparableBlock(channels, width, expansion, stride))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.blocks(self.stem(x))).flatten(1))
