"""Anytime Progressive Pruning: data arrives in megabatches; sparsity steps up with each one."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl

from lightning_prune.callbacks._contract import check_refit, refuse_nonfinite, refuse_other_pruners
from lightning_prune.callbacks._trainer import broadcast, info, reload_train_data, serve_train_loader
from lightning_prune.callbacks.anytime_progressive.best import (
    BestWeights,
    holdout_accuracy,
    initial_learning_rates,
    restart_learning_rates,
)
from lightning_prune.callbacks.anytime_progressive.checks import (
    NAME,
    check_budget,
    megabatch_data,
    refuse_listeners,
    validate_arguments,
    warn_untrained,
)
from lightning_prune.callbacks.anytime_progressive.continuation import continue_schedule, remaining_epochs
from lightning_prune.callbacks.anytime_progressive.metrics import record_megabatch
from lightning_prune.callbacks.anytime_progressive.report import export, log_state, verified_report
from lightning_prune.callbacks.anytime_progressive.snip import snip_plan
from lightning_prune.callbacks.protocol import PruningCallback, PruningState
from lightning_prune.core.masks import MaskSet
from lightning_prune.core.schedules import APP_TARGET_SPARSITY
from lightning_prune.core.selection import DEFAULT_TYPES, select_parameters
from lightning_prune.core.validate import check_output_dir
from lightning_prune.data.megabatch import MegabatchDataModule

log = logging.getLogger(__name__)


class AnytimeProgressivePruning(PruningCallback):
    """Prune progressively as megabatches of data arrive, keeping a usable model after every one.

    Anytime Progressive Pruning (APP; Misra et al., arXiv 2204.01640): at the first epoch of megabatch t
    the training data grows to megabatch t plus replay of earlier ones (a :class:`MegabatchDataModule`
    the callback moves along), the selected weights are scored by SNIP (|gradient x weight| of the
    cross-entropy summed over a seeded subset of that data) *at their current trained values*, and the
    lowest-scoring survivors are pruned, so masks are nested and the density equals the schedule's
    exactly (the reference code instead intersects masks scored on re-initialised weights; we do not
    copy that). Then ``epochs_per_megabatch`` epochs of training follow with the masks held after every
    optimizer step. After each megabatch the model is evaluated: train/val/test accuracy, the
    generalisation gap (train - val accuracy) and the cumulative error rate (CER, test errors summed
    over megabatches), logged under ``app/`` and kept per megabatch in ``summary.json``.

    Requires from your LightningModule: a forward returning class logits (a tensor or an output with
    ``.logits``) for labelled batches, ``(x, y)`` or dicts with ``labels`` (read by
    :mod:`lightning_prune.core.model_io`; a ``split_batch`` method on the module reads any other kind). SNIP
    differentiates the cross-entropy of those logits; accuracy is their argmax. The data: a
    :class:`MegabatchDataModule` of ``num_megabatches``, or your own (``fit(model, train_loader, val_loader)``
    or a data module): the training loader's dataset is split (:meth:`MegabatchDataModule.from_loaders`).

    Args:
        target_sparsity: fraction of the selected weights pruned after the last megabatch, in [0, 1);
            0 trains dense under the same protocol (the paper's dense baseline). The default is the
            paper's tau = 4.5 (density 0.8^4.5, about 1/3 of the weights kept).
        num_megabatches: number of megabatches M (must match the data module's).
        epochs_per_megabatch: epochs of training on each megabatch's data.
        schedule: ``"app"`` (density 0.8^e, e spaced linearly from 1 to tau = log(1 - target) / log(0.8);
            needs target >= 0.2), ``"linear"``, ``"cubic"`` (Zhu & Gupta), or ``"oneshot"`` (the final
            sparsity at the first megabatch, masks fixed after: the paper's anytime OSP).
        snip_fraction: SNIP subset size as a fraction of one megabatch, drawn (seeded) from the current
            training data, in (0, 1] (the paper: 0.2).
        scope: ``"global"`` (one SNIP ranking over all layers, the paper's) or ``"layer"``.
        replay: training data at megabatch t: ``"full"`` (megabatches 1..t, the paper's default),
            ``"partial"`` (t plus a fixed ``replay_fraction`` buffer of each earlier one) or ``"none"``.
        replay_fraction: share of each earlier megabatch replayed with ``replay="partial"``, in (0, 1).
        holdout_fraction: share of every megabatch held out of training, in [0, 1) (the paper: 0.1); its held-out
            part ranks the epochs' weights for ``restore_best``.
        restore_best: after each megabatch, reload the weights of its epoch with the best held-out accuracy
            (the paper's code does); needs ``holdout_fraction`` > 0.
        restart_lr: start every megabatch at the initial learning rate, its scheduler back at epoch 0 (the paper
            restarts SGD at lr 0.1 with its MultiStepLR per megabatch).
        include_types, include_names, exclude_names, prune_head, include_biases: which weights are
            pruned (see :func:`~lightning_prune.core.selection.select_parameters`; the head stays dense).
        stop_when_done: stop training after the last megabatch's epochs.
        log_layers: also log per-layer sparsity as ``prune_layer/<parameter name>``.
        export_dir: where ``pruned_model.pt`` and ``summary.json`` go (default: the Trainer's root dir).
        seed: seed of the split of your own training loader (a MegabatchDataModule has its own seed).

    A second ``fit`` of this instance on the same model continues (masks, megabatch, history kept; nothing
    regrows). At fit end the reported sparsity is checked against the weights; the summary has the measured.
    Lightning's ``trainer.estimated_stepping_batches`` (what a per-step learning rate schedule is sized on) counts
    the whole training data, as without APP. A first megabatch that prunes at global step 0 of a fit not resumed
    from a checkpoint is warned of at fit start: SNIP would score untrained weights unless you loaded trained ones.

    Raises:
        ValueError: at construction, for arguments out of range, unknown names or an ``export_dir`` that
            cannot be a directory; at ``setup``, for a MegabatchDataModule of another ``num_megabatches``,
            data that cannot be split (:meth:`MegabatchDataModule.from_loaders`), a Trainer stopping before the
            schedule's epochs (``max_epochs``, ``max_steps``, no batches), another pruner or an ICE listener
            beside it, or another model than the one an earlier ``fit`` of this instance pruned.
        FloatingPointError: when the weights are not finite at a step or at fit end (nothing is exported).

    Example::

        >>> import lightning.pytorch as pl
        >>> from lightning_prune import AnytimeProgressivePruning
        >>> from lightning_prune.data import DigitsDataModule, MegabatchDataModule
        >>> from lightning_prune.models import Classifier, SmallCNN
        >>> data = MegabatchDataModule(DigitsDataModule(batch_size=128), num_megabatches=3)
        >>> app = AnytimeProgressivePruning(num_megabatches=3, epochs_per_megabatch=1, export_dir=None)
        >>> model = Classifier(SmallCNN((1, 8, 8), 10, widths=(8, 8)), 10, (1, 8, 8))
        >>> trainer = pl.Trainer(max_epochs=3, callbacks=[app], logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False, default_root_dir="/tmp/lp-doc")
        >>> trainer.fit(model, datamodule=data)
        >>> [round(r["sparsity"], 2) for r in app.pruning_state.history]
        [0.2, 0.46, 0.63]
    """

    notifies_listeners = False  # trains every epoch: no fine-tune for a listener to gate, freeze or set a rate for

    def __init__(
        self,
        target_sparsity: float = APP_TARGET_SPARSITY,
        num_megabatches: int = 8,
        epochs_per_megabatch: int = 5,
        schedule: str = "app",
        snip_fraction: float = 0.2,
        scope: str = "global",
        replay: str = "full",
        replay_fraction: float = 0.1,
        holdout_fraction: float = 0.0,
        restore_best: bool = False,
        restart_lr: bool = False,
        include_types: Sequence[str] = DEFAULT_TYPES,
        include_names: str | None = None,
        exclude_names: Sequence[str] = (),
        prune_head: bool = False,
        include_biases: bool = False,
        stop_when_done: bool = True,
        log_layers: bool = False,
        export_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        self.target_sparsity, self.schedule, self.scope = target_sparsity, schedule, scope
        self.num_megabatches, self.epochs_per_megabatch = num_megabatches, epochs_per_megabatch
        self.snip_fraction, self.replay, self.replay_fraction = snip_fraction, replay, replay_fraction
        self.include_types, self.include_names = list(include_types), include_names
        self.exclude_names, self.prune_head, self.include_biases = list(exclude_names), prune_head, include_biases
        self.stop_when_done, self.log_layers, self.seed = stop_when_done, log_layers, seed
        self.holdout_fraction, self.restore_best, self.restart_lr = holdout_fraction, restore_best, restart_lr
        self.sparsities = validate_arguments(self)
        self.export_dir = check_output_dir("export_dir", export_dir)
        self.pruning_state = PruningState(target_sparsity=target_sparsity, num_steps=num_megabatches)
        self._names: list[str] = []
        self._masks: MaskSet | None = None
        self._data: MegabatchDataModule | None = None
        self._own_split = False  # True: _data splits fit's own training loader, served through the fit loop
        self._epoch_started = 0.0
        self._best, self._initial_lrs = BestWeights(), []
        # A later fit continues (check_refit) unless a checkpoint is loaded; _epochs_seen: the last fit's epochs.
        self._refit, self._loaded, self._epochs_seen = False, False, 0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            target_sparsity=self.target_sparsity, num_megabatches=self.num_megabatches, schedule=self.schedule
        )

    # ---------------------------------------------------------------- setup

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        refuse_other_pruners(trainer, self)
        self._refit, self._loaded = check_refit(self, pl_module), False
        self._data, self._own_split = megabatch_data(trainer, self.num_megabatches, self.seed)
        if self.holdout_fraction:
            self._data.set_holdout(self.holdout_fraction)
        refuse_listeners(trainer)
        self._serve(trainer, max(self.pruning_state.step - 1, 0), reload=False)
        continued = self._refit and trainer.ckpt_path is None  # else the whole schedule, as for a resume
        schedule = self.pruning_state, self.num_megabatches, self.epochs_per_megabatch
        remaining = remaining_epochs(*schedule, continued, self._epochs_seen)
        check_budget(trainer, self._data, *remaining, self.replay, self.replay_fraction)
        self._names = select_parameters(
            pl_module, self.include_types, self.include_names, self.exclude_names, self.prune_head, self.include_biases
        )
        if self._masks is None:  # kept by a later fit; replaced by a checkpoint's when one is loaded
            self._masks = MaskSet.dense(pl_module, self._names)
        self._serve_whole(trainer)  # after the budget check, which counts the megabatch's own batches

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs after a checkpoint's callback state is loaded; setup left the whole data served (_serve_whole).
        if self._refit and not self._loaded:
            continue_schedule(self.pruning_state, trainer, self._epochs_seen, self.epochs_per_megabatch)
        self._epochs_seen = trainer.current_epoch
        self._serve(trainer, max(self.pruning_state.step - 1, 0))
        warn_untrained(trainer, self)

    def _serve_whole(self, trainer: pl.Trainer) -> None:
        """Until fit start, serve the whole training set (every megabatch), as the Trainer would without APP.

        Lightning sizes ``trainer.estimated_stepping_batches`` on the loader loaded when ``configure_optimizers``
        reads it: sized on the first megabatch's share, a per-step learning rate schedule (linear decay, one-cycle)
        reaches zero halfway and the later megabatches train at rate 0 (HF BERT from scratch: chance accuracy,
        53 pt below plain training). :meth:`on_fit_start` serves the current megabatch.
        """
        self._data.set_megabatch(self.num_megabatches - 1, "full")
        if self._own_split:
            serve_train_loader(trainer, self._data.train_dataloader())
        reload_train_data(trainer)

    def _serve(self, trainer: pl.Trainer, megabatch: int, reload: bool = True) -> None:
        """Train on ``megabatch``'s data from now on (with ``reload``, at once unless it is already served)."""
        if reload and (self._data.megabatch, self._data.replay) == (megabatch, self.replay):
            return
        self._data.set_megabatch(megabatch, self.replay, self.replay_fraction)
        if self._own_split:  # the fit loop reads fit's own loader: hand it this megabatch's
            serve_train_loader(trainer, self._data.train_dataloader())
        if reload:
            reload_train_data(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._masks.bind(pl_module).apply()
        self._initial_lrs = initial_learning_rates(trainer)

    # ---------------------------------------------------------------- the loop

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._megabatch_trained(trainer) and not self._recorded():
            # Resumed from the checkpoint of a megabatch's last epoch, saved before its record was taken.
            record_megabatch(self, trainer, pl_module, epochs_done=trainer.current_epoch)
        state = self.pruning_state
        if state.step < self.num_megabatches and (state.step == 0 or self._megabatch_trained(trainer)):
            self._start_megabatch(trainer, pl_module, state.step)
        self._epoch_started = time.perf_counter()

    def _megabatch_trained(self, trainer: pl.Trainer) -> bool:
        state = self.pruning_state
        return state.step > 0 and trainer.current_epoch - state.last_step_epoch >= self.epochs_per_megabatch

    def _recorded(self) -> bool:
        history = self.pruning_state.history
        return not history or "val_acc" in history[-1]

    def _start_megabatch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, megabatch: int) -> None:
        state, data = self.pruning_state, self._data
        self._serve(trainer, megabatch)
        self._best.reset()
        if self.restart_lr and megabatch > 0:
            restart_learning_rates(trainer, self._initial_lrs)
        record: dict[str, Any] = {"step": megabatch + 1, "epoch": trainer.current_epoch}
        refuse_nonfinite(pl_module, NAME, f"before step {megabatch + 1}")  # on every rank, before rank 0 scores
        with state.timed("prune"):
            started = time.perf_counter()
            sparsity = self.sparsities[megabatch]
            if sparsity > self._masks.sparsity():
                plan = snip_plan(self, trainer, pl_module, megabatch, sparsity) if trainer.is_global_zero else None
                self._masks.update(broadcast(trainer, plan))
                self._masks.apply()
            state.step, state.last_step_epoch, state.phase = megabatch + 1, trainer.current_epoch, "finetune"
            state.sparsity = self._masks.sparsity()
        refuse_nonfinite(pl_module, NAME, f"after step {megabatch + 1}")
        record.update(
            sparsity=state.sparsity,
            density=1.0 - state.sparsity,
            train_samples=len(data.current_train_set()),
            prune_s=time.perf_counter() - started,
        )
        state.history.append(record)
        info(log, f"megabatch {megabatch + 1}/{self.num_megabatches}: sparsity {state.sparsity:.4f}")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.pruning_state.sparsity > 0:
            self._masks.apply()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = self.pruning_state
        state.time_s["finetune"] += time.perf_counter() - self._epoch_started
        log_state(self, pl_module)
        epochs_done = self._epochs_seen = trainer.current_epoch + 1
        if self.restore_best and state.step > 0 and not self._recorded():
            self._best.offer(pl_module, holdout_accuracy(trainer, pl_module, self._data, self), trainer.current_epoch)
        if epochs_done - state.last_step_epoch == self.epochs_per_megabatch and not self._recorded():
            if self.restore_best:
                self._best.restore(pl_module)
                state.history[-1].update(best_epoch=self._best.epoch, holdout_acc=self._best.accuracy)
            record_megabatch(self, trainer, pl_module, epochs_done)
            if state.step >= self.num_megabatches:
                state.phase = "done"
                if self.stop_when_done:
                    trainer.should_stop = True

    # ---------------------------------------------------------------- export and state

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._recorded():  # stopped early, or resumed from the very last epoch's checkpoint
            record_megabatch(self, trainer, pl_module, trainer.current_epoch, log=False)
        refuse_nonfinite(pl_module, NAME, "at fit end")
        if trainer.fast_dev_run:
            return
        verified = verified_report(self, trainer, pl_module)
        if trainer.is_global_zero:
            export(self, trainer, pl_module, verified)

    def state_dict(self) -> dict[str, Any]:
        return {
            "pruning_state": self.pruning_state.to_dict(),
            "masks": self._masks.state_dict() if self._masks else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pruning_state = PruningState.from_dict(state_dict.get("pruning_state", {}))
        masks = state_dict.get("masks")
        if masks is not None:
            self._masks = MaskSet(masks)
        self._loaded = True
