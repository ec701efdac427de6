"""One small real run per pruner, and the faults the catalogue injects into it.

Each :class:`Setup` is the smallest run that exercises a pruner's whole schedule in about a second on one
thread: two pruning steps (megabatches, soup rounds, blocks; one rebuild for ODF2NNA), then the Trainer stops.
``last_epoch`` is the epoch that follows the last step; ``stop_at`` an optimizer step at which the schedule is
still unfinished. What each run reports is measured here independently of the pruner (:func:`measure`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from lightning_prune import (
    AnytimeProgressivePruning,
    BlockPruning,
    DenseUnitPruning,
    InstantSoupPruning,
    IterativePruning,
    LatencyBudgetPruning,
    PruningCallback,
)
from lightning_prune.core.selection import select_parameters
from lightning_prune.core.structured import count_parameters
from lightning_prune.data import DigitsDataModule, MegabatchDataModule, TabularDataModule
from lightning_prune.models import MLP, Classifier
from tests.helpers import cnn_classifier, resnet_classifier

# Cheap timing for LatencyBudgetPruning: one thread, few calls per entry; a generous final tolerance (the
# catalogue asserts what is reported against the weights, not the latency).
LATENCY_FAST = {"threads": 1, "repeats": 5, "rounds": 2, "lut_repeats": 3, "batch_size": 64, "tolerance": 0.5}


@functools.cache
def digits() -> DigitsDataModule:
    datamodule = DigitsDataModule(batch_size=64)
    datamodule.setup()
    return datamodule


@functools.cache
def breast_cancer() -> TabularDataModule:
    datamodule = TabularDataModule("breast_cancer", batch_size=64)
    datamodule.setup()
    return datamodule


def megabatches() -> MegabatchDataModule:
    return MegabatchDataModule(DigitsDataModule(batch_size=64), num_megabatches=2)


def cancer_mlp() -> Classifier:
    data = breast_cancer()
    return Classifier(MLP(data.input_shape, data.num_classes, hidden=(32, 32)), data.num_classes, data.input_shape)


@dataclass(frozen=True)
class Setup:
    """A pruner, the model and data it runs on, and where its schedule ends."""

    name: str
    pruner: Callable[..., PruningCallback]  # keyword arguments override the setup's (export_dir, on_nonfinite)
    model: Callable[[], pl.LightningModule]
    data: Callable[[], pl.LightningDataModule]
    section: str  # its section of summary.json
    max_epochs: int  # the schedule fits (it stops itself, or ends at max_epochs)
    last_epoch: int  # an epoch after the last pruning step: a NaN loss from here on is "after the last step"
    stop_at: int  # stopping after this many optimizer steps leaves the schedule unfinished
    structured: bool  # removes weights physically (sparsity counts removed weights; params shrink)
    other: dict[str, Any]  # another configuration: a different state_key (what a foreign checkpoint was made with)
    plain_loaders: bool = True  # fits on any loaders (APP needs its MegabatchDataModule)
    trainer: dict[str, Any] = field(default_factory=lambda: {"limit_train_batches": 4, "limit_val_batches": 2})

    def make(self, **kwargs: Any) -> PruningCallback:
        return self.pruner(**kwargs)


def _with(cls: type, **fixed: Any) -> Callable[..., PruningCallback]:
    return lambda **kwargs: cls(**{**fixed, **kwargs})


SETUPS = {
    s.name: s
    for s in [
        Setup(
            "IterativePruning",
            _with(IterativePruning, target_sparsity=0.5, step_ratio=0.3, finetune_epochs=1),  # steps 0.3, 0.5
            lambda: cnn_classifier(widths=(8, 8)),
            digits,
            "iterative",
            max_epochs=3,
            last_epoch=1,
            stop_at=2,
            structured=False,
            other={"target_sparsity": 0.4},
        ),
        Setup(
            "BlockPruning",
            _with(BlockPruning, step_ratio=0.5, finetune_epochs=1),  # one step per block, two blocks
            lambda: resnet_classifier(blocks=(1, 1), widths=(8, 16)),
            digits,
            "block_pruning",
            max_epochs=3,
            last_epoch=1,
            stop_at=2,
            structured=True,
            other={"target_sparsity": 0.3},
        ),
        Setup(
            "AnytimeProgressivePruning",
            _with(AnytimeProgressivePruning, num_megabatches=2, epochs_per_megabatch=1),
            lambda: cnn_classifier(widths=(8, 8)),
            megabatches,
            "anytime_progressive",
            max_epochs=2,
            last_epoch=1,
            stop_at=2,
            structured=False,
            other={"target_sparsity": 0.5},
            plain_loaders=False,
            trainer={"limit_val_batches": 2},
        ),
        Setup(
            "InstantSoupPruning",  # rounds at optimizer steps 1 and 3 (calibration t=1: t, then +2t)
            _with(
                InstantSoupPruning,
                target_sparsity=0.5,
                step_ratio=0.3,
                num_ingredients=2,
                lookahead_steps=2,
                calibration_steps=1,
            ),
            lambda: cnn_classifier(widths=(8, 8)),
            digits,
            "instant_soup",
            max_epochs=2,
            last_epoch=1,
            stop_at=2,
            structured=False,
            other={"target_sparsity": 0.4},
        ),
        Setup(
            "DenseUnitPruning",  # rebuild at epoch 1, one retrain epoch
            _with(DenseUnitPruning, epsilon=0.3, wide_epochs=1, retrain_epochs=1),
            cancer_mlp,
            breast_cancer,
            "odf2nna",
            max_epochs=3,
            last_epoch=1,
            stop_at=2,
            structured=True,
            other={"epsilon": 0.2},
        ),
        Setup(
            "LatencyBudgetPruning",  # steps at epochs 0 and 1; a budget the smallest network meets on a busy host
            _with(LatencyBudgetPruning, budget_fraction=0.8, num_steps=2, warmup_epochs=0, **LATENCY_FAST),
            lambda: cnn_classifier(widths=(16, 16, 32, 32)),
            digits,
            "latency_budget",
            max_epochs=2,
            last_epoch=1,
            stop_at=2,
            structured=True,
            other={"budget_fraction": 0.7},
        ),
    ]
}
PRUNERS = list(SETUPS)


def pruner_params(slow: tuple[str, ...] = ()) -> list[Any]:
    """``PRUNERS`` for ``parametrize``, the names in ``slow`` marked slow (their case takes over ~2 s)."""
    return [pytest.param(name, marks=pytest.mark.slow) if name in slow else name for name in PRUNERS]


def trainer(setup: Setup, root: Path, trainer_kwargs: dict, callbacks: list, **overrides: Any) -> pl.Trainer:
    kwargs = {**trainer_kwargs, "default_root_dir": str(root), "max_epochs": setup.max_epochs, **setup.trainer}
    return pl.Trainer(callbacks=callbacks, **{**kwargs, **overrides})


# ---------------------------------------------------------------- injected faults


class StopAt(pl.Callback):
    """Stops training after ``step`` optimizer steps, as EarlyStopping or a user's callback would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


class PoisonAtTrainEnd(pl.Callback):
    """Fills one parameter with NaN once training is over (after the last step, before the export)."""

    def __init__(self) -> None:
        self.name = ""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.name, parameter = next(iter(pl_module.named_parameters()))
        with torch.no_grad():
            parameter.fill_(float("nan"))


def nan_loss_from(model: pl.LightningModule, epoch: int) -> pl.LightningModule:
    """The loss of ``model`` turns NaN from ``epoch`` on (a diverging run): every weight becomes NaN."""
    step = model.training_step

    def training_step(*args: Any, **kwargs: Any) -> Any:
        loss = step(*args, **kwargs)
        return loss * float("nan") if model.trainer.current_epoch >= epoch else loss

    model.training_step = training_step
    return model


def empty_training_data(setup: Setup) -> pl.LightningDataModule:
    """The setup's data with no training samples (APP's megabatch module refuses that itself, naming the count)."""
    if setup.plain_loaders:
        return EmptyTrainSet(setup.data())
    data = digits()
    return MegabatchDataModule(train_set=Subset(data.train_set, []), val_set=data.val_set, num_megabatches=2)


class EmptyTrainSet(pl.LightningDataModule):
    """``data`` with an empty training set (a filter that matched nothing, an empty folder)."""

    def __init__(self, data: pl.LightningDataModule) -> None:
        super().__init__()
        self.data = data

    def train_dataloader(self) -> DataLoader:
        return DataLoader(Subset(self.data.train_set, []), batch_size=64)

    def val_dataloader(self) -> DataLoader:
        return self.data.val_dataloader()


# ---------------------------------------------------------------- what the weights say


def selected(setup: Setup, pruner: PruningCallback, dense: nn.Module) -> list[str]:
    """The weights a pruner's sparsity is a fraction of, found in the dense model the way the pruner finds them."""
    if setup.name == "LatencyBudgetPruning":  # conv/linear weights (its table's layers), the head included
        return [f"{n}.weight" for n, m in dense.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    args = [pruner.include_types, pruner.include_names, pruner.exclude_names, pruner.prune_head, pruner.include_biases]
    return select_parameters(dense, *args)


def measure(setup: Setup, pruner: PruningCallback, state_dict: dict[str, torch.Tensor]) -> dict[str, float]:
    """``sparsity`` and parameter counts of an exported (or trained) state dict, against a freshly built dense model.

    Sparsity counts a weight as pruned when it is exactly zero or (structured pruners) physically gone;
    ODF2NNA's is the share of all parameters removed.
    """
    dense = setup.model()
    kept = [state_dict[name] for name, _ in dense.named_parameters() if name in state_dict]
    params, nonzero = sum(t.numel() for t in kept), sum(int((t != 0).sum()) for t in kept)
    counts = {"params": params, "params_after": params, "params_nonzero": nonzero, "kept_params": nonzero}
    if setup.name == "DenseUnitPruning":
        return {"sparsity": 1.0 - params / count_parameters(dense), **counts}
    zeros = total = 0
    for name in selected(setup, pruner, dense):
        tensor = state_dict.get(name)
        zeros += dense.get_parameter(name).numel() - (tensor.numel() if tensor is not None else 0)
        zeros += int((tensor == 0).sum()) if tensor is not None else 0
        total += dense.get_parameter(name).numel()
    return {"sparsity": zeros / total, **counts}


def zero_positions(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: (p == 0).detach().clone() for name, p in module.named_parameters()}


def shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in module.named_parameters()}
