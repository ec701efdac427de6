"""The hidden units' moments over the training data: every rank scores its shard, the moments are merged."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import lightning.pytorch as pl
import torch

from lightning_prune.callbacks._trainer import batch_input
from lightning_prune.core.odf2nna import HiddenLayer, UnitMoments, collect_unit_moments


def training_moments(
    trainer: pl.Trainer, pl_module: pl.LightningModule, layers: Sequence[HiddenLayer], covariance: bool
) -> dict[str, UnitMoments]:
    """One pass over the training loader (as far as ``limit_train_batches`` goes), merged across ranks.

    ``covariance`` keeps each layer's ``units x units`` comoments (what a least-squares replacement needs).
    """
    limit = trainer.num_training_batches  # respects limit_train_batches; inf for the whole loader
    with torch.random.fork_rng(devices=[]):  # iterating a loader draws a seed; leave training's RNG alone
        batches = itertools.islice(trainer.train_dataloader, None if math.isinf(limit) else int(limit))
        requester = "DenseUnitPruning (scoring units on the training data)"
        inputs = (batch_input(pl_module, batch, requester) for batch in batches)
        moments = collect_unit_moments(pl_module, layers, inputs, covariance)
    if trainer.world_size == 1:
        return moments
    merged = {}
    for name, local in moments.items():
        gathered = pl_module.all_gather(local.to_tensor())
        comoments = [None] * len(gathered) if local.comoment is None else pl_module.all_gather(local.comoment)
        parts = [UnitMoments.from_tensor(part, comoment) for part, comoment in zip(gathered, comoments)]
        merged[name] = parts[0]
        for part in parts[1:]:
            merged[name] = merged[name].merge(part)
    return merged
