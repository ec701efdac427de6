"""Inside a user's own Trainer (issue 21, item 7): no untrained net pruned by accident, no metric silently missing,
training runs to the ``max_epochs`` the user asked for unless the schedule is told to stop."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_prune import AccuracyGate, BlockPruning, IterativePruning
from lightning_prune.callbacks._contract import measured_sparsity
from tests.helpers import cnn_classifier


class UserMLP(pl.LightningModule):
    """Written the way users write one: its own metric names (``val_acc``, ``val_loss``), loaders passed to fit."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx) -> None:
        logits = self(batch[0])
        self.log("val_loss", nn.functional.cross_entropy(logits, batch[1]))
        self.log("val_acc", (logits.argmax(-1) == batch[1]).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def loaders(digits) -> tuple[DataLoader, DataLoader]:
    return DataLoader(digits.train_set, batch_size=64, shuffle=True), DataLoader(digits.val_set, batch_size=256)


def fit_user_mlp(pruner, digits, trainer_kwargs: dict, max_epochs: int = 3) -> tuple[pl.Trainer, list[str]]:
    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=[pruner], **trainer_kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(UserMLP(), *loaders(digits))
    return trainer, [str(w.message) for w in caught]


def test_unlogged_monitor_is_named_once_with_the_logged_metrics_and_the_fix(digits, trainer_kwargs: dict) -> None:
    pruner = IterativePruning(target_sparsity=0.6, step_ratio=0.5, warmup_epochs=1, finetune_epochs=1)
    trainer, messages = fit_user_mlp(pruner, digits, trainer_kwargs)
    about = [m for m in messages if "monitor='val/acc'" in m]
    assert len(about) == 1  # two steps, one warning
    assert "the logged metrics are ['val_acc', 'val_loss']" in about[0]
    assert 'pass monitor="val_acc"' in about[0]
    assert pruner.pruning_state.step == 2
    assert trainer.current_epoch == 3


def test_logged_monitor_is_recorded_without_a_warning(digits, trainer_kwargs: dict) -> None:
    pruner = IterativePruning(target_sparsity=0.6, step_ratio=0.5, warmup_epochs=1, monitor="val_acc")
    _, messages = fit_user_mlp(pruner, digits, trainer_kwargs)
    assert not [m for m in messages if "monitor=" in m or "before any training step" in m]
    assert all("val_acc_before" in record for record in pruner.pruning_state.history)


def test_first_step_at_global_step_zero_warns_with_the_fix(digits, trainer_kwargs: dict) -> None:
    pruner = IterativePruning(target_sparsity=0.3, step_ratio=0.3, monitor="val_acc")
    _, messages = fit_user_mlp(pruner, digits, trainer_kwargs, max_epochs=1)
    about = [m for m in messages if "before any training step" in m]
    assert len(about) == 1
    assert "warmup_epochs=0" in about[0]
    assert "Set warmup_epochs=N" in about[0]
    assert "load trained weights" in about[0]
    assert pruner.pruning_state.step == 1  # warned, not refused: trained weights may have been passed in memory


@pytest.mark.parametrize(("stop_when_done", "epochs"), [(False, 5), (True, 3)])
def test_training_goes_on_to_max_epochs_unless_told_to_stop(
    stop_when_done: bool, epochs: int, digits, trainer_kwargs: dict
) -> None:
    kwargs = {} if not stop_when_done else {"stop_when_done": True}
    pruner = IterativePruning(target_sparsity=0.6, step_ratio=0.5, warmup_epochs=1, monitor="val_acc", **kwargs)
    trainer, _ = fit_user_mlp(pruner, digits, trainer_kwargs, max_epochs=5)
    assert trainer.current_epoch == epochs
    assert pruner.pruning_state.phase == "done"
    zero = measured_sparsity(trainer.lightning_module, pruner._names)
    assert zero == pytest.approx(0.6, abs=1e-3)  # masks held through the epochs after the schedule


def test_block_pruning_trains_on_by_default_too() -> None:
    assert BlockPruning().stop_when_done is False
    assert IterativePruning(target_sparsity=0.5).stop_when_done is False


def test_gate_refuses_an_untrained_reference_before_the_first_step(digits, trainer_kwargs: dict) -> None:
    """The issue's 14 % collapse: A0 of an untrained net makes every drop small and skips every fine-tune.

    Without the hold (``hold_untrained=False``) such an A0 is refused before any training step."""
    pruner = IterativePruning(target_sparsity=0.8, step_ratio=0.5, finetune_epochs=1)
    trainer = pl.Trainer(max_epochs=6, callbacks=[pruner, AccuracyGate(hold_untrained=False)], **trainer_kwargs)
    with pytest.raises(
        ValueError, match=r"A0 = 0\.\d+, .* is at chance level \(1/10 classes = 0\.100\).*warmup_epochs=N"
    ):
        trainer.fit(cnn_classifier(), datamodule=digits)
    assert trainer.global_step == 0
    assert pruner.pruning_state.step == 0


def test_gate_accepts_a_trained_reference(digits, trainer_kwargs: dict) -> None:
    pruner = IterativePruning(target_sparsity=0.5, step_ratio=0.5, warmup_epochs=1, monitor="val_acc")
    gate = AccuracyGate(val_batches=2)
    trainer = pl.Trainer(max_epochs=2, callbacks=[pruner, gate], **trainer_kwargs)
    trainer.fit(UserMLP(), *loaders(digits))
    assert gate.reference_acc > 0.5
    assert pruner.pruning_state.step == 1


class FrozenMLP(UserMLP):
    """A user's MLP whose rate is zero: it never leaves chance level, however long the gate waits."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_gate_holds_an_untrained_start_then_refuses_at_its_latest_start(digits, trainer_kwargs: dict) -> None:
    pruner = IterativePruning(target_sparsity=0.75, step_ratio=0.5, monitor="val_acc")  # 2 steps, 1 epoch each
    gate = AccuracyGate(val_batches=2)
    trainer = pl.Trainer(max_epochs=8, callbacks=[pruner, gate], **trainer_kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match=r"A0 = 0\.\d+, .* at chance"):
            trainer.fit(FrozenMLP(), *loaders(digits))
    held = [str(w.message) for w in caught if "holding it until validation accuracy levels off" in str(w.message)]
    assert len(held) == 1
    assert "or epoch 3 (halfway to the last from which the schedule fits max_epochs=8)" in held[0]  # (8 - 2) // 2
    assert [m["epoch"] for m in gate.hold.measured] == [0, 1, 2, 3]  # asked at each epoch start until the deadline
    assert trainer.global_step == 3 * len(loaders(digits)[0])  # three epochs trained while held, then refused
    assert pruner.pruning_state.step == 0
