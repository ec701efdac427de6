"""The three ICE callbacks together around BlockPruning: a resumed run decides as the uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_prune import AccuracyGate, LayerFreezing, PruningAwareLR
from tests.callbacks.ice.helpers import WARMUP, block_pruner
from tests.helpers import resnet_classifier


class StopAfter(pl.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def ice_run(digits, trainer_kwargs: dict, root: Path, extra: list, ckpt_path: str | None = None):
    pl.seed_everything(0)
    gate = AccuracyGate(threshold=25.0, val_batches=2, finetune_last=True)  # as the recipe sets it
    parts = [gate, LayerFreezing(fraction=0.5), PruningAwareLR(base_lr=0.02)]
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
    torch.testing.assert_close(resumed.callback_metrics["val/acc"], full.callback_metrics["val/acc"])
    for (name, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
