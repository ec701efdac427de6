"""AnytimeProgressivePruning on the user's own data: ``fit(model, train_loader, val_loader)`` or their data module.

The callback splits the training loader's dataset into seeded megabatches itself and serves them with the
loader's batch size and settings; what cannot be split is refused before any step, naming the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, IterableDataset, Subset, default_collate

from lightning_prune import AnytimeProgressivePruning
from lightning_prune.core.schedules import app
from lightning_prune.data import DigitsDataModule
from tests.callbacks.anytime_progressive.helpers import Recorder, zeros
from tests.helpers import cnn_classifier


def digits() -> DigitsDataModule:
    data = DigitsDataModule(batch_size=64)
    data.setup()
    return data


class CountingCollate:
    """The user's collate_fn: counts its calls, so a test can see it is still the one used."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, samples: list) -> Any:
        self.calls += 1
        return default_collate(samples)


def fit_on_loaders(
    trainer_kwargs: dict, train: DataLoader, val: DataLoader, num: int = 3, ckpt: str | None = None, extra: tuple = ()
) -> tuple[AnytimeProgressivePruning, Recorder, pl.Trainer]:
    pl.seed_everything(0, verbose=False)
    pruner = AnytimeProgressivePruning(num_megabatches=num, epochs_per_megabatch=1, target_sparsity=0.6)
    recorder = Recorder(pruner)
    trainer = pl.Trainer(max_epochs=num + 2, callbacks=[pruner, recorder, *extra], **trainer_kwargs)
    trainer.fit(cnn_classifier(widths=(8, 8)), train, val, ckpt_path=ckpt)
    return pruner, recorder, trainer


def test_anytime_progressive_splits_the_users_train_loader(trainer_kwargs: dict) -> None:
    data, collate = digits(), CountingCollate()
    train = DataLoader(data.train_set, batch_size=50, shuffle=True, collate_fn=collate, drop_last=True)
    pruner, recorder, trainer = fit_on_loaders(trainer_kwargs, train, DataLoader(data.val_set, batch_size=100))
    history, total = pruner.pruning_state.history, len(data.train_set)
    assert trainer.current_epoch == 3  # stopped after the last megabatch
    # megabatch t trains on megabatches 1..t (full replay): the user's whole training set at the last
    samples = [record["train_samples"] for record in history]
    assert samples == [sum(pruner._data.megabatch_sizes()[: t + 1]) for t in range(3)]
    assert samples[-1] == total
    assert samples[0] == pytest.approx(total / 3, abs=1)
    # the user's batch size, drop_last and collate_fn: whole batches of 50 only
    assert [recorder.seen[t] for t in range(3)] == [n // 50 * 50 for n in samples]
    assert collate.calls >= sum(n // 50 for n in samples)
    assert [r["sparsity"] for r in history] == pytest.approx(app(0.6, 3), abs=2e-3)
    assert zeros(pruner, trainer.lightning_module) == pytest.approx(0.6, abs=2e-3)
    assert history[-1]["cer_split"] == "val"  # no test set among a user's fit loaders


def test_anytime_progressive_splits_a_users_data_module(trainer_kwargs: dict) -> None:
    pruner = AnytimeProgressivePruning(num_megabatches=2, epochs_per_megabatch=1, target_sparsity=0.5)
    trainer = pl.Trainer(max_epochs=2, callbacks=[pruner], limit_val_batches=2, **trainer_kwargs)
    trainer.fit(cnn_classifier(widths=(8, 8)), datamodule=DigitsDataModule(batch_size=64))
    assert [r["train_samples"] for r in pruner.pruning_state.history] == [629, 1257]
    assert pruner.pruning_state.sparsity == pytest.approx(0.5, abs=2e-3)


class Stream(IterableDataset):
    def __iter__(self) -> Any:
        return iter(digits().train_set)


@pytest.mark.parametrize(
    ("train", "val", "match"),
    [
        (lambda d: DataLoader(Stream(), batch_size=64), True, r"needs a map-style dataset with __len__.*got Stream"),
        (lambda d: DataLoader(Subset(d.train_set, [0, 1]), batch_size=64), True, r"lower .* at most 2"),
        (lambda d: DataLoader(d.train_set, batch_size=64), False, r"needs a validation DataLoader"),
        (lambda d: DataLoader(d.train_set, batch_sampler=[[0, 1]]), True, r"has batch_size=None .*batch_size=\.\.\."),
        (lambda d: [DataLoader(d.train_set, batch_size=64)], True, r"needs one torch DataLoader .*got list"),
    ],
    ids=["iterable dataset", "fewer samples than megabatches", "no validation loader", "batch sampler", "a list"],
)
def test_anytime_progressive_refuses_data_it_cannot_split(
    trainer_kwargs: dict, train: Any, val: bool, match: str
) -> None:
    data = digits()
    pruner = AnytimeProgressivePruning(num_megabatches=3, epochs_per_megabatch=1)
    trainer = pl.Trainer(max_epochs=3, callbacks=[pruner], **trainer_kwargs)
    with pytest.raises(ValueError, match=match):
        trainer.fit(cnn_classifier(widths=(8, 8)), train(data), DataLoader(data.val_set) if val else None)
    assert trainer.global_step == 0


def test_anytime_progressive_on_loaders_resumes_as_uninterrupted(trainer_kwargs: dict, tmp_path: Path) -> None:
    data = digits()
    loaders = DataLoader(data.train_set, batch_size=64, shuffle=True), DataLoader(data.val_set, batch_size=256)
    trainer_kwargs = {**trainer_kwargs, "enable_checkpointing": True, "limit_val_batches": 1}
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    full, full_rec, full_trainer = fit_on_loaders(trainer_kwargs, *loaders, extra=(every_epoch,))
    trainer_kwargs["default_root_dir"] = str(tmp_path / "resumed")
    resumed, rec, trainer = fit_on_loaders(trainer_kwargs, *loaders, ckpt=str(tmp_path / "ckpt" / "epoch=0.ckpt"))
    assert sorted(rec.first) == [1, 2]
    for epoch, labels in rec.first.items():  # same megabatches, same order
        assert torch.equal(labels, full_rec.first[epoch])
    for a, b in zip(full.pruning_state.history, resumed.pruning_state.history, strict=True):
        for key in ("sparsity", "train_acc", "val_acc", "cer", "train_samples"):
            assert a[key] == pytest.approx(b[key]), key
    torch.testing.assert_close(trainer.callback_metrics["val/acc"], full_trainer.callback_metrics["val/acc"])
