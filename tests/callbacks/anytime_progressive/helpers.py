"""What the AnytimeProgressivePruning tests share: megabatches of digits, a recorder of what each epoch saw, a fit."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from torch import nn

from lightning_prune import AnytimeProgressivePruning
from lightning_prune.data import DigitsDataModule, MegabatchDataModule
from tests.helpers import cnn_classifier


def megabatches(num: int) -> MegabatchDataModule:
    return MegabatchDataModule(DigitsDataModule(batch_size=64), num_megabatches=num)


class Recorder(Callback):
    """What each epoch trained on, the masks after it, and the labels of its first batch."""

    def __init__(self, pruner: AnytimeProgressivePruning) -> None:
        self.pruner, self.seen, self.masks, self.first = pruner, {}, {}, {}

    def on_train_batch_start(self, trainer: pl.Trainer, module: Any, batch: Any, batch_idx: int) -> None:
        epoch = trainer.current_epoch
        self.seen[epoch] = self.seen.get(epoch, 0) + len(batch[1])
        if batch_idx == 0:
            self.first[epoch] = batch[1].clone()

    def on_train_epoch_end(self, trainer: pl.Trainer, module: Any) -> None:
        self.masks[trainer.current_epoch] = {k: v.clone() for k, v in self.pruner._masks.masks.items()}


def fit_app(
    trainer_kwargs: dict, num: int = 3, epochs: int = 1, ckpt: str | None = None, extra: tuple = (), **app_kwargs: Any
) -> tuple[AnytimeProgressivePruning, Recorder, pl.Trainer, MegabatchDataModule]:
    pl.seed_everything(0, verbose=False)
    pruner = AnytimeProgressivePruning(num_megabatches=num, epochs_per_megabatch=epochs, **app_kwargs)
    recorder, data = Recorder(pruner), megabatches(num)
    trainer = pl.Trainer(max_epochs=num * epochs + 2, callbacks=[pruner, recorder, *extra], **trainer_kwargs)
    trainer.fit(cnn_classifier(widths=(8, 8)), datamodule=data, ckpt_path=ckpt)
    return pruner, recorder, trainer, data


def zeros(pruner: AnytimeProgressivePruning, model: nn.Module) -> float:
    """Measured sparsity: the fraction of the selected weights that are exactly zero."""
    weights = [model.get_parameter(name) for name in pruner._masks.masks]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
