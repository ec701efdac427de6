"""One arm of the ODF2NNA benchmark: train it, keep its best-validation weights, measure size, metric and latency."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional import r2_score
from torchmetrics.functional.classification import multiclass_accuracy

from lightning_prune.bench._common import trainer
from lightning_prune.core.export import parameter_counts
from lightning_prune.core.timing import TimingSettings, measure_latency
from lightning_prune.data import TabularDataModule
from lightning_prune.models import MLP, Classifier, Regressor

DATASETS = {"breast_cancer": "acc", "wine": "acc", "digits": "acc", "diabetes": "r2"}
ARMS = ("wide", "control", "rebuilt", "faithful", "magnitude", "scratch")
HIDDEN = (256, 256, 256)


class BestValidation(pl.Callback):
    """Keep the weights of the lowest ``monitor`` from ``from_epoch`` on, and load them when the fit ends.

    :class:`AfterPrune` offers it the pruned net before any fine-tuning too (``offer``): the fine-tuning is
    kept only where it lowers the validation loss.
    """

    def __init__(self, monitor: str = "val/loss", from_epoch: int = 0) -> None:
        self.monitor, self.from_epoch = monitor, from_epoch
        self.best: float | None = None
        self.state: dict[str, torch.Tensor] | None = None
        self.chose_before_finetuning = False

    def offer(self, value: float, pl_module: pl.LightningModule, before_finetuning: bool) -> None:
        if self.best is None or value < self.best:
            self.best, self.chose_before_finetuning = value, before_finetuning
            self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch < self.from_epoch:
            return
        self.offer(float(trainer.callback_metrics[self.monitor]), pl_module, before_finetuning=False)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.state is not None:
            pl_module.load_state_dict(self.state)


class AfterPrune(pl.Callback):
    """The pruned net before any fine-tuning: its metrics, and its validation loss offered to ``best``.

    Placed after the pruning callback, it runs at the start of ``epoch`` (the prune or rebuild epoch):
    what the replacement of removed units preserves, and a candidate for the arm's best-validation weights.
    """

    def __init__(self, datamodule: TabularDataModule, epoch: int, best: BestValidation) -> None:
        self.datamodule, self.epoch, self.best = datamodule, epoch, best
        self.metrics: dict[str, float] = {}

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch != self.epoch:
            return
        for split in ("val", "test"):
            self.metrics[split] = split_metric(pl_module, self.datamodule, split)
        self.best.offer(split_loss(pl_module, self.datamodule, "val"), pl_module, before_finetuning=True)


def _outputs(module: pl.LightningModule, datamodule: TabularDataModule, split: str) -> tuple[Tensor, Tensor]:
    """The net's raw outputs (logits, or standardised predictions for a regressor) on a whole split."""
    x, y = getattr(datamodule, f"{split}_set").tensors
    was_training = module.training
    module.eval()
    with torch.no_grad():
        out = module.net(x.to(module.device)).cpu()
    module.train(was_training)
    return out, y


def split_metric(module: pl.LightningModule, datamodule: TabularDataModule, split: str) -> float:
    """Accuracy or R² of ``module`` on a whole split, in eval mode (torchmetrics' functional forms)."""
    out, y = _outputs(module, datamodule, split)
    if DATASETS[datamodule.name] == "r2":
        prediction = out.reshape(-1) * module.target_std.cpu() + module.target_mean.cpu()
        return float(r2_score(prediction, y.reshape(-1).to(prediction.dtype)))
    return float(multiclass_accuracy(out, y, num_classes=out.shape[1], average="micro"))


def split_loss(module: pl.LightningModule, datamodule: TabularDataModule, split: str) -> float:
    """The module's own ``val/loss`` over a whole split (cross-entropy; MSE of standardised targets)."""
    out, y = _outputs(module, datamodule, split)
    if DATASETS[datamodule.name] == "r2":
        target = (y.reshape(-1).to(out.dtype) - module.target_mean.cpu()) / module.target_std.cpu()
        return float(F.mse_loss(out.reshape(-1), target))
    return float(F.cross_entropy(out, y))


def latency_ms(net: nn.Module, input_shape: Sequence[int], batch: int, repeats: int, warmup: int) -> float:
    """Median wall time of one forward of ``batch`` inputs, in milliseconds (the shared timing core)."""
    settings = TimingSettings(warmup=warmup, repeats=repeats)
    return measure_latency(net, torch.randn(batch, *input_shape), settings, "cpu").p50_ms


def build_module(datamodule: TabularDataModule, hidden: Sequence[int], lr: float) -> pl.LightningModule:
    net = MLP(datamodule.input_shape, datamodule.num_classes, hidden=hidden)
    options = {"lr": lr, "optimizer": "adamw", "weight_decay": 1e-2}
    if DATASETS[datamodule.name] == "r2":
        return Regressor(net, datamodule.input_shape, **options)
    return Classifier(net, datamodule.num_classes, datamodule.input_shape, **options)


@dataclass
class Arm:
    """One trained arm: its module (best validation weights) and its validation and test metrics."""

    module: pl.LightningModule
    val_metric: float
    test_metric: float


def fit_arm(
    datamodule: TabularDataModule,
    module: pl.LightningModule,
    epochs: int,
    callbacks: Sequence[pl.Callback],
    best: BestValidation,
    ckpt_path: str | None = None,
) -> Arm:
    """Train (or resume) ``module``, load its best validation weights, then validate and test them."""
    metric = DATASETS[datamodule.name]
    with tempfile.TemporaryDirectory() as root:
        fit = trainer(epochs, [*callbacks, best], root=root)
        fit.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        fit.validate(module, datamodule=datamodule, verbose=False)
        val = float(fit.callback_metrics[f"val/{metric}"])
        fit.test(module, datamodule=datamodule, verbose=False)
        return Arm(module, val, float(fit.callback_metrics[f"test/{metric}"]))


def measure(
    arm: Arm,
    datamodule: TabularDataModule,
    cfg: Any,
    after: AfterPrune | None = None,
    best: BestValidation | None = None,
) -> dict[str, Any]:
    """Size, metrics and latency of an arm.

    For a pruned arm also its metrics before fine-tuning and whether its best-validation weights were
    those (no fine-tuning epoch lowered the validation loss).
    """
    net = arm.module.net
    pruned = {}
    if after is not None and best is not None:
        pruned = {
            "val_metric_before_retraining": after.metrics["val"],
            "test_metric_before_retraining": after.metrics["test"],
            "kept_before_retraining": best.chose_before_finetuning,
        }
    return {
        **pruned,
        **parameter_counts(net),
        "val_metric": arm.val_metric,
        "test_metric": arm.test_metric,
        "latency_ms_b1": latency_ms(net, datamodule.input_shape, 1, cfg.repeats, cfg.warmup),
        "latency_ms_b256": latency_ms(net, datamodule.input_shape, 256, max(20, cfg.repeats // 5), cfg.warmup),
    }
