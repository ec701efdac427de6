"""What :class:`~lightning_prune.callbacks.instant_soup.InstantSoupPruning` logs each epoch and exports at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from lightning_prune.callbacks._trainer import final_metrics
from lightning_prune.core.export import zero_fraction


def epoch_metrics(cb: Any) -> dict[str, float]:
    """``prune/*`` (the protocol's keys), ``soup/*`` (what the ingredients cost) and, opted in, ``prune_layer/*``."""
    state = cb.pruning_state
    metrics = {"prune/sparsity": state.sparsity, "prune/step": state.step}
    if state.target_sparsity is not None:
        metrics["prune/target_sparsity"] = state.target_sparsity
    metrics.update(
        {
            "soup/ingredient_steps": cb.ingredient_steps,
            "soup/ingredient_s": cb.ingredient_s,
            "soup/mask_steps": cb.mask_steps,
        }
    )
    if cb.log_layers and cb._masks is not None:
        metrics.update({f"prune_layer/{name}": value for name, value in cb._masks.layer_sparsity().items()})
    return {name: float(value) for name, value in metrics.items()}


def summary(cb: Any, trainer: pl.Trainer, pl_module: pl.LightningModule, model_path: Path) -> dict[str, Any]:
    """The ``instant_soup`` section of ``summary.json``: settings, cost, per-layer sparsity and per-round history."""
    state, masks = cb.pruning_state, cb._masks
    return {
        "variant": cb.variant,
        "target_sparsity": state.target_sparsity,
        "sparsity": state.sparsity,
        "rounds": state.step,
        "num_ingredients": cb.num_ingredients,
        "lookahead_steps": cb.lookahead_steps,
        "calibration_steps": cb._calibration,
        "combine": cb.combine,
        "ingredient_steps": cb.ingredient_steps,
        "ingredient_s": cb.ingredient_s,
        "mask_steps": cb.mask_steps,
        "layer_sparsity": masks.layer_sparsity() if masks is not None else {},
        "layer_zero_fraction": zero_fraction(pl_module, cb._names),
        "params": sum(p.numel() for p in pl_module.parameters()),
        "params_nonzero": sum(int((p != 0).sum()) for p in pl_module.parameters()),
        "time_s": state.time_s,
        "history": state.history,
        "metrics": final_metrics(trainer, "prune_layer/"),
        "exported_model": str(model_path),
    }
