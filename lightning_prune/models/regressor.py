"""A generic regression LightningModule: the classification module's conventions, with MSE and R².

Targets are standardised with the training split's mean and standard deviation: a net trained on raw
targets (diabetes: mean ~150, std ~77) with the suite's default learning rates diverges or crawls. The
statistics are fitted once, from the training loader, and kept as buffers so checkpoints and exports
carry them; ``forward`` returns predictions in target units.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanSquaredError, R2Score

from lightning_prune.models.classifier import OPTIMIZERS, SCHEDULERS, Classifier


class Regressor(pl.LightningModule):
    """Mean-squared-error training of ``net`` with torchmetrics R² and MSE under ``train/``, ``val/``, ``test/``.

    Logs ``<stage>/loss`` (MSE of standardised targets: what is optimised), ``<stage>/mse`` (in target
    units) and ``<stage>/r2`` (higher is better, unaffected by the standardisation).

    Args:
        net: the model; maps a batch of ``input_shape`` inputs to one output per sample.
        input_shape: shape of one input, used for ``example_input_array`` (latency, tracing).
        num_classes: number of targets; must be 1. Named as the data modules report it (their
            ``num_classes`` is 1 for float targets), so the Hydra app builds either module alike.
        lr: learning rate.
        optimizer: one of ``"sgd"`` (momentum 0.9), ``"adam"``, ``"adamw"``.
        weight_decay: L2 penalty passed to the optimizer.
        scheduler: ``"none"`` or ``"cosine"`` (annealed over ``trainer.max_epochs``).
        standardize_targets: fit the target mean/std on the training data at the start of training.

    Raises:
        ValueError: for an unknown optimizer or scheduler, ``lr <= 0`` or ``num_classes != 1``.

    Example::

        >>> from lightning_prune.models import MLP
        >>> module = Regressor(MLP((10,), 1, hidden=(8,)), input_shape=(10,))
        >>> module(module.example_input_array).shape
        torch.Size([1])
    """

    def __init__(
        self,
        net: nn.Module,
        input_shape: Sequence[int],
        num_classes: int = 1,
        lr: float = 1e-3,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        scheduler: str = "none",
        standardize_targets: bool = True,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if num_classes != 1:
            raise ValueError(f"num_classes must be 1 (one regression target), got {num_classes}")
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.example_input_array = torch.zeros(1, *input_shape)
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))
        self.register_buffer("targets_fitted", torch.tensor(not standardize_targets))
        self.metrics = nn.ModuleDict(
            {f"{stage}_{name}": metric() for stage in ("train", "val", "test") for name, metric in _METRICS.items()}
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1) * self.target_std + self.target_mean

    def on_train_start(self) -> None:
        if not bool(self.targets_fitted):
            self._fit_target_statistics()

    def _fit_target_statistics(self) -> None:
        """Mean and std of the training targets, summed over every rank's shard (same value on all ranks)."""
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        with torch.random.fork_rng(devices=[]):  # iterating a loader draws a seed; leave training's RNG alone
            for _, y in self.trainer.train_dataloader:
                y = y.to(self.device, torch.float64)
                sums += torch.stack([torch.tensor(float(y.numel()), device=self.device), y.sum(), (y**2).sum()])
        count, total, squares = self.trainer.strategy.reduce(sums, reduce_op="sum")
        mean = total / count
        std = (squares / count - mean**2).clamp_min(1e-12).sqrt()
        self.target_mean.fill_(float(mean))
        self.target_std.fill_(float(std))
        self.targets_fitted.fill_(True)

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        standardised = self.net(x).squeeze(-1)
        loss = F.mse_loss(standardised, (y - self.target_mean) / self.target_std)
        prediction = standardised.detach() * self.target_std + self.target_mean
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=stage != "train")
        for name in _METRICS:
            metric = self.metrics[f"{stage}_{name}"]
            metric(prediction, y)
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "r2")
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    # Same optimizer/scheduler choices as the classifier, read from the same hyperparameter names.
    configure_optimizers = Classifier.configure_optimizers


_METRICS = {"mse": MeanSquaredError, "r2": R2Score}
