"""The end-of-run contract every pruner keeps: what it reports is what the weights are, or the run says why.

A pruning run's output is deployed, so a summary that says 60 % while the weights are 4 % zero (or all NaN)
is the worst failure it can have. Every pruner calls, in this order:

- at ``setup``: :func:`refuse_other_pruners` (one pruner per Trainer), :func:`check_refit` (a second ``fit``
  with the same instance continues on the same model or is refused) and :func:`check_training_budget`
  (the Trainer can run the schedule at all: ``max_steps``, ``max_epochs``, ``limit_train_batches``, empty
  loaders);
- after every step and at fit end, before anything is exported: :func:`refuse_nonfinite` (no NaN/inf
  weight reaches an export, naming the layer and the moment);
- at fit end: :func:`verify_report`, which measures what the pruner reports (sparsity, parameter count),
  fails when the weights disagree (masks not held), warns naming why when the schedule did not finish
  (the Trainer stopped at step N, training was interrupted), and returns the measured figures for the
  summary.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from lightning_prune.callbacks._trainer import load_train_data
from lightning_prune.callbacks.protocol import PruningCallback, PruningState

# Reported and measured sparsity may differ by rounding of per-layer keep counts, never by more.
SPARSITY_TOLERANCE = 1e-3
OWN_METRICS = ("prune/", "prune_layer/", "ice/")  # what the callbacks log themselves: never a user's monitor


def refuse_other_pruners(trainer: pl.Trainer, me: PruningCallback) -> None:
    """One pruner per Trainer: two would each stop training when *their* schedule ends and overwrite each other.

    Also refuses a sharded strategy (:func:`refuse_sharded`): both are about what this fit can hold.

    Raises:
        ValueError: naming both pruners and what to do instead.
    """
    refuse_sharded(trainer.strategy, type(me).__name__)
    others = [cb for cb in trainer.callbacks if isinstance(cb, PruningCallback) and cb is not me]
    if others:
        names = ", ".join(f"{type(cb).__name__} ({cb.state_key})" for cb in [me, *others])
        raise ValueError(
            f"Trainer(callbacks=...) holds more than one pruning callback: {names}. Each owns the run (its steps "
            "stop training when its schedule ends, and it writes the pruned model), so they cannot share one fit: "
            "give one pruner a selection covering all layers (include_types / include_names / exclude_names), or "
            "prune in two fits one after the other, one pruner each."
        )


def refuse_sharded(strategy: object, requester: str) -> None:
    """Refuse FSDP, ModelParallel and DeepSpeed: their parameters are shards, not the layers a pruner addresses.

    Masks are held by parameter name and shrinks replace whole layers; on a sharded model the first would
    touch flat shards and the second cannot run. Lightning 2.6 runs FSDP on GPUs only (``Trainer(strategy=
    "fsdp", accelerator="cpu")`` raises), so this suite could not test any pruner under it: refusing is the
    honest answer until it can.

    Raises:
        ValueError: naming the strategy and what to do instead.
    """
    name = type(strategy).__name__
    if isinstance(strategy, (FSDPStrategy, ModelParallelStrategy)) or name == "DeepSpeedStrategy":
        raise ValueError(
            f"{requester} does not support strategy={name}: a sharded model's parameters are flat shards, not "
            "the layers a pruner masks or shrinks. Prune with strategy='ddp' (or one device), then load the "
            "pruned model (lightning_prune.load_model) and fine-tune it under FSDP."
        )


def check_refit(me: PruningCallback, pl_module: nn.Module) -> bool:
    """Whether this ``fit`` continues an earlier one of the same callback instance on the same model.

    The callback keeps its masks, steps and architecture between fits (nothing regrows); on a different
    model those would be meaningless.

    Raises:
        ValueError: when the instance already pruned another model.
    """
    previous = getattr(me, "_fitted_module", None)
    model = previous() if previous is not None else None
    if previous is not None and model is not pl_module:
        raise ValueError(
            f"this {type(me).__name__} instance already pruned another model in an earlier fit (its masks and "
            "steps belong to that model); create a new callback for each model you prune"
        )
    me._fitted_module = FittedModel(pl_module)
    return model is pl_module


def count_epochs_on(state: PruningState, epochs_seen: int, trainer: pl.Trainer) -> None:
    """In a second ``fit`` (after :func:`check_refit`): the schedule's epochs go on from the first fit's.

    A new Trainer counts epochs from 0 again; ``epochs_seen`` (epochs the last fit trained) moves
    ``state.last_step_epoch`` back by as many, so a fine-tune in progress keeps its count. The same Trainer
    (its epochs go on) and a run before any step need nothing.
    """
    shift = epochs_seen - trainer.current_epoch
    if state.step > 0 and shift > 0:
        state.last_step_epoch -= shift


class FittedModel:
    """A weak reference to the model a callback fitted that pickles as none at all.

    The Trainer (``ddp_spawn``), a data module's ``trainer`` attribute or ``copy.deepcopy`` copy a callback; a
    copy on another process cannot hold the same model, so it starts as a callback that has not fitted yet.
    """

    def __init__(self, module: nn.Module) -> None:
        self.ref = weakref.ref(module)

    def __call__(self) -> nn.Module | None:
        return self.ref()

    def __reduce__(self) -> tuple[Any, tuple]:
        return _no_model, ()


def _no_model() -> None:
    return None


def check_training_budget(trainer: pl.Trainer, requester: str, epochs_needed: int, what: str) -> None:
    """Refuse a Trainer that cannot run the schedule: no training batches, or fewer steps than its epochs need.

    ``epochs_needed`` counts the training epochs from the start of ``fit`` to the end of the schedule;
    ``what`` says how they add up (``"warmup_epochs=3 + 5 steps x finetune_epochs=1"``).

    Raises:
        ValueError: naming the Trainer's limits and how many the schedule needs.
    """
    if trainer.fast_dev_run or trainer.sanity_checking:
        return
    if trainer.limit_train_batches != 0 and trainer.train_dataloader is None:
        # At setup nothing is loaded, and estimated_stepping_batches loads nothing when max_epochs is -1
        # (Trainer(max_steps=N) alone) nor with limit_train_batches=0 (then the loop skips training).
        load_train_data(trainer)
    total = trainer.estimated_stepping_batches
    batches = trainer.num_training_batches
    if trainer.limit_train_batches == 0 or not batches or total == 0:
        raise ValueError(
            f"{requester}: the training data yields no batches (limit_train_batches={trainer.limit_train_batches}, "
            "or an empty training set), so nothing would be trained or pruned; give it at least one batch"
        )
    if not math.isfinite(total) or not math.isfinite(batches):
        return
    per_epoch = math.ceil(batches / trainer.accumulate_grad_batches)
    needed = epochs_needed * per_epoch
    if total < needed:
        raise ValueError(
            f"{requester} needs {epochs_needed} training epochs ({what}) = {needed} optimizer steps of {per_epoch} per "
            f"epoch, but Trainer(max_epochs={trainer.max_epochs}, max_steps={trainer.max_steps}) stops after "
            f"{int(total)}; raise max_epochs/max_steps or shorten the schedule"
        )


def nonfinite_parameters(module: nn.Module) -> list[str]:
    """Names of the parameters and floating-point buffers holding NaN or inf."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return [name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def refuse_nonfinite(module: nn.Module, requester: str, when: str) -> None:
    """No NaN/inf model is exported as pruned (NaN x 0 is NaN: masks cannot zero it).

    Raises:
        FloatingPointError: naming ``when`` and the first layers holding non-finite values.
    """
    bad = nonfinite_parameters(module)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise FloatingPointError(
            f"{requester}: weights are not finite {when} ({shown}); nothing is exported. The loss diverged: "
            "lower the learning rate, clip gradients (Trainer(gradient_clip_val=...)) or resume from an earlier "
            "checkpoint"
        )


def measured_sparsity(module: nn.Module, names: list[str], original: Mapping[str, int] | None = None) -> float:
    """Fraction of the selected weights that are exactly zero, or gone when ``original`` gives their dense sizes."""
    zeros = total = 0
    for name in names:
        try:
            tensor = module.get_parameter(name)
        except AttributeError:
            tensor = None
        size = tensor.numel() if tensor is not None else 0
        dense = original.get(name, size) if original else size
        zeros += (int((tensor == 0).sum()) if tensor is not None else 0) + dense - size
        total += dense
    return zeros / total if total else 0.0


def shortfall_reason(trainer: pl.Trainer) -> str:
    """Why a schedule may not have finished, in the Trainer's own terms."""
    if trainer.interrupted:
        return "training was interrupted"
    if trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps:
        return f"the Trainer stopped at max_steps={trainer.max_steps}"
    if trainer.max_epochs not in (None, -1) and trainer.current_epoch >= trainer.max_epochs:
        return f"the Trainer stopped at max_epochs={trainer.max_epochs}"
    return f"the Trainer stopped at epoch {trainer.current_epoch}, step {trainer.global_step} (early stopping?)"


def verify_report(
    trainer: pl.Trainer,
    requester: str,
    reported: Mapping[str, float],
    measured: Mapping[str, float],
    finished: bool,
    target: str,
) -> dict[str, Any]:
    """Compare what the pruner reports with what the weights are; the summary's ``measured`` block.

    ``reported`` and ``measured`` hold the same keys (``sparsity``, ``params``, ...). A disagreement beyond
    rounding means the masks were not held or the architecture changed behind the pruner's back: the run
    fails before exporting. A schedule that did not finish is a warning naming why, and the block says so.

    Raises:
        RuntimeError: naming each figure that differs, reported and measured.
    """
    differ = {
        key: (reported[key], value)
        for key, value in measured.items()
        if key in reported and not math.isclose(reported[key], value, rel_tol=0, abs_tol=_tolerance(key))
    }
    if differ:
        detail = ", ".join(f"{key}: reported {r:.6g}, measured {m:.6g}" for key, (r, m) in differ.items())
        raise RuntimeError(
            f"{requester}: the weights do not match what it reports ({detail}); the masks were not held or the "
            "model was changed outside the pruner. Nothing is exported."
        )
    block: dict[str, Any] = {"measured": dict(measured), "finished": finished}
    if not finished:
        block["shortfall"] = f"{target} not reached: {shortfall_reason(trainer)}"
        rank_zero_warn(
            f"{requester} ended before its schedule finished: {block['shortfall']}. The export and summary carry "
            f"the measured figures ({', '.join(f'{k}={v:.4g}' for k, v in measured.items())})."
        )
    return block


def _tolerance(key: str) -> float:
    return SPARSITY_TOLERANCE if "sparsity" in key else 0.5


def warn_untrained_start(trainer: pl.Trainer, requester: str, due: str, risk: str, fix: str) -> None:
    """Before a first pruning step due at global step 0: warn that an untrained net would be pruned by accident.

    ``due`` says when the step comes, ``risk`` what pruning untrained weights costs, ``fix`` how to start later.
    The model has not trained in this fit and was not resumed from a checkpoint; it may still hold trained
    weights loaded in memory (the paper pipelines do), so this warns rather than refuses.
    """
    if trainer.global_step != 0 or trainer.ckpt_path is not None:
        return
    rank_zero_warn(
        f"{requester}: {due}, at global step 0, and the model was not resumed from a checkpoint. If its weights are "
        f"untrained, {risk}. {fix}, or load trained weights before trainer.fit (then ignore this warning)."
    )


def missing_metric(trainer: pl.Trainer, requester: str, argument: str, name: str) -> str | None:
    """Why ``name`` (the value of ``argument``) is not logged, with the user's metrics and the fix; None when it is."""
    logged = sorted(m for m in trainer.callback_metrics if not m.startswith(OWN_METRICS))
    if name in logged:
        return None
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    alike = [m for m in logged if "".join(ch for ch in m.lower() if ch.isalnum()) == key]
    guess = (alike or [m for m in logged if "acc" in m.lower()] or logged or ["<a metric your module logs>"])[0]
    return (
        f"{requester}({argument}={name!r}): no metric {name!r} is logged; the logged metrics are {logged}. "
        f'Log {name!r} in your LightningModule or pass {argument}="{guess}".'
    )


def check_step_start(trainer: pl.Trainer, me: Any) -> None:
    """Before a step-wise pruner's step: warn of a first step on an untrained net, and of an unlogged monitor.

    The ``monitor`` is recorded in the history only, so a metric not logged although validation has run is
    worth one warning, not a refusal.
    """
    name, monitor = type(me).__name__, getattr(me, "monitor", None)
    if me.pruning_state.step == 0:
        due = f"its first pruning step is due before any training step (warmup_epochs={me.warmup_epochs})"
        fix = "Set warmup_epochs=N to train N dense epochs first"
        warn_untrained_start(trainer, name, due, "it prunes random weights", fix)
    problem = monitor and me._validated and not me._monitor_warned and missing_metric(trainer, name, "monitor", monitor)
    if problem:
        me._monitor_warned = True
        rank_zero_warn(f"{problem} Until then the history records no '{monitor}_before'.")
