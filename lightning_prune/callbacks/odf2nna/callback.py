"""ODF2NNA: keep the useful hidden units of a dense feed-forward net, rebuild it physically smaller, retrain."""

from __future__ import annotations

import copy
import functools
import logging
import time
from typing import Any

import lightning.pytorch as pl

from lightning_prune.callbacks._carry import carried_optimizer, scale_learning_rates
from lightning_prune.callbacks._contract import (
    check_refit,
    check_training_budget,
    count_epochs_on,
    refuse_nonfinite,
    refuse_other_pruners,
)
from lightning_prune.callbacks._trainer import broadcast, check_spawn_reload, example_input, info, resize_on_load
from lightning_prune.callbacks.odf2nna.report import REQUESTER, check_at_fit_end, epochs_needed, export, log_skipped
from lightning_prune.callbacks.odf2nna.scoring import training_moments
from lightning_prune.callbacks.odf2nna.trigger import RebuildTrigger
from lightning_prune.callbacks.protocol import PruningCallback, PruningState
from lightning_prune.core.odf2nna import (
    COMPENSATIONS,
    UNIT_STATISTICS,
    HiddenLayer,
    RebuildPlan,
    layer_widths,
    plan_rebuild,
    rebuild_layers,
    scan_linears,
    sync_configs,
)
from lightning_prune.core.selection import DEFAULT_TYPES, validate_selector
from lightning_prune.core.structured import architecture_spec, count_parameters
from lightning_prune.core.validate import check_choice, check_fraction, check_int, check_output_dir

log = logging.getLogger(__name__)
# Sizes before and after the rebuild, saved in checkpoints (the summary and a resumed run need them).
_SIZES = ("params_before", "params_after", "widths_before", "widths_after")


class DenseUnitPruning(PruningCallback):
    """Score every hidden unit of the model's ``nn.Linear`` stacks, keep the useful ones, rebuild, retrain.

    ODF2NNA (Balderas, Lastra & Benítez, "Optimizing dense feed-forward neural networks", Neural Networks
    2024, Sec. 3): train a generously sized dense net, score each hidden unit by the variability of its
    output over the training data (``statistic``, read where the next layer receives it, model in eval
    mode), remove the units below ``epsilon`` times their layer's reference score, rebuild a narrower net
    with the surviving weights, retrain. Here the rebuild happens in place at the start of an epoch (after
    ``wide_epochs``, or on a ``patience`` plateau of ``monitor``), by default from the best ``monitor``
    weights so far; the removed units' input to the next layer is rebuilt from the kept units
    (``compensation``); norms and the next layers' inputs shrink through torch-pruning; the optimizer is
    rebuilt with its state carried; training goes on. Every plain ``Linear -> (activation | norm |
    dropout)* -> Linear`` stack is found in a traced graph, including a transformer block's MLP (and a gated
    ``gate_proj``/``up_proj -> down_proj`` one): its hidden units are pruned, the residual width it writes back
    to is not. Every other Linear (attention projections, residual writers, shared or reshaped ones) is skipped
    and named at fit start, with why (``skipped_layers``); a model with no stack is refused. A Hugging Face
    config on the model gets the rebuilt ``intermediate_size`` (``intermediate_sizes`` per layer when they
    differ). See docs/odf2nna.md for the measured results.

    Requires from your LightningModule: batches and a ``forward`` that
    :mod:`lightning_prune.core.model_io` reads (``(x, ...)``, a tensor, or a dict such as Hugging Face's
    ``input_ids``/``attention_mask``/``labels`` passed as ``forward(**inputs)``); an ``example_input_array``
    or a validation batch (to trace the graph), from a datamodule or loaders passed to ``fit``; a
    ``configure_optimizers`` over all parameters (it is called again after the rebuild); the logged
    ``monitor`` when ``patience`` is set.

    Args:
        epsilon: relative threshold in [0, 1): a unit is kept when ``score >= epsilon * reference``, the
            reference being its layer's largest score by default (0 keeps every unit; with epsilon > 0 a
            constant unit is always removed).
        statistic: the unit score, a key of :data:`~lightning_prune.core.odf2nna.UNIT_STATISTICS`
            (``"std"``, ``"variance"``, ``"range"``).
        wide_epochs: rebuild at the start of this epoch at the latest (``None``: only on a plateau).
        patience: rebuild once ``monitor`` has not improved for this many validation runs (``None``: off).
        monitor: metric watched for the plateau; ``mode`` says whether lower (``"min"``) or higher is better.
        min_delta: smallest change of ``monitor`` that counts as an improvement.
        retrain_epochs: epochs trained after the rebuild before training stops (``None``: until max_epochs).
        retrain_lr_scale: the rebuilt optimizer's learning rate(s) times this, in (0, 1]: "lightly retrain"
            the transferred weights rather than shake them with the full rate.
        compensation: what replaces the removed units' input to the next layer: ``"least_squares"`` (their
            affine reconstruction from the kept units over the training data, from a ``units x units``
            covariance per layer), ``"mean"`` (folded into the next bias) or ``"none"`` (the paper's plain transfer).
        min_units: units every layer keeps at least (the highest-scoring).
        include_names: regex on Linear names; only matching layers are pruned (default: every stack).
        export_dir: where ``pruned_model.pt`` and ``summary.json`` go (default: the Trainer's root dir).
        reference_quantile: in (0, 1]: the layer's reference score is this quantile of its scores
            (1.0: the largest, methods.md's rule; 0.99: a few runaway units cannot empty the layer).
        restore_best: rebuild from the weights of the best ``monitor`` value so far (one CPU copy, carried by
            checkpoints until the rebuild); ``False``, or ``monitor`` never logged: the last weights.
        carry_optimizer_state: give the rebuilt optimizer the kept entries' state (Adam moments, step counts),
            the rates and the schedulers' positions (one float64 copy of the module during the rebuild), so
            training continues rather than restarts; ``False``: a fresh optimizer from ``configure_optimizers``.

    A second ``fit`` with the same instance on the same model keeps the rebuilt net (no second rebuild) and
    retrains on; on another model it is refused. At fit end, before the export, the weights must be finite
    and the parameter count it reports must be the model's; the summary carries the measured figures and
    whether the schedule finished (a warning says why when not).

    Raises:
        ValueError: for arguments out of range or unknown names, an ``export_dir`` that cannot be a directory;
            in ``setup``, another pruner in the Trainer, a model pruned by an earlier fit, no plain Linear
            stack, or a Trainer that cannot train ``wide_epochs + retrain_epochs`` (or has no batches).
        FloatingPointError: when the weights are not finite after the rebuild or at fit end (nothing exported).

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
        self.retrain_lr_scale, self.restore_best = retrain_lr_scale, restore_best
        self.monitor, self.mode, self.min_delta = monitor, mode, min_delta
        self.compensation, self.min_units, self.include_names = compensation, min_units, include_names
        self.export_dir = check_output_dir("export_dir", export_dir)
        self.carry_optimizer_state = carry_optimizer_state
        self._trigger = RebuildTrigger(wide_epochs, patience, monitor, mode, min_delta, restore_best)  # checks those
        self._validate()
        self.pruning_state = PruningState(num_steps=1)
        self.params_before = self.params_after = 0
        self.widths_before: dict[str, int] = {}
        self.widths_after: dict[str, int] = {}
        self._architecture: dict[str, Any] | None = None
        self._layers: list[HiddenLayer] = []
        self.skipped_layers: dict[str, str] = {}  # Linear name -> why it is not a hidden layer
        self.hf_configs: dict[str, dict[str, Any]] = {}  # Hugging Face config fields set by the rebuild
        self._epoch_started = 0.0
        self._epochs_seen = 0  # training epochs of the latest fit (a second fit's epochs count on from them)

    def _validate(self) -> None:
        check_fraction("epsilon", self.epsilon, closed_low=True)
        check_fraction("reference_quantile", self.reference_quantile, closed_high=True)
        check_fraction("retrain_lr_scale", self.retrain_lr_scale, closed_high=True)
        check_int("retrain_epochs", self.retrain_epochs, 1, optional=True)
        check_int("min_units", self.min_units, 1)
        for name in ("carry_optimizer_state", "restore_best"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        check_choice("statistic", self.statistic, sorted(UNIT_STATISTICS))
        check_choice("compensation", self.compensation, COMPENSATIONS)
        validate_selector(DEFAULT_TYPES, self.include_names, ())

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

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        refuse_other_pruners(trainer, self)
        if check_refit(self, pl_module):  # a second fit: keep everything, count its epochs on
            count_epochs_on(self.pruning_state, self._epochs_seen, trainer)
        check_training_budget(trainer, REQUESTER, *epochs_needed(self, trainer))
        scan = scan_linears(pl_module, example_input(trainer, pl_module), self.include_names)
        self._layers, self.skipped_layers = scan.layers, scan.skipped
        log_skipped(self._layers, self.skipped_layers)
        if not self.rebuilt:
            self.widths_before = layer_widths(pl_module, self._layers)
            self.params_before = count_parameters(pl_module)
        check_spawn_reload(trainer, pl_module, "DenseUnitPruning")
        resize_on_load(pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """After a resume, the restored model must have the architecture this callback rebuilt."""
        if self._architecture is not None and architecture_spec(pl_module) != self._architecture:
            raise ValueError(
                "the restored model does not have the architecture DenseUnitPruning rebuilt; was the checkpoint "
                "written by another run?"
            )
        if self.rebuilt:  # a resumed model was resized from the checkpoint: its config follows
            self.hf_configs = sync_configs(pl_module, self._layers)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and not self.rebuilt:
            self._trigger.observe(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.rebuilt and self._trigger.due(trainer.current_epoch):
            self._rebuild(trainer, pl_module)
        self._epoch_started = time.perf_counter()

    def _rebuild(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = self.pruning_state
        record: dict[str, Any] = {"step": 1, "epoch": trainer.current_epoch}
        self._trigger.before_rebuild(trainer, pl_module, record)
        with state.timed("prune"):
            covariance = self.compensation == "least_squares"
            moments = training_moments(trainer, pl_module, self._layers, covariance)
            plan = self._plan(moments) if trainer.is_global_zero else None
            self._apply(trainer, pl_module, broadcast(trainer, plan))  # rank 0 decided, every rank applies
        self.widths_after = layer_widths(pl_module, self._layers)
        self.hf_configs = sync_configs(pl_module, self._layers)
        self.params_after = count_parameters(pl_module)
        self._architecture = architecture_spec(pl_module)
        refuse_nonfinite(pl_module, REQUESTER, f"after the rebuild at epoch {trainer.current_epoch}")
        state.step, state.last_step_epoch, state.phase = 1, trainer.current_epoch, "finetune"
        state.sparsity = 1.0 - self.params_after / self.params_before
        record.update(sparsity=state.sparsity, params=self.params_after, widths=dict(self.widths_after))
        state.history.append(record)
        info(
            log,
            f"rebuilt at epoch {trainer.current_epoch}: widths {self.widths_before} -> {self.widths_after}, "
            f"parameters {self.params_before} -> {self.params_after}",
        )

    def _plan(self, moments: dict) -> RebuildPlan:
        """Per layer: the kept units and what replaces the removed ones (CPU tensors)."""
        return plan_rebuild(
            moments, self.statistic, self.epsilon, self.min_units, self.reference_quantile, self.compensation
        )

    def _apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule, plan: RebuildPlan) -> None:
        """Rebuild the layers, then the optimizer over the new parameters (kept entries' state carried)."""
        example = example_input(trainer, pl_module)
        trace = functools.partial(rebuild_layers, layers=self._layers, kept=plan.kept)  # moves entries, no values
        with carried_optimizer(trainer, pl_module, trace, example, self.carry_optimizer_state):
            rebuild_layers(pl_module, example, self._layers, plan.kept, plan.replacements)
        scale_learning_rates(trainer, self.retrain_lr_scale)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = self.pruning_state
        state.time_s["finetune" if self.rebuilt else "dense"] += time.perf_counter() - self._epoch_started
        self._log_state(pl_module)
        self._epochs_seen = trainer.current_epoch + 1
        retrained = trainer.current_epoch - state.last_step_epoch + 1
        finishing = self.rebuilt and state.phase != "done" and self.retrain_epochs is not None
        if finishing and retrained >= self.retrain_epochs:  # once: a finished schedule trains on in a later fit
            state.phase = "done"
            trainer.should_stop = True

    def _log_state(self, pl_module: pl.LightningModule) -> None:
        params = count_parameters(pl_module)
        pl_module.log("prune/sparsity", 1.0 - params / self.params_before, on_step=False, on_epoch=True)
        pl_module.log("prune/step", float(self.pruning_state.step), on_step=False, on_epoch=True)
        pl_module.log("odf2nna/params", float(params), on_step=False, on_epoch=True)
        for name, width in layer_widths(pl_module, self._layers).items():
            pl_module.log(f"odf2nna/width/{name}", float(width), on_step=False, on_epoch=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.fast_dev_run:
            return
        checked = check_at_fit_end(self, trainer, pl_module)  # every rank: a refusal stops them all
        if trainer.is_global_zero:
            export(self, trainer, pl_module, checked)

    def state_dict(self) -> dict[str, Any]:
        sizes = {name: copy.copy(getattr(self, name)) for name in _SIZES}
        state = {"pruning_state": self.pruning_state.to_dict(), "architecture": self._architecture}
        return {**state, **sizes, **self._trigger.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pruning_state = PruningState.from_dict(state_dict.get("pruning_state", {"num_steps": 1}))
        for name in _SIZES:
            setattr(self, name, state_dict.get(name, getattr(self, name)))
        self._architecture = state_dict.get("architecture")
        self._trigger.load_state_dict(state_dict)
