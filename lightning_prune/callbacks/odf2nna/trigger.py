"""When ODF2NNA rebuilds, and from which weights: after ``wide_epochs`` at the latest, or on a plateau.

A plateau of ``monitor`` triggers the rebuild (``patience``), and a plateau means the last epochs were no
better, so the rebuild starts from the weights of the best value (``restore_best``): one CPU copy of the
module's ``state_dict``, carried by the checkpoints until the rebuild so a resumed run restores the same
weights. Whether a value improved is rank 0's decision, so every rank restores and rebuilds at one point.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_prune.callbacks._trainer import broadcast, info
from lightning_prune.core.validate import check_choice, check_int, is_number

log = logging.getLogger(__name__)
MODES = ("min", "max")
# A rebuild by wide_epochs warns when the monitor's last value lies this far (relative) from its best: the net is
# still moving, its units' scores are noise (a from-scratch run rebuilt too early: MobileNetV3 at 2 of 4 epochs,
# val_loss 4.46 against a best of 2.29, ended 18 pt below plain training).
UNSETTLED = 0.25


class RebuildTrigger:
    """Watches ``monitor`` (last and best values, the best one's epoch and weights, validations since) and the epoch.

    Args:
        wide_epochs: rebuild at the start of this epoch at the latest (``None``: only on a plateau).
        patience: rebuild once ``monitor`` has not improved for this many validation runs (``None``: off).
        monitor: the logged metric; ``mode`` (``"min"`` or ``"max"``) says whether lower or higher is better.
        min_delta: smallest change that counts as an improvement.
        restore_best: keep a CPU copy of the weights at each improvement and load it at the rebuild.

    Raises:
        ValueError: for the arguments above out of range, or neither ``wide_epochs`` nor ``patience`` set.
    """

    def __init__(
        self,
        wide_epochs: int | None,
        patience: int | None,
        monitor: str,
        mode: str,
        min_delta: float,
        restore_best: bool,
    ) -> None:
        check_int("wide_epochs", wide_epochs, 0, optional=True)
        check_int("patience", patience, 1, optional=True)
        if wide_epochs is None and patience is None:
            raise ValueError("set wide_epochs, patience or both: otherwise the rebuild never happens")
        check_choice("mode", mode, MODES)
        if not is_number(min_delta) or min_delta < 0:
            raise ValueError(f"min_delta must be a number >= 0, got {min_delta!r}")
        self.wide_epochs, self.patience, self.restore_best = wide_epochs, patience, restore_best
        self.monitor, self.mode, self.min_delta = monitor, mode, min_delta
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.weights: dict[str, Tensor] | None = None
        self.last: float | None = None
        self.wait = 0

    def epochs_before_rebuild(self, trainer: pl.Trainer) -> tuple[int, str]:
        """Training epochs from now until the rebuild at the latest (``wide_epochs``), or at the soonest on a plateau.

        A plateau needs a first value (unless one was seen) and ``patience`` validations without improvement,
        counted in epochs at one validation every ``check_val_every_n_epoch``; validating several times an
        epoch, or by steps, it can come within an epoch. Returns the epochs and how they add up.
        """
        if self.wide_epochs is not None:
            return self.wide_epochs, f"wide_epochs={self.wide_epochs}"
        validations = (1 if self.best is None else 0) + max(0, self.patience - self.wait)
        every = trainer.check_val_every_n_epoch
        if every is None or trainer.val_check_interval != 1.0:
            return min(1, validations), f"a plateau of patience={self.patience} (several validations an epoch)"
        return validations * every, f"a plateau of patience={self.patience}: {validations} validations at the soonest"

    def due(self, epoch: int) -> bool:
        """Whether the rebuild happens at the start of ``epoch``."""
        late = self.wide_epochs is not None and epoch >= self.wide_epochs
        return late or (self.patience is not None and self.wait >= self.patience)

    def observe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """After a validation run: an improvement resets the wait (and keeps the weights), else one more."""
        if self.monitor not in trainer.callback_metrics:
            if self.patience is not None and self.last is None:
                raise ValueError(
                    f"DenseUnitPruning(monitor={self.monitor!r}) was not logged; "
                    f"available: {sorted(trainer.callback_metrics)}"
                )
            return  # not logged yet (Lightning keeps a logged metric's last value): nothing to compare
        self.last = float(trainer.callback_metrics[self.monitor])
        sign = 1.0 if self.mode == "min" else -1.0
        improved = self.best is None or sign * (self.best - self.last) > self.min_delta
        if broadcast(trainer, improved):  # rank 0 decides: every rank restores and rebuilds at the same point
            self.best, self.best_epoch, self.wait = self.last, trainer.current_epoch, 0
            if self.restore_best:
                self.weights = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}
        else:
            self.wait += 1

    def before_rebuild(self, trainer: pl.Trainer, pl_module: pl.LightningModule, record: dict[str, Any]) -> None:
        """Note the last value in ``record``; with ``restore_best`` load the best weights (noted too), free the copy.

        Without a copy (``monitor`` never logged) it warns and leaves the last weights, except before any
        training, where there is nothing to go back to.
        """
        if self.last is not None:
            record[f"{self.monitor}_before"] = self.last
        self._warn_if_unsettled(trainer.current_epoch)
        if not self.restore_best:
            return
        if self.weights is None:
            if trainer.current_epoch > 0:
                rank_zero_warn(
                    f"DenseUnitPruning(restore_best=True): {self.monitor!r} was never logged before the rebuild; "
                    "pruning the last weights"
                )
            return
        pl_module.load_state_dict(self.weights)
        record["restored_epoch"], record[f"{self.monitor}_restored"] = self.best_epoch, self.best
        self.weights = None
        info(
            log, f"restored the weights of epoch {self.best_epoch} ({self.monitor}={self.best:.4g}) before the rebuild"
        )

    def _warn_if_unsettled(self, epoch: int) -> None:
        """Warn when ``wide_epochs`` (not a plateau) brings the rebuild while ``monitor`` is far from its best."""
        on_plateau = self.patience is not None and self.wait >= self.patience
        if on_plateau or self.last is None or self.best is None or self.last == self.best:
            return
        distance = abs(self.last - self.best) / max(abs(self.best), 1e-12)
        if distance <= UNSETTLED:
            return
        restoring = (
            f"; restoring epoch {self.best_epoch}'s weights discards the epochs since" if self.restore_best else ""
        )
        rank_zero_warn(
            f"DenseUnitPruning rebuilds at epoch {epoch} (wide_epochs={self.wide_epochs}) on a network that has not "
            f"settled: {self.monitor} was {self.last:.4g} at the last validation, {distance:.0%} away from its best "
            f"{self.best:.4g} (epoch {self.best_epoch}){restoring}. Units scored on a network still moving this much "
            "are noise, and the rebuilt net can end far below the dense one. Train the dense net longer (a later "
            "wide_epochs) or rebuild on a plateau (patience=N, wide_epochs=None)."
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_weights": self.weights,
            "last_value": self.last,
            "wait": self.wait,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")
        self.best_epoch = state_dict.get("best_epoch")
        self.weights = state_dict.get("best_weights")
        self.last = state_dict.get("last_value")
        self.wait = state_dict.get("wait", 0)
