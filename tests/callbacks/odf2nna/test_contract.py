"""DenseUnitPruning keeps the end-of-run contract: what it reports is the model, or the run says why.

A second fit continues on the rebuilt net; another model, another pruner, a Trainer too short or without
batches are refused at setup; NaN weights after the rebuild or at fit end are never exported; a run cut short
warns; the summary's parameter count is measured on the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_prune import DenseUnitPruning, IterativePruning
from lightning_prune.core.structured import count_parameters
from lightning_prune.data import TabularDataModule
from tests.callbacks.odf2nna.helpers import breast_cancer, mlp_classifier


@pytest.fixture(scope="module")
def cancer() -> TabularDataModule:
    return breast_cancer()


def widths(model) -> list[int]:
    return [model.net.layers[1].out_features, model.net.layers[3].out_features]


def summary_of(trainer_kwargs: dict) -> dict:
    return json.loads((Path(trainer_kwargs["default_root_dir"]) / "summary.json").read_text())["odf2nna"]


class StopAt(pl.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


class PoisonAt(pl.Callback):
    """Sets one weight to NaN at the start of ``epoch`` (before the pruner, when listed first) or at train end."""

    def __init__(self, epoch: int | None) -> None:
        self.epoch = epoch

    def _poison(self, pl_module) -> None:
        with torch.no_grad():
            pl_module.net.layers[1].weight[0, 0] = float("nan")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            self._poison(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.epoch is None:
            self._poison(pl_module)


def test_a_normal_run_reports_the_measured_parameters(cancer, trainer_kwargs) -> None:
    model = mlp_classifier(cancer)
    pruning = DenseUnitPruning(epsilon=0.3, wide_epochs=1, retrain_epochs=1)
    pl.Trainer(max_epochs=3, callbacks=[pruning], **trainer_kwargs).fit(model, datamodule=cancer)
    summary = summary_of(trainer_kwargs)
    assert summary["finished"] is True
    assert "shortfall" not in summary
    assert summary["measured"]["params"] == summary["params"] == count_parameters(model) == pruning.params_after
    assert summary["measured"]["sparsity"] == pytest.approx(pruning.pruning_state.sparsity)
    assert summary["sparsity"] == summary["param_reduction"] == summary["measured"]["sparsity"]


def test_a_second_fit_keeps_the_rebuilt_net_and_trains_on(cancer, trainer_kwargs) -> None:
    model = mlp_classifier(cancer)
    pruning = DenseUnitPruning(epsilon=0.3, wide_epochs=1, retrain_epochs=1)
    pl.Trainer(max_epochs=2, callbacks=[pruning], **trainer_kwargs).fit(model, datamodule=cancer)
    first = (widths(model), pruning.params_after, list(pruning.pruning_state.history))
    assert max(first[0]) < 64

    # Shorter than wide_epochs (a finished schedule needs no more) and longer than retrain_epochs (no stop).
    again = pl.Trainer(max_epochs=3, callbacks=[pruning], **trainer_kwargs)
    again.fit(model, datamodule=cancer)
    assert again.current_epoch == 3  # trained on: a finished schedule does not stop training at once
    assert (widths(model), pruning.params_after, pruning.pruning_state.history) == first  # no second rebuild
    optimized = {id(p) for group in again.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.parameters()}
    summary = summary_of(trainer_kwargs)
    assert summary["finished"] is True
    assert summary["measured"]["params"] == count_parameters(model) == first[1]
    pl.Trainer(max_epochs=1, callbacks=[pruning], **trainer_kwargs).fit(model, datamodule=cancer)
    assert widths(model) == first[0]


def test_a_second_fit_finishes_the_retraining_a_first_one_cut_short(cancer, trainer_kwargs) -> None:
    model = mlp_classifier(cancer)
    pruning = DenseUnitPruning(epsilon=0.3, wide_epochs=1, retrain_epochs=3)
    first = pl.Trainer(max_epochs=5, callbacks=[pruning, StopAt(1)], **trainer_kwargs)
    with pytest.warns(UserWarning, match="DenseUnitPruning ended before its schedule finished: retrain_epochs=3"):
        first.fit(model, datamodule=cancer)
    summary = summary_of(trainer_kwargs)
    assert summary["finished"] is False
    assert "early stopping" in summary["shortfall"]

    again = pl.Trainer(max_epochs=5, callbacks=[pruning], **trainer_kwargs)
    again.fit(model, datamodule=cancer)
    assert again.current_epoch == 2  # one of the three retraining epochs ran in the first fit
    assert pruning.pruning_state.phase == "done"
    assert len(pruning.pruning_state.history) == 1
    assert summary_of(trainer_kwargs)["finished"] is True


def test_a_second_fit_on_another_model_is_refused(cancer, trainer_kwargs) -> None:
    pruning = DenseUnitPruning(epsilon=0.3, wide_epochs=1)
    pl.Trainer(max_epochs=2, callbacks=[pruning], **trainer_kwargs).fit(mlp_classifier(cancer), datamodule=cancer)
    trainer = pl.Trainer(max_epochs=2, callbacks=[pruning], **trainer_kwargs)
    with pytest.raises(ValueError, match="already pruned another model"):
        trainer.fit(mlp_classifier(cancer), datamodule=cancer)
    assert trainer.global_step == 0


def test_another_pruner_in_the_trainer_is_refused(cancer, trainer_kwargs) -> None:
    callbacks = [DenseUnitPruning(wide_epochs=1), IterativePruning(target_sparsity=0.5)]
    trainer = pl.Trainer(max_epochs=3, callbacks=callbacks, **trainer_kwargs)
    with pytest.raises(ValueError, match=r"more than one pruning callback: DenseUnitPruning.*IterativePruning"):
        trainer.fit(mlp_classifier(cancer), datamodule=cancer)


@pytest.mark.parametrize(
    ("poison", "when"),
    [(PoisonAt(1), "after the rebuild at epoch 1"), (PoisonAt(None), "at fit end")],
    ids=["after-rebuild", "fit-end"],
)
def test_nan_weights_are_refused_and_not_exported(cancer, trainer_kwargs, poison, when) -> None:
    pruning = DenseUnitPruning(epsilon=0.3, wide_epochs=1, retrain_epochs=1, restore_best=False, compensation="mean")
    trainer = pl.Trainer(max_epochs=2, callbacks=[poison, pruning], **trainer_kwargs)
    with pytest.raises(FloatingPointError, match=rf"not finite {when} \(net\.layers\.1\.weight"):
        trainer.fit(mlp_classifier(cancer), datamodule=cancer)
    assert not (Path(trainer_kwargs["default_root_dir"]) / "pruned_model.pt").exists()


@pytest.mark.parametrize(
    ("limits", "match"),
    [
        ({"max_steps": 10}, r"needs 3 training epochs \(wide_epochs=2 \+ retrain_epochs=1\).*max_steps=10"),
        ({"max_epochs": 5, "limit_train_batches": 0}, "yields no batches"),
    ],
    ids=["max_steps", "no-batches"],
)
def test_a_trainer_that_cannot_run_the_schedule_is_refused_at_setup(cancer, trainer_kwargs, limits, match) -> None:
    trainer = pl.Trainer(callbacks=[DenseUnitPruning(wide_epochs=2, retrain_epochs=1)], **limits, **trainer_kwargs)
    with pytest.raises(ValueError, match=match):
        trainer.fit(mlp_classifier(cancer), datamodule=cancer)
    assert trainer.global_step == 0


def test_an_empty_training_set_is_refused_at_setup(cancer, trainer_kwargs) -> None:
    empty = torch.utils.data.TensorDataset(torch.zeros(0, *cancer.input_shape), torch.zeros(0, dtype=torch.long))
    train = torch.utils.data.DataLoader(empty, batch_size=8)
    val = torch.utils.data.DataLoader(cancer.val_set, batch_size=64)
    trainer = pl.Trainer(max_epochs=3, callbacks=[DenseUnitPruning(wide_epochs=1)], **trainer_kwargs)
    with pytest.raises(ValueError, match="yields no batches"):
        trainer.fit(mlp_classifier(cancer), train_dataloaders=train, val_dataloaders=val)


def test_the_plateau_rule_needs_patience_plus_one_epochs_before_the_rebuild(cancer, trainer_kwargs) -> None:
    pruning = DenseUnitPruning(wide_epochs=None, patience=2, retrain_epochs=2)
    trainer = pl.Trainer(max_epochs=4, callbacks=[pruning], **trainer_kwargs)
    with pytest.raises(ValueError, match=r"needs 5 training epochs \(a plateau of patience=2: 3 validations"):
        trainer.fit(mlp_classifier(cancer), datamodule=cancer)


def test_an_export_dir_that_cannot_be_a_directory_is_refused_at_construction(tmp_path) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=r"export_dir=.* is an existing file, not a directory"):
        DenseUnitPruning(export_dir=str(a_file))
    with pytest.raises(ValueError, match=r"export_dir=.* lies below .*, which is a file"):
        DenseUnitPruning(export_dir=str(a_file / "out"))
    assert DenseUnitPruning(export_dir="~/odf2nna").export_dir == str(Path.home() / "odf2nna")


def test_a_fit_from_a_checkpoint_after_a_fit(cancer, trainer_kwargs, tmp_path) -> None:
    """The same instance, a new Trainer resuming a checkpoint of the first fit: its state comes from the checkpoint."""
    model = mlp_classifier(cancer)
    pruning = DenseUnitPruning(epsilon=0.3, wide_epochs=1, retrain_epochs=2)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    kwargs = {**trainer_kwargs, "enable_checkpointing": True}
    pl.Trainer(max_epochs=3, callbacks=[pruning, checkpoints], **kwargs).fit(model, datamodule=cancer)
    rebuilt = widths(model)
    again = pl.Trainer(max_epochs=4, callbacks=[pruning], **trainer_kwargs)
    again.fit(model, datamodule=cancer, ckpt_path=str(tmp_path / "ckpt" / "epoch=1.ckpt"))
    assert widths(model) == rebuilt
    assert again.current_epoch == 3  # epoch 2 was the last of retrain_epochs=2: stopped there, as the first fit did
    assert len(pruning.pruning_state.history) == 1
    assert summary_of(trainer_kwargs)["finished"] is True
