"""Iterative magnitude pruning: prune a little, fine-tune, repeat until the target. The baseline of the suite."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch

from lightning_prune.callbacks._stepwise import StepwisePruning
from lightning_prune.callbacks.protocol import PruningState
from lightning_prune.core.export import zero_fraction
from lightning_prune.core.masks import SCOPES, MaskSet, masks_from_scores
from lightning_prune.core.schedules import SCHEDULES, sparsity_schedule
from lightning_prune.core.scores import SCORES
from lightning_prune.core.selection import DEFAULT_TYPES
from lightning_prune.core.validate import check_choice, check_fraction, check_int, is_int


class IterativePruning(StepwisePruning):
    """Zero the selected weights in steps up to a target sparsity, fine-tuning between steps.

    Iterative magnitude pruning (Han et al., NeurIPS 2015; with ``rewind_epoch``, the lottery-ticket
    IMP of Frankle et al., ICLR 2019 / 2020): magnitude (or LAMP) masks, global or per layer,
    following a sparsity schedule; masks are held by zeroing pruned weights after every optimizer
    step. A step runs at the start of an epoch, after ``warmup_epochs`` dense epochs and then every
    ``finetune_epochs`` epochs; after the last step's fine-tune, training goes on to ``max_epochs`` with the
    masks held (``stop_when_done=True`` stops there). Cooperating
    :class:`~lightning_prune.PruningListener` callbacks (ICE's gate, freezing, LR) may skip fine-tunes
    or act around them. Structured block-by-block pruning is :class:`~lightning_prune.BlockPruning`.

    Requires from your LightningModule: nothing beyond a ``configure_optimizers`` (called again after
    each step when ``rewind_epoch`` is set).

    Args:
        target_sparsity: fraction of the selected weights zero at the end, in (0, 1).
        schedule: ``"fixed"`` (``step_ratio`` of the remaining weights per step), ``"cubic"`` (Zhu &
            Gupta) or ``"linear"`` over ``num_steps``.
        step_ratio: fixed schedule: fraction of the remaining weights pruned per step, in (0, 1).
        num_steps: number of steps of the cubic/linear schedules.
        finetune_epochs: epochs of training after each step (0: all steps at once, no fine-tune).
        warmup_epochs: dense epochs before the first step. With 0 the first step runs before any training:
            fine from trained weights (loaded or passed in memory), otherwise a warning names the fix.
        importance: ``"magnitude"`` or ``"lamp"``.
        scope: ``"global"`` (one ranking over all layers) or ``"layer"`` (same sparsity per layer).
        include_types, include_names, exclude_names, prune_head, include_biases: which weights are
            selected (see :func:`~lightning_prune.core.selection.select_parameters`).
        stop_when_done: stop training once the last fine-tune is over. Default ``False``: training goes on
            to ``max_epochs`` with the masks held, as Lightning's ``ModelPruning`` and gradual magnitude
            pruning do, so a run from scratch gets every epoch it asked for; the recipes (paper pipelines that
            start from a trained model) set it ``True``.
        log_layers: also log per-layer sparsity as ``prune_layer/<parameter name>``.
        rewind_epoch: after every step, reset the surviving weights (and all other parameters and
            buffers) to their values at the start of this epoch and rebuild the optimizer (lottery-ticket
            IMP with rewinding; 0 rewinds to the initialisation). ``None``: no rewinding.
        on_nonfinite: ``"raise"`` (default) stops with an error when weights, scores or logged metrics are
            NaN/inf at a step; ``"skip"`` records the skip and retries after the next fine-tune.
        monitor: metric recorded as the accuracy before each step in the history. It only feeds the history,
            so one it cannot find once validation has run is a warning (naming the logged metrics and the
            fix, e.g. ``monitor="val_acc"``), not an error.
        export_dir: where ``pruned_model.pt`` and ``summary.json`` go (default: the Trainer's root dir).

    Raises:
        ValueError: for arguments out of range (numbers given as strings included), unknown names, an
            ``export_dir`` that cannot be a directory; at fit start for a selection matching nothing, a Trainer
            whose ``max_epochs``/``max_steps`` cannot fit the schedule or whose training data yields no batch
            (naming the numbers), a second pruning callback, or a model other than the one already pruned.
        FloatingPointError: when the weights are not finite after a step or at fit end (nothing is exported).
        RuntimeError: at fit end, when the weights' sparsity is not the reported one (nothing is exported).

    Example::

        >>> import lightning.pytorch as pl
        >>> from lightning_prune import IterativePruning
        >>> from lightning_prune.data import DigitsDataModule
        >>> from lightning_prune.models import Classifier, SmallCNN
        >>> pruning = IterativePruning(target_sparsity=0.5, step_ratio=0.3, warmup_epochs=1, export_dir=None)
        >>> model = Classifier(SmallCNN((1, 8, 8), 10, widths=(8, 8)), 10, (1, 8, 8))
        >>> trainer = pl.Trainer(max_epochs=3, callbacks=[pruning], logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False, default_root_dir="/tmp/lp-doc")
        >>> trainer.fit(model, datamodule=DigitsDataModule(batch_size=128))
        >>> round(pruning.pruning_state.sparsity, 2)
        0.5
    """

    summary_section = "iterative"

    def __init__(
        self,
        target_sparsity: float | None = None,
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
        stop_when_done: bool = False,
        log_layers: bool = True,
        rewind_epoch: int | None = None,
        on_nonfinite: str = "raise",
        monitor: str = "val/acc",
        export_dir: str | None = None,
    ) -> None:
        self.target_sparsity, self.schedule, self.step_ratio, self.num_steps = (
            target_sparsity,
            schedule,
            step_ratio,
            num_steps,
        )
        self.finetune_epochs, self.warmup_epochs, self.rewind_epoch = finetune_epochs, warmup_epochs, rewind_epoch
        self.importance, self.scope, self.on_nonfinite = importance, scope, on_nonfinite
        self.include_types, self.include_names, self.exclude_names = include_types, include_names, exclude_names
        self.prune_head, self.include_biases = prune_head, include_biases
        self.stop_when_done, self.log_layers, self.monitor, self.export_dir = (
            stop_when_done,
            log_layers,
            monitor,
            export_dir,
        )
        self._validate()
        self.include_types, self.exclude_names = list(include_types), list(exclude_names)
        self.pruning_state = PruningState(target_sparsity=target_sparsity)
        self._names: list[str] = []
        self._original_numel: dict[str, int] = {}
        self._masks: MaskSet | None = None
        self._rewind_state: dict[str, torch.Tensor] | None = None
        self._sparsities: list[float] = []
        self._restored = False

    def _validate(self) -> None:
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("importance", self.importance, tuple(SCORES))
        check_choice("scope", self.scope, SCOPES)
        if self.target_sparsity is None:
            raise ValueError("target_sparsity is required: a fraction in (0, 1)")
        self._validate_shared()
        if self.schedule == "fixed" or self.step_ratio is not None:
            check_fraction("step_ratio", self.step_ratio)
        if self.schedule == "fixed":
            check_int("num_steps", self.num_steps, low=1, optional=True)
        elif not (is_int(self.num_steps) and self.num_steps >= 1):
            steps = self.num_steps
            raise ValueError(f"num_steps must be an integer >= 1 for schedule={self.schedule!r}, got {steps!r}")
        rewind = self.rewind_epoch
        if rewind is not None and not (is_int(rewind) and 0 <= rewind <= self.warmup_epochs):
            raise ValueError(
                f"rewind_epoch must be an integer in [0, warmup_epochs={self.warmup_epochs}], "
                f"got rewind_epoch={self.rewind_epoch!r}"
            )

    # ---------------------------------------------------------------- setup

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        keep = self._select(trainer, pl_module)
        self._sparsities = sparsity_schedule(self.schedule, self.target_sparsity, self.step_ratio, self.num_steps)
        if not keep or self._masks is None:
            self._masks, self._rewind_state = MaskSet.dense(pl_module, self._names), None
            self.pruning_state.num_steps = len(self._sparsities)
        self._check_budget(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._masks.bind(pl_module).apply()  # after a resume or in a fit continuing an earlier one
        super().on_train_start(trainer, pl_module)

    # ---------------------------------------------------------------- the loop

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.rewind_epoch and self._rewind_state is None:
            self._rewind_state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        super().on_train_epoch_start(trainer, pl_module)

    def _plan(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        weights = {name: pl_module.get_parameter(name) for name in self._names}
        scores = SCORES[self.importance](weights)
        sparsity = self._sparsities[self.pruning_state.step]
        return {"masks": masks_from_scores(scores, sparsity, self._masks.masks, self.scope)}

    def _apply(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, plan: dict[str, Any], record: dict[str, Any]
    ) -> None:
        self._masks.update(plan["masks"])
        self._masks.apply()
        if self._rewind_state is not None:
            self._rewind(trainer, pl_module)

    def _rewind(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Lottery-ticket rewinding: early weights under the current masks, and a fresh optimizer."""
        pl_module.load_state_dict(self._rewind_state)
        self._masks.bind(pl_module).apply()
        trainer.strategy.setup_optimizers(trainer)

    def _current_sparsity(self, pl_module: pl.LightningModule) -> float:
        return self._masks.sparsity()

    def _layer_sparsity(self, pl_module: pl.LightningModule) -> dict[str, float]:
        return self._masks.layer_sparsity()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.pruning_state.step > 0:
            self._masks.apply()

    # ---------------------------------------------------------------- export and state

    def _summary_fields(self, pl_module: pl.LightningModule) -> dict[str, Any]:
        return {"layer_zero_fraction": zero_fraction(pl_module, self._names)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "masks": self._masks.state_dict(), "rewind_state": self._rewind_state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._rewind_state = state_dict.get("rewind_state")
        masks = state_dict.get("masks")
        self._masks = MaskSet(masks) if masks is not None else None
