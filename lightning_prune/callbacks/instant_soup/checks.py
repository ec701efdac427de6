"""Argument and Trainer checks of :class:`~lightning_prune.callbacks.instant_soup.InstantSoupPruning`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl

from lightning_prune.callbacks.instant_soup.ingredients import LOSSES
from lightning_prune.core.instant_soup import COMBINE_RULES
from lightning_prune.core.masks import SCOPES
from lightning_prune.core.scores import SCORES
from lightning_prune.core.selection import validate_selector
from lightning_prune.core.validate import check_choice, check_fraction, check_int, check_positive_list, is_number

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


def check_step_budget(trainer: pl.Trainer, last_round_step: int, first_round_step: int) -> None:
    """Refuse a Trainer that stops before the last round (the target would silently not be reached).

    Raises:
        ValueError: naming the step the last round needs and the steps the Trainer will run.
    """
    total = trainer.estimated_stepping_batches
    if trainer.fast_dev_run or not math.isfinite(total) or last_round_step < total:
        return
    raise ValueError(
        f"InstantSoupPruning's last round runs at optimizer step {last_round_step} (first at {first_round_step}), "
        f"but the Trainer runs only {int(total)} steps; raise max_epochs/max_steps or lower calibration_steps, "
        "warmup_steps or the number of rounds (step_ratio, target_sparsity)"
    )
