"""What AnytimeProgressivePruning logs each epoch and writes to ``summary.json`` beside the pruned model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch import nn

from lightning_prune.callbacks._contract import measured_sparsity, verify_report
from lightning_prune.callbacks._trainer import info, output_dir
from lightning_prune.callbacks.anytime_progressive.checks import NAME
from lightning_prune.core.export import export_pruned, write_summary
from lightning_prune.core.schedules import app_exponent

log = logging.getLogger(__name__)


def summary(cb: Any, pl_module: nn.Module, model_path: Path, verified: dict[str, Any]) -> dict[str, Any]:
    """What ``cb`` exports beside the model; ``verified`` is :func:`verify_report`'s block (the measured figures).

    ``sparsity`` is the measured one; the history keeps what each megabatch recorded.
    """
    state = cb.pruning_state
    last = state.history[-1] if state.history else {}
    tau = app_exponent(cb.target_sparsity) if cb.schedule == "app" and cb.target_sparsity else None
    return {
        "schedule": cb.schedule,
        "target_sparsity": cb.target_sparsity,
        "tau": tau,
        "planned_sparsities": cb.sparsities,
        "sparsity": verified["measured"]["sparsity"],
        "num_megabatches": cb.num_megabatches,
        "megabatches_done": state.step,
        "epochs_per_megabatch": cb.epochs_per_megabatch,
        "replay": cb.replay,
        **{key: last.get(key) for key in ("train_acc", "val_acc", "test_acc", "gen_gap", "cer")},
        "params": sum(p.numel() for p in pl_module.parameters()),
        "kept_params": sum(int((p != 0).sum()) for p in pl_module.parameters()),
        "layer_sparsity": cb._masks.layer_sparsity(),
        "time_s": state.time_s,
        "history": state.history,
        "exported_model": str(model_path),
        **verified,
    }


def log_state(cb: Any, pl_module: pl.LightningModule) -> None:
    """``prune/sparsity``, ``prune/step``, ``prune/target_sparsity`` and, opted in, ``prune_layer/<name>``."""
    state = cb.pruning_state
    pl_module.log("prune/sparsity", state.sparsity, on_step=False, on_epoch=True)
    pl_module.log("prune/step", float(state.step), on_step=False, on_epoch=True)
    pl_module.log("prune/target_sparsity", float(cb.target_sparsity), on_step=False, on_epoch=True)
    if cb.log_layers:
        for name, value in cb._masks.layer_sparsity().items():
            pl_module.log(f"prune_layer/{name}", value, on_step=False, on_epoch=True)


def verified_report(cb: Any, trainer: pl.Trainer, pl_module: nn.Module) -> dict[str, Any]:
    """The reported sparsity checked against the weights (:func:`verify_report`); marks a finished schedule done.

    Finished: every megabatch's step ran and the last one trained its ``epochs_per_megabatch`` epochs.
    """
    state = cb.pruning_state
    last = state.history[-1] if state.history else {}
    finished = state.step >= cb.num_megabatches and last.get("epochs_trained", 0) >= cb.epochs_per_megabatch
    if finished:
        state.phase = "done"
    measured = {"sparsity": measured_sparsity(pl_module, cb._names)}
    target = f"the last of num_megabatches={cb.num_megabatches} (sparsity {cb.sparsities[-1]:.4g})"
    return verify_report(trainer, NAME, {"sparsity": state.sparsity}, measured, finished, target)


def export(cb: Any, trainer: pl.Trainer, pl_module: pl.LightningModule, verified: dict[str, Any]) -> None:
    """Write APP ``cb``'s pruned model and ``summary.json`` (rank 0 calls this)."""
    directory = output_dir(trainer, cb.export_dir)
    model_path = export_pruned(pl_module, directory / "pruned_model.pt")
    write_summary(directory / "summary.json", "anytime_progressive", summary(cb, pl_module, model_path, verified))
    sparsity, done = verified["measured"]["sparsity"], cb.pruning_state.step
    info(log, f"APP done: sparsity {sparsity:.4f} (measured) after {done} megabatches; exported {model_path}")
