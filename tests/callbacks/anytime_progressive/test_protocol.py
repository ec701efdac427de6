"""The paper's per-megabatch protocol: a held-out split per megabatch, its best epoch reloaded, the rate restarted."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import Subset

from lightning_prune import AnytimeProgressivePruning
from lightning_prune.callbacks.anytime_progressive.metrics import count_errors
from lightning_prune.models import Classifier, SmallCNN
from tests.callbacks.anytime_progressive.helpers import megabatches


def test_holdout_splits_every_megabatch_apart_from_its_training_samples() -> None:
    data = megabatches(3)
    data.setup()
    whole = [part.clone() for part in data.megabatches]
    data.set_holdout(0.2)
    for part, kept, held in zip(whole, data.megabatches, data.holdouts):
        assert len(held) == round(0.2 * len(part))
        assert not set(kept.tolist()) & set(held.tolist())
        assert sorted(kept.tolist() + held.tolist()) == sorted(part.tolist())
    assert set(data.train_indices(2).tolist()).isdisjoint(data.holdout_indices(2).tolist())
    assert len(data.holdout_indices(2, "full")) == sum(len(h) for h in data.holdouts)
    assert torch.equal(data.holdout_indices(2, "none"), data.holdouts[2])
    again = megabatches(3)
    again.setup()
    again.set_holdout(0.2)
    assert all(torch.equal(a, b) for a, b in zip(again.holdouts, data.holdouts))  # seeded: the same split


def test_holdout_leaving_nothing_to_train_is_refused() -> None:
    data = megabatches(3)
    data.setup()
    with pytest.raises(ValueError, match="holdout_fraction must be in"):
        data.set_holdout(1.0)


def test_restore_best_needs_a_holdout() -> None:
    with pytest.raises(ValueError, match=r"restore_best=True .* needs holdout_fraction > 0"):
        AnytimeProgressivePruning(restore_best=True)


class HoldoutSpy(Callback):
    """Held-out accuracy after every epoch, measured before APP acts on it (it runs first in the list)."""

    def __init__(self, pruner: AnytimeProgressivePruning) -> None:
        self.pruner, self.accuracy, self.lrs = pruner, {}, {}

    def on_train_batch_start(self, trainer: pl.Trainer, module: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:  # after every callback's epoch start (APP's restart included)
            self.lrs[trainer.current_epoch] = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_epoch_end(self, trainer: pl.Trainer, module: Any) -> None:
        if self.pruner.holdout_fraction:
            self.accuracy[trainer.current_epoch] = holdout_accuracy(self.pruner, module)


def holdout_accuracy(pruner: AnytimeProgressivePruning, module: Any) -> float:
    data = pruner._data
    held = Subset(data.train_set, data.holdout_indices(pruner.pruning_state.step - 1).tolist())
    wrong, total = count_errors(module, data.loader(held, 256), 1.0, lambda batch: batch)
    return 1.0 - wrong / total


def fit(trainer_kwargs: dict, epochs: int, **app: Any) -> tuple[AnytimeProgressivePruning, HoldoutSpy, pl.Trainer]:
    pl.seed_everything(0, verbose=False)
    pruner = AnytimeProgressivePruning(num_megabatches=2, epochs_per_megabatch=epochs, **app)
    spy = HoldoutSpy(pruner)
    model = Classifier(SmallCNN((1, 8, 8), 10, widths=(8, 8)), 10, (1, 8, 8), lr=0.1, scheduler="cosine")
    trainer = pl.Trainer(max_epochs=2 * epochs, callbacks=[spy, pruner], **trainer_kwargs)
    trainer.fit(model, datamodule=megabatches(2))
    return pruner, spy, trainer


def test_each_megabatch_ends_on_its_best_held_out_epoch(trainer_kwargs: dict) -> None:
    pruner, spy, trainer = fit(trainer_kwargs, epochs=3, holdout_fraction=0.2, restore_best=True)
    last = pruner.pruning_state.history[-1]
    epochs = range(last["epoch"], last["epoch"] + 3)
    best = max(epochs, key=lambda epoch: (spy.accuracy[epoch], -epoch))
    assert last["best_epoch"] == best
    assert last["holdout_acc"] == pytest.approx(spy.accuracy[best])
    assert holdout_accuracy(pruner, trainer.lightning_module) == pytest.approx(spy.accuracy[best])


def test_restart_lr_starts_every_megabatch_at_the_initial_rate(trainer_kwargs: dict) -> None:
    _, restarted, _ = fit(trainer_kwargs, epochs=2, restart_lr=True)
    _, plain, _ = fit(trainer_kwargs, epochs=2)
    assert restarted.lrs[2] == pytest.approx(0.1)  # megabatch 2's first epoch: back at the start
    assert restarted.lrs[3] == pytest.approx(plain.lrs[1])  # and its schedule runs again from epoch 0
    assert plain.lrs[2] < 0.1  # without it the cosine keeps decaying
