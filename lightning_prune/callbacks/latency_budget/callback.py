"""LatencyBudgetPruning: structured pruning to a *measured* latency budget (SP-LAMP, latency table, knapsack)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
from torch import nn

from lightning_prune.callbacks._contract import check_refit, count_epochs_on, refuse_nonfinite, refuse_other_pruners
from lightning_prune.callbacks._stepwise import StepwisePruning
from lightning_prune.callbacks._trainer import (
    broadcast,
    example_input,
    info,
    output_dir,
    resize_on_load,
)
from lightning_prune.callbacks.latency_budget.checks import (
    check_arguments,
    check_budget,
    check_paths,
    check_trainer,
    warn_deep_cut,
)
from lightning_prune.callbacks.latency_budget.report import REQUESTER, check_at_fit_end, export, final_check, log_state
from lightning_prune.callbacks.latency_budget.shrink import remeasure, shrink_to
from lightning_prune.callbacks.latency_budget.state import BudgetState
from lightning_prune.callbacks.protocol import PruningState
from lightning_prune.core.devices import device_name, resolve_device
from lightning_prune.core.latency_budget.measure import LatencyMeter, frozen_copy
from lightning_prune.core.latency_budget.network import weight_count
from lightning_prune.core.latency_budget.planner import BudgetPlanner, simd_channels
from lightning_prune.core.latency_budget.steps import step_with_corrections
from lightning_prune.core.latency_budget.table import LatencyTable
from lightning_prune.core.schedules import exponential_latency
from lightning_prune.core.structured import architecture_spec, count_parameters
from lightning_prune.progress import progress

log = logging.getLogger(__name__)


class LatencyBudgetPruning(StepwisePruning):
    """Remove channels, physically, until the model's measured inference latency fits a budget.

    SP-LAMP (Pan et al., arXiv 2305.14403) with HALP's schedule and latency table (Shen et al., NeurIPS
    2022): at fit start the dense model and the smallest allowed network (built on a copy) are timed on the
    target device at ``batch_size``, and every layer shape is fitted as an affine latency from at most 5 timed
    shapes (``lut_path``; seconds and entries in the summary's ``calibration``). The budget is
    ``budget_fraction`` of the dense latency or ``latency_budget_ms``. Each of ``num_steps`` steps scores
    torch-pruning's channel groups (a depthwise conv with the convs feeding and reading it; residual adds;
    Hugging Face and timm attention as whole heads; ``nn.MultiheadAttention`` and grouped convs kept whole)
    by SP-LAMP, picks the channels each keeps by an exact group knapsack on the device's SIMD grid, removes
    the rest physically, rebuilds the optimizer, measures side by side with an untouched dense copy (rank 0),
    and rescales. The last step re-plans up to
    ``max_corrections`` times while over budget; at fit end the final measurement is checked against the
    budget (``tolerance``) and a miss is reported with its size (an overshoot beyond it warns too). A budget not
    below the dense latency, or below the smallest network's, is refused before training; one asking more than
    half of what removing channels can save warns (most channels will go). Steps run at epoch start after
    ``warmup_epochs``, then every ``finetune_epochs``; checkpoints hold the architecture (resized on load).

    Requires from your LightningModule: an ``example_input_array`` (or a validation batch; tensors, tuples
    and Hugging Face dicts) to trace the graph and shape timing inputs; a model torch-pruning can trace;
    ``configure_optimizers`` over all parameters (called again after every shrink; the surviving entries'
    optimizer state and the schedulers' place carry over).

    Args:
        budget_fraction: budget as a fraction of the dense model's measured latency, in (0, 1).
        latency_budget_ms: budget in milliseconds instead (set ``budget_fraction=None``).
        num_steps: pruning steps (HALP's exponential schedule of budgets from dense to the budget).
        finetune_epochs: training epochs after each step (0: all steps at once).
        warmup_epochs: dense epochs before the first step.
        round_to: channel counts move in multiples of this (the latency table's grid); ``None``: the
            multiple the device's kernels are blocked by (16 on an AVX-512 CPU, 8 with AVX2 or on a GPU),
            where CPU latency drops; between two multiples it barely moves or rises.
        min_channels: fewest channels a group may keep (an attention layer keeps at least one head).
        batch_size: batch size latency is measured and tabled at.
        device: where latency is measured (``"cpu"``, ``"cuda:0"``); ``None``: the model's device.
        threads: CPU threads while timing (``None``: torch's current count; recorded either way).
        repeats: timed calls per round when measuring the whole model.
        rounds: rounds of ``repeats`` calls; the lowest round median is the dense latency at fit start.
            Side-by-side measurements take the same number of calls in rounds of 3 and use the median of
            the per-round ratios.
        lut_repeats: timed calls per latency-table entry.
        lut_path: JSON file of the latency table (default: ``latency_lut.json`` in the output dir).
        amp_dtype: ``"bfloat16"``/``"float16"`` to measure under autocast, ``None`` for float32.
        channels_last: measure in channels-last memory format.
        tolerance: relative excess over the budget the final measurement may show (timing noise), in
            [0, 1).
        max_corrections: extra re-plans of the last step while its measurement exceeds the budget.
        resolution: grid steps of the knapsack's latency axis.
        value: what keeping a group's top channels is worth to the knapsack: ``"sp_lamp"`` (the paper's, the
            SP-LAMP scores kept) or ``"log_share"`` (the log of the share of the group's score kept: no group is
            emptied for a small latency gain; see :func:`~lightning_prune.core.latency_budget.plan.kept_value`).
        exclude_names: regular expressions of modules whose output channels are never pruned (the
            output layer never is).
        stop_when_done: stop training once the last step's fine-tune is over.
        monitor: metric recorded in the history before each step.
        export_dir: where ``pruned_model.pt``, ``summary.json`` (and the default table) go.

    A second ``fit`` on the same model keeps the pruned net, calibration and steps (no re-plan); at fit end,
    before the export, the weights must be finite and the sparsity and parameters it reports the model's.

    Raises:
        ValueError: for arguments out of range or paths that cannot be written; at setup, another pruner,
            a model pruned by an earlier fit, a Trainer that cannot train the steps, a budget not below the
            dense latency, or one the smallest allowed network cannot reach.
        FloatingPointError: for non-finite weights after a step or at fit end (nothing exported).

    Example::

        >>> import lightning.pytorch as pl
        >>> from lightning_prune import LatencyBudgetPruning
        >>> from lightning_prune.data import DigitsDataModule
        >>> from lightning_prune.models import MLP, Classifier
        >>> pruning = LatencyBudgetPruning(budget_fraction=0.7, num_steps=1, warmup_epochs=0, round_to=32,
        ...                                threads=1, batch_size=256, repeats=10, rounds=2, lut_repeats=5,
        ...                                export_dir="/tmp/lp-doc")
        >>> model = Classifier(MLP((1, 8, 8), 10, hidden=(256, 256)), 10, (1, 8, 8))
        >>> trainer = pl.Trainer(max_epochs=1, callbacks=[pruning], logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False, limit_train_batches=2,
        ...                      limit_val_batches=1, default_root_dir="/tmp/lp-doc")
        >>> trainer.fit(model, datamodule=DigitsDataModule(batch_size=128))
        >>> model.net.layers[1].out_features < 256
        True
    """

    def __init__(
        self,
        budget_fraction: float | None = 0.5,
        latency_budget_ms: float | None = None,
        num_steps: int = 5,
        finetune_epochs: int = 1,
        warmup_epochs: int = 1,
        round_to: int | None = None,
        min_channels: int = 4,
        batch_size: int = 64,
        device: str | None = None,
        threads: int | None = None,
        repeats: int = 30,
        rounds: int = 5,
        lut_repeats: int = 20,
        lut_path: str | None = None,
        amp_dtype: str | None = None,
        channels_last: bool = False,
        tolerance: float = 0.05,
        max_corrections: int = 3,
        resolution: int = 1000,
        value: str = "sp_lamp",
        exclude_names: Sequence[str] = (),
        stop_when_done: bool = False,
        monitor: str = "val/acc",
        export_dir: str | None = None,
    ) -> None:
        self.budget_fraction, self.latency_budget_ms = budget_fraction, latency_budget_ms
        self.num_steps, self.finetune_epochs, self.warmup_epochs = num_steps, finetune_epochs, warmup_epochs
        self.round_to, self.min_channels, self.batch_size, self.device = round_to, min_channels, batch_size, device
        self.threads, self.repeats, self.rounds, self.lut_repeats = threads, repeats, rounds, lut_repeats
        self.lut_path, self.amp_dtype, self.channels_last = lut_path, amp_dtype, channels_last
        self.tolerance, self.max_corrections, self.resolution = tolerance, max_corrections, resolution
        self.value = value
        self.exclude_names, self.monitor, self.export_dir = list(exclude_names), monitor, export_dir
        self.stop_when_done = stop_when_done
        check_arguments(self)
        check_paths(self)
        self._meter = LatencyMeter(batch_size, device, threads, repeats, rounds, amp_dtype, channels_last)
        self._meter.settings(lut_repeats, warmup=3)
        self.pruning_state = PruningState(num_steps=num_steps)
        self._budget = BudgetState()
        self._final: dict[str, Any] | None = None
        self._reference: nn.Module | None = None
        self._planner: BudgetPlanner | None = None
        self._calibration: dict[str, Any] = {}  # seconds, entries timed, layer shapes, round_to (summary)
        self._epochs_seen = 0  # training epochs of the latest fit (a second fit's epochs count on from them)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            budget_fraction=self.budget_fraction, latency_budget_ms=self.latency_budget_ms, num_steps=self.num_steps
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        refuse_other_pruners(trainer, self)
        if check_refit(self, pl_module):  # a second fit: keep everything, count its epochs on
            count_epochs_on(self.pruning_state, self._epochs_seen, trainer)
        self._collect_listeners(trainer)
        check_trainer(self, trainer, pl_module)
        resize_on_load(pl_module)
        if trainer.is_global_zero and self._reference is None:
            self._reference = frozen_copy(pl_module)  # before a resumed run's checkpoint shrinks it

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        architecture = self._budget.architecture
        if self._budget.dense_ms is None:
            self._calibrate(trainer, pl_module)
        elif architecture is not None and architecture_spec(pl_module) != architecture:
            raise ValueError("the checkpoint's pruned architecture does not match the model after loading it")
        super().on_train_start(trainer, pl_module)

    def _calibrate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Measure the dense model, fix the budget and the schedule; fail on budgets that make no sense."""
        example, planner = example_input(trainer, pl_module), self._rank_zero(trainer, pl_module)
        numbers = broadcast(trainer, planner and planner.calibrate(pl_module, example, self._budget_for, progress))
        self._calibration = numbers["calibration"]
        budget = self._budget_for(numbers["dense"])
        where = f"on {device_name(resolve_device(self.device, pl_module))} at batch {self.batch_size}"
        check_budget(self, budget, numbers["dense"], numbers["smallest"], where)
        warn_deep_cut(budget, numbers["dense"], numbers["smallest"], where)
        budgets = exponential_latency(numbers["dense"], budget, self.num_steps)
        shape = (weight_count(pl_module), architecture_spec(pl_module), count_parameters(pl_module))
        self._budget = BudgetState(numbers["dense"], budget, numbers["scale"], budgets, *shape, numbers["overhead"])
        seconds, timed = self._calibration["calibration_s"], int(self._calibration["entries_timed"])
        message = f"dense {numbers['dense']:.3f} ms {where}; budget {budget:.3f} ms; steps {budgets}"
        info(log, f"{message}; table: {timed} entries timed in {seconds:.1f} s")

    def _budget_for(self, dense_ms: float) -> float:
        return self.latency_budget_ms or self.budget_fraction * dense_ms

    def _rank_zero(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> BudgetPlanner | None:
        """Rank 0's planner (the latency table from ``lut_path``, the dense copy, the meter); None elsewhere."""
        if self._planner is None and trainer.is_global_zero:
            path = self.lut_path or output_dir(trainer, self.export_dir) / "latency_lut.json"
            settings = self._meter.settings(self.lut_repeats, warmup=3)
            table = LatencyTable(resolve_device(self.device, pl_module), settings, self.batch_size, path)
            round_to = self.round_to or simd_channels(table.device)
            rules = (round_to, self.min_channels, self.resolution, self.exclude_names, self.value)
            self._planner = BudgetPlanner(self._reference, table, self._meter, *rules)
        return self._planner

    def _ready(self) -> bool:
        return self._budget.dense_ms is not None

    def _prune_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        state = self.pruning_state
        target = self._budget.budgets[state.step]
        record: dict[str, Any] = {"step": state.step + 1, "epoch": trainer.current_epoch, "target_ms": target}
        if self.monitor in trainer.callback_metrics:
            record[f"{self.monitor}_before"] = float(trainer.callback_metrics[self.monitor])
        last = state.step + 1 == state.num_steps
        with state.timed("prune"):
            example = example_input(trainer, pl_module)

            def shrink(target_ms: float, rescale: bool) -> dict[str, Any]:
                return shrink_to(self, trainer, pl_module, example, target_ms, rescale)

            budget_ms = self._budget.budget_ms
            margin = self.tolerance / 2  # the final check's room, half of it kept for its own noise

            def confirm(measured_ms: float) -> float:
                return remeasure(self, trainer, pl_module, example, measured_ms)

            rules = (last, self.max_corrections, margin, confirm)
            record.update(step_with_corrections(shrink, target, budget_ms, *rules))
            state.step += 1
            state.last_step_epoch = trainer.current_epoch
            state.sparsity = 1.0 - weight_count(pl_module) / self._budget.original_weights
        record.update(sparsity=state.sparsity, params=count_parameters(pl_module))
        state.history.append(record)
        refuse_nonfinite(pl_module, REQUESTER, f"after step {state.step}")
        info(
            log,
            f"latency step {state.step}/{state.num_steps}: target {target:.3f} ms, predicted "
            f"{record['predicted_ms']:.3f} ms, measured {record['measured_ms']:.3f} ms, sparsity {state.sparsity:.3f}",
        )
        return True

    def _log_state(self, pl_module: pl.LightningModule) -> None:
        log_state(self, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._epochs_seen = trainer.current_epoch + 1

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.fast_dev_run and self._budget.budget_ms is not None:
            self._final = final_check(self, trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.fast_dev_run or self._budget.budget_ms is None:
            return
        checked = check_at_fit_end(self, trainer, pl_module)  # every rank: a refusal stops them all
        if trainer.is_global_zero and self._final is not None:
            export(self, trainer, pl_module, checked)

    def state_dict(self) -> dict[str, Any]:
        return {"pruning_state": self.pruning_state.to_dict(), **self._budget.to_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pruning_state = PruningState.from_dict(state_dict.get("pruning_state", {}))
        self._budget = BudgetState.from_dict(state_dict)
