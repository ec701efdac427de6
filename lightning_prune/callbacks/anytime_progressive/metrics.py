"""Helpers of AnytimeProgressivePruning: counting errors outside the loops and the anytime metrics."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader


def batch_limit(limit: int | float, num_batches: int) -> int:
    """Batches to use under a ``limit_*_batches`` value: an int caps, a float is a fraction (at least one)."""
    if isinstance(limit, int):
        return min(limit, num_batches)
    return num_batches if limit >= 1.0 else max(1, int(limit * num_batches)) if limit > 0 else 0


@torch.no_grad()
def count_errors(
    model: nn.Module, loader: DataLoader, limit: int | float, to_device: Callable[[Any], Any]
) -> tuple[int, int]:
    """Misclassified and total samples (argmax of the logits) over the batches ``limit`` allows, in eval mode."""
    was_training = model.training
    model.eval()
    wrong = total = 0
    try:
        for x, y in itertools.islice(loader, batch_limit(limit, len(loader))):
            x, y = to_device((x, y))
            wrong += int((model(x).argmax(dim=-1) != y).sum())
            total += int(y.numel())
    finally:
        model.train(was_training)
    return wrong, total


def anytime_metrics(errors: dict[str, tuple[int, int]], previous_cer: int) -> dict[str, Any]:
    """Accuracy per split, generalisation gap (train - val accuracy) and the cumulative error rate.

    ``errors`` maps ``"train"``, ``"val"`` and optionally ``"test"`` to (misclassified, total); CER adds
    this megabatch's test errors (validation errors when there is no test set) to ``previous_cer``.

    Example::

        >>> metrics = anytime_metrics({"train": (5, 100), "val": (4, 40), "test": (30, 200)}, previous_cer=50)
        >>> metrics["test_acc"], round(metrics["gen_gap"], 4), metrics["cer"]
        (0.85, 0.05, 80)
    """
    metrics: dict[str, Any] = {
        f"{split}_acc": 1.0 - wrong / total if total else float("nan") for split, (wrong, total) in errors.items()
    }
    metrics["gen_gap"] = metrics["train_acc"] - metrics["val_acc"]
    cer_split = "test" if "test" in errors else "val"
    wrong = errors[cer_split][0]
    return {**metrics, "errors": wrong, "cer": previous_cer + wrong, "cer_split": cer_split}
