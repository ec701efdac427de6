"""Iterative pruning: prune a little, fine-tune, repeat until the target. The baseline of the suite."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch

from lightning_prune.callbacks._stepwise import StepwisePruning
from lightning_prune.callbacks._trainer import (
    broadcast,
    check_spawn_reload,
    example_input,
    final_metrics,
    info,
    output_dir,
    rebuild_after_shrink,
    resize_on_load,
)
from lightning_prune.callbacks.protocol import PruningState
from lightning_prune.core.export import export_pruned, write_summary, zero_fraction
from lightning_prune.core.masks import SCOPES, MaskSet, check_finite, masks_from_scores
from lightning_prune.core.schedules import SCHEDULES, sparsity_schedule
from lightning_prune.core.scores import SCORES
from lightning_prune.core.selection import DEFAULT_TYPES, select_parameters, validate_selector
from lightning_prune.core.structured import (
    dependency_graph,
    inner_convs,
    l1_filter_scores,
    lowest_channels,
    remove_out_channels,
)
from lightning_prune.core.validate import check_choice

log = logging.getLogger(__name__)
MODES = ("unstructured", "structured")
NONFINITE = ("raise", "skip")


class IterativePruning(StepwisePruning):
    """Prune the selected weights in steps up to a target sparsity, fine-tuning between steps.

    Two modes share one loop. ``"unstructured"``: magnitude (or LAMP) masks, global or per layer,
    following a sparsity schedule; masks are held by zeroing pruned weights after every optimizer
    step. ``"structured"``: one block per step (network order), removing ``step_ratio`` of the block's
    inner filters by L1 norm, physically, through torch-pruning (ICE-Pruning's setting, Sec. IV); the
    optimizer is rebuilt after each shrink. A step runs at the start of an epoch, after
    ``warmup_epochs`` dense epochs and then every ``finetune_epochs`` epochs; when the last step's
    fine-tune is over, training stops. Cooperating :class:`PruningListener` callbacks (ICE's gate,
    freezing, LR) may skip fine-tunes or act around them.

    Requires from your LightningModule: nothing for unstructured mode; for structured mode an
    ``example_input_array`` or an ``(x, y)`` validation batch (to trace the graph), and a
    ``configure_optimizers`` over all parameters (it is called again after each shrink).

    Args:
        target_sparsity: fraction of the selected weights zero (or removed) at the end, in (0, 1).
            Required in unstructured mode; optional in structured mode, where it stops early.
        mode: ``"unstructured"`` or ``"structured"``.
        schedule: unstructured only: ``"fixed"`` (``step_ratio`` of the remaining weights per step),
            ``"cubic"`` (Zhu & Gupta) or ``"linear"`` over ``num_steps``.
        step_ratio: fixed schedule: fraction of remaining weights pruned per step; structured: fraction
            of each block's inner filters removed at its step. In (0, 1).
        num_steps: number of steps of the cubic/linear schedules.
        finetune_epochs: epochs of training after each step (0: all steps at once, no fine-tune).
        warmup_epochs: dense epochs before the first step.
        importance: ``"magnitude"`` or ``"lamp"`` (unstructured); structured uses filter L1 norms.
        scope: ``"global"`` (one ranking over all layers) or ``"layer"`` (same sparsity per layer).
        include_types, include_names, exclude_names, prune_head, include_biases: which weights are
            selected (see :func:`~lightning_prune.core.selection.select_parameters`).
        block_types: structured: class names of the blocks pruned one per step.
        stop_when_done: stop training once the last fine-tune is over.
        log_layers: also log per-layer sparsity as ``prune_layer/<parameter name>``.
        rewind_epoch: unstructured only: after every step, reset the surviving weights (and all other
            parameters and buffers) to their values at the start of this epoch and rebuild the optimizer
            (lottery-ticket IMP with rewinding; 0 rewinds to the initialisation). ``None``: no rewinding.
        on_nonfinite: ``"raise"`` (default) stops with an error when weights, scores or logged metrics are
            NaN/inf at a step; ``"skip"`` records the skip and retries after the next fine-tune.
        monitor: metric recorded as the accuracy before each step in the history.
        export_dir: where ``pruned_model.pt`` and ``summary.json`` go (default: the Trainer's root dir).

    Raises:
        ValueError: for arguments out of range, unknown names, a selection matching nothing, or a Trainer
            whose ``max_epochs`` cannot fit the schedule (naming the numbers).

    Example::

        >>> import lightning.pytorch as pl
        >>> from lightning_prune import IterativePruning
        >>> from lightning_prune.data import DigitsDataModule
        >>> from lightning_prune.models import Classifier, SmallCNN
        >>> pruning = IterativePruning(target_sparsity=0.5, step_ratio=0.3, finetune_epochs=1, export_dir=None)
        >>> model = Classifier(SmallCNN((1, 8, 8), 10, widths=(8, 8)), 10, (1, 8, 8))
        >>> trainer = pl.Trainer(max_epochs=2, callbacks=[pruning], logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False, default_root_dir="/tmp/lp-doc")
        >>> trainer.fit(model, datamodule=DigitsDataModule(batch_size=128))
        >>> round(pruning.pruning_state.sparsity, 2)
        0.5
    """

    def __init__(
        self,
        target_sparsity: float | None = None,
        mode: str = "unstructured",
        schedule: str = "fixed",
        step_ratio: float | None = 0.2,
        num_steps: int | None = None,
        finetune_epochs: int = 1,
        warmup_epochs: int = 0,
        importance: str = "magnitude",
        scope: str = "global",
        include_types: Sequence[str] = DEFAULT_TYPES,
        include_names: str | None = None,
        exclude_names: Sequence[str] = (),
        prune_head: bool = False,
        include_biases: bool = False,
        block_types: Sequence[str] = ("BasicBlock",),
        stop_when_done: bool = True,
        log_layers: bool = True,
        rewind_epoch: int | None = None,
        on_nonfinite: str = "raise",
        monitor: str = "val/acc",
        export_dir: str | None = None,
    ) -> None:
        self.target_sparsity, self.mode, self.schedule = target_sparsity, mode, schedule
        self.step_ratio, self.num_steps = step_ratio, num_steps
        self.finetune_epochs, self.warmup_epochs, self.rewind_epoch = finetune_epochs, warmup_epochs, rewind_epoch
        self.on_nonfinite = on_nonfinite
        self.importance, self.scope = importance, scope
        self.include_types, self.include_names, self.exclude_names = include_types, include_names, exclude_names
        self.prune_head, self.include_biases, self.block_types = prune_head, include_biases, block_types
        self.stop_when_done, self.log_layers, self.monitor, self.export_dir = (
            stop_when_done,
            log_layers,
            monitor,
            export_dir,
        )
        self._validate()
        self.include_types, self.exclude_names, self.block_types = (
            list(include_types),
            list(exclude_names),
            list(block_types),
        )
        self.pruning_state = PruningState(target_sparsity=target_sparsity)
        self._names: list[str] = []
        self._original_numel: dict[str, int] = {}
        self._masks: MaskSet | None = None
        self._rewind_state: dict[str, torch.Tensor] | None = None
        self._sparsities: list[float] = []
        self._blocks: list[str] = []
        self._restored = False

    def _validate(self) -> None:
        check_choice("mode", self.mode, MODES)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("importance", self.importance, tuple(SCORES))
        check_choice("scope", self.scope, SCOPES)
        check_choice("on_nonfinite", self.on_nonfinite, NONFINITE)
        validate_selector(self.include_types, self.include_names, self.exclude_names)
        structured, target = self.mode == "structured", self.target_sparsity
        if target is None and not structured:
            raise ValueError("target_sparsity is required in unstructured mode: a fraction in (0, 1)")
        if target is not None and not 0 < target < 1:
            raise ValueError(f"target_sparsity must be in (0, 1), got {target}")
        if (self.schedule == "fixed" or structured) and not (self.step_ratio is not None and 0 < self.step_ratio < 1):
            raise ValueError(
                f"step_ratio must be in (0, 1) for schedule='fixed' and structured mode, got {self.step_ratio}"
            )
        if self.schedule != "fixed" and not structured and (self.num_steps is None or self.num_steps < 1):
            raise ValueError(f"num_steps must be an integer >= 1 for schedule={self.schedule!r}, got {self.num_steps}")
        for name in ("finetune_epochs", "warmup_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if structured and (isinstance(self.block_types, str) or not self.block_types):
            raise ValueError(f"block_types must be a non-empty list of class names, got {self.block_types!r}")
        if self.rewind_epoch is not None and (structured or not 0 <= self.rewind_epoch <= self.warmup_epochs):
            raise ValueError(
                f"rewind_epoch must be an integer in [0, warmup_epochs={self.warmup_epochs}] and needs "
                f"mode='unstructured', got rewind_epoch={self.rewind_epoch!r}, mode={self.mode!r}"
            )

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            mode=self.mode, target_sparsity=self.target_sparsity, include_names=self.include_names
        )

    # ---------------------------------------------------------------- setup

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._collect_listeners(trainer)
        self._names = select_parameters(
            pl_module, self.include_types, self.include_names, self.exclude_names, self.prune_head, self.include_biases
        )
        if self.mode == "structured":
            self._blocks = [name for name, m in pl_module.named_modules() if type(m).__name__ in self.block_types]
            if not self._blocks:
                raise ValueError(f"block_types={self.block_types} matched no module of {type(pl_module).__name__}")
            self._sparsities = [self.step_ratio] * len(self._blocks)
            check_spawn_reload(trainer, pl_module, "IterativePruning(mode='structured')")
            resize_on_load(pl_module)
        else:
            self._sparsities = sparsity_schedule(self.schedule, self.target_sparsity, self.step_ratio, self.num_steps)
        if not self._restored:
            self._original_numel = {name: pl_module.get_parameter(name).numel() for name in self._names}
            self._masks = MaskSet.dense(pl_module, self._names) if self.mode == "unstructured" else None
            self.pruning_state.num_steps = len(self._sparsities)
        self._check_epoch_budget(trainer)

    def _check_epoch_budget(self, trainer: pl.Trainer) -> None:
        needed = self.warmup_epochs + max(1, len(self._sparsities) * self.finetune_epochs)
        max_epochs = trainer.max_epochs
        if trainer.fast_dev_run or max_epochs is None or max_epochs < 0 or max_epochs >= needed:
            return
        raise ValueError(
            f"IterativePruning needs Trainer(max_epochs >= {needed}) (warmup_epochs={self.warmup_epochs} + "
            f"{len(self._sparsities)} steps x finetune_epochs={self.finetune_epochs}), got max_epochs={max_epochs}"
        )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._masks is not None:
            self._masks.bind(pl_module).apply()

    # ---------------------------------------------------------------- the loop

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.rewind_epoch and self._rewind_state is None:
            self._rewind_state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        super().on_train_epoch_start(trainer, pl_module)

    def _more_steps(self) -> bool:
        return super()._more_steps() and not self._target_reached()

    def _target_reached(self) -> bool:
        target = self.pruning_state.target_sparsity
        return target is not None and self.pruning_state.sparsity >= target - 1e-6

    def _prune_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        """One step: rank 0 plans, every rank applies. Returns False when a non-finite value skipped it."""
        state = self.pruning_state
        record: dict[str, Any] = {"step": state.step + 1, "epoch": trainer.current_epoch}
        if self.monitor in trainer.callback_metrics:
            record[f"{self.monitor}_before"] = float(trainer.callback_metrics[self.monitor])
        with state.timed("prune"):
            started = time.perf_counter()
            plan = broadcast(trainer, self._plan(trainer, pl_module) if trainer.is_global_zero else None)
            if "nonfinite" in plan:
                return self._on_nonfinite(trainer, plan["nonfinite"], record)
            if self.mode == "unstructured":
                self._masks.update(plan["masks"])
                self._masks.apply()
            else:
                remove_out_channels(pl_module, example_input(trainer, pl_module), plan["channels"])
                rebuild_after_shrink(trainer)
                record["block"] = plan["block"]
            if self._rewind_state is not None:
                self._rewind(trainer, pl_module)
            state.step += 1
            state.last_step_epoch = trainer.current_epoch
            state.sparsity = self._current_sparsity(pl_module)
            record.update(sparsity=state.sparsity, prune_s=time.perf_counter() - started)
        state.history.append(record)
        info(log, f"pruning step {state.step}/{state.num_steps}: sparsity {state.sparsity:.3f}")
        return True

    def _plan(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """What this step removes, or why it must not run (a NaN mask would prune arbitrary weights)."""
        bad_metrics = [k for k, v in trainer.callback_metrics.items() if not math.isfinite(float(v))]
        try:
            if bad_metrics:
                raise FloatingPointError(f"non-finite metrics {sorted(bad_metrics)}")
            if self.mode == "unstructured":
                weights = {name: pl_module.get_parameter(name) for name in self._names}
                scores = SCORES[self.importance](weights)
                sparsity = self._sparsities[self.pruning_state.step]
                return {"masks": masks_from_scores(scores, sparsity, self._masks.masks, self.scope)}
            block = self._blocks[self.pruning_state.step]
            convs = inner_convs(pl_module, dependency_graph(pl_module, example_input(trainer, pl_module)), block)
            scores = {name: l1_filter_scores(pl_module.get_submodule(name)) for name in convs}
            check_finite(scores, "filter L1 norms")
            return {
                "block": block,
                "channels": {name: lowest_channels(s, self.step_ratio) for name, s in scores.items()},
            }
        except FloatingPointError as err:
            return {"nonfinite": str(err)}

    def _on_nonfinite(self, trainer: pl.Trainer, reason: str, record: dict[str, Any]) -> bool:
        if self.on_nonfinite == "raise":
            raise FloatingPointError(
                f"IterativePruning step {record['step']} at epoch {trainer.current_epoch}: {reason}; "
                "pruning stopped (set on_nonfinite='skip' to skip such steps and retry later)"
            )
        state = self.pruning_state
        state.last_step_epoch = trainer.current_epoch
        state.history.append(
            {**record, "step": state.step, "sparsity": state.sparsity, "finetune": "none", "skipped": reason}
        )
        info(log, f"pruning step skipped: {reason}")
        return False

    def _rewind(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Lottery-ticket rewinding: early weights under the current masks, and a fresh optimizer."""
        pl_module.load_state_dict(self._rewind_state)
        self._masks.bind(pl_module).apply()
        trainer.strategy.setup_optimizers(trainer)

    def _current_sparsity(self, pl_module: pl.LightningModule) -> float:
        if self._masks is not None:
            return self._masks.sparsity()
        present = sum(pl_module.get_parameter(name).numel() for name in self._names)
        return 1.0 - present / sum(self._original_numel.values())

    def _layer_sparsity(self, pl_module: pl.LightningModule) -> dict[str, float]:
        if self._masks is not None:
            return self._masks.layer_sparsity()
        return {n: 1.0 - pl_module.get_parameter(n).numel() / self._original_numel[n] for n in self._names}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self._masks is not None and self.pruning_state.step > 0:
            self._masks.apply()

    def _log_state(self, pl_module: pl.LightningModule) -> None:
        state = self.pruning_state
        pl_module.log("prune/sparsity", state.sparsity, on_step=False, on_epoch=True)
        pl_module.log("prune/step", float(state.step), on_step=False, on_epoch=True)
        if state.target_sparsity is not None:
            pl_module.log("prune/target_sparsity", state.target_sparsity, on_step=False, on_epoch=True)
        if self.log_layers:
            for name, value in self._layer_sparsity(pl_module).items():
                pl_module.log(f"prune_layer/{name}", value, on_step=False, on_epoch=True)

    # ---------------------------------------------------------------- export and state

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.fast_dev_run:
            self._export(trainer, pl_module)

    def _export(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state, directory = self.pruning_state, output_dir(trainer, self.export_dir)
        model_path = export_pruned(pl_module, directory / "pruned_model.pt")
        measured = zero_fraction(pl_module, self._names) if self._masks is not None else {}
        params = sum(p.numel() for p in pl_module.parameters())
        nonzero = sum(int((p != 0).sum()) for p in pl_module.parameters())
        write_summary(
            directory / "summary.json",
            "iterative",
            {
                "mode": self.mode,
                "target_sparsity": state.target_sparsity,
                "sparsity": state.sparsity,
                "steps": state.step,
                "finetunes_run": sum(r.get("finetune") == "ran" for r in state.history),
                "finetunes_skipped": sum(r.get("finetune") == "skipped" for r in state.history),
                "layer_sparsity": self._layer_sparsity(pl_module),
                "layer_zero_fraction": measured,
                "params": params,
                "params_nonzero": nonzero,
                "time_s": state.time_s,
                "history": state.history,
                "metrics": final_metrics(trainer, "prune_layer/"),
                "exported_model": str(model_path),
            },
        )
        info(log, f"pruned to sparsity {state.sparsity:.3f} in {state.step} steps; exported {model_path}")

    def state_dict(self) -> dict[str, Any]:
        return {
            "pruning_state": self.pruning_state.to_dict(),
            "masks": self._masks.state_dict() if self._masks is not None else None,
            "original_numel": dict(self._original_numel),
            "rewind_state": self._rewind_state,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pruning_state = PruningState.from_dict(state_dict.get("pruning_state", {}))
        self._original_numel = state_dict.get("original_numel", self._original_numel)
        self._rewind_state = state_dict.get("rewind_state")
        masks = state_dict.get("masks")
        self._masks = MaskSet(masks) if masks is not None else None
        self._restored = True
