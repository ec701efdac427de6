"""A small VGG-style CNN: plain conv stacks, no residuals, so every channel is prunable."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class SmallCNN(nn.Module):
    """``Conv3x3 -> BN -> ReLU`` per width, halving the resolution after every second conv while it is > 2.

    Example::

        >>> import torch
        >>> SmallCNN((1, 8, 8), 10, widths=(8, 16))(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, widths: Sequence[int] = (32, 32, 64, 64)) -> None:
        super().__init__()
        # Constructor arguments as plain data: an export records them, so load_model rebuilds this net.
        self.hparams = {"input_shape": list(input_shape), "num_classes": num_classes, "widths": list(widths)}
        channels, size = input_shape[0], input_shape[-1]
        layers: list[nn.Module] = []
        for index, width in enumerate(widths):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            if index % 2 == 1 and size > 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))
