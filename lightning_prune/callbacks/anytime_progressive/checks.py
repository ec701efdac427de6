"""AnytimeProgressivePruning's fit-start refusals: the Trainer, its data and its callbacks must suit the method."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl

from lightning_prune.callbacks._contract import check_training_budget, warn_untrained_start
from lightning_prune.callbacks._trainer import fit_train_loader, validation_loader
from lightning_prune.callbacks.anytime_progressive.metrics import batch_limit
from lightning_prune.callbacks.protocol import pruning_listeners
from lightning_prune.core.masks import SCOPES
from lightning_prune.core.schedules import MEGABATCH_SCHEDULES, megabatch_sparsities
from lightning_prune.core.selection import validate_selector
from lightning_prune.core.validate import check_choice, check_fraction, check_int
from lightning_prune.data.megabatch import MegabatchDataModule, check_replay

NAME = "AnytimeProgressivePruning"


def validate_arguments(cb: Any) -> list[float]:
    """Check every constructor argument of APP ``cb``; return the per-megabatch sparsities."""
    check_int("num_megabatches", cb.num_megabatches, low=1)
    check_int("epochs_per_megabatch", cb.epochs_per_megabatch, low=1)
    check_int("seed", cb.seed, low=0)
    check_fraction("target_sparsity", cb.target_sparsity, closed_low=True)
    check_fraction("snip_fraction", cb.snip_fraction, closed_high=True)
    check_fraction("holdout_fraction", cb.holdout_fraction, closed_low=True)
    check_choice("schedule", cb.schedule, list(MEGABATCH_SCHEDULES))
    check_choice("scope", cb.scope, SCOPES)
    check_replay(cb.replay, cb.replay_fraction)
    validate_selector(cb.include_types, cb.include_names, cb.exclude_names)
    for name in ("restore_best", "restart_lr"):
        if not isinstance(getattr(cb, name), bool):
            raise ValueError(f"{name} must be True or False, got {getattr(cb, name)!r}")
    if cb.restore_best and not cb.holdout_fraction:
        raise ValueError(
            "restore_best=True picks each megabatch's best epoch on its held-out samples and needs "
            f"holdout_fraction > 0 (the paper: 0.1), got holdout_fraction={cb.holdout_fraction!r}"
        )
    return megabatch_sparsities(cb.schedule, cb.target_sparsity, cb.num_megabatches)


def megabatch_data(trainer: pl.Trainer, num_megabatches: int, seed: int) -> tuple[MegabatchDataModule, bool]:
    """The megabatches to train on, and whether they are a split of the user's own training loader.

    The Trainer's data module when it is a :class:`MegabatchDataModule` (of ``num_megabatches`` parts);
    else the training loader ``fit`` was given (its argument, or a data module's or the model's) split into
    ``num_megabatches`` parts seeded by ``seed`` (:meth:`MegabatchDataModule.from_loaders`).

    Raises:
        ValueError: for another number of megabatches, or training data that cannot be split (the fix named).
    """
    data = trainer.datamodule
    if not isinstance(data, MegabatchDataModule):
        split = MegabatchDataModule.from_loaders(
            fit_train_loader(trainer), validation_loader(trainer), num_megabatches, seed, NAME
        )
        split.trainer = trainer  # its train_dataloader() reads the epoch, the world size and the rank
        return split, True
    if data.num_megabatches != num_megabatches:
        raise ValueError(
            f"num_megabatches={num_megabatches} differs from the data module's num_megabatches={data.num_megabatches}"
        )
    return data, False


def refuse_listeners(trainer: pl.Trainer) -> None:
    """APP has no fine-tune phase: an ICE callback beside it would silently do nothing, so refuse it."""
    listeners = [type(cb).__name__ for cb in pruning_listeners(trainer) if cb.acts_on_steps]
    if listeners:
        raise ValueError(
            f"AnytimeProgressivePruning does not work with Trainer(callbacks=[..., {', '.join(listeners)}]): it trains "
            "every epoch and has no fine-tune for a pruning listener to skip, freeze or set a rate for; remove them, "
            "or use them with a step-wise pruner such as IterativePruning"
        )


def check_budget(
    trainer: pl.Trainer,
    data: MegabatchDataModule,
    remaining: list[tuple[int, int]],
    what: str,
    replay: str,
    fraction: float,
) -> None:
    """Refuse a Trainer that stops before the ``remaining`` megabatch epochs (``what``, in words) are trained.

    Epochs are checked by :func:`check_training_budget` (empty data too); ``max_steps`` here, per megabatch:
    with replay a later megabatch takes more optimizer steps per epoch than the first.

    Raises:
        ValueError: naming the Trainer's limits and what the schedule needs.
    """
    epochs = sum(count for _, count in remaining)
    check_training_budget(trainer, NAME, trainer.current_epoch + epochs, what)
    if trainer.fast_dev_run or trainer.max_steps in (None, -1):
        return
    needed = trainer.global_step + sum(
        count * megabatch_steps(trainer, data, t, replay, fraction) for t, count in remaining
    )
    if trainer.max_steps < needed:
        raise ValueError(
            f"{NAME} needs {needed} optimizer steps ({what}; each megabatch's epochs take as many steps as its data, "
            f"replay included, holds batches), but Trainer(max_steps={trainer.max_steps}) stops before; raise "
            "max_steps or shorten the schedule"
        )


def megabatch_steps(
    trainer: pl.Trainer, data: MegabatchDataModule, megabatch: int, replay: str, fraction: float
) -> int:
    """Optimizer steps of one epoch on ``megabatch``'s training data on each rank, under ``limit_train_batches``."""
    samples = math.ceil(len(data.train_indices(megabatch, replay, fraction)) / trainer.world_size)
    full = samples // data.batch_size if data.drop_last else math.ceil(samples / data.batch_size)
    batches = batch_limit(trainer.limit_train_batches, full)
    return math.ceil(batches / trainer.accumulate_grad_batches)


def warn_untrained(trainer: pl.Trainer, cb: Any) -> None:
    """Warn, before any step, when the first megabatch's SNIP would score an untrained model (from scratch).

    APP prunes at every megabatch's start, the first at the fit's first step: from random weights, SNIP scores
    noise there and every later prune follows a few epochs on part of the data, so a short from-scratch run ends
    far below plain training (2 megabatches x 2 epochs on the zoo's digits: 3 to 53 pt, worst on transformers,
    whose query/key projections a global SNIP ranking empties early in training).
    """
    if cb.pruning_state.step > 0 or cb.sparsities[0] == 0:
        return
    due = f"SNIP prunes {cb.sparsities[0]:.0%} of the selected weights at the first megabatch, before any training step"
    risk = "SNIP scores random weights"
    if cb.num_megabatches > 1:
        first = cb.epochs_per_megabatch * megabatch_steps(trainer, cb._data, 0, cb.replay, cb.replay_fraction)
        risk += (
            f", and the next prune (to {cb.sparsities[1]:.0%}) comes after {cb.epochs_per_megabatch} epochs on "
            f"megabatch 1 of {cb.num_megabatches} alone ({first} optimizer steps): with few epochs per megabatch "
            "the run ends far below plain training (the paper gives each megabatch 5 or more)"
        )
    fix = (
        "Train the model first (a plain fit, then this one), give the schedule more of the run (more "
        "epochs_per_megabatch, or num_megabatches=1: one prune, then every epoch on all the data; on attention "
        "models also scope='layer', which keeps SNIP from emptying the query/key projections)"
    )
    warn_untrained_start(trainer, NAME, due, risk, fix)
