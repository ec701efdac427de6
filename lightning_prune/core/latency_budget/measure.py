"""How a latency-budget run times a model on a machine it shares: robust figures from noisy clocks.

Other processes only ever add time, and a shared host's speed drifts by tens of percent within seconds.
So the dense model at fit start is the lowest round median of a few measurements, and one far above
what the latency table expects gets second opinions after a pause (:meth:`LatencyMeter.alone`). Every
later figure is a *ratio*: the model timed side by side with an untouched dense copy, in short
alternating rounds that each see one speed for both, reported as the median per-round ratio times the
dense latency of fit start (:meth:`LatencyMeter.side_by_side`). The table's scale follows a measurement
only when the two agree within :data:`MAX_RESCALE` either way (:func:`rescaled`): a larger gap after
calibration is far more often load than the model, and one disturbed figure must not send the next
step to the floor.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_prune.core.devices import resolve_device
from lightning_prune.core.timing import (
    TimingSettings,
    batch_of,
    interleaved_latency,
    measure_latency,
    paired_ratio,
)

# A dense measurement above SURPRISE x what the table expects is taken again (up to SECOND_OPINIONS
# times, after SECOND_OPINION_PAUSE_S) and the lowest kept.
SURPRISE, SECOND_OPINIONS, SECOND_OPINION_PAUSE_S = 1.15, 2, 0.2
# A step rescales the table to its measurement only within MAX_RESCALE either way (the last step's
# corrections always rescale, clamped to it).
MAX_RESCALE = 1.25
# The whole model runs activations, pooling and adds the table does not hold: expected a bit above its sum.
DENSE_OVER_TABLE = 1.2
# Side-by-side rounds are this short (the same calls in total): a shared host's speed changes within a
# second, and only rounds shorter than that see one speed for both models.
PAIRED_CALLS_PER_ROUND = 3
# The final check is the figure the run is judged by, and taken once: it gets this many times the calls.
FINAL_CHECK_CALLS = 3


@dataclass(frozen=True)
class LatencyMeter:
    """Where and how a latency-budget run times models (constructed once; validates its settings).

    Attributes:
        batch_size: batch the model is timed at (copies of the example's first sample).
        device: ``"cpu"``/``"cuda[:N]"``; ``None``: where the timed model's parameters live.
        threads: CPU threads while timing (``None``: torch's current count).
        repeats: timed calls per round of a whole-model measurement.
        rounds: rounds of a whole-model measurement.
        amp_dtype: ``"bfloat16"``/``"float16"`` to time under autocast, ``None`` for float32.
        channels_last: time in channels-last memory format.

    Raises:
        ValueError: from :class:`TimingSettings` for ``repeats``, ``threads`` or ``amp_dtype`` out of range.

    Example::

        >>> meter = LatencyMeter(batch_size=4, repeats=3, rounds=1)
        >>> meter.alone(nn.Linear(8, 2), torch.zeros(1, 8), expected_ms=float("inf")) > 0
        True
    """

    batch_size: int
    device: str | None = None
    threads: int | None = None
    repeats: int = 30
    rounds: int = 5
    amp_dtype: str | None = None
    channels_last: bool = False

    def __post_init__(self) -> None:
        self.settings(self.repeats)

    def settings(self, repeats: int, warmup: int = 10) -> TimingSettings:
        """Timing settings with this meter's threads, dtype and layout."""
        return TimingSettings(
            warmup, repeats, threads=self.threads, amp_dtype=self.amp_dtype, channels_last=self.channels_last
        )

    def alone(self, model: nn.Module, example: Tensor, expected_ms: float) -> float:
        """The lowest round median; a result above ``SURPRISE`` x ``expected_ms`` gets up to two second opinions.

        On a shared machine a surprisingly slow measurement is more likely a burst of load than the
        model, so the lowest of a few spaced measurements is kept.
        """
        inputs = batch_of(example, self.batch_size)
        settings = self.settings(self.repeats)
        measured = measure_latency(model, inputs, settings, self.device, rounds=self.rounds).quiet_p50_ms
        for _ in range(SECOND_OPINIONS):
            if measured <= SURPRISE * expected_ms:
                break
            time.sleep(SECOND_OPINION_PAUSE_S)
            again = measure_latency(model, inputs, settings, self.device, rounds=self.rounds).quiet_p50_ms
            measured = min(measured, again)
        return measured

    def side_by_side(
        self, model: nn.Module, reference: nn.Module, example: Tensor, dense_ms: float, calls_factor: int = 1
    ) -> dict[str, float]:
        """``model`` against ``reference`` (the dense copy), in fit start's milliseconds (ratio x ``dense_ms``).

        The ratio is the median over short alternating rounds, so a burst of load or a change of the
        host's speed hits both models alike, or the ratio of the two models' quietest rounds when that is
        higher: other tenants' memory traffic slows a dense model whose activations overflow the cache far
        more than a pruned one that fits, so under load the paired ratio reads too low (a DepthwiseCNN at
        batch 64 measured 0.23 during its step and 0.59 at fit end), and the quietest rounds are each
        model's least disturbed figure. No second opinions are taken (keeping the lowest of several
        would bias the figure low and let a step stop correcting too early). The same calls in total as
        :meth:`alone`, times ``calls_factor``.
        """
        device = resolve_device(self.device, model)
        settings = self.settings(PAIRED_CALLS_PER_ROUND)
        rounds = math.ceil(calls_factor * self.repeats * self.rounds / PAIRED_CALLS_PER_ROUND)
        models = {"model": model, "dense": reference.to(device)}
        timed = interleaved_latency(models, batch_of(example, self.batch_size), settings, rounds, device)
        paired = paired_ratio(timed["model"], timed["dense"])
        quiet = timed["model"].quiet_p50_ms / timed["dense"].quiet_p50_ms
        ratio = max(paired, quiet)
        return {
            "measured_ms": ratio * dense_ms,
            "ratio_to_dense": ratio,
            "paired_ratio": paired,
            "quiet_ratio": quiet,
            "model_now_ms": timed["model"].p50_ms,
            "dense_now_ms": timed["dense"].p50_ms,
        }


def rescaled(scale: float, measured_ms: float, predicted_ms: float, force: bool) -> tuple[float, bool]:
    """The table's new scale after a measurement, and whether it moved.

    It follows ``measured / predicted`` when that is within ``MAX_RESCALE`` either way, or always (clamped
    to ``MAX_RESCALE``) with ``force``.

    Example::

        >>> rescaled(1.0, 1.1, 1.0, force=False), rescaled(1.0, 2.0, 1.0, force=False), rescaled(1.0, 2.0, 1.0, True)
        ((1.1, True), (1.0, False), (1.25, True))
    """
    ratio = measured_ms / predicted_ms if predicted_ms > 0 else MAX_RESCALE
    if not (force or 1.0 / MAX_RESCALE <= ratio <= MAX_RESCALE):
        return scale, False
    return scale * min(MAX_RESCALE, max(1.0 / MAX_RESCALE, ratio)), True


def whole_model_fit(dense_ms: float, dense_table: float, small_ms: float, small_table: float) -> tuple[float, float]:
    """``(overhead, scale)`` with ``measured = overhead + scale x table sum`` through the dense and smallest networks.

    The line goes through both measurements, whatever the sign of its intercept. A ViT whose attention no plan
    prunes keeps much of its latency at any width (a positive overhead): proportionality would promise the
    planner a speed-up the hardware never gives. Layers timed alone can also carry more fixed cost than they
    do inside the network (a negative overhead): the zoo's ResNet's table priced its smallest network at 0.85
    of dense where it measured 0.56, and a proportional scale made the planner cut 96 % of the parameters for
    a 0.8 budget. Falls back to proportional only when the two points give no positive slope (load made the
    smallest network measure as slow as the dense one).

    Example::

        >>> [round(x, 4) for x in whole_model_fit(10.0, 8.0, 6.0, 2.0)]
        [4.6667, 0.6667]
        >>> [round(x, 4) for x in whole_model_fit(10.0, 8.0, 4.0, 6.0)]
        [-14.0, 3.0]
        >>> whole_model_fit(10.0, 8.0, 11.0, 2.0)
        (0.0, 1.25)
    """
    if dense_table - small_table > 1e-9 * dense_table and small_ms < dense_ms:
        scale = (dense_ms - small_ms) / (dense_table - small_table)
        return dense_ms - scale * dense_table, scale
    return 0.0, dense_ms / dense_table


def frozen_copy(model: nn.Module) -> nn.Module:
    """The model as it is now, for side-by-side timing: a copy without gradients, in eval mode."""
    return copy.deepcopy(model).requires_grad_(False).eval()


def correlation(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's r of the table's predictions ``xs`` and the measurements ``ys``; ``None`` below 3 points."""
    if len(xs) < 3:
        return None
    return float(torch.corrcoef(torch.tensor([list(xs), list(ys)], dtype=torch.float64))[0, 1])
