"""Argument, Trainer and budget checks of :class:`~lightning_prune.callbacks.latency_budget.LatencyBudgetPruning`."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from lightning_prune.callbacks._trainer import check_spawn_reload
from lightning_prune.core.selection import DEFAULT_TYPES, validate_selector
from lightning_prune.core.timing import check_device, resolve_device
from lightning_prune.core.validate import check_fraction, check_int


def check_arguments(cb: Any) -> None:
    """Validate the constructor arguments stored on ``cb`` (the timing ones are checked by its meter).

    Raises:
        ValueError: naming the argument, its value and what is allowed.
    """
    fraction, budget_ms = cb.budget_fraction, cb.latency_budget_ms
    if (fraction is None) == (budget_ms is None):
        raise ValueError(
            f"give exactly one of budget_fraction and latency_budget_ms, got budget_fraction={fraction}, "
            f"latency_budget_ms={budget_ms}"
        )
    if fraction is not None:
        check_fraction("budget_fraction", fraction)
    if budget_ms is not None and not budget_ms > 0:
        raise ValueError(f"latency_budget_ms must be > 0, got {budget_ms}")
    for name, low in [("num_steps", 1), ("finetune_epochs", 0), ("warmup_epochs", 0), ("round_to", 1)]:
        check_int(name, getattr(cb, name), low)
    for name, low in [("min_channels", 1), ("batch_size", 1), ("rounds", 1), ("max_corrections", 0)]:
        check_int(name, getattr(cb, name), low)
    check_int("resolution", cb.resolution, 10)
    check_fraction("tolerance", cb.tolerance, closed_low=True)
    check_device(cb.device)
    validate_selector(DEFAULT_TYPES, None, cb.exclude_names)


def check_trainer(cb: Any, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
    """Fail at setup on a Trainer or device this run cannot work with.

    Raises:
        ValueError: under a spawn launcher without ``resize_on_load``, for a CUDA ``device`` torch cannot
            see, or when ``max_epochs`` cannot hold the warm-up and every step's fine-tune.
    """
    check_spawn_reload(trainer, pl_module, "LatencyBudgetPruning")
    resolve_device(cb.device, pl_module)
    needed = cb.warmup_epochs + max(1, cb.num_steps * cb.finetune_epochs)
    max_epochs = trainer.max_epochs
    if not trainer.fast_dev_run and max_epochs is not None and 0 <= max_epochs < needed:
        raise ValueError(
            f"LatencyBudgetPruning needs Trainer(max_epochs >= {needed}) (warmup_epochs={cb.warmup_epochs} + "
            f"num_steps={cb.num_steps} x finetune_epochs={cb.finetune_epochs}), got max_epochs={max_epochs}"
        )


def check_budget(cb: Any, budget_ms: float, dense_ms: float, smallest_ms: float, where: str) -> None:
    """Fail on a budget not below the dense latency, or below what the smallest allowed network measures."""
    if budget_ms >= dense_ms:
        raise ValueError(
            f"latency_budget_ms={budget_ms:.4g} is not below the dense model's measured latency "
            f"{dense_ms:.4g} ms {where}: nothing to prune for"
        )
    if smallest_ms > budget_ms:
        raise ValueError(
            f"the latency budget {budget_ms:.4g} ms is unreachable: the smallest network allowed (min_channels="
            f"{cb.min_channels}, round_to={cb.round_to}) measures {smallest_ms:.4g} ms {where} "
            f"(dense: {dense_ms:.4g} ms); raise the budget or lower min_channels"
        )
