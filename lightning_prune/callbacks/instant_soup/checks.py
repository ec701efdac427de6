"""Argument and Trainer checks of :class:`~lightning_prune.callbacks.instant_soup.InstantSoupPruning`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl

from lightning_prune.callbacks._contract import check_training_budget, warn_untrained_start
from lightning_prune.callbacks.instant_soup.ingredients import LOSSES
from lightning_prune.core.instant_soup import COMBINE_RULES
from lightning_prune.core.masks import SCOPES
from lightning_prune.core.scores import SCORES
from lightning_prune.core.selection import validate_selector
from lightning_prune.core.validate import check_choice, check_fraction, check_int, check_positive_list, is_number

NAME = "InstantSoupPruning"
VARIANTS = ("isp", "ims")


def listed(value: Any) -> Any:
    """YAML lists arrive as ListConfig or tuples: store a list, but leave a string (or scalar) for validation."""
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value


def check_arguments(cb: Any) -> None:
    """Validate the constructor arguments stored on ``cb``.

    Raises:
        ValueError: naming the argument, its value and what is allowed.
    """
    check_choice("variant", cb.variant, VARIANTS)
    check_choice("combine", cb.combine, COMBINE_RULES)
    if not isinstance(cb.trim_every_round, bool):
        raise ValueError(f"trim_every_round must be True or False, got {cb.trim_every_round!r}")
    check_choice("loss", cb.loss, tuple(LOSSES))
    check_choice("importance", cb.importance, tuple(SCORES))
    check_choice("scope", cb.scope, SCOPES)
    validate_selector(cb.include_types, cb.include_names, cb.exclude_names)
    _check_sparsities(cb)
    try:
        check_int("num_ingredients", cb.num_ingredients, low=1)
    except ValueError as err:
        raise ValueError(
            f"{err}; for the paper's no-denoiser ablation (N = 0) keep num_ingredients=1 and set lookahead_steps=0"
        ) from None
    for name in ("lookahead_steps", "warmup_steps", "seed"):
        check_int(name, getattr(cb, name), low=0)
    check_int("calibration_steps", cb.calibration_steps, low=1, optional=True)
    check_positive_list("lr_multipliers", cb.lr_multipliers)
    check_positive_list("weight_decay_multipliers", cb.weight_decay_multipliers, strictly=False)


def _check_sparsities(cb: Any) -> None:
    if cb.variant == "isp":
        if cb.target_sparsity is None:
            raise ValueError("target_sparsity must be in (0, 1) for variant='isp', got None")
        check_fraction("target_sparsity", cb.target_sparsity)
        check_fraction("step_ratio", cb.step_ratio)
    elif cb.target_sparsity is not None:
        raise ValueError(
            f"target_sparsity must be None for variant='ims' (the model stays dense; copy_sparsities sets the "
            f"ingredients' sparsity), got {cb.target_sparsity!r}"
        )
    if (
        not isinstance(cb.copy_sparsities, list)
        or not cb.copy_sparsities
        or not all(is_number(s) and 0 <= s < 1 for s in cb.copy_sparsities)
    ):
        raise ValueError(f"copy_sparsities must be a non-empty list of fractions in [0, 1), got {cb.copy_sparsities!r}")


def check_trainer(trainer: pl.Trainer) -> None:
    """Refuse a Trainer without exactly one optimizer: ingredients copy the one there is.

    Raises:
        ValueError: naming the number of optimizers.
    """
    if len(trainer.optimizers) != 1:
        raise ValueError(f"InstantSoupPruning needs exactly one optimizer, got {len(trainer.optimizers)}")


def check_rounds(cb: Any, trainer: pl.Trainer, continued: bool) -> None:
    """At setup: refuse training data without batches, fix ``t`` from the data, and refuse a Trainer too short.

    :func:`check_training_budget` loads the data and refuses an empty one (no whole epochs are required: the
    rounds run at optimizer steps, checked by :func:`check_step_budget` to the step). A ``continued`` fit
    needs only the rounds left, ``cb._step_offset`` steps off the schedule.
    """
    check_training_budget(trainer, NAME, 0, "its rounds run at optimizer steps, checked next")
    cb._calibration = cb._calibration or cb.calibration_steps or default_calibration(trainer)
    state, offset = cb.pruning_state, cb._step_offset if continued else 0
    first = state.step if continued else 0
    if first < state.num_steps and cb._calibration is not None and not trainer.fast_dev_run:
        check_step_budget(trainer, cb._due_step(state.num_steps - 1) + offset, cb._due_step(first) + offset)


def check_step_budget(trainer: pl.Trainer, last_round_step: int, first_round_step: int) -> None:
    """Refuse a Trainer that stops before the last round (the target would silently not be reached).

    Raises:
        ValueError: naming the step the last round needs and the Trainer's limits.
    """
    total = trainer.estimated_stepping_batches
    if not math.isfinite(total) or last_round_step < total:
        return
    raise ValueError(
        f"{NAME}'s last round runs at optimizer step {last_round_step} (first at {first_round_step}), but "
        f"Trainer(max_epochs={trainer.max_epochs}, max_steps={trainer.max_steps}) runs only {int(total)} optimizer "
        "steps; raise max_epochs/max_steps or lower calibration_steps, warmup_steps or the number of rounds "
        "(step_ratio, target_sparsity)"
    )


def default_calibration(trainer: pl.Trainer) -> int | None:
    """The paper's t: 10 % of an epoch's optimizer steps (at least 1); ``None`` while the data is not loaded."""
    batches = trainer.num_training_batches
    if not batches or not math.isfinite(batches):
        return None
    return max(1, math.ceil(0.1 * (batches // trainer.accumulate_grad_batches)))


def warn_untrained(trainer: pl.Trainer, cb: Any) -> None:
    """Warn, before any step, when ISP's rounds would prune a model that has barely trained (from scratch).

    The defaults suit a pre-trained model (the paper's): no warm-up, rounds every few steps, so the whole
    schedule runs within the first tenths of an epoch. From random weights every round's magnitude ranking is
    that of a network a few steps old (the zoo's depthwise CNN: 7 pt below plain training; MobileNetV3: 34 pt).
    """
    if cb.variant != "isp" or cb.warmup_steps or cb.pruning_state.step > 0 or cb._calibration is None:
        return
    last = cb._due_step(cb.pruning_state.num_steps - 1)
    due = (
        f"its {cb.pruning_state.num_steps} pruning rounds run from optimizer step {cb._due_step(0)} to {last} "
        f"(warmup_steps=0, calibration_steps={cb._calibration})"
    )
    risk = "they rank by magnitude the weights of a network a few steps old"
    fix = "Set warmup_steps=N to train N dense optimizer steps first (from scratch: about half the run's steps)"
    warn_untrained_start(trainer, NAME, due, risk, fix)
