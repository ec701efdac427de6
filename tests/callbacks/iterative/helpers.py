"""What the step-wise pruners' tests share: stopping a fit early, and a fit that writes checkpoints."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_prune import IterativePruning


class StopAt(pl.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def fit_with_checkpoints(
    digits, trainer_kwargs, tmp_path, make_model, pruning_kwargs, stop_at=None, ckpt_path=None, pruner=IterativePruning
):
    # Same initial weights for the full and the interrupted run; a resumed run gets them from the checkpoint,
    # so it is seeded differently to show it does not depend on the global RNG.
    pl.seed_everything(0 if ckpt_path is None else 123, verbose=False)
    pruning = pruner(**pruning_kwargs)
    callbacks = [pruning, ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)]
    if stop_at is not None:
        callbacks.append(StopAt(stop_at))
    kwargs = {**trainer_kwargs, "enable_checkpointing": True, "default_root_dir": str(tmp_path)}
    trainer = pl.Trainer(max_epochs=12, callbacks=callbacks, limit_train_batches=6, **kwargs)
    model = make_model()
    trainer.fit(model, datamodule=digits, ckpt_path=ckpt_path)
    return pruning, model, trainer
