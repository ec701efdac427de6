"""LightningModules written the way users write them: their own steps, metric names and optimizers.

Nothing here follows the project's :class:`~lightning_prune.models.Classifier` conventions on purpose: metrics
are logged as ``val_acc`` / ``val_loss`` (not ``val/acc``), no ``example_input_array`` is set, the optimizer is
SGD + momentum + cosine annealing or AdamW + linear warm-up, and Hugging Face models are called as their docs
show (``self.model(**batch)``, ``outputs.loss``, ``outputs.logits``).
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _warmup_linear(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> dict:
    """Linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total`` (HF's linear schedule with warm-up)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "interval": "step"}


class ImageClassifier(pl.LightningModule):
    """``(x, y)`` batches, cross-entropy, SGD with momentum and a cosine schedule over ``max_epochs``."""

    def __init__(self, net: nn.Module, lr: float = 0.05, weight_decay: float = 5e-4) -> None:
        super().__init__()
        self.net, self.lr, self.weight_decay = net, lr, weight_decay

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.trainer.max_epochs))
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


class WarmupImageClassifier(ImageClassifier):
    """The same steps with AdamW and a linear warm-up then decay, stepped every batch (transformer habits)."""

    def __init__(self, net: nn.Module, lr: float = 3e-3, weight_decay: float = 0.05, warmup_fraction: float = 0.1):
        super().__init__(net, lr, weight_decay)
        self.warmup_fraction = warmup_fraction

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, math.ceil(self.warmup_fraction * total))
        return {"optimizer": optimizer, "lr_scheduler": _warmup_linear(optimizer, warmup, total)}


class HFClassifier(pl.LightningModule):
    """A Hugging Face ``*ForSequenceClassification`` / ``*ForImageClassification``: dict batches, ``outputs.loss``."""

    def __init__(self, model: nn.Module, lr: float = 3e-3, weight_decay: float = 0.01, warmup_fraction: float = 0.1):
        super().__init__()
        self.model, self.lr, self.weight_decay, self.warmup_fraction = model, lr, weight_decay, warmup_fraction

    def forward(self, **inputs: Tensor):  # a ModelOutput with .loss (given labels) and .logits
        return self.model(**inputs)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        outputs = self(**batch)
        self.log("train_loss", outputs.loss)
        return outputs.loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        outputs = self(**batch)
        self.log("val_loss", outputs.loss, prog_bar=True)
        self.log("val_acc", self.accuracy(outputs.logits, batch["labels"]), prog_bar=True)

    def accuracy(self, logits: Tensor, labels: Tensor) -> Tensor:
        return (logits.argmax(dim=-1) == labels).float().mean()

    def configure_optimizers(self) -> dict:
        decay = [p for n, p in self.named_parameters() if p.ndim >= 2 and "norm" not in n.lower()]
        no_decay = [p for n, p in self.named_parameters() if not (p.ndim >= 2 and "norm" not in n.lower())]
        groups = [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=self.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, math.ceil(self.warmup_fraction * total))
        return {"optimizer": optimizer, "lr_scheduler": _warmup_linear(optimizer, warmup, total)}


class HFCausalLM(HFClassifier):
    """A Hugging Face ``*ForCausalLM`` trained on next-token prediction; ``val_acc`` is next-token accuracy."""

    def accuracy(self, logits: Tensor, labels: Tensor) -> Tensor:
        return (logits[:, :-1].argmax(dim=-1) == labels[:, 1:]).float().mean()
