"""ICE-Pruning's accuracy gate: skip the fine-tune after a pruning step that barely hurt accuracy."""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from lightning_prune.callbacks._trainer import has_validation_data, info, output_dir, validation_loader
from lightning_prune.callbacks.ice.hold import FirstStepHold
from lightning_prune.callbacks.ice.measure import (
    MetricFn,
    batch_accuracy,
    chance_level,
    check_first_batch,
    pooled_score,
    refuse_chance_level,
    resolve_metric,
)
from lightning_prune.callbacks.protocol import PruningListener, PruningState, find_pruner
from lightning_prune.core.export import write_summary
from lightning_prune.core.validate import check_int, check_output_dir, is_number

log = logging.getLogger(__name__)


class AccuracyGate(Callback, PruningListener):
    """Skip a fine-tune when the pruning step before it cost less than ``threshold`` points of accuracy.

    ICE-Pruning (Hu, Henderson, Cano, arXiv 2505.07411), the threshold mechanism: the accuracy ``A0``
    of the unpruned model is measured once, right before the first pruning step, and stays the
    reference for the whole run (as in the paper's code). After every step the gate measures ``A_b``
    on the first ``val_batches`` validation batches; if ``A0 - A_b < threshold`` (percentage points)
    the pruner skips the fine-tune and prunes the next block at once, otherwise it fine-tunes.
    Works with any step-wise pruner of the suite (the paper's is :class:`~lightning_prune.BlockPruning`).
    By default (``require_settled``) it skips only once ``A0`` is a settled net's: one that gained less
    than ``threshold`` since the gate last measured it, as the paper's pre-trained nets do.

    Every decision goes into the pruner's ``history`` (``acc_reference``, ``acc_after``, ``drop_pt``,
    ``gate_skip``), into ``summary.json`` (section ``ice_gate``) and into the logged metrics
    ``ice/acc_reference``, ``ice/acc_after``, ``ice/drop_pt``, ``ice/finetunes_skipped``; once pruning is
    over it also measures the accuracy the run ends with on the same batches (``ice/acc_final``,
    ``ice/drop_final_pt``: what two-stage tuning bounds). Evaluation time
    is counted in the pruner's ``time_s["evaluate"]``. Under DDP each rank evaluates every
    ``world_size``-th of those batches and the counts are summed, so all ranks decide identically (and
    as a single process would).

    Requires from your LightningModule: validation data (a ``val_dataloader`` on the module or
    datamodule, or ``val_dataloaders`` passed to ``fit``); with the default metric, ``(x, y)`` batches
    and a ``forward`` returning logits.

    Args:
        threshold: accuracy drop (percentage points, relative to ``A0``) below which the fine-tune is
            skipped; >= 0.
        val_batches: how many validation batches each evaluation uses (``None``: all of them); >= 1.
        metric_fn: ``None`` for top-1 accuracy (:func:`batch_accuracy`), a callable
            ``(pl_module, batch) -> (score_sum, count)``, or the dotted import path of one (YAML).
        hold_untrained: when the first step is due while accuracy is at chance level (a from-scratch run with
            the pruner's default ``warmup_epochs=0``), hold it until validation accuracy levels off (gains below
            ``threshold`` per epoch) or the latest epoch from which the schedule fits ``max_epochs``, with a
            warning (:mod:`~lightning_prune.callbacks.ice.hold`). ``False``: refuse such an ``A0`` instead. With a
            custom ``metric_fn`` (no chance level known) the step is never held.
        require_settled: skip fine-tunes only once ``A0`` is a settled net's: the gate also measures at the start
            of the epoch before the first step is due, and while ``A0`` is ``threshold`` points or more above the
            accuracy it last measured, the net is still learning (a from-scratch run with a short warm-up) and a
            step's drop against ``A0`` says little about what a fine-tune would recover: every fine-tune runs
            (with a warning) and ``A0`` is taken again before each step (the accuracy the run has reached) until
            it gains less than ``threshold``; from then on the gate works as in the paper. ``False``: the paper's
            gate, ``A0`` taken once whatever it is (the ICE recipe sets it, after its dense warm-up).
        finetune_last: always fine-tune after the last step, whatever its drop, so the model the run
            ends with has been fine-tuned since its last prune (the paper's DenseNet pipeline ends with a
            final fine-tune too). With it a large ``threshold`` costs less accuracy: drops can pile up
            over skipped steps and one fine-tune at the end recovers them.
        export_dir: where ``summary.json`` goes (default: the Trainer's root dir).

    Raises:
        ValueError: for a negative ``threshold``, ``val_batches`` < 1, an unimportable ``metric_fn``
            path, (in ``setup``) when there is no pruner or no validation data, (at fit start) when the
            validation data yields no batch or, with the default metric, batches it cannot score (see
            :mod:`~lightning_prune.core.model_io`), and before the first step when ``A0`` is at chance level
            (within ``CHANCE_MARGIN`` of 1/classes, the logits' width) and the step is not held (``hold_untrained``,
            or its last epoch reached): an untrained net, whose every drop would look small.
        TypeError: when ``metric_fn`` is neither ``None``, a string nor a callable.

    Example::

        >>> import lightning.pytorch as pl
        >>> from lightning_prune import AccuracyGate, BlockPruning
        >>> from lightning_prune.data import DigitsDataModule
        >>> from lightning_prune.models import Classifier, ResNet
        >>> pruning = BlockPruning(step_ratio=0.5, warmup_epochs=1, export_dir=None)
        >>> gate = AccuracyGate(threshold=100.0, val_batches=2)  # any drop is small: every fine-tune skipped
        >>> model = Classifier(ResNet((1, 8, 8), 10, blocks=(1, 1), widths=(8, 8)), 10, (1, 8, 8))
        >>> trainer = pl.Trainer(max_epochs=3, callbacks=[pruning, gate], logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False, default_root_dir="/tmp/lp-doc")
        >>> trainer.fit(model, datamodule=DigitsDataModule(batch_size=32))  # warmed up past chance level
        >>> [record["finetune"] for record in pruning.pruning_state.history]
        ['skipped', 'skipped']
    """

    def __init__(
        self,
        threshold: float = 1.0,
        val_batches: int | None = 4,
        metric_fn: str | MetricFn | None = None,
        finetune_last: bool = False,
        hold_untrained: bool = True,
        require_settled: bool = True,
        export_dir: str | None = None,
    ) -> None:
        if not is_number(threshold) or threshold < 0:
            raise ValueError(f"threshold must be a number of accuracy points >= 0, got {threshold!r}")
        check_int("val_batches", val_batches, low=1, optional=True)
        self.threshold, self.val_batches, self.metric_fn = threshold, val_batches, metric_fn
        self.export_dir = check_output_dir("export_dir", export_dir)
        flags = {"finetune_last": finetune_last, "hold_untrained": hold_untrained, "require_settled": require_settled}
        for flag, value in flags.items():
            if not isinstance(value, bool):
                raise ValueError(f"{flag} must be true or false, got {value!r}")
        self.finetune_last, self.hold_untrained, self.require_settled = finetune_last, hold_untrained, require_settled
        self.hold = FirstStepHold(tolerance_pt=threshold)
        self._metric = resolve_metric(metric_fn)
        self.reference_acc: float | None = None
        self.reference_gain_pt: float | None = None  # A0 above the accuracy measured before it (None: none was)
        self.final_acc: float | None = None
        self._pruner: Any = None
        self.decisions: list[dict[str, Any]] = []
        self._skip = False
        self._loader: Any = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            threshold=self.threshold,
            val_batches=self.val_batches,
            finetune_last=self.finetune_last,
            require_settled=self.require_settled,
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._pruner = find_pruner(trainer, "AccuracyGate")
        if not has_validation_data(trainer):
            raise ValueError(
                "AccuracyGate measures accuracy after every pruning step and needs validation data: define "
                "val_dataloader() on your LightningModule or DataModule, or pass val_dataloaders to trainer.fit"
            )
        self._loader = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        check_first_batch(trainer, pl_module, self._validation_loader, default_metric=self._metric is batch_accuracy)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The epoch before the first step is due: the accuracy A0 will be compared with (``require_settled``).
        due = getattr(self._pruner, "warmup_epochs", 0)
        epoch = trainer.current_epoch
        if (
            self.require_settled
            and self.reference_acc is None
            and epoch + 1 >= due
            and not self.hold.measured_at(epoch)
        ):
            with torch.random.fork_rng(devices=[]):  # creating the loader's iterator draws: keep the run's data order
                self.hold.note(epoch, self.evaluate(trainer, pl_module, self._pruner.pruning_state))

    # ---------------------------------------------------------------- pruner events

    def ready_to_prune(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: PruningState) -> bool:
        """Hold a first step due on an untrained net until accuracy levels off (see ``hold_untrained``)."""
        if not self.hold_untrained or self.reference_acc is not None or self._metric is not batch_accuracy:
            return True
        accuracy = self.evaluate(trainer, pl_module, state)
        untrained = chance_level(trainer, pl_module, self._validation_loader(trainer))[1]
        return self.hold.ready(trainer, state, self._pruner, accuracy, untrained)

    def on_prune_step_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: PruningState) -> None:
        if self.reference_acc is None:
            accuracy = self.evaluate(trainer, pl_module, state)
            if self._metric is batch_accuracy:
                refuse_chance_level(trainer, pl_module, self._validation_loader(trainer), accuracy, self._pruner)
            self.reference_acc = accuracy
            self.reference_gain_pt = self.hold.gain_pt(trainer.current_epoch, accuracy)
            info(log, f"accuracy gate: reference accuracy A0 = {self.reference_acc:.4f}")
            if not self.settled:
                rank_zero_warn(
                    f"AccuracyGate: the reference accuracy A0 = {accuracy:.3f} is {self.reference_gain_pt:.1f} pt "
                    f"above the epoch before (threshold={self.threshold} pt): the network is still learning, so a "
                    "step's drop against A0 says little about what a fine-tune would recover. Fine-tunes run (as "
                    "with the pruner alone) and A0 is taken again before each step until it gains less than the "
                    f"threshold. To gate from the first step, start pruning once accuracy levels off (a larger "
                    f"warmup_epochs on {type(self._pruner).__name__}), or pass require_settled=False."
                )
        elif not self.settled:  # still learning at the last step: the reference is what the run has reached since
            with torch.random.fork_rng(devices=[]):  # creating the loader's iterator draws: keep the run's data order
                accuracy = self.evaluate(trainer, pl_module, state)
            self.reference_gain_pt = 100.0 * (accuracy - self.reference_acc)
            self.reference_acc = accuracy
            info(log, f"accuracy gate: A0 taken again, {accuracy:.4f} ({self.reference_gain_pt:+.2f} pt)")

    @property
    def settled(self) -> bool:
        """Whether fine-tunes may be skipped: ``A0`` gained less than ``threshold`` since it was last taken."""
        gain = self.reference_gain_pt
        return not self.require_settled or gain is None or gain < self.threshold

    def on_prune_step_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: PruningState) -> None:
        accuracy = self.evaluate(trainer, pl_module, state)
        drop_pt = 100.0 * (self.reference_acc - accuracy)
        small = drop_pt < self.threshold and self.settled
        self._skip = small and not (self.finetune_last and _pruning_over(state))
        decision = {"acc_reference": self.reference_acc, "acc_after": accuracy, "drop_pt": drop_pt}
        state.history[-1].update(decision, gate_skip=self._skip)
        self.decisions.append({"step": state.step, **decision, "skipped": self._skip})
        reason = " (last step)" if small else " (A0 still rising)" if drop_pt < self.threshold else ""
        verdict = "skip fine-tune" if self._skip else f"fine-tune{reason}"
        info(log, f"step {state.step}: accuracy {accuracy:.4f}, drop {drop_pt:.2f} pt vs {self.threshold} -> {verdict}")

    def skip_finetune(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: PruningState) -> bool:
        return self._skip

    # ---------------------------------------------------------------- evaluation

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: PruningState) -> float:
        """Accuracy (``metric_fn``) on the first ``val_batches`` validation batches, pooled over ranks."""
        with state.timed("evaluate"):
            return pooled_score(trainer, pl_module, self._validation_loader(trainer), self._metric, self.val_batches)

    def _validation_loader(self, trainer: pl.Trainer) -> Any:
        if self._loader is None:
            self._loader = validation_loader(trainer)
        return self._loader

    # ---------------------------------------------------------------- logging, summary, state

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.decisions:
            return
        state = self._pruner.pruning_state
        if _pruning_over(state):
            # The accuracy the run ends with, on the same batches as A0: what stage-1 tuning bounds.
            self.final_acc = self.evaluate(trainer, pl_module, state)
            pl_module.log("ice/acc_final", self.final_acc, on_step=False, on_epoch=True)
            pl_module.log(
                "ice/drop_final_pt", 100.0 * (self.reference_acc - self.final_acc), on_step=False, on_epoch=True
            )
        last = self.decisions[-1]
        pl_module.log("ice/acc_reference", float(self.reference_acc), on_step=False, on_epoch=True)
        pl_module.log("ice/acc_after", float(last["acc_after"]), on_step=False, on_epoch=True)
        pl_module.log("ice/drop_pt", float(last["drop_pt"]), on_step=False, on_epoch=True)
        skipped = sum(d["skipped"] for d in self.decisions)
        pl_module.log("ice/finetunes_skipped", float(skipped), on_step=False, on_epoch=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        state = find_pruner(trainer, "AccuracyGate").pruning_state
        write_summary(
            output_dir(trainer, self.export_dir) / "summary.json",
            "ice_gate",
            {
                "threshold_pt": self.threshold,
                "val_batches": self.val_batches,
                "acc_reference": self.reference_acc,
                "reference_gain_pt": self.reference_gain_pt,
                "acc_final": self.final_acc,
                "finetunes_skipped": sum(d["skipped"] for d in self.decisions),
                "finetunes_run": sum(not d["skipped"] for d in self.decisions),
                "first_step_held": self.hold.state_dict(),
                "evaluate_s": state.time_s.get("evaluate", 0.0),
                # Named apart from "history": the pruner's history already carries each decision.
                "decisions": self.decisions,
            },
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "reference_acc": self.reference_acc,
            "reference_gain_pt": self.reference_gain_pt,
            "final_acc": self.final_acc,
            "decisions": [dict(d) for d in self.decisions],
            "hold": self.hold.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.reference_acc = state_dict.get("reference_acc", self.reference_acc)
        self.reference_gain_pt = state_dict.get("reference_gain_pt", self.reference_gain_pt)
        self.final_acc = state_dict.get("final_acc", self.final_acc)
        self.decisions = [dict(d) for d in state_dict.get("decisions", self.decisions)]
        self.hold.load_state_dict(state_dict.get("hold", {}))


def _pruning_over(state: PruningState) -> bool:
    """No pruning step is left (the last fine-tune, if any, has just run)."""
    reached = state.target_sparsity is not None and state.sparsity >= state.target_sparsity - 1e-6
    return state.phase == "done" or state.step >= state.num_steps or reached
