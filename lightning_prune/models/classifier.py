"""A generic classification LightningModule around any ``nn.Module`` returning logits.

It follows the conventions every callback of the suite relies on, so it doubles as their reference:
``(x, y)`` batches, logits out, ``val/acc`` logged each validation epoch, ``configure_optimizers``
building from *all* parameters (callbacks that shrink layers rebuild the optimizer through it, and
callbacks that freeze layers rely on frozen parameters still being in it).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "cosine")


class Classifier(pl.LightningModule):
    """Cross-entropy training of ``net`` with torchmetrics accuracy under ``train/``, ``val/``, ``test/``.

    Args:
        net: the model; must map a batch of ``input_shape`` inputs to ``num_classes`` logits.
        num_classes: number of classes.
        input_shape: shape of one input, used for ``example_input_array`` (latency, tracing).
        lr: learning rate.
        optimizer: one of ``"sgd"`` (momentum 0.9), ``"adam"``, ``"adamw"``.
        weight_decay: L2 penalty passed to the optimizer.
        scheduler: ``"none"`` or ``"cosine"`` (annealed over ``trainer.max_epochs``).

    Example::

        >>> from lightning_prune.models import MLP
        >>> module = Classifier(MLP((4,), 3, hidden=(8,)), num_classes=3, input_shape=(4,))
        >>> module(module.example_input_array).shape
        torch.Size([1, 3])
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        input_shape: Sequence[int],
        lr: float = 0.05,
        optimizer: str = "sgd",
        weight_decay: float = 5e-4,
        scheduler: str = "none",
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        input_shape = tuple(int(size) for size in input_shape)  # plain ints: the checkpoint loads weights_only
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.example_input_array = torch.zeros(1, *input_shape)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str, metric: MulticlassAccuracy) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        metric(logits, y)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=stage != "train")
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train", self.train_acc)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test", self.test_acc)

    def configure_optimizers(self):  # Lightning accepts an optimizer or a dict with a scheduler
        hp = self.hparams
        params = self.parameters()
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=0.9, weight_decay=hp.weight_decay)
        elif hp.optimizer == "adam":
            optimizer = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "none":
            return optimizer
        max_epochs = max(1, self.trainer.max_epochs or 1)
        return {
            "optimizer": optimizer,
            "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max_epochs),
        }
