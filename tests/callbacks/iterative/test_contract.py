"""Issue 17 on IterativePruning: a run ends as its summary says, or it fails or warns naming why.

Each case was reproduced on digits with a small MLP/CNN before the fix: a second fit left the weights 4 %
zero while the summary said 60 %, a NaN model was exported as pruned, max_steps and empty loaders ended
short silently, two pruners clashed, a bad export_dir failed after training and "0.5" raised a bare TypeError.
"""

from __future__ import annotations

import json
import pickle

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from lightning_prune import IterativePruning
from lightning_prune.callbacks._contract import measured_sparsity
from lightning_prune.models import MLP, Classifier
from tests.callbacks.iterative.helpers import StopAt
from tests.helpers import cnn_classifier


def mlp() -> Classifier:
    return Classifier(MLP((1, 8, 8), 10, hidden=(32, 32)), 10, (1, 8, 8))


def pruner(**kwargs: object) -> IterativePruning:
    return IterativePruning(**{"target_sparsity": 0.6, "step_ratio": 0.5, "finetune_epochs": 1, **kwargs})


def measured(pruning: IterativePruning, model: pl.LightningModule) -> float:
    return measured_sparsity(model, list(pruning.state_dict()["masks"]))


def summary(root) -> dict:
    return json.loads((root / "summary.json").read_text())["iterative"]


# ---------------------------------------------------------------- a second fit


def test_second_fit_keeps_the_masks(digits, trainer_kwargs, tmp_path):
    pruning, model = pruner(), mlp()
    pl.Trainer(max_epochs=2, callbacks=[pruning], limit_train_batches=4, **trainer_kwargs).fit(model, datamodule=digits)
    first = measured(pruning, model)
    assert first == pytest.approx(0.6, abs=1e-3)
    pl.Trainer(callbacks=[pruning], limit_val_batches=2, **trainer_kwargs).validate(model, datamodule=digits)
    trainer = pl.Trainer(max_epochs=3, callbacks=[pruning], limit_train_batches=4, **trainer_kwargs)
    trainer.fit(model, datamodule=digits)
    assert trainer.current_epoch == 3  # a finished schedule trains on; it does not stop at once
    assert measured(pruning, model) >= first
    assert pruning.pruning_state.step == 2
    assert summary(tmp_path)["sparsity"] == pytest.approx(measured(pruning, model))
    assert summary(tmp_path)["finished"] is True


def test_second_fit_continues_an_unfinished_schedule(digits, trainer_kwargs):
    pruning, model = pruner(target_sparsity=0.8, finetune_epochs=2), mlp()
    first = pl.Trainer(max_epochs=10, callbacks=[pruning, StopAt(2)], limit_train_batches=2, **trainer_kwargs)
    with pytest.warns(UserWarning, match="IterativePruning ended before its schedule finished"):
        first.fit(model, datamodule=digits)
    assert pruning.pruning_state.step == 2  # steps at epochs 0 and 2; stopped in the second fine-tune
    second = pl.Trainer(max_epochs=10, callbacks=[pruning], limit_train_batches=2, **trainer_kwargs)
    second.fit(model, datamodule=digits)
    history = pruning.pruning_state.history
    assert [r["sparsity"] for r in history] == pytest.approx([0.5, 0.75, 0.8], abs=1e-3)
    assert [r["epoch"] for r in history][2] == 1  # the second fine-tune's last epoch ran in the second fit
    assert measured(pruning, model) == pytest.approx(0.8, abs=1e-3)


def test_second_fit_on_another_model_is_refused(digits, trainer_kwargs):
    pruning = pruner()
    pl.Trainer(max_epochs=2, callbacks=[pruning], limit_train_batches=2, **trainer_kwargs).fit(mlp(), datamodule=digits)
    trainer = pl.Trainer(max_epochs=2, callbacks=[pruning], limit_train_batches=2, **trainer_kwargs)
    with pytest.raises(ValueError, match="already pruned another model"):
        trainer.fit(mlp(), datamodule=digits)


def test_a_used_pruner_still_pickles(digits, trainer_kwargs):  # ddp_spawn pickles the Trainer and its callbacks
    pruning = pruner()
    pl.Trainer(max_epochs=2, callbacks=[pruning], limit_train_batches=2, **trainer_kwargs).fit(mlp(), datamodule=digits)
    copy = pickle.loads(pickle.dumps(pruning))
    torch.testing.assert_close(copy.state_dict()["masks"], pruning.state_dict()["masks"])


def test_fit_from_a_checkpoint_after_a_fit(digits, trainer_kwargs, tmp_path):
    pruning, model = pruner(), mlp()
    kwargs = {**trainer_kwargs, "enable_checkpointing": True}
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    pl.Trainer(max_epochs=2, callbacks=[pruning, checkpoint], limit_train_batches=2, **kwargs).fit(
        model, datamodule=digits
    )
    trainer = pl.Trainer(max_epochs=3, callbacks=[pruning], limit_train_batches=2, **trainer_kwargs)
    trainer.fit(model, datamodule=digits, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert trainer.current_epoch == 3
    assert measured(pruning, model) == pytest.approx(0.6, abs=1e-3)


# ---------------------------------------------------------------- non-finite weights


class PoisonAfterPruning(pl.Callback):
    """The loss diverges after the last step: every weight of the first layer becomes NaN."""

    def __init__(self, pruning: IterativePruning) -> None:
        self.pruning = pruning

    def on_train_batch_end(self, trainer, pl_module, *args):
        if self.pruning.pruning_state.step == self.pruning.pruning_state.num_steps:
            with torch.no_grad():
                pl_module.net.layers[1].weight.fill_(float("nan"))


@pytest.mark.parametrize("on_nonfinite", ["raise", "skip"])
def test_nan_after_the_last_step_is_not_exported(on_nonfinite, digits, trainer_kwargs, tmp_path):
    pruning = pruner(on_nonfinite=on_nonfinite)
    trainer = pl.Trainer(
        max_epochs=2, callbacks=[pruning, PoisonAfterPruning(pruning)], limit_train_batches=2, **trainer_kwargs
    )
    with pytest.raises(FloatingPointError, match=r"not finite at fit end \(net\.layers\.1\.weight"):
        trainer.fit(mlp(), datamodule=digits)
    assert not (tmp_path / "pruned_model.pt").exists()


class PoisonAtEpochStart(pl.Callback):
    """Placed before the pruner: NaN weights appear between the check of the scores and the step."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            with torch.no_grad():
                pl_module.net.layers[3].bias.fill_(float("nan"))


def test_nan_outside_the_selection_stops_at_the_step(digits, trainer_kwargs):
    pruning = pruner()
    callbacks = [PoisonAtEpochStart(), pruning]
    trainer = pl.Trainer(max_epochs=2, callbacks=callbacks, limit_train_batches=2, **trainer_kwargs)
    with pytest.raises(FloatingPointError, match=r"not finite after step 2 \(net\.layers\.3\.bias\)"):
        trainer.fit(mlp(), datamodule=digits)


# ---------------------------------------------------------------- the Trainer's budget


@pytest.mark.parametrize(
    ("trainer_args", "message"),
    [
        ({"max_epochs": -1, "max_steps": 6}, r"optimizer steps.*max_steps=6"),
        ({"max_epochs": 10, "limit_train_batches": 0}, "yields no batches"),
    ],
    ids=["max_steps too short", "limit_train_batches=0"],
)
def test_a_trainer_that_cannot_run_the_schedule_is_refused(trainer_args, message, digits, trainer_kwargs, tmp_path):
    pruning = IterativePruning(target_sparsity=0.8, step_ratio=0.3, finetune_epochs=1)
    trainer = pl.Trainer(callbacks=[pruning], **{**trainer_kwargs, "limit_train_batches": 2, **trainer_args})
    with pytest.raises(ValueError, match=message):
        trainer.fit(mlp(), datamodule=digits)
    assert trainer.global_step == 0
    assert pruning.pruning_state.step == 0


def test_an_empty_training_loader_is_refused(digits, trainer_kwargs, tmp_path):
    empty = DataLoader(TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)), batch_size=8)
    trainer = pl.Trainer(max_epochs=5, callbacks=[pruner()], **trainer_kwargs)
    with pytest.raises(ValueError, match="yields no batches"):
        trainer.fit(mlp(), train_dataloaders=empty, val_dataloaders=digits.val_dataloader())
    assert not (tmp_path / "pruned_model.pt").exists()


def test_a_schedule_cut_short_warns_and_says_so(digits, trainer_kwargs, tmp_path):
    pruning, model = pruner(target_sparsity=0.8), mlp()
    trainer = pl.Trainer(max_epochs=10, callbacks=[pruning, StopAt(1)], limit_train_batches=2, **trainer_kwargs)
    with pytest.warns(UserWarning, match=r"IterativePruning ended before its schedule finished.*target_sparsity"):
        trainer.fit(model, datamodule=digits)
    section = summary(tmp_path)
    assert section["finished"] is False
    assert "early stopping" in section["shortfall"]
    assert section["sparsity"] == pytest.approx(measured(pruning, model)) == pytest.approx(0.75, abs=1e-3)


def test_a_normal_run_reports_what_the_weights_are(digits, trainer_kwargs, tmp_path):
    pruning, model = pruner(), cnn_classifier()
    pl.Trainer(max_epochs=2, callbacks=[pruning], limit_train_batches=2, **trainer_kwargs).fit(model, datamodule=digits)
    section = summary(tmp_path)
    assert section["finished"] is True
    assert "shortfall" not in section
    assert section["sparsity"] == section["measured"]["sparsity"] == pytest.approx(measured(pruning, model))
    assert section["target_sparsity"] == 0.6


# ---------------------------------------------------------------- composition and arguments


def test_two_pruners_in_one_trainer_are_refused(digits, trainer_kwargs):
    first = pruner(include_names="layers.1")
    second = pruner(include_names="layers.3", target_sparsity=0.8)
    trainer = pl.Trainer(max_epochs=5, callbacks=[first, second], **trainer_kwargs)
    with pytest.raises(ValueError, match=r"more than one pruning callback: IterativePruning.*IterativePruning"):
        trainer.fit(mlp(), datamodule=digits)
    assert trainer.global_step == 0


def test_export_dir_expands_the_home_directory():  # a bad one is refused: test_iterative_bad_arguments
    assert "~" not in pruner(export_dir="~/lp-out").export_dir
