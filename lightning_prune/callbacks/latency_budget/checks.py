"""Argument, Trainer and budget checks of :class:`~lightning_prune.callbacks.latency_budget.LatencyBudgetPruning`."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn

from lightning_prune.callbacks._contract import check_training_budget
from lightning_prune.callbacks._trainer import check_spawn_reload
from lightning_prune.core.devices import check_device, resolve_device
from lightning_prune.core.latency_budget.plan import VALUES
from lightning_prune.core.selection import DEFAULT_TYPES, validate_selector
from lightning_prune.core.validate import check_fraction, check_int, check_output_dir, check_output_file, is_number

# A budget asking more than this share of what removing channels can save at all is warned about at fit start.
DEEP_CUT = 0.5


def check_arguments(cb: Any) -> None:
    """Validate the constructor arguments stored on ``cb`` (the timing ones are checked by its meter).

    Raises:
        ValueError: naming the argument, its value and what is allowed.
    """
    fraction, budget_ms = cb.budget_fraction, cb.latency_budget_ms
    if (fraction is None) == (budget_ms is None):
        raise ValueError(
            f"give exactly one of budget_fraction and latency_budget_ms, got budget_fraction={fraction}, "
            f"latency_budget_ms={budget_ms}"
        )
    if fraction is not None:
        check_fraction("budget_fraction", fraction)
    if budget_ms is not None and not (is_number(budget_ms) and budget_ms > 0):
        raise ValueError(f"latency_budget_ms must be a number > 0, got {budget_ms!r}")
    for name, low in [("num_steps", 1), ("finetune_epochs", 0), ("warmup_epochs", 0)]:
        check_int(name, getattr(cb, name), low)
    check_int("round_to", cb.round_to, 1, optional=True)
    for name, low in [("min_channels", 1), ("batch_size", 1), ("rounds", 1), ("max_corrections", 0)]:
        check_int(name, getattr(cb, name), low)
    for name, low in [("resolution", 10), ("repeats", 3), ("lut_repeats", 3)]:
        check_int(name, getattr(cb, name), low)
    check_int("threads", cb.threads, 1, optional=True)
    for name in ("channels_last", "stop_when_done"):
        if not isinstance(getattr(cb, name), bool):
            raise ValueError(f"{name} must be true or false, got {getattr(cb, name)!r}")
    check_fraction("tolerance", cb.tolerance, closed_low=True)
    if cb.value not in VALUES:
        raise ValueError(f"value must be one of {list(VALUES)}, got {cb.value!r}")
    check_device(cb.device)
    validate_selector(DEFAULT_TYPES, None, cb.exclude_names)


def check_paths(cb: Any) -> None:
    """``export_dir`` and ``lut_path`` refused now when they cannot be written, stored with ``~`` expanded."""
    cb.export_dir = check_output_dir("export_dir", cb.export_dir)
    cb.lut_path = check_output_file("lut_path", cb.lut_path)


def check_trainer(cb: Any, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
    """Fail at setup on a Trainer or device this run cannot work with.

    Raises:
        ValueError: under a spawn launcher without ``resize_on_load``, for a CUDA ``device`` torch cannot
            see, or a Trainer that cannot train the warm-up and every step's fine-tune (or has no batches).
    """
    check_spawn_reload(trainer, pl_module, "LatencyBudgetPruning")
    resolve_device(cb.device, pl_module)
    check_training_budget(trainer, "LatencyBudgetPruning", *epochs_needed(cb, trainer))


def epochs_needed(cb: Any, trainer: pl.Trainer) -> tuple[int, str]:
    """Training epochs this fit needs to finish the schedule (what is left of it in a second fit), and why.

    ``warmup_epochs`` + ``num_steps`` x ``finetune_epochs`` (at least one epoch); after a step, the rest of
    its fine-tune and the steps left; once done, one (the pruned model trains on).
    """
    state, finetune = cb.pruning_state, cb.finetune_epochs
    if state.phase == "done":
        return 1, "the schedule finished in an earlier fit; training goes on"
    if state.step == 0:
        return cb.warmup_epochs + max(1, cb.num_steps * finetune), (
            f"warmup_epochs={cb.warmup_epochs} + num_steps={cb.num_steps} x finetune_epochs={finetune}"
        )
    left = cb.num_steps - state.step
    until_next = max(0, state.last_step_epoch + finetune - trainer.current_epoch)
    return max(1, until_next + left * finetune), (
        f"{until_next} fine-tune epochs of step {state.step} left + {left} steps x finetune_epochs={finetune}"
    )


def check_budget(cb: Any, budget_ms: float, dense_ms: float, smallest_ms: float, where: str) -> None:
    """Fail on a budget not below the dense latency, or below what the smallest allowed network measures."""
    if budget_ms >= dense_ms:
        raise ValueError(
            f"latency_budget_ms={budget_ms:.4g} is not below the dense model's measured latency "
            f"{dense_ms:.4g} ms {where}: nothing to prune for"
        )
    if smallest_ms > budget_ms:
        round_to = cb._calibration.get("round_to", cb.round_to)
        kept = cb._calibration.get("attention_kept") or []
        whole = (
            f"; attention kept whole: {', '.join(kept)} (heads are removed only where q/k/v projections and a "
            "head size attribute are found, as in Hugging Face and timm; nn.MultiheadAttention ties its width to the "
            "residual's)"
            if kept
            else ""
        )
        raise ValueError(
            f"the latency budget {budget_ms:.4g} ms is unreachable: the smallest network allowed (min_channels="
            f"{cb.min_channels}, round_to={round_to}) measures {smallest_ms:.4g} ms {where} "
            f"(dense: {dense_ms:.4g} ms){whole}; raise the budget or lower min_channels"
        )


def deep_cut_warning(budget_ms: float, dense_ms: float, smallest_ms: float, where: str) -> str | None:
    """The warning for a budget that only a network near the smallest allowed one meets, or ``None``.

    Where most of a model's latency does not shrink with its channels (dispatch, tiny feature maps, attention
    kept whole), a modest budget removes most channels: on the zoo's depthwise CNN at batch 64 the smallest
    network measures 0.68 of dense, a 0.8 budget asks 62 % of what channels can save, and the half-width
    network that meets it ends 10 pt below the dense one trained as long. Said before training, with the
    budget that would ask half.

    Example::

        >>> deep_cut_warning(0.8, 1.0, 0.68, "on cpu at batch 64")[:60]
        'LatencyBudgetPruning: the latency budget 0.8 ms asks for 62%'
        >>> deep_cut_warning(0.8, 1.0, 0.5, "on cpu at batch 64") is None
        True
    """
    removable = dense_ms - smallest_ms
    share = (dense_ms - budget_ms) / removable if removable > 0 else 1.0
    if share <= DEEP_CUT:
        return None
    half = dense_ms - DEEP_CUT * removable
    return (
        f"LatencyBudgetPruning: the latency budget {budget_ms:.4g} ms asks for {share:.0%} of what removing "
        f"channels can save: the smallest network allowed still measures {smallest_ms / dense_ms:.2f} of the dense "
        f"model's {dense_ms:.4g} ms {where} (fixed costs that do not shrink with channels), so meeting it removes "
        f"most channels and can cost far more accuracy than the speed-up suggests; a budget of at least "
        f"{half:.4g} ms ({half / dense_ms:.2f} of dense) or a larger batch_size asks for half"
    )


def warn_deep_cut(budget_ms: float, dense_ms: float, smallest_ms: float, where: str) -> None:
    message = deep_cut_warning(budget_ms, dense_ms, smallest_ms, where)
    if message is not None:
        rank_zero_warn(message)
