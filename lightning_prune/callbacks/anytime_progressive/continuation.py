"""A later ``fit`` of the same AnytimeProgressivePruning: what is left of its schedule, and its epochs counted on.

Without a checkpoint a new Trainer counts epochs from 0 again, while the state counts the current megabatch's
epochs from the epoch its step ran at in the earlier fit; :func:`continue_schedule` moves that epoch into the
new count, so the megabatch gets only the epochs it still lacks.
"""

from __future__ import annotations

import lightning.pytorch as pl

from lightning_prune.callbacks._contract import count_epochs_on
from lightning_prune.callbacks.anytime_progressive.metrics import ANYTIME_KEYS
from lightning_prune.callbacks.protocol import PruningState


def remaining_epochs(
    state: PruningState, num_megabatches: int, epochs_per_megabatch: int, continued: bool, epochs_seen: int = 0
) -> tuple[list[tuple[int, int]], str]:
    """``(megabatch, epochs)`` this fit trains, and how they add up in words.

    The whole schedule, unless ``continued``: then the rest of the current megabatch after ``epochs_seen``
    epochs of the fit that trained last, and every later one.
    """
    num, per = num_megabatches, epochs_per_megabatch
    if not continued or state.step == 0:
        return [(t, per) for t in range(num)], f"num_megabatches={num} x epochs_per_megabatch={per}"
    done = min(per, max(0, epochs_seen - state.last_step_epoch))
    rest = [(state.step - 1, per - done)] if done < per else []
    remaining = rest + [(t, per) for t in range(state.step, num)]
    return remaining, f"{sum(count for _, count in remaining)} epochs left of the schedule an earlier fit began"


def continue_schedule(state: PruningState, trainer: pl.Trainer, epochs_seen: int, epochs_per_megabatch: int) -> None:
    """Count the current megabatch's epochs from the Trainer's epoch on, after ``epochs_seen`` in the earlier fit.

    A megabatch the earlier fit ended before its last epoch was recorded at that fit's end; its record is
    reopened, to be taken again once its epochs are complete.
    """
    if state.step == 0:
        return
    count_epochs_on(state, epochs_seen, trainer)
    record = state.history[-1]
    if record.get("epochs_trained", epochs_per_megabatch) < epochs_per_megabatch:
        for key in ANYTIME_KEYS:
            record.pop(key, None)
