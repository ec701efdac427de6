"""The end-of-run contract of :class:`~lightning_prune.DenseUnitPruning`: its budget, its checks, its summary.

What the Trainer must give the schedule (:func:`epochs_needed`), what is checked at fit end before the
export (finite weights, the parameter count it reports against the model's: :func:`check_at_fit_end`) and
the ``odf2nna`` section of ``summary.json``, with the measured figures (:func:`export`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl

from lightning_prune.callbacks._contract import refuse_nonfinite, verify_report
from lightning_prune.callbacks._trainer import final_metrics, info, output_dir
from lightning_prune.core.export import export_pruned, write_summary
from lightning_prune.core.odf2nna import HiddenLayer, layer_widths
from lightning_prune.core.structured import count_parameters

log = logging.getLogger(__name__)
REQUESTER = "DenseUnitPruning"


def epochs_needed(cb: Any, trainer: pl.Trainer) -> tuple[int, str]:
    """Training epochs this fit needs to finish the schedule (what is left of it in a second fit), and why.

    Before the rebuild: until it (``wide_epochs``, or the soonest plateau) plus ``retrain_epochs`` (one
    when retraining runs to ``max_epochs``); after it, the retraining epochs left; once done, one.
    """
    state, retrain = cb.pruning_state, cb.retrain_epochs
    if state.phase == "done":
        return 1, "the rebuild and retrain_epochs finished in an earlier fit; training goes on"
    if cb.rebuilt:
        if retrain is None:
            return 1, "rebuilt in an earlier fit; retraining until max_epochs"
        trained = trainer.current_epoch - state.last_step_epoch
        return max(1, retrain - trained), f"retrain_epochs={retrain}, {trained} trained in an earlier fit"
    before, why = cb._trigger.epochs_before_rebuild(trainer)
    retraining = f"retrain_epochs={retrain}" if retrain is not None else "at least 1 retraining epoch"
    return before + (retrain or 1), f"{why} + {retraining}"


def check_at_fit_end(cb: Any, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """Before any export: finite weights, and the parameter count and reduction it reports measured on the model.

    Returns the summary's ``measured``/``finished`` (``shortfall``) block; warns when the rebuild or the
    retraining did not happen.

    Raises:
        FloatingPointError: for weights that are not finite.
        RuntimeError: when the model's parameter count differs from the one reported.
    """
    refuse_nonfinite(pl_module, REQUESTER, "at fit end")
    state = cb.pruning_state
    params = count_parameters(pl_module)
    reported = {"params": cb.params_after if cb.rebuilt else cb.params_before, "sparsity": state.sparsity}
    measured = {"params": params, "sparsity": 1.0 - params / cb.params_before if cb.params_before else 0.0}
    finished = cb.rebuilt and (cb.retrain_epochs is None or state.phase == "done")
    if not cb.rebuilt:
        target = f"the rebuild (wide_epochs={cb.wide_epochs}, patience={cb.patience})"
    else:
        target = f"retrain_epochs={cb.retrain_epochs} after the rebuild"
    return verify_report(trainer, REQUESTER, reported, measured, finished, target)


def log_skipped(layers: Sequence[HiddenLayer], skipped: Mapping[str, str]) -> None:
    """At fit start, one line: which Linear layers' hidden units are pruned, which are left alone and why."""
    if not skipped:
        return
    by_reason: dict[str, list[str]] = {}
    for name, why in skipped.items():
        by_reason.setdefault(why, []).append(name)
    reasons = "; ".join(f"{', '.join(names)}: {why}" for why, names in by_reason.items())
    info(log, f"{REQUESTER} prunes the hidden units of {[layer.name for layer in layers]}; skipped: {reasons}")


def export(cb: Any, trainer: pl.Trainer, pl_module: pl.LightningModule, checked: dict[str, Any]) -> None:
    """``pruned_model.pt`` and the ``odf2nna`` section of ``summary.json`` (parameters as measured now)."""
    state, directory = cb.pruning_state, output_dir(trainer, cb.export_dir)
    model_path = export_pruned(pl_module, directory / "pruned_model.pt")
    params = checked["measured"]["params"]
    summary = {
        "epsilon": cb.epsilon,
        "statistic": cb.statistic,
        "rebuilt": cb.rebuilt,
        "rebuild_epoch": state.history[0]["epoch"] if state.history else None,
        "params_before": cb.params_before,
        "params_after": params,
        "params": params,
        "param_reduction": checked["measured"]["sparsity"],
        "sparsity": checked["measured"]["sparsity"],
        "widths_before": cb.widths_before,
        "widths_after": layer_widths(pl_module, cb._layers),
        "skipped_layers": cb.skipped_layers,
        "hf_configs": cb.hf_configs,
        "time_s": state.time_s,
        "history": state.history,
        "metrics": final_metrics(trainer, "odf2nna/width"),
        "exported_model": str(model_path),
        **checked,
    }
    write_summary(directory / "summary.json", "odf2nna", summary)
    info(log, f"exported {model_path} ({params} parameters)")
