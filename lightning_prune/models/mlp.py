"""A plain feed-forward net: what ODF2NNA-style unit pruning and tabular data need."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    """Flatten, then ``Linear -> ReLU`` per hidden width, then a linear head.

    Example::

        >>> import torch
        >>> MLP((1, 8, 8), 10, hidden=(32, 16))(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        # Constructor arguments as plain data: an export records them, so load_model rebuilds this net.
        self.hparams = {"input_shape": list(input_shape), "num_classes": num_classes, "hidden": list(hidden)}
        widths = [math.prod(input_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for fan_in, fan_out in itertools.pairwise(widths):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
