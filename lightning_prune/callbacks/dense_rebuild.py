"""ODF2NNA: keep the useful hidden units of a dense feed-forward net, rebuild it physically smaller, retrain."""

from __future__ import annotations

import itertools
import logging
import math
import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_prune.callbacks._carry import OptimizerSnapshot, entry_origins
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
from lightning_prune.callbacks.protocol import PruningCallback, PruningState
from lightning_prune.core.export import export_pruned, write_summary
from lightning_prune.core.selection import DEFAULT_TYPES, validate_selector
from lightning_prune.core.structured import architecture_spec, count_parameters
from lightning_prune.core.units import (
    REPLACEMENTS,
    UNIT_STATISTICS,
    HiddenLayer,
    UnitMoments,
    collect_unit_moments,
    find_hidden_layers,
    keep_units,
    layer_widths,
    rebuild_layers,
    replacement,
)
from lightning_prune.core.validate import is_number

log = logging.getLogger(__name__)
MODES = ("min", "max")
COMPENSATIONS = (*REPLACEMENTS, "none")


class DenseUnitPruning(PruningCallback):
    """Score every hidden unit of the model's ``nn.Linear`` stacks, keep the useful ones, rebuild, retrain.

    ODF2NNA (Balderas, Lastra & Benítez, "Optimizing dense feed-forward neural networks", Neural Networks
    2024, Sec. 3): a generously sized dense net is trained; each hidden unit is scored by the variability
    of its output over the training data; units whose score is below ``epsilon`` times the largest score
    of their layer are removed; a smaller dense net is rebuilt with the surviving weights transferred,
    then retrained. Here the rebuild happens in place at the start of an epoch: after ``wide_epochs``
    epochs, or earlier when ``monitor`` has not improved for ``patience`` validation runs; by default
    from the weights of the best ``monitor`` value so far (``restore_best``), not the last epoch's. The layers,
    their BatchNorm1d/LayerNorm/PReLU and the next layers' inputs shrink through torch-pruning; activations
    and dropout are untouched; the optimizer is rebuilt; training goes on (``retrain_epochs`` more, or
    until ``max_epochs``). Any plain ``Linear -> (activation | norm | dropout)* -> Linear`` stack inside
    the module is found from a traced graph; anything else is refused, naming the layer.

    The score (``statistic``) is read where the next layer receives the unit, after norm and activation,
    with the model in eval mode. ``"std"`` (default) is our reading of "variability": the paper's exact
    formula is not in the sources we could read. What the removed units fed the next layer is not simply
    dropped (``compensation``): by default it is rebuilt from the kept units by least squares over the
    training data (exact for constant units and for units that duplicate kept ones), so the rebuilt net
    starts retraining close to the wide one.

    Requires from your LightningModule: ``(x, ...)`` or tensor training batches and a ``forward(x)`` that
    runs the net; an ``example_input_array`` or an ``(x, y)`` validation batch (to trace the graph); a
    ``configure_optimizers`` over all parameters (it is called again after the rebuild); the logged
    ``monitor`` when ``patience`` is set.

    Args:
        epsilon: relative threshold in [0, 1): a unit is kept when ``score >= epsilon * reference``, the
            reference being its layer's largest score by default (0 keeps every unit; with epsilon > 0 a
            constant unit is always removed).
        statistic: the unit score, a key of :data:`~lightning_prune.core.units.UNIT_STATISTICS`
            (``"std"``, ``"variance"``, ``"range"``).
        wide_epochs: rebuild at the start of this epoch at the latest (``None``: only on a plateau).
        patience: rebuild once ``monitor`` has not improved for this many validation runs (``None``: off).
        monitor: metric watched for the plateau; ``mode`` says whether lower (``"min"``) or higher is better.
        min_delta: smallest change of ``monitor`` that counts as an improvement.
        retrain_epochs: epochs trained after the rebuild before training stops (``None``: until max_epochs).
        retrain_lr_scale: the rebuilt optimizer's learning rate(s) times this, in (0, 1]: "lightly retrain"
            the transferred weights rather than shake them with the full rate.
        compensation: what replaces the removed units' input to the next layer: ``"least_squares"``
            (their affine reconstruction from the kept units over the training data; keeps a
            ``units x units`` covariance per layer during the scoring pass), ``"mean"`` (their mean output,
            folded into the next bias) or ``"none"`` (dropped, the paper's plain weight transfer).
        min_units: units every layer keeps at least (the highest-scoring).
        include_names: regex on Linear names; only matching layers are pruned (default: every stack).
        export_dir: where ``pruned_model.pt`` and ``summary.json`` go (default: the Trainer's root dir).
        reference_quantile: in (0, 1]: the layer's reference score is this quantile of its scores
            (1.0: the largest, methods.md's rule; 0.99: a few runaway units cannot empty the layer).
        restore_best: at the rebuild, go back to the weights of the best ``monitor`` value seen so far (a
            plateau means the last epochs were no better); keeps one CPU copy of the weights, which the
            checkpoints carry until the rebuild. ``False``, or ``monitor`` never logged: the last weights.
        carry_optimizer_state: give the rebuilt optimizer the kept entries' state (Adam moments, momentum,
            step counts), the learning rates and the schedulers' positions, so training continues rather
            than restarts (costs one float64 copy of the module during the rebuild); ``False``: a fresh
            optimizer from ``configure_optimizers``.

    Raises:
        ValueError: for arguments out of range or unknown names; in ``setup``, when the model has no plain
            Linear stack, or ``wide_epochs`` is not below ``max_epochs``.

    Example::

        >>> import lightning.pytorch as pl
        >>> from lightning_prune import DenseUnitPruning
        >>> from lightning_prune.data import TabularDataModule
        >>> from lightning_prune.models import MLP, Classifier
        >>> pruning = DenseUnitPruning(epsilon=0.3, wide_epochs=2, export_dir=None)
        >>> model = Classifier(MLP((4,), 3, hidden=(64, 64)), 3, (4,))
        >>> trainer = pl.Trainer(max_epochs=3, callbacks=[pruning], logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False, default_root_dir="/tmp/lp-doc")
        >>> trainer.fit(model, datamodule=TabularDataModule("iris", batch_size=32))
        >>> pruning.params_after < pruning.params_before
        True
    """

    notifies_listeners = False  # one rebuild, no pruning steps: ICE listeners have nothing to act on

    def __init__(
        self,
        epsilon: float = 0.5,
        statistic: str = "std",
        wide_epochs: int | None = 10,
        patience: int | None = None,
        monitor: str = "val/loss",
        mode: str = "min",
        min_delta: float = 0.0,
        retrain_epochs: int | None = None,
        retrain_lr_scale: float = 1.0,
        compensation: str = "least_squares",
        min_units: int = 1,
        include_names: str | None = None,
        export_dir: str | None = None,
        reference_quantile: float = 1.0,
        carry_optimizer_state: bool = True,
        restore_best: bool = True,
    ) -> None:
        self.epsilon, self.statistic, self.reference_quantile = epsilon, statistic, reference_quantile
        self.wide_epochs, self.patience, self.retrain_epochs = wide_epochs, patience, retrain_epochs
        self.retrain_lr_scale = retrain_lr_scale
        self.monitor, self.mode, self.min_delta = monitor, mode, min_delta
        self.compensation, self.min_units, self.include_names = compensation, min_units, include_names
        self.export_dir, self.carry_optimizer_state = export_dir, carry_optimizer_state
        self.restore_best = restore_best
        self._validate()
        self.pruning_state = PruningState(num_steps=1)
        self.params_before = self.params_after = 0
        self.widths_before: dict[str, int] = {}
        self.widths_after: dict[str, int] = {}
        self._architecture: dict[str, Any] | None = None
        self._best: float | None = None
        self._best_epoch: int | None = None
        self._best_weights: dict[str, Tensor] | None = None
        self._last_value: float | None = None
        self._wait = 0
        self._layers: list[HiddenLayer] = []
        self._epoch_started = 0.0

    def _validate(self) -> None:
        self._validate_numbers()
        for name in ("carry_optimizer_state", "restore_best"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.statistic not in UNIT_STATISTICS:
            raise ValueError(f"statistic must be one of {sorted(UNIT_STATISTICS)}, got {self.statistic!r}")
        if self.compensation not in COMPENSATIONS:
            raise ValueError(f"compensation must be one of {list(COMPENSATIONS)}, got {self.compensation!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.wide_epochs is None and self.patience is None:
            raise ValueError("set wide_epochs, patience or both: otherwise the rebuild never happens")
        validate_selector(DEFAULT_TYPES, self.include_names, ())

    def _validate_numbers(self) -> None:
        if not is_number(self.epsilon) or not 0 <= self.epsilon < 1:
            raise ValueError(
                f"epsilon must be a number in [0, 1) (relative to each layer's reference score), got {self.epsilon!r}"
            )
        if not is_number(self.reference_quantile) or not 0 < self.reference_quantile <= 1:
            raise ValueError(
                f"reference_quantile must be a number in (0, 1] (1.0: the layer's largest score), "
                f"got {self.reference_quantile!r}"
            )
        if not is_number(self.retrain_lr_scale) or not 0 < self.retrain_lr_scale <= 1:
            raise ValueError(f"retrain_lr_scale must be a number in (0, 1], got {self.retrain_lr_scale!r}")
        if not is_number(self.min_delta) or self.min_delta < 0:
            raise ValueError(f"min_delta must be a number >= 0, got {self.min_delta!r}")
        for name, lowest in [("wide_epochs", 0), ("patience", 1), ("retrain_epochs", 1), ("min_units", 1)]:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < lowest):
                raise ValueError(f"{name} must be an integer >= {lowest}, got {value!r}")

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            epsilon=self.epsilon,
            statistic=self.statistic,
            reference_quantile=self.reference_quantile,
            include_names=self.include_names,
        )

    @property
    def rebuilt(self) -> bool:
        return self.pruning_state.step > 0

    # ---------------------------------------------------------------- setup

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._check_epoch_budget(trainer)
        self._layers = find_hidden_layers(pl_module, example_input(trainer, pl_module), self.include_names)
        if not self.rebuilt:
            self.widths_before = layer_widths(pl_module, self._layers)
            self.params_before = count_parameters(pl_module)
        check_spawn_reload(trainer, pl_module, "DenseUnitPruning")
        resize_on_load(pl_module)

    def _check_epoch_budget(self, trainer: pl.Trainer) -> None:
        max_epochs = trainer.max_epochs
        if self.wide_epochs is None or trainer.fast_dev_run or max_epochs is None or max_epochs < 0:
            return
        if self.wide_epochs >= max_epochs:
            raise ValueError(
                f"DenseUnitPruning(wide_epochs={self.wide_epochs}) never rebuilds within "
                f"Trainer(max_epochs={max_epochs}): wide_epochs must be < max_epochs"
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """After a resume, the restored model must have the architecture this callback rebuilt."""
        if self._architecture is not None and architecture_spec(pl_module) != self._architecture:
            raise ValueError(
                "the restored model does not have the architecture DenseUnitPruning rebuilt; was the checkpoint "
                "written by another run?"
            )

    # ---------------------------------------------------------------- when

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.rebuilt:
            return
        if self.monitor not in trainer.callback_metrics:
            if self.patience is not None and self._last_value is None:
                raise ValueError(
                    f"DenseUnitPruning(monitor={self.monitor!r}) was not logged; "
                    f"available: {sorted(trainer.callback_metrics)}"
                )
            return  # not logged yet (Lightning keeps a logged metric's last value): nothing to compare
        self._last_value = float(trainer.callback_metrics[self.monitor])
        sign = 1.0 if self.mode == "min" else -1.0
        improved = self._best is None or sign * (self._best - self._last_value) > self.min_delta
        if broadcast(trainer, improved):  # rank 0 decides: every rank restores and rebuilds at the same point
            self._best, self._best_epoch, self._wait = self._last_value, trainer.current_epoch, 0
            if self.restore_best:
                self._best_weights = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}
        else:
            self._wait += 1

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.rebuilt and self._rebuild_due(trainer.current_epoch):
            self._rebuild(trainer, pl_module)
        self._epoch_started = time.perf_counter()

    def _rebuild_due(self, epoch: int) -> bool:
        late = self.wide_epochs is not None and epoch >= self.wide_epochs
        return late or (self.patience is not None and self._wait >= self.patience)

    # ---------------------------------------------------------------- what

    def _rebuild(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = self.pruning_state
        record: dict[str, Any] = {"step": 1, "epoch": trainer.current_epoch}
        if self._last_value is not None:
            record[f"{self.monitor}_before"] = self._last_value
        self._restore_best_weights(trainer, pl_module, record)
        with state.timed("prune"):
            moments = self._unit_moments(trainer, pl_module)
            plan = self._plan(moments) if trainer.is_global_zero else None
            plan = broadcast(trainer, plan)
            example = example_input(trainer, pl_module)
            if self.carry_optimizer_state:
                snapshot = OptimizerSnapshot.take(trainer, pl_module)
                origins = entry_origins(
                    pl_module, lambda m, x: rebuild_layers(m, x, self._layers, plan["kept"]), example
                )
            rebuild_layers(pl_module, example, self._layers, plan["kept"], plan["replacements"])
            rebuild_after_shrink(trainer)
            if self.carry_optimizer_state:
                snapshot.restore(trainer, pl_module, origins)
            _scale_learning_rates(trainer, self.retrain_lr_scale)
        self.widths_after = layer_widths(pl_module, self._layers)
        self.params_after = count_parameters(pl_module)
        self._architecture = architecture_spec(pl_module)
        state.step, state.last_step_epoch, state.phase = 1, trainer.current_epoch, "finetune"
        state.sparsity = 1.0 - self.params_after / self.params_before
        record.update(sparsity=state.sparsity, params=self.params_after, widths=dict(self.widths_after))
        state.history.append(record)
        info(
            log,
            f"rebuilt at epoch {trainer.current_epoch}: widths {self.widths_before} -> {self.widths_after}, "
            f"parameters {self.params_before} -> {self.params_after}",
        )

    def _restore_best_weights(self, trainer: pl.Trainer, pl_module: pl.LightningModule, record: dict[str, Any]) -> None:
        if not self.restore_best:
            return
        if self._best_weights is None:
            if trainer.current_epoch > 0:  # a rebuild before any training has nothing to restore
                rank_zero_warn(
                    f"DenseUnitPruning(restore_best=True): {self.monitor!r} was never logged before the rebuild; "
                    "pruning the last weights"
                )
            return
        pl_module.load_state_dict(self._best_weights)
        record["restored_epoch"], record[f"{self.monitor}_restored"] = self._best_epoch, self._best
        self._best_weights = None
        info(
            log,
            f"restored the weights of epoch {self._best_epoch} ({self.monitor}={self._best:.4g}) before the rebuild",
        )

    def _unit_moments(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, UnitMoments]:
        """Every rank scores its shard of the training data; the moments are merged across ranks."""
        limit = trainer.num_training_batches  # respects limit_train_batches; inf for the whole loader
        with torch.random.fork_rng(devices=[]):  # iterating a loader draws a seed; leave training's RNG alone
            batches = itertools.islice(trainer.train_dataloader, None if math.isinf(limit) else int(limit))
            inputs = (_batch_input(batch).to(pl_module.device) for batch in batches)
            covariance = self.compensation == "least_squares"
            moments = collect_unit_moments(pl_module, self._layers, inputs, covariance)
        if trainer.world_size == 1:
            return moments
        merged = {}
        for name, local in moments.items():
            gathered = pl_module.all_gather(local.to_tensor())
            comoments = [None] * len(gathered) if local.comoment is None else pl_module.all_gather(local.comoment)
            parts = [UnitMoments.from_tensor(part, comoment) for part, comoment in zip(gathered, comoments)]
            merged[name] = parts[0]
            for part in parts[1:]:
                merged[name] = merged[name].merge(part)
        return merged

    def _plan(self, moments: dict[str, UnitMoments]) -> dict[str, Any]:
        """Rank 0's decision, per layer: the kept units and what replaces the removed ones (CPU tensors)."""
        score = UNIT_STATISTICS[self.statistic]
        kept = {
            name: keep_units(score(moments[name]), self.epsilon, self.min_units, self.reference_quantile)
            for name in moments
        }
        replacements = None
        if self.compensation != "none":
            replacements = {name: replacement(moments[name].cpu(), kept[name], self.compensation) for name in moments}
        return {"kept": kept, "replacements": replacements}

    # ---------------------------------------------------------------- during retraining

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = self.pruning_state
        state.time_s["finetune" if self.rebuilt else "dense"] += time.perf_counter() - self._epoch_started
        self._log_state(pl_module)
        retrained = trainer.current_epoch - state.last_step_epoch + 1
        if self.rebuilt and self.retrain_epochs is not None and retrained >= self.retrain_epochs:
            state.phase = "done"
            trainer.should_stop = True

    def _log_state(self, pl_module: pl.LightningModule) -> None:
        params = count_parameters(pl_module)
        pl_module.log("prune/sparsity", 1.0 - params / self.params_before, on_step=False, on_epoch=True)
        pl_module.log("prune/step", float(self.pruning_state.step), on_step=False, on_epoch=True)
        pl_module.log("dense/params", float(params), on_step=False, on_epoch=True)
        for name, width in layer_widths(pl_module, self._layers).items():
            pl_module.log(f"dense/width/{name}", float(width), on_step=False, on_epoch=True)

    # ---------------------------------------------------------------- export and state

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.rebuilt:
            rank_zero_warn(
                f"DenseUnitPruning never rebuilt the model (wide_epochs={self.wide_epochs}, patience={self.patience})"
            )
        if trainer.is_global_zero and not trainer.fast_dev_run:
            self._export(trainer, pl_module)

    def _export(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state, directory = self.pruning_state, output_dir(trainer, self.export_dir)
        model_path = export_pruned(pl_module, directory / "pruned_model.pt")
        write_summary(
            directory / "summary.json",
            "dense_unit_pruning",
            {
                "epsilon": self.epsilon,
                "statistic": self.statistic,
                "rebuilt": self.rebuilt,
                "rebuild_epoch": state.last_step_epoch if self.rebuilt else None,
                "params_before": self.params_before,
                "params_after": count_parameters(pl_module),
                "param_reduction": 1.0 - count_parameters(pl_module) / self.params_before,
                "widths_before": self.widths_before,
                "widths_after": layer_widths(pl_module, self._layers),
                "time_s": state.time_s,
                "history": state.history,
                "metrics": final_metrics(trainer, "dense/width"),
                "exported_model": str(model_path),
            },
        )
        info(log, f"exported {model_path} ({count_parameters(pl_module)} parameters)")

    def state_dict(self) -> dict[str, Any]:
        return {
            "pruning_state": self.pruning_state.to_dict(),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "widths_before": dict(self.widths_before),
            "widths_after": dict(self.widths_after),
            "architecture": self._architecture,
            "best": self._best,
            "best_epoch": self._best_epoch,
            "best_weights": self._best_weights,
            "last_value": self._last_value,
            "wait": self._wait,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pruning_state = PruningState.from_dict(state_dict.get("pruning_state", {"num_steps": 1}))
        self.params_before = state_dict.get("params_before", self.params_before)
        self.params_after = state_dict.get("params_after", self.params_after)
        self.widths_before = state_dict.get("widths_before", self.widths_before)
        self.widths_after = state_dict.get("widths_after", self.widths_after)
        self._architecture = state_dict.get("architecture")
        self._best = state_dict.get("best")
        self._best_epoch = state_dict.get("best_epoch")
        self._best_weights = state_dict.get("best_weights")
        self._last_value = state_dict.get("last_value")
        self._wait = state_dict.get("wait", 0)


def _scale_learning_rates(trainer: pl.Trainer, scale: float) -> None:
    """Retrain gently: the fresh optimizers (and their schedulers' base rates) at ``scale`` times the rate.

    The scaled rates live in the optimizer and scheduler states, so a resumed run keeps them.
    """
    if scale == 1.0:
        return
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            group["lr"] *= scale
    for config in trainer.lr_scheduler_configs:
        config.scheduler.base_lrs = [lr * scale for lr in config.scheduler.base_lrs]


def _batch_input(batch: Any) -> Tensor:
    """The input of a training batch: the batch itself or its first element."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise ValueError(
        f"DenseUnitPruning scores units on training batches that are a tensor or (x, ...); got {type(batch).__name__}"
    )
