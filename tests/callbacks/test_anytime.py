from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_prune.callbacks._anytime import anytime_metrics, batch_limit, count_errors


def test_anytime_metrics_without_a_test_set_counts_validation_errors() -> None:
    metrics = anytime_metrics({"train": (0, 10), "val": (2, 8)}, previous_cer=3)
    assert metrics == {"train_acc": 1.0, "val_acc": 0.75, "gen_gap": 0.25, "errors": 2, "cer": 5, "cer_split": "val"}


def test_anytime_metrics_of_an_empty_split_is_nan() -> None:
    assert math.isnan(anytime_metrics({"train": (0, 10), "val": (0, 0)}, 0)["gen_gap"])


@pytest.mark.parametrize(("limit", "expected"), [(1.0, 10), (0.25, 2), (0.01, 1), (0.0, 0), (3, 3), (30, 10)])
def test_batch_limit_follows_lightnings_limit_semantics(limit: float, expected: int) -> None:
    assert batch_limit(limit, 10) == expected


def test_count_errors_in_eval_mode_within_the_limit() -> None:
    net = nn.Sequential(nn.Linear(1, 2, bias=False), nn.Dropout(0.9)).train()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))  # positive x -> class 0
    x = torch.tensor([[1.0], [2.0], [-1.0], [3.0]])
    loader = DataLoader(TensorDataset(x, torch.tensor([0, 0, 0, 1])), batch_size=2)
    assert count_errors(net, loader, 1.0, lambda batch: batch) == (2, 4)  # dropout off: deterministic
    assert count_errors(net, loader, 1, lambda batch: batch) == (0, 2)
    assert net.training
