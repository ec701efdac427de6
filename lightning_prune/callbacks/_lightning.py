"""Glue between the framework-free core and a running Trainer, shared by every callback."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from lightning_prune.core.structured import resize_like


def example_input(trainer: pl.Trainer, pl_module: pl.LightningModule) -> Tensor:
    """One input on the module's device: ``example_input_array`` if set, else the first validation sample.

    Raises:
        ValueError: when neither exists, saying how to provide one.
    """
    example = pl_module.example_input_array
    if example is None:
        loader = _first_loader(trainer)
        batch = next(iter(loader)) if loader is not None else None
        if not isinstance(batch, (tuple, list)) or not isinstance(batch[0], Tensor):
            raise ValueError(
                f"{type(pl_module).__name__} has no example_input_array and no (x, y) validation batch to take "
                "an input shape from; set `self.example_input_array = torch.zeros(1, *input_shape)`"
            )
        example = batch[0][:1]
    if not isinstance(example, Tensor):
        raise ValueError(f"example_input_array must be a single tensor, got {type(example).__name__}")
    return example.to(pl_module.device)


def _first_loader(trainer: pl.Trainer) -> Any:
    datamodule = trainer.datamodule
    for source in (trainer.val_dataloaders, datamodule.val_dataloader() if datamodule is not None else None):
        if source is not None:
            return source[0] if isinstance(source, (list, tuple)) else source
    return None


def broadcast(trainer: pl.Trainer, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank: decisions are made once, never per rank."""
    return trainer.strategy.broadcast(obj, src=0)


def rebuild_after_shrink(trainer: pl.Trainer) -> None:
    """After layers were physically replaced: new optimizer (and scheduler) over the new parameters.

    Under DDP the wrapper keeps references to the old parameters, so it is rebuilt too; every rank
    calls this at the same point since the shrink plan was broadcast.
    """
    strategy = trainer.strategy
    if isinstance(strategy, DDPStrategy) and isinstance(strategy.model, DistributedDataParallel):
        strategy.model = strategy._setup_model(strategy.model.module)
    strategy.setup_optimizers(trainer)


def resize_on_load(pl_module: torch.nn.Module) -> torch.nn.Module:
    """Let a checkpoint of a physically shrunk model load into a freshly built, full-size one.

    Lightning loads the model's ``state_dict`` before any callback state, so the layers are resized
    from the incoming tensor shapes in a ``load_state_dict`` pre-hook; the checkpoint is never edited.
    Shrinking callbacks call this in ``setup``. Call it yourself before ``fit`` under ``ddp_spawn``:
    there the parent process reloads the workers' final weights without running any callback hook.
    Idempotent; the hook is a module-level function, so the module still pickles for spawned workers.
    """
    if not getattr(pl_module, RESIZE_ON_LOAD, False):
        pl_module.register_load_state_dict_pre_hook(_resize_hook)
        setattr(pl_module, RESIZE_ON_LOAD, True)
    return pl_module


RESIZE_ON_LOAD = "_lightning_prune_resize_on_load"


def _resize_hook(module: torch.nn.Module, state_dict: dict[str, Tensor], prefix: str, *args: Any) -> None:
    resize_like(module, state_dict, prefix)


def check_spawn_reload(trainer: pl.Trainer, pl_module: pl.LightningModule, requester: str) -> None:
    """Fail early where a shrunk model could not travel back to a spawning parent process.

    Raises:
        ValueError: under a spawn launcher when :func:`resize_on_load` was not called before ``fit``.
    """
    launcher = getattr(trainer.strategy, "launcher", None)
    if isinstance(launcher, _MultiProcessingLauncher) and not getattr(pl_module, RESIZE_ON_LOAD, False):
        raise ValueError(
            f"{requester} shrinks layers physically; with strategy={type(trainer.strategy).__name__}"
            f"(start_method={launcher._start_method!r}) the parent process reloads the final weights into its own "
            "full-size model. Call `lightning_prune.resize_on_load(model)` before `trainer.fit`, or use strategy='ddp'."
        )


def output_dir(trainer: pl.Trainer, export_dir: str | None) -> Path:
    """Where a callback writes its exports: ``export_dir`` if given, else the Trainer's root dir."""
    return Path(export_dir if export_dir is not None else trainer.default_root_dir or os.getcwd())


def final_metrics(trainer: pl.Trainer, skip_prefix: str | None = None) -> dict[str, float]:
    """The Trainer's current metrics as plain floats for a summary, without the per-layer ``skip_prefix`` ones."""
    return {
        key: float(value)
        for key, value in trainer.callback_metrics.items()
        if skip_prefix is None or not key.startswith(skip_prefix)
    }
