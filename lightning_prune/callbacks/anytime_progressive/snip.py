"""AnytimeProgressivePruning's pruning step: SNIP scores of the *current* weights on a seeded data subset."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import lightning.pytorch as pl
from torch import Tensor, nn
from torch.utils.data import Subset

from lightning_prune.core.masks import masks_from_scores
from lightning_prune.core.scores import loss_gradients, snip
from lightning_prune.data.megabatch import MegabatchDataModule, seeded_sample

SNIP_KEY = 1  # keeps the SNIP subset's random stream apart from the replay buffers'


def snip_subset(
    data: MegabatchDataModule, megabatch: int, snip_fraction: float, replay: str, replay_fraction: float
) -> Subset:
    """``snip_fraction`` of one megabatch's size, drawn from megabatch ``megabatch``'s training data.

    The draw is seeded by the data's seed and the megabatch, so every run (and every resume) scores on
    the same samples.
    """
    indices = data.train_indices(megabatch, replay, replay_fraction)
    count = max(1, round(snip_fraction * data.megabatch_sizes()[megabatch]))
    return Subset(data.train_set, seeded_sample(indices, count, data.seed, SNIP_KEY, megabatch).tolist())


def snip_masks(
    module: nn.Module,
    names: Sequence[str],
    batches: Iterable[tuple[Tensor, Tensor]],
    current: dict[str, Tensor],
    sparsity: float,
    scope: str,
) -> dict[str, Tensor]:
    """Masks at exactly ``sparsity``, nested in ``current``: the survivors of lowest |gradient x weight| pruned."""
    grads = loss_gradients(module, names, batches)
    weights = {name: module.get_parameter(name) for name in names}
    return masks_from_scores(snip(weights, grads), sparsity, current, scope)


def snip_plan(cb: Any, trainer: pl.Trainer, pl_module: nn.Module, megabatch: int, sparsity: float) -> dict[str, Tensor]:
    """APP ``cb``'s masks at ``sparsity`` for ``megabatch``: SNIP on its seeded subset, on the module's device."""
    subset = snip_subset(cb._data, megabatch, cb.snip_fraction, cb.replay, cb.replay_fraction)
    batches = (trainer.strategy.batch_to_device(batch) for batch in cb._data.loader(subset))
    return snip_masks(pl_module, cb._names, batches, cb._masks.masks, sparsity, cb.scope)
