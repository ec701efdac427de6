"""Argument and Trainer checks of :class:`~lightning_prune.callbacks.soup.InstantSoupPruning`."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl

from lightning_prune.callbacks._ingredients import LOSSES
from lightning_prune.core.masks import SCOPES
from lightning_prune.core.scores import SCORES
from lightning_prune.core.selection import validate_selector
from lightning_prune.core.soup import COMBINE_RULES
from lightning_prune.core.validate import check_positive_list, is_int, is_number

VARIANTS = ("isp", "ims")


def check_arguments(cb: Any) -> None:
    """Validate the constructor arguments stored on ``cb``.

    Raises:
        ValueError: naming the argument, its value and what is allowed.
    """
    for name, value, allowed in [
        ("variant", cb.variant, VARIANTS),
        ("combine", cb.combine, COMBINE_RULES),
        ("loss", cb.loss, tuple(LOSSES)),
        ("importance", cb.importance, tuple(SCORES)),
        ("scope", cb.scope, SCOPES),
    ]:
        if value not in allowed:
            raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    validate_selector(cb.include_types, cb.include_names, cb.exclude_names)
    _check_sparsities(cb)
    if not is_int(cb.num_ingredients) or cb.num_ingredients < 1:
        raise ValueError(
            f"num_ingredients must be an integer >= 1, got {cb.num_ingredients!r}; for the paper's no-denoiser "
            "ablation (N = 0) keep num_ingredients=1 and set lookahead_steps=0"
        )
    for name in ("lookahead_steps", "warmup_steps", "seed"):
        if not is_int(getattr(cb, name)) or getattr(cb, name) < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {getattr(cb, name)!r}")
    if cb.calibration_steps is not None and (not is_int(cb.calibration_steps) or cb.calibration_steps < 1):
        raise ValueError(f"calibration_steps must be an integer >= 1 or None, got {cb.calibration_steps!r}")
    check_positive_list("lr_multipliers", cb.lr_multipliers)
    check_positive_list("weight_decay_multipliers", cb.weight_decay_multipliers, strictly=False)


def _check_sparsities(cb: Any) -> None:
    if cb.variant == "isp":
        if cb.target_sparsity is None or not 0 < cb.target_sparsity < 1:
            raise ValueError(f"target_sparsity must be in (0, 1) for variant='isp', got {cb.target_sparsity!r}")
        if not 0 < cb.step_ratio < 1:
            raise ValueError(f"step_ratio must be in (0, 1), got {cb.step_ratio!r}")
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
