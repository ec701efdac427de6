"""A CIFAR-style ResNet (He et al. 2016, option B shortcuts) sized for small inputs.

Many narrow blocks on purpose: block-wise methods (ICE-Pruning) need steps to work with, and the
residual adds are what dependency-aware channel removal has to respect.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and a residual add; a 1x1 projection when the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv, then stages of :class:`BasicBlock` (stride 2 between stages while the map is > 2 wide).

    ``ResNet(input_shape, n, blocks=(3, 3, 3))`` is ResNet-20; the default (2, 2, 2) is ResNet-14.

    Example::

        >>> import torch
        >>> net = ResNet((1, 8, 8), 10, blocks=(2, 2), widths=(8, 16))
        >>> net(torch.zeros(2, 1, 8, 8)).shape, len(net.blocks())
        (torch.Size([2, 10]), 4)
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        blocks: Sequence[int] = (2, 2, 2),
        widths: Sequence[int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        # Constructor arguments as plain data: an export records them, so load_model rebuilds this net.
        self.hparams = {
            "input_shape": list(input_shape),
            "num_classes": num_classes,
            "blocks": list(blocks),
            "widths": list(widths),
        }
        if len(blocks) != len(widths):
            raise ValueError(f"blocks and widths need one entry per stage, got blocks={blocks}, widths={widths}")
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages, channels, size = [], widths[0], input_shape[-1]
        for stage, (count, width) in enumerate(zip(blocks, widths)):
            stride = 2 if stage > 0 and size > 2 else 1
            size //= stride
            layers = [BasicBlock(channels, width, stride)] + [BasicBlock(width, width) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def blocks(self) -> list[str]:
        """Names of the residual blocks in network order (the units of block-wise pruning)."""
        return [name for name, module in self.named_modules() if isinstance(module, BasicBlock)]

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))
