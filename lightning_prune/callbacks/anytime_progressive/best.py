"""APP's per-megabatch protocol from the paper's code: keep the best held-out epoch's weights, restart the rate.

After each megabatch the paper reloads the checkpoint of the epoch with the best accuracy on the megabatch's own
10 % validation split, and every megabatch starts again at the initial learning rate. Both matter most when
megabatches are small: the last epoch of a few hundred samples is often not the best one.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from torch.utils.data import Subset

from lightning_prune.callbacks._trainer import broadcast
from lightning_prune.callbacks.anytime_progressive.metrics import EVAL_BATCH_SIZE, count_errors
from lightning_prune.data.megabatch import MegabatchDataModule


class BestWeights:
    """The weights (a CPU copy) of the epoch with the best held-out accuracy in the current megabatch."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.accuracy, self.epoch, self.state = -1.0, -1, None

    def offer(self, pl_module: pl.LightningModule, accuracy: float, epoch: int) -> None:
        """Keep the module's weights when ``accuracy`` beats the best so far (ties keep the earlier epoch)."""
        if accuracy > self.accuracy:
            self.accuracy, self.epoch = accuracy, epoch
            self.state = {key: value.detach().to("cpu", copy=True) for key, value in pl_module.state_dict().items()}

    def restore(self, pl_module: pl.LightningModule) -> None:
        if self.state is not None:
            pl_module.load_state_dict(self.state)


def holdout_accuracy(trainer: pl.Trainer, pl_module: pl.LightningModule, data: MegabatchDataModule, cb: Any) -> float:
    """Accuracy on the held-out part of the megabatches being trained on, measured on rank 0 and broadcast."""
    accuracy = None
    if trainer.is_global_zero:
        megabatch = cb.pruning_state.step - 1
        held = Subset(data.train_set, data.holdout_indices(megabatch, cb.replay).tolist())
        loader = data.loader(held, max(EVAL_BATCH_SIZE, data.batch_size))
        wrong, total = count_errors(pl_module, loader, 1.0, trainer.strategy.batch_to_device)
        accuracy = 1.0 - wrong / total if total else 0.0
    return float(broadcast(trainer, accuracy))


def initial_learning_rates(trainer: pl.Trainer) -> list[list[float]]:
    """Every optimizer's per-group learning rates as a megabatch should start with them.

    A scheduler records each group's starting rate as ``initial_lr``; without one the current rate is the start.
    """
    return [[group.get("initial_lr", group["lr"]) for group in opt.param_groups] for opt in trainer.optimizers]


def restart_learning_rates(trainer: pl.Trainer, initial: list[list[float]]) -> None:
    """Every group back to its initial rate and every scheduler back to its first epoch (its decay starts over)."""
    for optimizer, rates in zip(trainer.optimizers, initial):
        for group, rate in zip(optimizer.param_groups, rates):
            group["lr"] = rate
    for config in trainer.lr_scheduler_configs:
        config.scheduler.last_epoch = 0
