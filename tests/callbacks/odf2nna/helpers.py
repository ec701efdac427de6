"""What the ODF2NNA callback tests share: the breast cancer table and a small MLP classifier on it."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from lightning_prune.data import TabularDataModule
from lightning_prune.models import MLP, Classifier


def breast_cancer() -> TabularDataModule:
    datamodule = TabularDataModule("breast_cancer", batch_size=64)
    datamodule.setup()
    return datamodule


def mlp_classifier(datamodule: TabularDataModule, hidden: tuple[int, ...] = (64, 64)) -> Classifier:
    net = MLP(datamodule.input_shape, datamodule.num_classes, hidden=hidden)
    return Classifier(net, datamodule.num_classes, datamodule.input_shape, lr=1e-2, optimizer="adam")


def adam_run(datamodule: TabularDataModule, trainer_kwargs: dict, callbacks: list) -> dict[str, torch.Tensor]:
    """Three seeded epochs of Adam with a cosine schedule; the final weights."""
    pl.seed_everything(0, verbose=False)
    net = MLP(datamodule.input_shape, datamodule.num_classes, hidden=(64, 64))
    model = Classifier(
        net, datamodule.num_classes, datamodule.input_shape, lr=1e-2, optimizer="adam", scheduler="cosine"
    )
    pl.Trainer(max_epochs=3, callbacks=callbacks, **trainer_kwargs).fit(model, datamodule=datamodule)
    return model.state_dict()


class OutputCapture(pl.Callback):
    """The module's outputs on ``inputs`` at the start of ``epoch`` (before or after the rebuild, depending on
    where it sits in the callback list)."""

    def __init__(self, epoch: int, inputs: torch.Tensor) -> None:
        self.epoch, self.inputs, self.outputs = epoch, inputs, None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            pl_module.eval()
            with torch.no_grad():
                self.outputs = pl_module(self.inputs)
            pl_module.train()
