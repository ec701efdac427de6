"""Small nets with hidden units of known behaviour on a fixed grid of inputs, for the ODF2NNA core tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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
