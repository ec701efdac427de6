"""Hold the first pruning step of a from-scratch run until validation accuracy levels off (the gate's readiness).

A user who adds the ICE callbacks to a Trainer that trains from scratch, with the pruner's default
``warmup_epochs=0``, would have the first step prune a random network and the gate take that network's
accuracy as its reference ``A0``: every later drop looks small, every fine-tune is skipped, and the run ends
near chance. Gradual pruning alone survives this (it fine-tunes after every step); the gate cannot. So when
the first step is due while accuracy is at chance level, the gate holds it: it measures accuracy at each epoch
start and lets the step run once the gain over the previous epoch is below its own ``threshold`` (a gain the
gate itself would call no change), or at the latest halfway to the last epoch from which the whole schedule
still fits in ``max_epochs``. A network that is already above chance when the first step is due (trained
weights loaded, or the user's own ``warmup_epochs``) is not held: the user decided when pruning starts.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn

from lightning_prune.callbacks._trainer import info
from lightning_prune.callbacks.protocol import PruningState

log = logging.getLogger(__name__)


class FirstStepHold:
    """The decision, epoch by epoch, whether the first step may run; plain values, so it checkpoints.

    Args:
        tolerance_pt: a gain (percentage points) per epoch below which accuracy has levelled off.
    """

    def __init__(self, tolerance_pt: float) -> None:
        self.tolerance_pt = tolerance_pt
        self.measured: list[dict[str, float]] = []  # {"epoch", "acc"} at the epoch starts measured before step 1
        self.held = False
        self.released_because: str | None = None

    def ready(self, trainer: pl.Trainer, state: PruningState, pruner: Any, accuracy: float, chance: float) -> bool:
        """Whether the first step may run now, given the accuracy measured at this epoch start.

        ``chance`` is the accuracy at or below which the net counts as untrained.
        """
        epoch = trainer.current_epoch
        gain = self.gain_pt(epoch, accuracy)
        self.note(epoch, accuracy)
        trained = accuracy > chance
        if not self.held:
            if trained:
                return True  # trained weights brought in, or the user's own warm-up: not ours to second-guess
            self.held = True
            rank_zero_warn(
                f"AccuracyGate: the first pruning step is due at epoch {epoch} but accuracy is {accuracy:.3f}, at "
                f"chance level (an untrained net): holding it until validation accuracy levels off (gains below "
                f"threshold={self.tolerance_pt} pt per epoch) or epoch {latest_start(trainer, state, pruner)} (halfway "
                f"to the last from which the schedule fits max_epochs={trainer.max_epochs}). To prune at a fixed epoch "
                f"instead, set warmup_epochs=N on {type(pruner).__name__} (or hold_untrained=False)."
            )
            return False
        deadline = latest_start(trainer, state, pruner)
        if trained and gain is not None and gain < self.tolerance_pt:
            self.released_because = f"accuracy levelled off at {accuracy:.4f} (+{gain:.2f} pt)"
        elif deadline is not None and epoch >= deadline:
            self.released_because = f"epoch {epoch} is the latest start (halfway to the last the schedule fits)"
        else:
            return False
        info(log, f"accuracy gate: first pruning step released at epoch {epoch}: {self.released_because}")
        return True

    def note(self, epoch: int, accuracy: float) -> None:
        """Keep the accuracy measured at an epoch start (one per epoch: whichever callback asked first measured it)."""
        self.measured = [m for m in self.measured if m["epoch"] != epoch] + [{"epoch": float(epoch), "acc": accuracy}]

    def measured_at(self, epoch: int) -> bool:
        return any(m["epoch"] == epoch for m in self.measured)

    def gain_pt(self, epoch: int, accuracy: float) -> float | None:
        """Points ``accuracy`` gained over the latest earlier epoch measured (``None``: none was)."""
        earlier = [m["acc"] for m in self.measured if m["epoch"] < epoch]
        return 100.0 * (accuracy - earlier[-1]) if earlier else None

    def state_dict(self) -> dict[str, Any]:
        return {"measured": [dict(m) for m in self.measured], "held": self.held, "released": self.released_because}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.measured = [dict(m) for m in state_dict.get("measured", [])]
        self.held = bool(state_dict.get("held", False))
        self.released_because = state_dict.get("released")


def latest_start(trainer: pl.Trainer, state: PruningState, pruner: Any) -> int | None:
    """The epoch by which the first step runs, held or not: halfway to the last one the schedule fits in.

    Every fine-tune still fits ``max_epochs``, and as many epochs are left after the schedule as were spent
    before it: a from-scratch run's rate usually decays (cosine, step), and fine-tunes in its tail, at a rate
    near zero, cannot recover what the steps cost.
    """
    if trainer.max_epochs is None or trainer.max_epochs < 0:
        return None
    finetune = getattr(pruner, "finetune_epochs", 1)
    needed = (state.num_steps - state.step) * finetune if finetune else 1
    return max(0, trainer.max_epochs - needed) // 2
