"""The three ICE callbacks together around BlockPruning: a resumed run decides as the uninterrupted one, and a
second ``fit`` with the same instances goes on where the first stopped."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_prune import AccuracyGate, LayerFreezing, PruningAwareLR
from tests.callbacks.ice.helpers import WARMUP, block_pruner, trained_resnet
from tests.helpers import resnet_classifier


class StopAfter(pl.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def ice_run(digits, trainer_kwargs: dict, root: Path, extra: list, ckpt_path: str | None = None):
    pl.seed_everything(0)
    gate = AccuracyGate(threshold=25.0, val_batches=2, finetune_last=True, require_settled=False)  # as the recipe
    parts = [gate, LayerFreezing(fraction=0.5, max_move=None), PruningAwareLR(base_lr=0.02)]
    pruner = block_pruner()
    checkpoint = ModelCheckpoint(dirpath=root, save_last=True, save_top_k=0, every_n_epochs=1)
    kwargs = {**trainer_kwargs, "enable_checkpointing": True, "default_root_dir": str(root)}
    trainer = pl.Trainer(max_epochs=WARMUP + 4, callbacks=[pruner, *parts, checkpoint, *extra], **kwargs)
    model = resnet_classifier(widths=(8, 16))
    trainer.fit(model, datamodule=digits, ckpt_path=ckpt_path)
    return trainer, pruner, parts, model


@pytest.mark.parametrize("stop_epoch", [WARMUP, WARMUP + 1])
def test_ice_resume_gives_the_same_decisions(stop_epoch: int, digits, trainer_kwargs: dict, tmp_path: Path) -> None:
    full, pruner, parts, model = ice_run(digits, trainer_kwargs, tmp_path / "full", [])
    decisions = [r["finetune"] for r in pruner.pruning_state.history]
    assert "skipped" in decisions
    assert decisions[-1] == "ran"
    ice_run(digits, trainer_kwargs, tmp_path / "cut", [StopAfter(stop_epoch)])
    resumed, pruner2, parts2, model2 = ice_run(
        digits, trainer_kwargs, tmp_path / "cut", [], ckpt_path=str(tmp_path / "cut" / "last.ckpt")
    )
    keys = ("finetune", "block", "drop_pt", "acc_after", "lr", "frozen_layers", "sparsity")
    strip = lambda history: [{k: r.get(k) for k in keys} for r in history]  # noqa: E731
    assert strip(pruner2.pruning_state.history) == strip(pruner.pruning_state.history)
    assert parts2[1].frozen == parts[1].frozen
    # Stopped where the uninterrupted run stopped, even when the cut came after the schedule was done (no epoch
    # left to run, so no metric logged: the weights below say the models are the same).
    assert resumed.current_epoch == full.current_epoch
    for (name, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


class FirstBatchProbe(pl.Callback):
    """Per epoch, at the first batch: how many parameters are frozen and the learning rate in use."""

    def __init__(self) -> None:
        self.frozen: dict[int, int] = {}
        self.lr: dict[int, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.frozen[trainer.current_epoch] = sum(not p.requires_grad for p in pl_module.parameters())
            self.lr[trainer.current_epoch] = trainer.optimizers[0].param_groups[0]["lr"]


def test_ice_second_fit_goes_on_inside_a_fine_tune(digits, trainer_kwargs: dict, tmp_path: Path) -> None:
    gate = AccuracyGate(threshold=0.0, val_batches=2, finetune_last=True)  # every step fine-tunes
    freezing, lr = LayerFreezing(fraction=0.5, max_move=None), PruningAwareLR(base_lr=0.02)
    pruner, model = block_pruner(finetune_epochs=2), trained_resnet(digits, trainer_kwargs)

    def fit(extra: list) -> FirstBatchProbe:
        probe = FirstBatchProbe()
        callbacks = [pruner, gate, freezing, lr, probe, *extra]
        trainer = pl.Trainer(max_epochs=WARMUP + 8, callbacks=callbacks, limit_train_batches=3, **trainer_kwargs)
        trainer.fit(model, datamodule=digits)
        return probe

    with pytest.warns(UserWarning, match="BlockPruning ended before its schedule finished"):
        first = fit([StopAfter(WARMUP + 2)])  # in the second fine-tune, the first one with frozen layers
    assert first.frozen[WARMUP + 2] > 0
    reference, frozen, finetune_lr = gate.reference_acc, list(freezing.frozen), first.lr[WARMUP + 2]
    second = fit([])
    assert second.frozen[0] == first.frozen[WARMUP + 2]  # that fine-tune goes on with its layers frozen
    assert second.lr[0] == finetune_lr  # and at its pruning-aware rate
    assert gate.reference_acc == reference  # A0 stays the unpruned model's
    assert freezing.frozen == frozen
    history = pruner.pruning_state.history
    assert [r["epoch"] for r in history] == [WARMUP, WARMUP + 2, 1, 3]  # steps 3 and 4 in the second fit's epochs
    assert [r["lr"] for r in history] == [h["lr"] for h in lr.history]
    section = json.loads((tmp_path / "summary.json").read_text())["block_pruning"]
    assert section["finished"] is True
    assert section["sparsity"] == pytest.approx(pruner.pruning_state.sparsity)


def test_ice_second_fit_after_a_finished_run_trains_on(digits, trainer_kwargs: dict, tmp_path: Path) -> None:
    gate, freezing, lr = (
        AccuracyGate(threshold=25.0, val_batches=2),
        LayerFreezing(fraction=0.5, max_move=None),
        PruningAwareLR(),
    )
    pruner, model = block_pruner(), trained_resnet(digits, trainer_kwargs)
    callbacks = [pruner, gate, freezing, lr]
    pl.Trainer(max_epochs=WARMUP + 4, callbacks=callbacks, limit_train_batches=3, **trainer_kwargs).fit(
        model, datamodule=digits
    )
    decisions, sparsity = list(gate.decisions), pruner.pruning_state.sparsity
    probe = FirstBatchProbe()
    trainer = pl.Trainer(max_epochs=2, callbacks=[*callbacks, probe], limit_train_batches=3, **trainer_kwargs)
    trainer.fit(model, datamodule=digits)
    assert trainer.current_epoch == 2  # no step, no stop
    assert gate.decisions == decisions
    assert probe.frozen == {0: 0, 1: 0}
    assert probe.lr[0] == model.hparams.lr  # the user's schedule: no fine-tune to set a rate for
    assert pruner.pruning_state.sparsity == sparsity
    section = json.loads((tmp_path / "summary.json").read_text())["block_pruning"]
    assert section["measured"]["sparsity"] == pytest.approx(sparsity)
