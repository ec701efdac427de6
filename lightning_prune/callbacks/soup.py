"""Instant Soup Pruning: cheap weak masks from look-ahead ingredients, superposed into one, in a single pass."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_prune.callbacks._ingredients import (
    LOSSES,
    cycled,
    forked_rng,
    ingredient_optimizer,
    ingredient_seed,
    train_source,
    val_source,
)
from lightning_prune.callbacks._soup_checks import check_arguments, check_step_budget
from lightning_prune.callbacks._trainer import broadcast, eval_mode, final_metrics, info, output_dir
from lightning_prune.callbacks.protocol import PruningCallback, PruningListener, PruningState, pruning_listeners
from lightning_prune.core.export import export_pruned, write_summary, zero_fraction
from lightning_prune.core.masks import MaskSet, masks_from_scores
from lightning_prune.core.schedules import fixed_ratio
from lightning_prune.core.scores import SCORES
from lightning_prune.core.selection import DEFAULT_TYPES, select_parameters
from lightning_prune.core.soup import MaskSoup, best_mix, clone_state, load_state, look_ahead, mean_loss
from lightning_prune.progress import track

log = logging.getLogger(__name__)


class InstantSoupPruning(PruningCallback):
    """Instant Soup Pruning (ISP): prune in growing calibration rounds, each mask denoised by a soup of ingredients.

    Jaiswal et al., "Instant Soup: Cheap Pruning Ensembles in A Single Pass Can Draw Lottery Tickets from
    Large Models", ICML 2023, Alg. 1-3. After ``warmup_steps`` dense optimizer steps, round ``i`` trains
    the model for ``(i + 1) * calibration_steps`` steps, then runs *denoised pruning*: ``num_ingredients``
    copies of the current weights each train ``lookahead_steps`` steps on their own random batches with
    their own protocol (LR and weight-decay multipliers, seed), each copy and the model itself give a
    magnitude mask ``step_ratio`` sparser than the current one, and the masks are superposed (``combine``:
    ``"union"`` as in the paper, ``"intersection"`` or ``"vote"``) and adjusted to the round's exact
    sparsity by the members' mean score. Rounds continue until ``target_sparsity``; training then simply
    goes on with the same optimizer state (no rewind) until the Trainer stops. Pruning happens at the
    start of the training batch at which the round's optimizer step is reached, so a checkpoint taken
    before it and resumed redoes it identically.

    ``variant="ims"`` is Instant Model Soup (Alg. 3, dense to dense): at ``warmup_steps``, each ingredient
    is the model pruned by magnitude to ``copy_sparsities[n]`` and weakly trained ``lookahead_steps``; the
    ingredients are mixed one by one into the model's weights with the coefficient (0 to 1, step 0.1)
    that minimises the validation loss; training then continues dense.

    Ingredients train with plain torch through the model's ``forward`` (``torch.func.functional_call``
    on cloned tensors; the module is never copied), on rank 0, and the decision is broadcast. Their
    cost (optimizer steps, wall seconds) is logged as ``soup/ingredient_steps`` and ``soup/ingredient_s``.

    Requires from your LightningModule: ``forward(x)`` returning what ``loss`` takes with ``y``; a single
    training DataLoader over a map-style dataset of ``(x, y)`` samples and a fixed ``batch_size`` (the
    ingredients draw their batches from it directly, whatever ``limit_train_batches`` says); one
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
        warmup_steps: dense optimizer steps before round 0 (0 when the model arrives pre-trained).
        combine: how masks superpose: ``"union"``, ``"intersection"`` or ``"vote"`` (strict majority).
        lr_multipliers: ingredient ``n``'s LR is the current LR times ``lr_multipliers[n % len]``.
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

    Raises:
        ValueError: for arguments out of range or unknown names (at construction); at the start of
            training, for a selection matching nothing, a data loader or optimizer the ingredients cannot
            use, or a Trainer whose step budget cannot hold the rounds (naming the numbers).
        FloatingPointError: when an ingredient's loss diverges (naming its protocol).

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
        lr_multipliers: Sequence[float] = (1.0,),
        weight_decay_multipliers: Sequence[float] = (1.0,),
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
        self.lr_multipliers, self.weight_decay_multipliers = _listed(lr_multipliers), _listed(weight_decay_multipliers)
        self.copy_sparsities, self.loss, self.importance, self.scope = _listed(copy_sparsities), loss, importance, scope
        self.include_types, self.include_names = _listed(include_types), include_names
        self.exclude_names = _listed(exclude_names)
        self.prune_head, self.include_biases, self.seed = prune_head, include_biases, seed
        self.log_layers, self.monitor, self.export_dir = log_layers, monitor, export_dir
        check_arguments(self)
        self.pruning_state = PruningState(target_sparsity=target_sparsity if variant == "isp" else None)
        self.ingredient_steps, self.ingredient_s = 0, 0.0
        self._names: list[str] = []
        self._sparsities: list[float] = []
        self._masks: MaskSet | None = None
        self._calibration: int | None = None
        self._listeners: list[PruningListener] = []
        self._epoch_started, self._prune_s_at_epoch_start = 0.0, 0.0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            variant=self.variant, target_sparsity=self.target_sparsity, include_names=self.include_names
        )

    # ---------------------------------------------------------------- setup

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._listeners = pruning_listeners(trainer)
        self._names = select_parameters(
            pl_module, self.include_types, self.include_names, self.exclude_names, self.prune_head, self.include_biases
        )
        isp = self.variant == "isp"
        self._sparsities = fixed_ratio(self.target_sparsity, self.step_ratio) if isp else [0.0]
        self.pruning_state.num_steps = len(self._sparsities)
        if isp and self._masks is None:
            self._masks = MaskSet.dense(pl_module, self._names)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._source = train_source(trainer)
        self._val = val_source(trainer) if self.variant == "ims" else None
        if len(trainer.optimizers) != 1:
            raise ValueError(f"InstantSoupPruning needs exactly one optimizer, got {len(trainer.optimizers)}")
        if self._calibration is None:
            per_epoch = trainer.num_training_batches // trainer.accumulate_grad_batches
            self._calibration = self.calibration_steps or max(1, math.ceil(0.1 * per_epoch))
        check_step_budget(trainer, self._due_step(self.pruning_state.num_steps - 1), self._due_step(0))
        if self._masks is not None:
            self._masks.bind(pl_module).apply()

    def _due_step(self, round_index: int) -> int:
        """Optimizer step at which round ``round_index`` runs: warm-up plus t + 2t + ... + (i+1)t."""
        if self.variant == "ims":
            return self.warmup_steps
        return self.warmup_steps + self._calibration * (round_index + 1) * (round_index + 2) // 2

    # ---------------------------------------------------------------- the rounds

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started, self._prune_s_at_epoch_start = time.perf_counter(), self.pruning_state.time_s["prune"]

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        state = self.pruning_state
        while state.step < state.num_steps and trainer.global_step >= self._due_step(state.step):
            self._run_round(trainer, pl_module)

    def _run_round(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = self.pruning_state
        for listener in self._listeners:
            listener.on_prune_step_start(trainer, pl_module, state)
        record: dict[str, Any] = {"step": state.step + 1, "epoch": trainer.current_epoch}
        record["global_step"] = trainer.global_step
        if self.monitor in trainer.callback_metrics:
            record[f"{self.monitor}_before"] = float(trainer.callback_metrics[self.monitor])
        with state.timed("prune"):
            cook = self._denoised_prune if self.variant == "isp" else self._model_soup
            plan = cook(pl_module, trainer.optimizers[0]) if trainer.is_global_zero else None
            plan = broadcast(trainer, plan)
            self._apply(pl_module, plan.pop("masks", None), plan.pop("weights", None))
        state.step += 1
        state.last_step_epoch, state.phase = trainer.current_epoch, "finetune"
        state.sparsity = self._masks.sparsity() if self._masks is not None else 0.0
        self.ingredient_steps += plan["ingredient_steps"]
        self.ingredient_s += plan["ingredient_s"]
        record.update(sparsity=state.sparsity, finetune="ran", **plan)
        state.history.append(record)
        for listener in self._listeners:
            listener.on_prune_step_end(trainer, pl_module, state)
        info(log, f"soup round {state.step}/{state.num_steps}: sparsity {state.sparsity:.3f}")

    def _apply(self, pl_module: pl.LightningModule, masks: dict | None, weights: dict | None) -> None:
        if masks is not None:
            self._masks.update(masks)
            self._masks.apply()
        if weights is not None:
            load_state(pl_module, weights)

    def _denoised_prune(self, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Alg. 2 on rank 0: the model's own mask and each ingredient's, superposed at the round's sparsity."""
        round_index, current = self.pruning_state.step, self._masks.masks
        sparsity, score = self._sparsities[round_index], SCORES[self.importance]
        soup, started, steps = MaskSoup(), time.perf_counter(), 0
        main_scores = score({name: pl_module.get_parameter(name) for name in self._names})
        main_mask = masks_from_scores(main_scores, sparsity, current, self.scope)
        soup.add(main_mask, main_scores)
        for index in track(range(self.num_ingredients), f"soup round {round_index + 1}: ingredients"):
            state, taken = self._cook(pl_module, optimizer, round_index, index, current)
            scores = score({name: state[name] for name in self._names})
            soup.add(masks_from_scores(scores, sparsity, current, self.scope), scores)
            steps += taken
        masks = soup.mask(sparsity, current, self.combine, self.scope)
        total = sum(mask.numel() for mask in masks.values())
        superposed = sum(int(m.sum()) for m in soup.combined(self.combine).values())
        moved = sum(int((masks[name] & ~main_mask[name]).sum()) for name in masks)
        return {
            "masks": masks,
            "ingredient_steps": steps,
            "ingredient_s": time.perf_counter() - started,
            "superposed_sparsity": 1.0 - superposed / total,
            "kept_not_in_model_mask": moved / max(1, sum(int(m.sum()) for m in masks.values())),
        }

    def _model_soup(self, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Alg. 3 on rank 0: weakly trained sparse copies mixed into the weights by validation loss."""
        started, steps, alphas = time.perf_counter(), 0, []
        soup = {name: tensor.detach() for name, tensor in clone_state(pl_module).items()}
        main_scores = SCORES[self.importance]({name: soup[name] for name in self._names})
        loss_before = loss = self._val_loss(pl_module, soup)
        for index in track(range(self.num_ingredients), "model soup: ingredients"):
            sparsity = cycled(self.copy_sparsities, index)
            mask = masks_from_scores(main_scores, sparsity, None, self.scope)
            state, taken = self._cook(pl_module, optimizer, 0, index, mask)
            soup, alpha, loss = best_mix(soup, state, lambda weights: self._val_loss(pl_module, weights))
            alphas.append(alpha)
            steps += taken
        return {
            "weights": {name: tensor.cpu() for name, tensor in soup.items()},
            "ingredient_steps": steps,
            "ingredient_s": time.perf_counter() - started,
            "mix_alphas": alphas,
            "val_loss_before": loss_before,
            "val_loss_after": loss,
        }

    def _cook(
        self, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer, round_index: int, index: int, mask: dict
    ) -> tuple[dict[str, Tensor], int]:
        """Ingredient ``index`` of round ``round_index``: the current weights under ``mask``, look-ahead trained."""
        lr_scale, wd_scale = cycled(self.lr_multipliers, index), cycled(self.weight_decay_multipliers, index)
        device = pl_module.device
        with forked_rng(ingredient_seed(self.seed, round_index, index), device) as generator:
            state = clone_state(pl_module)
            ingredient_opt = ingredient_optimizer(optimizer, pl_module, state, lr_scale, wd_scale)
            batches = self._source.random_batches(self.lookahead_steps, generator, device)
            try:
                steps = look_ahead(
                    pl_module, state, batches, LOSSES[self.loss], ingredient_opt, MaskSet(mask).bind(state)
                )
            except FloatingPointError as err:
                raise FloatingPointError(
                    f"ingredient {index} of round {round_index} diverged (lr x{lr_scale}, weight decay x{wd_scale}): "
                    f"{err}; lower lr_multipliers"
                ) from None
        return {name: tensor.detach() for name, tensor in state.items()}, steps

    def _val_loss(self, pl_module: pl.LightningModule, weights: dict[str, Tensor]) -> float:
        with eval_mode(pl_module):
            return mean_loss(pl_module, weights, self._val.batches(pl_module.device), LOSSES[self.loss])

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self._masks is not None and self.pruning_state.step > 0:
            self._masks.apply()

    # ---------------------------------------------------------------- logging, export and state

    @property
    def mask_steps(self) -> int:
        """Optimizer steps spent finding the mask: calibration up to the last round, plus all ingredients'."""
        history = self.pruning_state.history
        calibration = history[-1]["global_step"] - self.warmup_steps if history else 0
        return calibration + self.ingredient_steps

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = self.pruning_state
        prune_s = state.time_s["prune"] - self._prune_s_at_epoch_start
        phase = "finetune" if state.step > 0 else "dense"
        state.time_s[phase] += time.perf_counter() - self._epoch_started - prune_s
        log_metric = lambda name, value: pl_module.log(name, float(value), on_step=False, on_epoch=True)  # noqa: E731
        log_metric("prune/sparsity", state.sparsity)
        log_metric("prune/step", state.step)
        if state.target_sparsity is not None:
            log_metric("prune/target_sparsity", state.target_sparsity)
        log_metric("soup/ingredient_steps", self.ingredient_steps)
        log_metric("soup/ingredient_s", self.ingredient_s)
        log_metric("soup/mask_steps", self.mask_steps)
        if self.log_layers and self._masks is not None:
            for name, value in self._masks.layer_sparsity().items():
                log_metric(f"prune_layer/{name}", value)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.pruning_state.phase = "done"
        if trainer.is_global_zero and not trainer.fast_dev_run:
            self._export(trainer, pl_module)

    def _export(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state, directory = self.pruning_state, output_dir(trainer, self.export_dir)
        model_path = export_pruned(pl_module, directory / "pruned_model.pt")
        summary = {
            "variant": self.variant,
            "target_sparsity": state.target_sparsity,
            "sparsity": state.sparsity,
            "rounds": state.step,
            "num_ingredients": self.num_ingredients,
            "lookahead_steps": self.lookahead_steps,
            "calibration_steps": self._calibration,
            "combine": self.combine,
            "ingredient_steps": self.ingredient_steps,
            "ingredient_s": self.ingredient_s,
            "mask_steps": self.mask_steps,
            "layer_sparsity": self._masks.layer_sparsity() if self._masks is not None else {},
            "layer_zero_fraction": zero_fraction(pl_module, self._names),
            "params": sum(p.numel() for p in pl_module.parameters()),
            "params_nonzero": sum(int((p != 0).sum()) for p in pl_module.parameters()),
            "time_s": state.time_s,
            "history": state.history,
            "metrics": final_metrics(trainer, "prune_layer/"),
            "exported_model": str(model_path),
        }
        write_summary(directory / "summary.json", "instant_soup", summary)
        info(log, f"instant soup: sparsity {state.sparsity:.3f} after {state.step} rounds; exported {model_path}")

    def state_dict(self) -> dict[str, Any]:
        return {
            "pruning_state": self.pruning_state.to_dict(),
            "masks": self._masks.state_dict() if self._masks is not None else None,
            "calibration_steps": self._calibration,
            "ingredient_steps": self.ingredient_steps,
            "ingredient_s": self.ingredient_s,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pruning_state = PruningState.from_dict(state_dict.get("pruning_state", {}))
        masks = state_dict.get("masks")
        self._masks = MaskSet(masks) if masks is not None else None
        self._calibration = state_dict.get("calibration_steps")
        self.ingredient_steps = state_dict.get("ingredient_steps", 0)
        self.ingredient_s = state_dict.get("ingredient_s", 0.0)


def _listed(value: Any) -> Any:
    """YAML lists arrive as ListConfig or tuples: store a list, but leave a string (or scalar) for validation."""
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
