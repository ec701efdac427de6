"""What the ICE tests share: the paper's block pruner around the callbacks, and a short fit on digits."""

from __future__ import annotations

import math

import lightning.pytorch as pl

from lightning_prune import BlockPruning
from tests.helpers import resnet_classifier

WARMUP = 2


def block_pruner(**kwargs: object) -> BlockPruning:
    """ICE's pruner: 60 % of each block's inner filters per step, after ``WARMUP`` dense epochs; stops when done."""
    kwargs.setdefault("export_dir", None)
    kwargs.setdefault("stop_when_done", True)  # as the ICE recipe sets it
    return BlockPruning(step_ratio=0.6, warmup_epochs=WARMUP, **kwargs)


def fit(callbacks: list, digits, trainer_kwargs: dict, model=None, max_epochs: int = WARMUP + 4, **extra) -> pl.Trainer:
    model = model if model is not None else resnet_classifier(widths=(8, 16))
    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=callbacks, **{**trainer_kwargs, **extra})
    trainer.fit(model, datamodule=digits)
    return trainer


def trained_resnet(digits, trainer_kwargs: dict, epochs: int = 2):
    """A ResNet trained dense first: the gate refuses an A0 at chance level, as a few limited batches would leave it."""
    model = resnet_classifier(widths=(8, 16))
    pl.Trainer(max_epochs=epochs, **trainer_kwargs).fit(model, datamodule=digits)
    return model


def batches_per_epoch(digits) -> int:
    return math.ceil(len(digits.train_set) / digits.batch_size)
