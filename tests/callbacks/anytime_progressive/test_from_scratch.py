"""AnytimeProgressivePruning trained from scratch in a user's Trainer (issue 21): the user's per-step learning rate
schedule is sized on the whole data, and a first SNIP step on an untrained model is warned of before any step."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from lightning_prune import AnytimeProgressivePruning
from lightning_prune.data import DigitsDataModule
from tests.callbacks.anytime_progressive.helpers import fit_app
from tests.helpers import cnn_classifier, warnings_before_first_step

UNTRAINED = "SNIP prunes"


class StepScheduled(pl.Callback):
    """Records what ``configure_optimizers`` would size a per-step schedule on, and the rate at each epoch's end."""

    def __init__(self) -> None:
        self.estimated: list[int] = []
        self.rates: list[float] = []

    def setup(self, trainer: pl.Trainer, pl_module: Any, stage: str) -> None:
        configure = pl_module.configure_optimizers

        def sized() -> Any:  # as a linear warm-up/decay schedule reads it (HF's get_linear_schedule_with_warmup)
            self.estimated.append(int(trainer.estimated_stepping_batches))
            return configure()

        pl_module.configure_optimizers = sized

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_a_per_step_schedule_is_sized_on_the_whole_data_not_the_first_megabatch(trainer_kwargs: dict) -> None:
    """Sized on megabatch 1's loader (1/3 of the data), a rate decaying per step reached 0 a third of the way in."""
    data = DigitsDataModule(batch_size=64)
    data.setup()
    spy = StepScheduled()
    pruner = AnytimeProgressivePruning(num_megabatches=3, epochs_per_megabatch=1, target_sparsity=0.5)
    trainer = pl.Trainer(max_epochs=3, callbacks=[pruner, spy], **trainer_kwargs)
    train = DataLoader(data.train_set, batch_size=64, shuffle=True)
    trainer.fit(cnn_classifier(widths=(8, 8)), train, DataLoader(data.val_set, batch_size=256))
    assert spy.estimated == [3 * math.ceil(len(data.train_set) / 64)]
    samples = [record["train_samples"] for record in pruner.pruning_state.history]
    assert samples[0] < samples[-1] == len(data.train_set)  # while each megabatch still trains on its own share


def test_on_a_megabatch_data_module_too(trainer_kwargs: dict) -> None:
    spy = StepScheduled()
    _, _, trainer, data = fit_app(trainer_kwargs, num=3, epochs=1, extra=(spy,))
    assert spy.estimated == [trainer.max_epochs * math.ceil(sum(data.megabatch_sizes()) / data.batch_size)]


def test_a_from_scratch_run_is_warned_before_any_step_with_the_fix(trainer_kwargs: dict) -> None:
    with warnings_before_first_step() as early:
        fit_app(trainer_kwargs, num=2, epochs=1, target_sparsity=0.5)
    told = [message for message in early if UNTRAINED in message]
    assert len(told) == 1
    assert "SNIP prunes 20% of the selected weights at the first megabatch, before any training step" in told[0]
    assert "after 1 epochs on megabatch 1 of 2 alone" in told[0]
    for fix in ("Train the model first", "epochs_per_megabatch", "num_megabatches=1", "load trained weights"):
        assert fix in told[0]


@pytest.mark.parametrize("start", ["dense first megabatch", "resumed from a checkpoint"])
def test_no_warning_where_nothing_untrained_is_pruned(trainer_kwargs: dict, tmp_path: Path, start: str) -> None:
    """A schedule that starts dense (``target_sparsity=0``), or a resume: the first SNIP step scores no random net."""
    if start == "dense first megabatch":
        with warnings_before_first_step() as early:
            fit_app(trainer_kwargs, num=2, epochs=1, target_sparsity=0.0)
    else:
        every_epoch = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
        fit_app({**trainer_kwargs, "enable_checkpointing": True}, num=2, epochs=1, extra=(every_epoch,))
        with warnings_before_first_step() as early:
            fit_app(trainer_kwargs, num=2, epochs=1, ckpt=str(tmp_path / "epoch=0.ckpt"))
    assert not [message for message in early if UNTRAINED in message]
