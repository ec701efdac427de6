"""What the InstantSoupPruning tests share: fast settings and a seeded fit on digits."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from torch import nn

from lightning_prune import InstantSoupPruning
from tests.helpers import cnn_classifier

FAST = {"num_ingredients": 2, "lookahead_steps": 3, "calibration_steps": 3, "export_dir": None}


def fit_soup(digits, trainer_kwargs, max_epochs=2, callbacks=(), ckpt_path=None, **kwargs: Any):
    """A fresh model and soup (``FAST`` unless overridden), fitted; returns the soup, the model and the Trainer."""
    pl.seed_everything(0, verbose=False)
    model = cnn_classifier(widths=(8, 8, 16, 16))
    soup = InstantSoupPruning(**{**FAST, **kwargs})
    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=[soup, *callbacks], **trainer_kwargs)
    trainer.fit(model, datamodule=digits, ckpt_path=ckpt_path)
    return soup, model, trainer


def zeros(soup: InstantSoupPruning, model: nn.Module) -> float:
    """Measured sparsity: the fraction of the selected weights that are exactly zero."""
    weights = [model.get_parameter(name) for name in soup._names]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
