"""What :class:`~lightning_prune.callbacks.latency_budget.LatencyBudgetPruning` reports at the end of a fit."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn

from lightning_prune.callbacks._contract import refuse_nonfinite, verify_report
from lightning_prune.callbacks._trainer import example_input, final_metrics, info, output_dir
from lightning_prune.core.devices import device_name, resolve_device
from lightning_prune.core.export import export_pruned, write_summary
from lightning_prune.core.latency_budget.measure import FINAL_CHECK_CALLS, correlation
from lightning_prune.core.latency_budget.network import weight_count
from lightning_prune.core.structured import count_parameters

log = logging.getLogger(__name__)
REQUESTER = "LatencyBudgetPruning"


def final_check(cb: Any, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """Rank 0: the final side-by-side measurement judged against the budget (``tolerance`` allowed); a miss warns."""
    planner = cb._rank_zero(trainer, pl_module)
    taken = planner.measure(pl_module, example_input(trainer, pl_module), cb._budget.dense_ms, FINAL_CHECK_CALLS)
    measured, budget_ms = taken["measured_ms"], cb._budget.budget_ms
    miss = measured / budget_ms - 1.0
    final = {**taken, "met_budget": measured <= budget_ms * (1.0 + cb.tolerance), "excess": miss}
    if final["met_budget"]:
        info(log, f"final latency {measured:.3f} ms meets the budget {budget_ms:.3f} ms ({miss:+.1%})")
        original = cb._budget.original_params or count_parameters(pl_module)  # None in old checkpoints
        removed = 1.0 - count_parameters(pl_module) / original
        overshoot = overshoot_warning(measured, budget_ms, cb.tolerance, removed)
        if overshoot is not None:
            rank_zero_warn(overshoot)
    else:
        rank_zero_warn(
            f"LatencyBudgetPruning: the final measured latency {measured:.3f} ms misses the budget "
            f"{budget_ms:.3f} ms by {measured - budget_ms:.3f} ms ({miss:+.1%}; tolerance "
            f"{cb.tolerance:.0%}); pruning steps done: {cb.pruning_state.step}/{cb.num_steps}"
        )
    return final


def overshoot_warning(measured_ms: float, budget_ms: float, tolerance: float, params_removed: float) -> str | None:
    """The warning for a final latency below the budget by more than ``tolerance``, or ``None``.

    Channels removed beyond the budget's need cost accuracy and buy nothing the user asked for; on a loaded
    host a step's measurements can spread far enough for the planner to keep a plan far under its target.

    Example::

        >>> overshoot_warning(0.6, 0.8, 0.15, 0.9)[:64]
        'LatencyBudgetPruning: the final measured latency 0.600 ms is 25.'
        >>> overshoot_warning(0.75, 0.8, 0.15, 0.5) is None
        True
    """
    under = 1.0 - measured_ms / budget_ms
    if under <= tolerance:
        return None
    return (
        f"LatencyBudgetPruning: the final measured latency {measured_ms:.3f} ms is {under:.1%} under the budget "
        f"{budget_ms:.3f} ms (tolerance {tolerance:.0%}): {params_removed:.0%} of the parameters were removed, more "
        "than the budget needed, and accuracy pays for it; the steps' measurements spread more than the tolerance "
        "(a loaded host), see the summary's history: raise repeats/rounds or time on a quiet machine"
    )


def check_at_fit_end(cb: Any, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """Before any export: finite weights, and the sparsity and parameter count it reports measured on the model.

    Returns the summary's ``measured``/``finished`` (``shortfall``) block; warns when steps or the last
    fine-tune did not run.

    Raises:
        FloatingPointError: for weights that are not finite.
        RuntimeError: when the model's shapes differ from what the steps left.
    """
    refuse_nonfinite(pl_module, REQUESTER, "at fit end")
    state, budget = cb.pruning_state, cb._budget
    reported: dict[str, float] = {"sparsity": state.sparsity}
    params = state.history[-1].get("params") if state.history else budget.original_params
    if params is not None:  # not in checkpoints written before it was recorded
        reported["params"] = params
    measured = {
        "sparsity": 1.0 - weight_count(pl_module) / budget.original_weights,
        "params": count_parameters(pl_module),
    }
    target = f"the latency budget {budget.budget_ms:.4g} ms in num_steps={cb.num_steps} with their fine-tunes"
    return verify_report(trainer, REQUESTER, reported, measured, state.phase == "done", target)


def log_state(cb: Any, pl_module: pl.LightningModule) -> None:
    """Each epoch: the sparsity, the step, the budget and the latest measured latency."""
    state = cb.pruning_state
    pl_module.log("prune/sparsity", state.sparsity, on_step=False, on_epoch=True)
    pl_module.log("prune/step", float(state.step), on_step=False, on_epoch=True)
    if cb._budget.budget_ms is not None:
        pl_module.log("latency/budget_ms", cb._budget.budget_ms, on_step=False, on_epoch=True)
        latest = state.history[-1] if state.history else {"measured_ms": cb._budget.dense_ms}
        pl_module.log("latency/measured_ms", latest["measured_ms"], on_step=False, on_epoch=True)


def export(cb: Any, trainer: pl.Trainer, pl_module: pl.LightningModule, checked: dict[str, Any]) -> None:
    """Rank 0, once the weights passed :func:`check_at_fit_end`: ``pruned_model.pt`` and the summary section."""
    directory = output_dir(trainer, cb.export_dir)
    model_path = export_pruned(pl_module, directory / "pruned_model.pt")
    write_summary(directory / "summary.json", "latency_budget", summary(cb, trainer, model_path, checked))


def summary(cb: Any, trainer: pl.Trainer, model_path: Path, checked: dict[str, Any]) -> dict[str, Any]:
    """The ``latency_budget`` section of ``summary.json``: the budget, the final check, every step, measured figures."""
    history = cb.pruning_state.history
    return {
        "device": device_name(resolve_device(cb.device, trainer.lightning_module)),
        "batch_size": cb.batch_size,
        "threads": cb.threads or torch.get_num_threads(),
        "dense_ms": cb._budget.dense_ms,
        "budget_ms": cb._budget.budget_ms,
        **(cb._final or {}),
        "lut_r": correlation([r["predicted_ms"] for r in history], [r["measured_ms"] for r in history]),
        "lut_entries": len(cb._planner.table) if cb._planner is not None else None,
        "calibration": cb._calibration or None,
        "sparsity": checked["measured"]["sparsity"],
        "params": checked["measured"]["params"],
        "time_s": cb.pruning_state.time_s,
        "history": history,
        "metrics": final_metrics(trainer),
        "exported_model": str(model_path),
        **checked,
    }
