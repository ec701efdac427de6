"""Instant Soup Pruning: cheap weak masks from look-ahead ingredients, superposed into one, in a single pass."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_prune.callbacks._contract import check_refit, refuse_nonfinite, refuse_other_pruners
from lightning_prune.callbacks._trainer import broadcast, info, output_dir
from lightning_prune.callbacks.instant_soup.checks import (
    NAME,
    check_arguments,
    check_rounds,
    check_trainer,
    default_calibration,
    listed,
    warn_untrained,
)
from lightning_prune.callbacks.instant_soup.ingredients import Kitchen, train_source, val_source
from lightning_prune.callbacks.instant_soup.report import epoch_metrics, mask_steps, summary, verified_report
from lightning_prune.callbacks.instant_soup.rounds import apply_plan, decide
from lightning_prune.callbacks.protocol import PruningCallback, PruningListener, PruningState, pruning_listeners
from lightning_prune.core.export import export_pruned, write_summary
from lightning_prune.core.masks import MaskSet
from lightning_prune.core.schedules import fixed_ratio
from lightning_prune.core.selection import DEFAULT_TYPES, select_parameters
from lightning_prune.core.validate import check_output_dir

log = logging.getLogger(__name__)


class InstantSoupPruning(PruningCallback):
    """Instant Soup Pruning (ISP): prune in growing calibration rounds, each mask denoised by a soup of ingredients.

    Jaiswal et al., "Instant Soup: Cheap Pruning Ensembles in A Single Pass Can Draw Lottery Tickets from
    Large Models", ICML 2023, Alg. 1-3. After ``warmup_steps`` dense optimizer steps, round ``i`` trains
    the model for ``(i + 1) * calibration_steps`` steps, then runs *denoised pruning*: ``num_ingredients``
    copies of the current weights each train ``lookahead_steps`` steps on their own random batches with
    their own protocol (LR and weight-decay multipliers, seed), each copy and the model itself give a
    magnitude mask ``step_ratio`` sparser than the current one, and the masks are superposed (``combine``:
    ``"union"`` as in the paper, ``"intersection"`` or ``"vote"``); as in the paper the superposed mask is kept
    as it is, except in the last round, which is adjusted to ``target_sparsity`` by the members' mean score.
    Rounds continue until ``target_sparsity``; training then simply goes on with the same optimizer state (no
    rewind) until the Trainer stops. Pruning happens at the start of the training batch at which the round's
    optimizer step is reached, so a checkpoint taken before it and resumed redoes it identically.

    ``variant="ims"`` is Instant Model Soup (Alg. 3, dense to dense): at ``warmup_steps``, each ingredient
    is the model pruned by magnitude to ``copy_sparsities[n]`` and weakly trained ``lookahead_steps``; the
    ingredients are mixed one by one into the model's weights with the coefficient (0 to 1, step 0.1)
    that minimises the validation loss; training then continues dense.

    Ingredients train with plain torch through the model's ``forward`` (``torch.func.functional_call``
    on cloned tensors; the module is never copied), on rank 0, and the decision is broadcast. Their
    cost (optimizer steps, wall seconds) is logged as ``soup/ingredient_steps`` and ``soup/ingredient_s``.

    Requires from your LightningModule: a forward returning what ``loss`` takes with the targets (logits, or an
    output with ``.logits``; batches ``(x, y)`` or dicts with ``labels``, read by :mod:`lightning_prune.core.model_io`
    or the module's ``split_batch``); a single training DataLoader over a map-style dataset and a fixed
    ``batch_size`` (the ingredients draw their batches from it directly, whatever ``limit_train_batches`` says); one
    optimizer (ingredients use a fresh one of its class at its current LR). ``training_step`` is *not*
    called for ingredients, so their steps never reach your logs or metrics. ``variant="ims"`` also needs
    a validation DataLoader.

    Args:
        target_sparsity: ISP: fraction of the selected weights that are zero at the end, in (0, 1).
        variant: ``"isp"`` (pruning) or ``"ims"`` (Instant Model Soup, the model stays dense).
        step_ratio: ISP: fraction of the remaining weights each round prunes (the paper's ``s``), in (0, 1).
        num_ingredients: ingredients per round (the paper's denoisers ``N``), >= 1.
        lookahead_steps: optimizer steps of each ingredient (the paper's ``C``, 10-100). ``0`` leaves the
            ingredients untrained, so the mask is the model's own magnitude mask (the paper's ``N = 0``).
        calibration_steps: ISP: ``t``, the training steps before round 0 (round ``i`` trains ``(i+1) t``);
            ``None``: 10 % of an epoch's optimizer steps, as in the paper.
        warmup_steps: dense optimizer steps before round 0 (0 when the model arrives pre-trained). From scratch,
            set it (about half the run's steps): with 0 at global step 0 of a fit not resumed from a checkpoint,
            every round is due within a few steps and a warning says so at fit start.
        combine: how masks superpose: ``"union"``, ``"intersection"`` or ``"vote"`` (strict majority).
        trim_every_round: also adjust every earlier round's superposed mask to its scheduled sparsity (the
            raw union keeps more weights than the schedule says; the last round is always adjusted).
        lr_multipliers: ingredient ``n``'s LR is the current LR times ``lr_multipliers[n % len]``; the
            default varies the copies as the paper's ingredients do (with their own data order, by ``seed``).
        weight_decay_multipliers: the same for weight decay.
        copy_sparsities: IMS: sparsity of ingredient ``n``'s copy is ``copy_sparsities[n % len]``, in [0, 1).
        loss: the ingredients' loss on ``(forward(x), y)``: ``"cross_entropy"`` or ``"mse"``.
        importance: ``"magnitude"`` (the paper) or ``"lamp"``.
        scope: ``"global"`` (one ranking over all layers) or ``"layer"`` (same sparsity per layer).
        include_types, include_names, exclude_names, prune_head, include_biases: which weights are
            selected (see :func:`~lightning_prune.core.selection.select_parameters`).
        seed: seeds every ingredient's data subset and randomness (per round and ingredient).
        log_layers: also log per-layer sparsity as ``prune_layer/<parameter name>``.
        monitor: metric recorded in the history before each round.
        export_dir: where ``pruned_model.pt`` and ``summary.json`` go (default: the Trainer's root dir).

    A second ``fit`` of this instance on the same model continues (masks, rounds, history kept; nothing
    regrows). At fit end the reported sparsity is checked against the weights; the summary has the measured.

    Raises:
        ValueError: for arguments out of range, unknown names or an ``export_dir`` that cannot be a directory
            (at construction); at fit start, for another pruner, another model than an earlier ``fit`` pruned,
            a selection matching nothing, no training batches, a Trainer stopping before the last round (naming
            the numbers), or a data loader or optimizer the ingredients cannot use.
        FloatingPointError: when an ingredient diverges (naming its protocol), or the weights are not finite at
            a round or at fit end (nothing is exported).

    Example::

        >>> import lightning.pytorch as pl
        >>> from lightning_prune import InstantSoupPruning
        >>> from lightning_prune.data import DigitsDataModule
        >>> from lightning_prune.models import Classifier, SmallCNN
        >>> soup = InstantSoupPruning(target_sparsity=0.5, step_ratio=0.3, num_ingredients=2, lookahead_steps=3,
        ...                           calibration_steps=2, export_dir=None)
        >>> model = Classifier(SmallCNN((1, 8, 8), 10, widths=(8, 8)), 10, (1, 8, 8))
        >>> trainer = pl.Trainer(max_epochs=1, callbacks=[soup], logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False, default_root_dir="/tmp/lp-doc")
        >>> trainer.fit(model, datamodule=DigitsDataModule(batch_size=128))
        >>> round(soup.pruning_state.sparsity, 2), soup.pruning_state.step
        (0.5, 2)
    """

    def __init__(
        self,
        target_sparsity: float | None = None,
        variant: str = "isp",
        step_ratio: float = 0.15,
        num_ingredients: int = 5,
        lookahead_steps: int = 30,
        calibration_steps: int | None = None,
        warmup_steps: int = 0,
        combine: str = "union",
        trim_every_round: bool = False,
        lr_multipliers: Sequence[float] = (1.0, 0.5, 2.0),
        weight_decay_multipliers: Sequence[float] = (1.0, 2.0, 0.5),
        copy_sparsities: Sequence[float] = (0.3, 0.5, 0.7),
        loss: str = "cross_entropy",
        importance: str = "magnitude",
        scope: str = "global",
        include_types: Sequence[str] = DEFAULT_TYPES,
        include_names: str | None = None,
        exclude_names: Sequence[str] = (),
        prune_head: bool = False,
        include_biases: bool = False,
        seed: int = 0,
        log_layers: bool = True,
        monitor: str = "val/acc",
        export_dir: str | None = None,
    ) -> None:
        self.target_sparsity, self.variant, self.step_ratio = target_sparsity, variant, step_ratio
        self.num_ingredients, self.lookahead_steps = num_ingredients, lookahead_steps
        self.calibration_steps, self.warmup_steps, self.combine = calibration_steps, warmup_steps, combine
        self.trim_every_round = trim_every_round
        self.lr_multipliers, self.weight_decay_multipliers = listed(lr_multipliers), listed(weight_decay_multipliers)
        self.copy_sparsities, self.loss, self.importance, self.scope = listed(copy_sparsities), loss, importance, scope
        self.include_types, self.include_names = listed(include_types), include_names
        self.exclude_names = listed(exclude_names)
        self.prune_head, self.include_biases, self.seed = prune_head, include_biases, seed
        self.log_layers, self.monitor = log_layers, monitor
        check_arguments(self)
        self.export_dir = check_output_dir("export_dir", export_dir)
        self.pruning_state = PruningState(target_sparsity=target_sparsity if variant == "isp" else None)
        self.ingredient_steps, self.ingredient_s = 0, 0.0
        self._names: list[str] = []
        self._sparsities: list[float] = []
        self._masks: MaskSet | None = None
        self._calibration: int | None = None
        self._listeners: list[PruningListener] = []
        self._epoch_started, self._prune_s_at_epoch_start = 0.0, 0.0
        # A later fit without a checkpoint counts its own steps: rounds fall due _step_offset steps off the schedule.
        self._step_offset, self._steps_seen = 0, 0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            variant=self.variant, target_sparsity=self.target_sparsity, include_names=self.include_names
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        refuse_other_pruners(trainer, self)
        continued = check_refit(self, pl_module) and trainer.ckpt_path is None
        self._listeners = pruning_listeners(trainer)
        self._names = select_parameters(
            pl_module, self.include_types, self.include_names, self.exclude_names, self.prune_head, self.include_biases
        )
        isp = self.variant == "isp"
        self._sparsities = fixed_ratio(self.target_sparsity, self.step_ratio) if isp else [0.0]
        self.pruning_state.num_steps = len(self._sparsities)
        if isp and self._masks is None:  # kept by a later fit; replaced by a checkpoint's when one is loaded
            self._masks = MaskSet.dense(pl_module, self._names)
        if continued:
            self._step_offset += trainer.global_step - self._steps_seen
            self._steps_seen = trainer.global_step
        check_rounds(self, trainer, continued)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        multipliers = self.lr_multipliers, self.weight_decay_multipliers
        self._kitchen = Kitchen(train_source(trainer), self.loss, self.lookahead_steps, *multipliers, self.seed)
        self._val = val_source(trainer) if self.variant == "ims" else None
        check_trainer(trainer)
        self._calibration = self._calibration or self.calibration_steps or default_calibration(trainer)
        self._steps_seen = trainer.global_step
        warn_untrained(trainer, self)
        if self._masks is not None:
            self._masks.bind(pl_module).apply()

    def _due_step(self, round_index: int) -> int:
        """Optimizer step of the schedule at which round ``round_index`` runs: warm-up plus t + 2t + ... + (i+1)t."""
        if self.variant == "ims":
            return self.warmup_steps
        return self.warmup_steps + self._calibration * (round_index + 1) * (round_index + 2) // 2

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started, self._prune_s_at_epoch_start = time.perf_counter(), self.pruning_state.time_s["prune"]

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        state = self.pruning_state
        while state.step < state.num_steps and trainer.global_step - self._step_offset >= self._due_step(state.step):
            self._run_round(trainer, pl_module)

    def _run_round(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = self.pruning_state
        for listener in self._listeners:
            listener.on_prune_step_start(trainer, pl_module, state)
        record: dict[str, Any] = {"step": state.step + 1, "epoch": trainer.current_epoch}
        record["global_step"] = trainer.global_step - self._step_offset
        refuse_nonfinite(pl_module, NAME, f"before step {state.step + 1}")  # on every rank, before rank 0 decides
        if self.monitor in trainer.callback_metrics:
            record[f"{self.monitor}_before"] = float(trainer.callback_metrics[self.monitor])
        with state.timed("prune"):
            plan = decide(self, pl_module, trainer.optimizers[0]) if trainer.is_global_zero else None
            plan = broadcast(trainer, plan)
            apply_plan(pl_module, self._masks, plan.pop("masks", None), plan.pop("weights", None))
        state.step += 1
        state.last_step_epoch, state.phase = trainer.current_epoch, "finetune"
        state.sparsity = self._masks.sparsity() if self._masks is not None else 0.0
        refuse_nonfinite(pl_module, NAME, f"after step {state.step}")
        self.ingredient_steps += plan["ingredient_steps"]
        self.ingredient_s += plan["ingredient_s"]
        record.update(sparsity=state.sparsity, finetune="ran", **plan)
        state.history.append(record)
        for listener in self._listeners:
            listener.on_prune_step_end(trainer, pl_module, state)
        info(log, f"soup round {state.step}/{state.num_steps}: sparsity {state.sparsity:.3f}")

    def _cook(
        self, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer, round_index: int, index: int, mask: dict
    ) -> tuple[dict[str, Tensor], int]:
        """Ingredient ``index`` of round ``round_index``: the current weights under ``mask``, look-ahead trained."""
        return self._kitchen.cook(pl_module, optimizer, round_index, index, mask)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self._masks is not None and self.pruning_state.step > 0:
            self._masks.apply()
        self._steps_seen = trainer.global_step

    @property
    def mask_steps(self) -> int:
        """Optimizer steps spent finding the mask: calibration up to the last round, plus all ingredients'."""
        return mask_steps(self)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = self.pruning_state
        prune_s = state.time_s["prune"] - self._prune_s_at_epoch_start
        phase = "finetune" if state.step > 0 else "dense"
        state.time_s[phase] += time.perf_counter() - self._epoch_started - prune_s
        for name, value in epoch_metrics(self).items():
            pl_module.log(name, value, on_step=False, on_epoch=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        refuse_nonfinite(pl_module, NAME, "at fit end")
        if trainer.fast_dev_run:
            return
        verified = verified_report(self, trainer, pl_module)
        if trainer.is_global_zero:
            self._export(trainer, pl_module, verified)

    def _export(self, trainer: pl.Trainer, pl_module: pl.LightningModule, verified: dict[str, Any]) -> None:
        directory = output_dir(trainer, self.export_dir)
        model_path = export_pruned(pl_module, directory / "pruned_model.pt")
        section = summary(self, trainer, pl_module, model_path, verified)
        write_summary(directory / "summary.json", "instant_soup", section)
        sparsity, rounds = section["sparsity"], self.pruning_state.step
        info(log, f"instant soup: sparsity {sparsity:.3f} (measured) after {rounds} rounds; exported {model_path}")

    def state_dict(self) -> dict[str, Any]:
        return {
            "pruning_state": self.pruning_state.to_dict(),
            "masks": self._masks.state_dict() if self._masks is not None else None,
            "calibration_steps": self._calibration,
            "ingredient_steps": self.ingredient_steps,
            "ingredient_s": self.ingredient_s,
            "step_offset": self._step_offset,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pruning_state = PruningState.from_dict(state_dict.get("pruning_state", {}))
        masks = state_dict.get("masks")
        self._masks = MaskSet(masks) if masks is not None else None
        self._calibration = state_dict.get("calibration_steps")
        self.ingredient_steps = state_dict.get("ingredient_steps", 0)
        self.ingredient_s = state_dict.get("ingredient_s", 0.0)
        self._step_offset = state_dict.get("step_offset", 0)
