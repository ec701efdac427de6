"""AnytimeProgressivePruning's fit-start refusals: the Trainer, its data and its callbacks must suit the method."""

from __future__ import annotations

import lightning.pytorch as pl

from lightning_prune.callbacks.protocol import pruning_listeners
from lightning_prune.data.megabatch import MegabatchDataModule


def megabatch_data(trainer: pl.Trainer, num_megabatches: int) -> MegabatchDataModule:
    """The Trainer's data module, which must be a :class:`MegabatchDataModule` of ``num_megabatches`` parts.

    Raises:
        ValueError: for another data module (or none), or another number of megabatches.
    """
    data = trainer.datamodule
    if not isinstance(data, MegabatchDataModule):
        raise ValueError(
            "AnytimeProgressivePruning needs trainer.fit(model, datamodule=MegabatchDataModule(...)) to move "
            f"through megabatches; got datamodule={type(data).__name__}"
        )
    if data.num_megabatches != num_megabatches:
        raise ValueError(
            f"num_megabatches={num_megabatches} differs from the data module's num_megabatches={data.num_megabatches}"
        )
    return data


def check_max_epochs(trainer: pl.Trainer, num_megabatches: int, epochs_per_megabatch: int) -> None:
    """Raise ``ValueError`` when ``max_epochs`` cannot hold every megabatch's epochs (``fast_dev_run`` aside)."""
    needed, max_epochs = num_megabatches * epochs_per_megabatch, trainer.max_epochs
    if not trainer.fast_dev_run and max_epochs is not None and 0 <= max_epochs < needed:
        raise ValueError(
            f"AnytimeProgressivePruning needs Trainer(max_epochs >= {needed}) (num_megabatches="
            f"{num_megabatches} x epochs_per_megabatch={epochs_per_megabatch}), got {max_epochs}"
        )


def refuse_listeners(trainer: pl.Trainer) -> None:
    """APP has no fine-tune phase: an ICE callback beside it would silently do nothing, so refuse it."""
    listeners = [type(cb).__name__ for cb in pruning_listeners(trainer)]
    if listeners:
        raise ValueError(
            f"AnytimeProgressivePruning does not work with Trainer(callbacks=[..., {', '.join(listeners)}]): it trains "
            "every epoch and has no fine-tune for a pruning listener to skip, freeze or set a rate for; remove them, "
            "or use them with a step-wise pruner such as IterativePruning"
        )
