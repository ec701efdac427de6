"""Rank 0's work in a latency-budget run, in pure torch: calibrate, decide a step, measure its result.

:class:`BudgetPlanner` holds what only the deciding process needs: the latency table, the dense copy
every later measurement is compared with, and the :class:`LatencyMeter`. Its results are plain values
(numbers, channel indices) that a caller broadcasts to the other processes before anyone applies them.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_prune.core.latency_budget.fit import sample_shapes
from lightning_prune.core.latency_budget.measure import DENSE_OVER_TABLE, LatencyMeter, whole_model_fit
from lightning_prune.core.latency_budget.network import Network, removal_indices, trace_network
from lightning_prune.core.latency_budget.plan import min_keep, plan_keep_counts, predict_ms
from lightning_prune.core.latency_budget.steps import LIFT_TRIES, lift_plan
from lightning_prune.core.latency_budget.table import LatencyTable, LayerSpec
from lightning_prune.core.structured import remove_channels_and_heads

log = logging.getLogger(__name__)
Progress = Callable[[str, int], Any]  # (description, total) -> a context manager yielding advance()


def simd_channels(device: torch.device) -> int:
    """The channel multiple the device's kernels are blocked by (the default ``round_to``).

    oneDNN blocks fp32 channels by the vector width (16 with AVX-512, 8 with AVX2): on this project's CI
    CPU a depthwise 3x3 at 28 channels takes ~1.5x the time it takes at 32. GPUs' tensor cores want 8.
    """
    if device.type != "cpu":
        return 8
    capability = torch.backends.cpu.get_cpu_capability()
    return 16 if "AVX512" in capability else 8 if "AVX2" in capability else 4


class BudgetPlanner:
    """Calibrates the table against the dense model, plans each step's removals, and times the results.

    Args:
        reference: the dense model as training received it, never trained (see ``measure.frozen_copy``).
        table: the latency table of the target device.
        meter: how models are timed.
        round_to: channel counts move in multiples of this.
        min_channels: fewest channels a group may keep.
        resolution: grid steps of the knapsack's latency axis.
        exclude_names: regular expressions of modules whose output channels are never pruned.
        value: what an option is worth to the knapsack (:func:`~lightning_prune.core.latency_budget.plan.kept_value`).
    """

    def __init__(
        self,
        reference: nn.Module,
        table: LatencyTable,
        meter: LatencyMeter,
        round_to: int,
        min_channels: int,
        resolution: int,
        exclude_names: Sequence[str] = (),
        value: str = "sp_lamp",
    ) -> None:
        self.reference, self.table, self.meter = reference, table, meter
        self.round_to, self.min_channels, self.resolution = round_to, min_channels, resolution
        self.exclude_names, self.value = list(exclude_names), value

    def calibrate(
        self,
        model: nn.Module,
        example: Tensor,
        budget_for: Callable[[float], float],
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """The dense latency, the table's scale to it, the smallest allowed network's latency, and calibration's record.

        Every layer signature's latency is fitted first (:meth:`fit_layers`, shown by ``progress``).
        The smallest allowed network is built on a copy and timed side by side with the dense one: its
        figure decides whether the budget is reachable, and with the dense one it fits the whole model's
        latency as ``overhead + scale x table`` (:func:`whole_model_fit`): what the table does not hold
        (attention a plan cannot prune, activations, dispatch) is not all proportional to the channels.
        A smallest network measured over ``budget_for(dense)`` (the budget would be refused as unreachable) is
        measured once more and the lower figure kept: one side-by-side measurement of the zoo's HF ViT read
        0.93 of dense once in CI where eight others read about 0.67, and refusing a user's budget takes two.
        """
        network = trace_network(model, example, self.exclude_names)
        if network.attention or network.grouped:
            log.info(
                "latency budget: channels kept whole around attention without a known head layout (%s) and "
                "grouped convs (%s); heads are removed in %d attention layers, other channel groups as usual",
                ", ".join(network.attention) or "none",
                ", ".join(network.grouped) or "none",
                len(network.heads),
            )
        cost = self.fit_layers(network, progress)
        tabled = predict_ms(network, self.table, {})
        dense = self.meter.alone(model, example, expected_ms=DENSE_OVER_TABLE * tabled)
        keep = min_keep(network, self.round_to, self.min_channels)
        smallest = self._measure_smallest(model, network, example, dense, budget_for(dense))
        overhead, scale = whole_model_fit(dense, tabled, smallest, predict_ms(network, self.table, keep))
        self.table.save()
        kept = {
            "attention_kept": list(network.attention),
            "grouped_kept": list(network.grouped),
            "head_groups": list(network.heads),
        }
        record = {**cost, "round_to": self.round_to, "overhead_ms": overhead, "smallest_ms": smallest, **kept}
        return {"dense": dense, "scale": scale, "overhead": overhead, "smallest": smallest, "calibration": record}

    def fit_layers(self, network: Network, progress: Progress | None = None) -> dict[str, float]:
        """Fit the latency of every layer signature not fitted yet, at its widest shape in ``network``.

        At most :data:`~lightning_prune.core.latency_budget.fit.POINTS` shapes per signature are timed
        (each for at most ``table.ENTRY_CAP_S``), so calibration costs O(distinct layer shapes), not
        O(channel options squared). Returns the seconds it took and the entries it timed.
        """
        widest: dict[str, tuple[Any, int, int]] = {}
        for layer in network.layers:
            spec, c_in, c_out = widest.get(layer.spec.signature, (layer.spec, 0, 0))
            widest[layer.spec.signature] = (spec, max(c_in, layer.c_in), max(c_out, layer.c_out))
        todo = {sig: shape for sig, shape in widest.items() if sig not in self.table.fits}
        total = sum(self._untimed(spec, c_in, c_out) for spec, c_in, c_out in todo.values())
        started, timed = time.perf_counter(), self.table.timed
        if total:
            log.info("latency table: fitting %d layer shapes, timing %d entries", len(todo), total)
        previous = self.table.on_timed  # decide's callback, when it fits a resumed run's layers
        with progress("latency table", total) if progress and total else _NoProgress() as advance:
            self.table.on_timed = previous or advance
            try:
                for spec, c_in, c_out in todo.values():
                    self.table.fit_layer(spec, c_in, c_out, self.round_to, self.min_channels)
            finally:
                self.table.on_timed = previous
        seconds, timed = time.perf_counter() - started, self.table.timed - timed
        if total:
            log.info("latency table: %d entries timed in %.1f s", timed, seconds)
        return {"calibration_s": seconds, "entries_timed": float(timed), "layer_shapes": float(len(widest))}

    def _untimed(self, spec: LayerSpec, c_in: int, c_out: int) -> int:
        """How many of the shapes :meth:`LatencyTable.fit_layer` samples for this layer the table lacks."""
        shapes = [(c_in, c_out)] if spec.groups > 1 else sample_shapes(c_in, c_out, spec.depthwise, *self._grid)
        column = self.table.entries.get(spec.signature, {})
        return sum(f"{i}x{o}" not in column for i, o in shapes)

    @property
    def _grid(self) -> tuple[int, int]:
        return self.round_to, self.min_channels

    def _measure_smallest(
        self, model: nn.Module, network: Network, example: Tensor, dense_ms: float, budget_ms: float
    ) -> float:
        smallest = copy.deepcopy(model)
        keep = min_keep(network, self.round_to, self.min_channels)
        removals = {g: removal_indices(network.scores[g], k) for g, k in keep.items()}
        remove_channels_and_heads(smallest, example, removals)
        measured = self.measure(smallest, example, dense_ms)["measured_ms"]
        if measured > budget_ms:  # a refusal needs a second opinion
            measured = min(measured, self.measure(smallest, example, dense_ms)["measured_ms"])
        return measured

    def decide(
        self,
        model: nn.Module,
        example: Tensor,
        target_ms: float,
        scale: float,
        on_timed: Callable[[], object] | None = None,
        overhead: float = 0.0,
    ) -> dict[str, Any]:
        """The channels each group removes for ``target_ms``, the predicted latency and whether it fits.

        SP-LAMP scores, table lookups (timing the entries the table lacks, calling ``on_timed`` after each)
        and the knapsack of :func:`plan_keep_counts`.
        """
        network = trace_network(model, example, self.exclude_names)
        self.table.on_timed = on_timed
        try:
            self.fit_layers(network)  # a resumed run's planner starts without fits
            rules = (self.round_to, self.min_channels, self.resolution)
            plan = plan_keep_counts(network, self.table, target_ms - overhead, scale, *rules, value=self.value)
        finally:
            self.table.on_timed = None
        self.table.save()
        removals = {g: removal_indices(network.scores[g], k) for g, k in plan.keep.items()}
        return {
            "removals": {g: idxs for g, idxs in removals.items() if idxs},
            "predicted_ms": plan.predicted_ms + overhead,
            "feasible": plan.feasible,
            "current_ms": predict_ms(network, self.table, {}, scale) + overhead,
        }

    def decide_measured(
        self,
        model: nn.Module,
        example: Tensor,
        target_ms: float,
        scale: float,
        dense_ms: float,
        tolerance: float,
        on_timed: Callable[[], object] | None = None,
        overhead: float = 0.0,
        tries: int | None = None,
        ceiling_ms: float | None = None,
    ) -> dict[str, Any]:
        """:meth:`decide`, each plan built on a copy and timed side by side; one far under target is re-planned up.

        The table's model (fixed part + scale x affine layer fits) can price a plan well above what it
        measures, and then the knapsack cuts far more than the target asks (at worst the smallest network,
        when the target looks infeasible). See :func:`lift_plan`: the plan kept is the one measured closest
        to ``target_ms`` from below; its ``lifts`` list every try (``tries``: at most :data:`LIFT_TRIES`).
        ``ceiling_ms``: what a plan may measure and still count as under (the budget, on the last step).
        """

        def attempt(planned_ms: float) -> tuple[dict[str, Any], float]:
            decision = self.decide(model, example, planned_ms, scale, on_timed, overhead)
            if not decision["removals"]:
                return decision, self.measure(model, example, dense_ms)["measured_ms"]
            trial = copy.deepcopy(model)
            remove_channels_and_heads(trial, example, decision["removals"])
            return decision, self.measure(trial, example, dense_ms)["measured_ms"]

        return lift_plan(attempt, target_ms, tolerance, LIFT_TRIES if tries is None else tries, ceiling_ms)

    def measure(self, model: nn.Module, example: Tensor, dense_ms: float, calls_factor: int = 1) -> dict[str, float]:
        """``model`` timed side by side with the dense copy (see :meth:`LatencyMeter.side_by_side`)."""
        return self.meter.side_by_side(model, self.reference, example, dense_ms, calls_factor)


class _NoProgress:
    """A context manager yielding a no-op advance (no bar asked for)."""

    def __enter__(self) -> Callable[..., None]:
        return lambda *args, **kwargs: None

    def __exit__(self, *exc: object) -> None:
        return None
