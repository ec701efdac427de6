"""Structured pruning to a *measured* latency budget: SP-LAMP scores, a latency table, a group knapsack."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

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
from lightning_prune.core.export import export_pruned, write_summary
from lightning_prune.core.latency import (
    TimingSettings,
    batch_of,
    check_device,
    device_name,
    interleaved_latency,
    measure_latency,
    paired_ratio,
    resolve_device,
)
from lightning_prune.core.latency_plan import (
    Network,
    min_keep,
    plan_keep_counts,
    predict_ms,
    removal_indices,
    trace_network,
)
from lightning_prune.core.latency_table import LatencyTable
from lightning_prune.core.schedules import exponential_latency
from lightning_prune.core.selection import DEFAULT_TYPES, validate_selector
from lightning_prune.core.structured import architecture_spec, remove_out_channels
from lightning_prune.core.validate import check_int
from lightning_prune.progress import progress

log = logging.getLogger(__name__)
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
# Robustness on shared machines: the dense model's measurement at fit start, if above _SURPRISE x what
# the table expects, is re-taken (up to _SECOND_OPINIONS times, after a pause) and the lowest kept. A step
# rescales the table's prediction to the measurement only when they agree within _MAX_RESCALE either way
# (a larger gap after calibration is far more often load than the model), so one disturbed measurement
# cannot send the next step to the floor; the last step's corrections always rescale, clamped to _MAX_RESCALE.
_SURPRISE, _SECOND_OPINIONS, _SECOND_OPINION_PAUSE_S, _MAX_RESCALE = 1.15, 2, 0.2, 1.25
# The whole model runs activations, pooling and adds the table does not hold: expected a bit above its sum.
_DENSE_OVER_TABLE = 1.2
# Side-by-side rounds against the dense reference are this short (the same calls in total): a shared
# host's speed changes within a second, and only rounds shorter than that see one speed for both models.
_PAIRED_CALLS_PER_ROUND = 3
# The final check is the figure the run is judged by, and taken once: it gets this many times the calls.
_FINAL_CHECK_CALLS = 3


class LatencyBudgetPruning(StepwisePruning):
    """Remove channels, physically, until the model's measured inference latency fits a budget.

    SP-LAMP (Pan et al., arXiv 2305.14403) with HALP's schedule and latency table (Shen et al., NeurIPS
    2022): at fit start the dense model's latency is measured on the target device (batch
    ``batch_size``); the budget is ``budget_fraction`` of it or ``latency_budget_ms``. Over ``num_steps``
    steps on HALP's exponential schedule, each step scores channels by SP-LAMP (LAMP over per-channel
    L2 norms reduced over torch-pruning's dependency group), looks up per-layer latencies in a table
    timed on the device (``lut_path``, reused across runs, rebuilt for another device), picks how many
    channels each group keeps by an exact group knapsack, removes the rest with torch-pruning (residual
    adds, BatchNorm, the next layer's inputs follow), rebuilds the optimizer, measures the new model and
    recalibrates the table's scale to it. The last step re-plans up to ``max_corrections`` times while the
    measurement exceeds the budget; at fit end the final measured latency is compared with the budget
    (``tolerance`` allowed for timing noise) and a miss is reported with its size. A budget the table
    says even the smallest allowed network cannot reach is refused before training, once that network,
    built on a copy, has been measured and confirms it.

    Every measurement after the first is taken side by side with an untouched copy of the model as
    ``fit`` received it (kept on rank 0 only), in short alternating rounds, and reported as that ratio
    times the dense latency measured at fit start: a shared machine's speed drifts by tens of percent
    within seconds, which two separate absolute measurements would mistake for the model. The summary
    keeps the raw side-by-side figures next to it. Steps run at epoch start, after
    ``warmup_epochs`` dense epochs and then every ``finetune_epochs`` epochs; training then continues to
    ``max_epochs`` (or stops after the last fine-tune with ``stop_when_done``). Decisions are taken on
    rank 0 and broadcast. Checkpoints hold the architecture, and the fresh model is resized on load, so
    a resumed run or an export loads with ``weights_only=True``.

    Requires from your LightningModule: an ``example_input_array`` (or an ``(x, y)`` validation batch)
    to trace the graph and shape timing inputs; a model torch-pruning can trace; ``configure_optimizers``
    over all parameters (called again after every shrink; a scheduler restarts).

    Args:
        budget_fraction: budget as a fraction of the dense model's measured latency, in (0, 1).
        latency_budget_ms: budget in milliseconds instead (set ``budget_fraction=None``).
        num_steps: pruning steps (HALP's exponential schedule of budgets from dense to the budget).
        finetune_epochs: training epochs after each step (0: all steps at once).
        warmup_epochs: dense epochs before the first step.
        round_to: channel counts move in multiples of this (the latency table's grid).
        min_channels: fewest channels a group may keep.
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
        exclude_names: regular expressions of modules whose output channels are never pruned (the
            output layer never is).
        stop_when_done: stop training once the last step's fine-tune is over.
        monitor: metric recorded in the history before each step.
        export_dir: where ``pruned_model.pt``, ``summary.json`` (and the default table) go.

    Raises:
        ValueError: for arguments out of range, a Trainer whose ``max_epochs`` cannot fit the steps, a
            budget not below the dense latency, or one the smallest allowed network cannot reach.

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
        round_to: int = 4,
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
        max_corrections: int = 2,
        resolution: int = 1000,
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
        self.exclude_names, self.monitor, self.export_dir = list(exclude_names), monitor, export_dir
        self.stop_when_done = stop_when_done
        self._validate()
        self.pruning_state = PruningState(num_steps=num_steps)
        self._budgets: list[float] = []
        self._dense_ms: float | None = None
        self._budget_ms: float | None = None
        self._scale = 1.0
        self._original_weights = 0
        self._architecture: dict[str, Any] | None = None
        self._final: dict[str, Any] | None = None
        self._table: LatencyTable | None = None
        self._reference: nn.Module | None = None

    def _validate(self) -> None:
        fraction, budget_ms = self.budget_fraction, self.latency_budget_ms
        if (fraction is None) == (budget_ms is None):
            raise ValueError(
                f"give exactly one of budget_fraction and latency_budget_ms, got budget_fraction={fraction}, "
                f"latency_budget_ms={budget_ms}"
            )
        if fraction is not None and not 0 < fraction < 1:
            raise ValueError(f"budget_fraction must be in (0, 1) (of the dense measured latency), got {fraction}")
        if budget_ms is not None and not budget_ms > 0:
            raise ValueError(f"latency_budget_ms must be > 0, got {budget_ms}")
        for name, low in [("num_steps", 1), ("finetune_epochs", 0), ("warmup_epochs", 0), ("round_to", 1)]:
            check_int(name, getattr(self, name), low)
        for name, low in [("min_channels", 1), ("batch_size", 1), ("rounds", 1), ("max_corrections", 0)]:
            check_int(name, getattr(self, name), low)
        check_int("resolution", self.resolution, 10)
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"tolerance must be in [0, 1), got {self.tolerance}")
        check_device(self.device)
        validate_selector(DEFAULT_TYPES, None, self.exclude_names)
        self._timing(self.repeats)
        self._timing(self.lut_repeats, warmup=3)

    def _timing(self, repeats: int, warmup: int = 10) -> TimingSettings:
        return TimingSettings(
            warmup, repeats, threads=self.threads, amp_dtype=self.amp_dtype, channels_last=self.channels_last
        )

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            budget_fraction=self.budget_fraction, latency_budget_ms=self.latency_budget_ms, num_steps=self.num_steps
        )

    # ---------------------------------------------------------------- setup and calibration

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._collect_listeners(trainer)
        check_spawn_reload(trainer, pl_module, "LatencyBudgetPruning")
        resolve_device(self.device, pl_module)
        resize_on_load(pl_module)
        if trainer.is_global_zero and self._reference is None:
            self._reference = _frozen_copy(pl_module)  # before a resumed run's checkpoint shrinks it
        needed = self.warmup_epochs + max(1, self.num_steps * self.finetune_epochs)
        max_epochs = trainer.max_epochs
        if not trainer.fast_dev_run and max_epochs is not None and 0 <= max_epochs < needed:
            raise ValueError(
                f"LatencyBudgetPruning needs Trainer(max_epochs >= {needed}) (warmup_epochs={self.warmup_epochs} + "
                f"num_steps={self.num_steps} x finetune_epochs={self.finetune_epochs}), got max_epochs={max_epochs}"
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._dense_ms is None:
            self._calibrate(trainer, pl_module)
        elif self._architecture is not None and architecture_spec(pl_module) != self._architecture:
            raise ValueError("the checkpoint's pruned architecture does not match the model after loading it")

    def _calibrate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Measure the dense model, fix the budget and the schedule; fail on budgets that make no sense."""
        example = example_input(trainer, pl_module)
        numbers = None
        if trainer.is_global_zero:
            network = trace_network(pl_module, example, self.exclude_names)
            table = self._lut(trainer, pl_module)
            tabled = predict_ms(network, table, {})
            dense = self._measure_alone(pl_module, example, expected_ms=_DENSE_OVER_TABLE * tabled)
            scale = dense / tabled
            smallest = predict_ms(network, table, min_keep(network, self.round_to, self.min_channels), scale)
            table.save()
            if smallest > self._budget_for(dense):  # a table timed on a busy machine can be pessimistic
                smallest = self._measure_smallest(pl_module, network, example, dense)
            numbers = {"dense": dense, "scale": scale, "smallest": smallest}
        numbers = broadcast(trainer, numbers)
        budget = self._budget_for(numbers["dense"])
        where = f"on {device_name(resolve_device(self.device, pl_module))} at batch {self.batch_size}"
        if budget >= numbers["dense"]:
            raise ValueError(
                f"latency_budget_ms={budget:.4g} is not below the dense model's measured latency "
                f"{numbers['dense']:.4g} ms {where}: nothing to prune for"
            )
        if numbers["smallest"] > budget:
            raise ValueError(
                f"the latency budget {budget:.4g} ms is unreachable: the smallest network allowed (min_channels="
                f"{self.min_channels}, round_to={self.round_to}) measures {numbers['smallest']:.4g} ms {where} "
                f"(dense: {numbers['dense']:.4g} ms); raise the budget or lower min_channels"
            )
        self._dense_ms, self._budget_ms, self._scale = numbers["dense"], budget, numbers["scale"]
        self._budgets = exponential_latency(self._dense_ms, budget, self.num_steps)
        self._original_weights = _weight_count(pl_module)
        self._architecture = architecture_spec(pl_module)
        info(log, f"dense latency {self._dense_ms:.3f} ms {where}; budget {budget:.3f} ms; steps {self._budgets}")

    def _budget_for(self, dense_ms: float) -> float:
        return self.latency_budget_ms or self.budget_fraction * dense_ms

    def _measure_smallest(
        self, pl_module: pl.LightningModule, network: Network, example: Tensor, dense_ms: float
    ) -> float:
        """Build the smallest network allowed, on a copy, and time it side by side with the dense one."""
        smallest = copy.deepcopy(pl_module)
        keep = min_keep(network, self.round_to, self.min_channels)
        remove_out_channels(smallest, example, {g: removal_indices(network.scores[g], k) for g, k in keep.items()})
        return self._side_by_side(smallest, example, dense_ms)["measured_ms"]

    def _lut(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> LatencyTable:
        if self._table is None:
            path = self.lut_path or output_dir(trainer, self.export_dir) / "latency_lut.json"
            device = resolve_device(self.device, pl_module)
            self._table = LatencyTable(device, self._timing(self.lut_repeats, warmup=3), self.batch_size, path)
        return self._table

    def _measure_alone(self, pl_module: pl.LightningModule, example: Tensor, expected_ms: float) -> float:
        """The lowest round median; a result far above ``expected_ms`` gets up to two second opinions.

        Other processes only ever add time, so on a shared machine a surprisingly slow measurement is
        more likely a burst of load than the model, and the lowest of a few spaced measurements is kept.
        """
        inputs = batch_of(example, self.batch_size)
        settings = self._timing(self.repeats)
        measured = measure_latency(pl_module, inputs, settings, self.device, rounds=self.rounds).quiet_p50_ms
        for _ in range(_SECOND_OPINIONS):
            if measured <= _SURPRISE * expected_ms:
                break
            time.sleep(_SECOND_OPINION_PAUSE_S)
            again = measure_latency(pl_module, inputs, settings, self.device, rounds=self.rounds).quiet_p50_ms
            measured = min(measured, again)
        return measured

    def _side_by_side(
        self, model: nn.Module, example: Tensor, dense_ms: float, calls_factor: int = 1
    ) -> dict[str, float]:
        """``model`` against the dense reference, in fit start's milliseconds (the ratio times ``dense_ms``).

        The ratio is the median over short alternating rounds, so a burst of load or a change of the
        host's speed hits both models alike; no second opinions are taken (keeping the lowest of several
        would bias the figure low and let a step stop correcting too early).
        """
        device = resolve_device(self.device, model)
        reference = self._reference.to(device)
        settings = self._timing(_PAIRED_CALLS_PER_ROUND)
        rounds = math.ceil(calls_factor * self.repeats * self.rounds / _PAIRED_CALLS_PER_ROUND)
        timed = interleaved_latency(
            {"model": model, "dense": reference}, batch_of(example, self.batch_size), settings, rounds, device
        )
        ratio = paired_ratio(timed["model"], timed["dense"])
        return {
            "measured_ms": ratio * dense_ms,
            "ratio_to_dense": ratio,
            "model_now_ms": timed["model"].p50_ms,
            "dense_now_ms": timed["dense"].p50_ms,
        }

    # ---------------------------------------------------------------- the loop

    def _ready(self) -> bool:
        return self._dense_ms is not None

    def _prune_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        state = self.pruning_state
        target = self._budgets[state.step]
        record: dict[str, Any] = {"step": state.step + 1, "epoch": trainer.current_epoch, "target_ms": target}
        if self.monitor in trainer.callback_metrics:
            record[f"{self.monitor}_before"] = float(trainer.callback_metrics[self.monitor])
        last = state.step + 1 == state.num_steps
        with state.timed("prune"):
            example = example_input(trainer, pl_module)
            # The last step always rescales (clamped): its corrections must plan with what it just measured.
            record.update(self._shrink_to(trainer, pl_module, example, target, last), corrections=0)
            # Corrections aim at the budget itself: the tolerance is the final check's room for timing noise.
            while last and record["measured_ms"] > self._budget_ms and record["corrections"] < self.max_corrections:
                outcome = self._shrink_to(trainer, pl_module, example, self._budget_ms, rescale=True)
                # `removed` counts the whole step: a correction that removes nothing must not hide the first cut.
                removed = record["removed"] + outcome["removed"]
                record.update(outcome, removed=removed, corrections=record["corrections"] + 1)
                if not outcome["removed"]:
                    break
            state.step += 1
            state.last_step_epoch = trainer.current_epoch
            state.sparsity = 1.0 - _weight_count(pl_module) / self._original_weights
        record["sparsity"] = state.sparsity
        state.history.append(record)
        info(
            log,
            f"latency step {state.step}/{state.num_steps}: target {target:.3f} ms, predicted "
            f"{record['predicted_ms']:.3f} ms, measured {record['measured_ms']:.3f} ms, sparsity {state.sparsity:.3f}",
        )
        return True

    def _limit_ms(self) -> float:
        return self._budget_ms * (1.0 + self.tolerance)

    def _shrink_to(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, example: Tensor, target_ms: float, rescale: bool
    ) -> dict[str, Any]:
        """Plan on rank 0, apply everywhere, measure, and rescale the table's prediction to the measurement."""
        decision = broadcast(trainer, self._decide(trainer, pl_module, example, target_ms))
        if decision["removals"]:
            remove_out_channels(pl_module, example, decision["removals"])
            rebuild_after_shrink(trainer)
            self._architecture = architecture_spec(pl_module)
        predicted = decision["predicted_ms"]
        taken = self._side_by_side(pl_module, example, self._dense_ms) if trainer.is_global_zero else None
        taken = broadcast(trainer, taken)
        measured = taken["measured_ms"]
        ratio = measured / predicted
        recalibrated = rescale or 1.0 / _MAX_RESCALE <= ratio <= _MAX_RESCALE
        if recalibrated:
            self._scale *= min(_MAX_RESCALE, max(1.0 / _MAX_RESCALE, ratio))
        removed = sum(len(idxs) for idxs in decision["removals"].values())
        return {
            "predicted_ms": predicted,
            "measured_ms": measured,
            "ratio_to_dense": taken["ratio_to_dense"],
            "removed": removed,
            "feasible": decision["feasible"],
            "recalibrated": recalibrated,
        }

    def _decide(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, example: Tensor, target_ms: float
    ) -> dict[str, Any] | None:
        """Rank 0: SP-LAMP scores, table lookups (timing what is missing) and the knapsack, as a plan."""
        if not trainer.is_global_zero:
            return None
        network = trace_network(pl_module, example, self.exclude_names)
        table = self._lut(trainer, pl_module)
        with progress("latency table + knapsack") as advance:
            table.on_timed = advance
            plan = plan_keep_counts(
                network, table, target_ms, self._scale, self.round_to, self.min_channels, self.resolution
            )
            table.on_timed = None
        table.save()
        removals = {g: removal_indices(network.scores[g], k) for g, k in plan.keep.items()}
        return {
            "removals": {g: idxs for g, idxs in removals.items() if idxs},
            "predicted_ms": plan.predicted_ms,
            "feasible": plan.feasible,
        }

    def _log_state(self, pl_module: pl.LightningModule) -> None:
        state = self.pruning_state
        pl_module.log("prune/sparsity", state.sparsity, on_step=False, on_epoch=True)
        pl_module.log("prune/step", float(state.step), on_step=False, on_epoch=True)
        if self._budget_ms is not None:
            pl_module.log("latency/budget_ms", self._budget_ms, on_step=False, on_epoch=True)
            latest = state.history[-1] if state.history else {"measured_ms": self._dense_ms}
            pl_module.log("latency/measured_ms", latest["measured_ms"], on_step=False, on_epoch=True)

    # ---------------------------------------------------------------- final check, export and state

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.fast_dev_run and self._budget_ms is not None:
            example = example_input(trainer, pl_module)
            taken = self._side_by_side(pl_module, example, self._dense_ms, _FINAL_CHECK_CALLS)
            measured = taken["measured_ms"]
            miss = measured / self._budget_ms - 1.0
            self._final = {**taken, "met_budget": measured <= self._limit_ms(), "excess": miss}
            if self._final["met_budget"]:
                info(log, f"final latency {measured:.3f} ms meets the budget {self._budget_ms:.3f} ms ({miss:+.1%})")
            else:
                rank_zero_warn(
                    f"LatencyBudgetPruning: the final measured latency {measured:.3f} ms misses the budget "
                    f"{self._budget_ms:.3f} ms by {measured - self._budget_ms:.3f} ms ({miss:+.1%}; tolerance "
                    f"{self.tolerance:.0%}); pruning steps done: {self.pruning_state.step}/{self.num_steps}"
                )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.fast_dev_run and self._final is not None:
            directory = output_dir(trainer, self.export_dir)
            model_path = export_pruned(pl_module, directory / "pruned_model.pt")
            write_summary(directory / "summary.json", "latency_budget", self._summary(trainer, model_path))

    def _summary(self, trainer: pl.Trainer, model_path: Any) -> dict[str, Any]:
        history = self.pruning_state.history
        return {
            "device": device_name(resolve_device(self.device, trainer.lightning_module)),
            "batch_size": self.batch_size,
            "threads": self.threads or torch.get_num_threads(),
            "dense_ms": self._dense_ms,
            "budget_ms": self._budget_ms,
            **(self._final or {}),
            "lut_r": _correlation([r["predicted_ms"] for r in history], [r["measured_ms"] for r in history]),
            "lut_entries": len(self._table) if self._table is not None else None,
            "sparsity": self.pruning_state.sparsity,
            "params": sum(p.numel() for p in trainer.lightning_module.parameters()),
            "time_s": self.pruning_state.time_s,
            "history": history,
            "metrics": final_metrics(trainer),
            "exported_model": str(model_path),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "pruning_state": self.pruning_state.to_dict(),
            "dense_ms": self._dense_ms,
            "budget_ms": self._budget_ms,
            "scale": self._scale,
            "budgets": list(self._budgets),
            "original_weights": self._original_weights,
            "architecture": self._architecture,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pruning_state = PruningState.from_dict(state_dict.get("pruning_state", {}))
        self._dense_ms, self._budget_ms = state_dict.get("dense_ms"), state_dict.get("budget_ms")
        self._scale = state_dict.get("scale", 1.0)
        self._budgets = list(state_dict.get("budgets", []))
        self._original_weights = state_dict.get("original_weights", 0)
        self._architecture = state_dict.get("architecture")


def _frozen_copy(pl_module: pl.LightningModule) -> nn.Module:
    """The model as fit received it, for side-by-side timing: no gradients, never trained."""
    return copy.deepcopy(pl_module).requires_grad_(False).eval()


def _weight_count(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, _WEIGHTED))


def _correlation(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    if len(xs) < 3:
        return None
    return float(torch.corrcoef(torch.tensor([list(xs), list(ys)], dtype=torch.float64))[0, 1])
