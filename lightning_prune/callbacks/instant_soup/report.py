"""What :class:`~lightning_prune.callbacks.instant_soup.InstantSoupPruning` logs each epoch and exports at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from lightning_prune.callbacks._contract import measured_sparsity, verify_report
from lightning_prune.callbacks._trainer import final_metrics
from lightning_prune.callbacks.instant_soup.checks import NAME
from lightning_prune.core.export import parameter_counts, zero_fraction


def mask_steps(cb: Any) -> int:
    """Optimizer steps spent finding the mask: calibration up to the last round, plus all ingredients'."""
    history = cb.pruning_state.history
    calibration = history[-1]["global_step"] - cb.warmup_steps if history else 0
    return calibration + cb.ingredient_steps


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
            "soup/mask_steps": mask_steps(cb),
        }
    )
    if cb.log_layers and cb._masks is not None:
        metrics.update({f"prune_layer/{name}": value for name, value in cb._masks.layer_sparsity().items()})
    return {name: float(value) for name, value in metrics.items()}


def summary(
    cb: Any, trainer: pl.Trainer, pl_module: pl.LightningModule, model_path: Path, verified: dict[str, Any]
) -> dict[str, Any]:
    """The ``instant_soup`` section of ``summary.json``: settings, cost, per-layer sparsity and per-round history.

    ``verified`` is :func:`verify_report`'s block; ``sparsity`` is the measured one.
    """
    state, masks = cb.pruning_state, cb._masks
    return {
        "variant": cb.variant,
        "target_sparsity": state.target_sparsity,
        "sparsity": verified["measured"]["sparsity"],
        "rounds": state.step,
        "num_ingredients": cb.num_ingredients,
        "lookahead_steps": cb.lookahead_steps,
        "calibration_steps": cb._calibration,
        "combine": cb.combine,
        "trim_every_round": cb.trim_every_round,
        "ingredient_steps": cb.ingredient_steps,
        "ingredient_s": cb.ingredient_s,
        "mask_steps": mask_steps(cb),
        "layer_sparsity": masks.layer_sparsity() if masks is not None else {},
        "layer_zero_fraction": zero_fraction(pl_module, cb._names),
        **parameter_counts(pl_module),
        "time_s": state.time_s,
        "history": state.history,
        "metrics": final_metrics(trainer, "prune_layer/"),
        "exported_model": str(model_path),
        **verified,
    }


def verified_report(cb: Any, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """The reported sparsity checked against the weights (:func:`verify_report`); marks a finished schedule done.

    Instant Model Soup reports no sparsity (the model stays dense); its measured one is still exported.
    """
    state = cb.pruning_state
    finished = state.step >= state.num_steps
    if finished:
        state.phase = "done"
    measured = {"sparsity": measured_sparsity(pl_module, cb._names)}
    reported = {"sparsity": state.sparsity} if cb.variant == "isp" else {}
    if cb.variant == "isp":
        target = f"target_sparsity={cb.target_sparsity} after {state.num_steps} rounds"
    else:
        target = f"the model soup at optimizer step {cb.warmup_steps}"
    return verify_report(trainer, NAME, reported, measured, finished, target)
