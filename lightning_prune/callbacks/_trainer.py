"""Glue between the framework-free core and a running Trainer, shared by every callback.

The one module that touches Lightning's internals (private loop and strategy attributes): when a
Lightning release moves them, this file is the only one to change. Callbacks ask it for the
validation data, a batch's input, eval mode, a reloaded training loader, a rebuilt optimizer after a
shrink, and rank-zero logging.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from lightning_prune.core import model_io
from lightning_prune.core.structured import resize_like


def example_input(trainer: pl.Trainer, pl_module: pl.LightningModule) -> Any:
    """One input on the module's device: ``example_input_array`` if set, else the first validation sample's.

    A tensor, or a tuple or mapping of tensors (Hugging Face's ``input_ids``, ``attention_mask``): passed to
    the model the way Lightning passes ``example_input_array`` (:func:`lightning_prune.core.model_io.call`).

    Raises:
        ValueError: when neither exists, saying how to provide one.
    """
    example = pl_module.example_input_array
    if example is None:
        loader = validation_loader(trainer)
        with torch.random.fork_rng(devices=[]):  # a loader's iterator draws a seed: the run's shuffle stays the user's
            batch = next(iter(loader)) if loader is not None else None
        try:
            example = model_io.first_samples(model_io.split_batch(pl_module, batch)[0])
        except ValueError as error:
            raise ValueError(
                f"{type(pl_module).__name__} has no example_input_array and no validation batch to take an input "
                f"from ({error}); set `self.example_input_array = torch.zeros(1, *input_shape)`"
            ) from None
    if not isinstance(example, (Tensor, tuple, Mapping)):
        raise ValueError(
            f"example_input_array must be a tensor, a tuple or a mapping of tensors, got {type(example).__name__}"
        )
    return model_io.to_device(example, pl_module.device)


def validation_loader(trainer: pl.Trainer) -> Any:
    """The first validation loader of ``fit``, wherever it was given (module, datamodule or ``fit``'s arguments).

    Works from ``setup`` on: before Lightning has loaded loaders passed straight to ``fit``, it asks
    the fit loop's data source (where Lightning keeps what ``fit`` was given) to build them.
    """
    loaders = trainer.val_dataloaders
    if loaders is None:
        source = trainer.fit_loop.epoch_loop.val_loop._data_source
        if source.instance is None or not source.is_defined():
            return None
        loaders = source.dataloader()
    return loaders[0] if isinstance(loaders, (list, tuple)) else loaders


def has_validation_data(trainer: pl.Trainer) -> bool:
    """Whether ``fit`` has validation data from any source, without building a loader."""
    if trainer.val_dataloaders is not None:
        return True
    source = trainer.fit_loop.epoch_loop.val_loop._data_source
    return source.instance is not None and source.is_defined()


def fit_train_loader(trainer: pl.Trainer) -> Any:
    """The training loader(s) of ``fit`` (from ``setup`` on): its argument, or the datamodule's or module's hook's."""
    source = trainer.fit_loop._data_source
    return source.dataloader() if source.instance is not None and source.is_defined() else None


def serve_train_loader(trainer: pl.Trainer, loader: Any) -> None:
    """Train on ``loader`` from the next load of the training data on, in place of what ``fit`` was given.

    Lightning loads it at the fit loop's start, or at once after :func:`reload_train_data`. Every rank calls it.
    """
    trainer.fit_loop._data_source.instance = loader


def reload_train_data(trainer: pl.Trainer) -> None:
    """Make the fit loop call ``train_dataloader()`` again now, at the start of an epoch.

    Lightning builds an epoch's loader *before* ``on_train_epoch_start``, and
    ``reload_dataloaders_every_n_epochs`` counts from the last reload (a resume shifts it), so a callback
    that decides at epoch start which data this epoch sees forces the rebuild itself, the way
    Lightning's own ``BatchSizeFinder`` does: drop the combined loader and set the data up again (this
    also recomputes the number of batches and the validation interval). Every rank calls it.
    """
    trainer.fit_loop._combined_loader = None
    trainer.fit_loop.setup_data()


def load_train_data(trainer: pl.Trainer) -> None:
    """Load the training loader now (from ``setup`` on), so ``num_training_batches`` is known.

    ``trainer.estimated_stepping_batches`` loads it only when ``max_epochs`` is set; with ``max_steps`` alone it
    returns ``max_steps`` and leaves the batches unknown. Lightning loads nothing under ``limit_train_batches=0``.
    """
    trainer.fit_loop.setup_data()


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """``module.eval()`` for the block, then each submodule's own train/eval flag back (frozen norms stay in eval)."""
    flags = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for sub, training in flags:
            sub.training = training


@rank_zero_only
def info(log: logging.Logger, message: str) -> None:
    """Log ``message`` on rank zero only: one line per decision, not one per process."""
    log.info(message)


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


def ddp_without_unused_parameters(trainer: pl.Trainer) -> bool:
    """Whether the Trainer runs DDP that would fail on parameters whose ``requires_grad`` changes mid-fit."""
    strategy = trainer.strategy
    return isinstance(strategy, DDPStrategy) and not getattr(strategy, "_ddp_kwargs", {}).get("find_unused_parameters")


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


def batch_input(pl_module: torch.nn.Module, batch: Any, requester: str) -> Any:
    """The input part of a batch (:func:`lightning_prune.core.model_io.split_batch`), on the module's device.

    Raises:
        ValueError: for a batch it cannot read, naming ``requester`` (the callback that reads it).
    """
    try:
        inputs = model_io.split_batch(pl_module, batch)[0]
    except ValueError as error:
        raise ValueError(f"{requester}: {error}") from None
    return model_io.to_device(inputs, pl_module.device)


def check_xy_batch(batch: Any, requester: str, fix: str) -> None:
    """Refuse anything but ``(x, y)`` batches (input tensor, then label tensor), saying what came and ``fix``.

    Raises:
        ValueError: naming ``requester``, what the first batch is, and ``fix``.
    """
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and all(isinstance(t, Tensor) for t in batch[:2]):
        return
    if isinstance(batch, dict):
        got = f"a dict with keys {sorted(map(str, batch))}"
    elif isinstance(batch, (tuple, list)):
        got = f"a {type(batch).__name__} of {[type(item).__name__ for item in batch]}"
    else:
        got = f"a {type(batch).__name__}"
    raise ValueError(
        f"{requester} needs (x, y) validation batches (a tuple or list: input tensor, then label tensor); "
        f"the first validation batch is {got}. {fix}"
    )
