"""What :class:`~lightning_prune.callbacks.latency_budget.LatencyBudgetPruning` reports at the end of a fit."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn

from lightning_prune.callbacks._trainer import final_metrics, info
from lightning_prune.core.latency_budget.measure import correlation
from lightning_prune.core.timing import device_name, resolve_device

log = logging.getLogger(__name__)


def final_check(cb: Any, taken: dict[str, float]) -> dict[str, Any]:
    """The final side-by-side measurement judged against the budget (``tolerance`` allowed); a miss warns."""
    measured, budget_ms = taken["measured_ms"], cb._budget.budget_ms
    miss = measured / budget_ms - 1.0
    final = {**taken, "met_budget": measured <= budget_ms * (1.0 + cb.tolerance), "excess": miss}
    if final["met_budget"]:
        info(log, f"final latency {measured:.3f} ms meets the budget {budget_ms:.3f} ms ({miss:+.1%})")
    else:
        rank_zero_warn(
            f"LatencyBudgetPruning: the final measured latency {measured:.3f} ms misses the budget "
            f"{budget_ms:.3f} ms by {measured - budget_ms:.3f} ms ({miss:+.1%}; tolerance "
            f"{cb.tolerance:.0%}); pruning steps done: {cb.pruning_state.step}/{cb.num_steps}"
        )
    return final


def summary(cb: Any, trainer: pl.Trainer, model_path: Path) -> dict[str, Any]:
    """The ``latency_budget`` section of ``summary.json``: the budget, the final check and every step."""
    history = cb.pruning_state.history
    return {
        "device": device_name(resolve_device(cb.device, trainer.lightning_module)),
        "batch_size": cb.batch_size,
        "threads": cb.threads or torch.get_num_threads(),
        "dense_ms": cb._budget.dense_ms,
        "budget_ms": cb._budget.budget_ms,
        **(cb._final or {}),
        "lut_r": correlation([r["predicted_ms"] for r in history], [r["measured_ms"] for r in history]),
        "lut_entries": len(cb._planner.table) if cb._planner is not None else None,
        "sparsity": cb.pruning_state.sparsity,
        "params": sum(p.numel() for p in trainer.lightning_module.parameters()),
        "time_s": cb.pruning_state.time_s,
        "history": history,
        "metrics": final_metrics(trainer),
        "exported_model": str(model_path),
    }
