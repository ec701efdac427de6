"""What AnytimeProgressivePruning measures after each megabatch: errors per split, then the anytime metrics."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from lightning_prune.callbacks._trainer import broadcast, eval_mode
from lightning_prune.core import model_io
from lightning_prune.data.megabatch import MegabatchDataModule

EVAL_BATCH_SIZE = 256  # no gradients: larger batches than training's, less overhead per sample
# What a megabatch's record gains once its epochs are trained (anytime_metrics, plus the epochs counted).
ANYTIME_KEYS = ("train_acc", "val_acc", "test_acc", "gen_gap", "errors", "cer", "cer_split", "epochs_trained")


def batch_limit(limit: int | float, num_batches: int) -> int:
    """Batches to use under a ``limit_*_batches`` value: an int caps, a float is a fraction (at least one)."""
    if isinstance(limit, int):
        return min(limit, num_batches)
    return num_batches if limit >= 1.0 else max(1, int(limit * num_batches)) if limit > 0 else 0


@torch.no_grad()
def count_errors(
    model: nn.Module, loader: DataLoader, limit: int | float, to_device: Callable[[Any], Any]
) -> tuple[int, int]:
    """Misclassified and total samples (argmax of the logits) over the batches ``limit`` allows, in eval mode.

    Batches and outputs are read by :mod:`lightning_prune.core.model_io` (token-level targets count per token).
    """
    wrong = total = 0
    with eval_mode(model):
        for batch in itertools.islice(loader, batch_limit(limit, len(loader))):
            correct, count = model_io.correct_and_total(model, to_device(batch))
            wrong += count - int(correct)
            total += count
    return wrong, total


def split_errors(
    trainer: pl.Trainer,
    pl_module: pl.LightningModule,
    data: MegabatchDataModule,
    megabatch: int,
    replay: str,
    replay_fraction: float,
) -> dict[str, tuple[int, int]]:
    """(misclassified, total) on megabatch ``megabatch``'s training data, the validation and the test set.

    Each split is read as far as the Trainer's ``limit_*_batches`` allows; ``"test"`` is left out when the
    data module has no test set.
    """
    train = Subset(data.train_set, data.train_indices(megabatch, replay, replay_fraction).tolist())
    splits = {"train": (train, trainer.limit_train_batches), "val": (data.val_set, trainer.limit_val_batches)}
    if data.test_set is not None:
        splits["test"] = (data.test_set, trainer.limit_test_batches)
    batch_size = max(EVAL_BATCH_SIZE, data.batch_size)
    return {
        split: count_errors(pl_module, data.loader(dataset, batch_size), limit, trainer.strategy.batch_to_device)
        for split, (dataset, limit) in splits.items()
    }


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


def log_anytime_metrics(pl_module: pl.LightningModule, record: dict[str, Any]) -> None:
    """Log a megabatch's record under ``app/``, once per epoch (every rank holds the same broadcast values)."""
    for key in ("train_acc", "val_acc", "test_acc", "gen_gap", "cer", "sparsity"):
        if key in record:
            pl_module.log(f"app/{key}", float(record[key]), on_step=False, on_epoch=True)
    pl_module.log("app/megabatch", float(record["step"]), on_step=False, on_epoch=True)


def record_megabatch(
    cb: Any, trainer: pl.Trainer, pl_module: pl.LightningModule, epochs_done: int, log: bool = True
) -> None:
    """Evaluate the model after APP ``cb``'s megabatch (rank 0), complete its record and log it under ``app/``."""
    state, errors = cb.pruning_state, None
    if trainer.is_global_zero:
        with state.timed("evaluate"):
            errors = split_errors(trainer, pl_module, cb._data, state.step - 1, cb.replay, cb.replay_fraction)
    errors = broadcast(trainer, errors)
    record = state.history[-1]
    record.update(anytime_metrics(errors, state.history[-2]["cer"] if len(state.history) > 1 else 0))
    record["epochs_trained"] = epochs_done - state.last_step_epoch
    if log:
        log_anytime_metrics(pl_module, record)
