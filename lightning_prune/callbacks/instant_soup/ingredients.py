"""How Instant Soup ingredients get their data, optimizer and randomness from a running Trainer.

Ingredients train with plain torch (:func:`lightning_prune.core.instant_soup.look_ahead`), never through
the Trainer: their batches come straight from the training dataset, their optimizer is a fresh copy of
the main one, and their randomness is forked from, and never advances, the global generators.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset, default_collate

from lightning_prune.callbacks._trainer import eval_mode, validation_loader
from lightning_prune.core import model_io
from lightning_prune.core.instant_soup import ParameterTable, clone_state, look_ahead, mean_loss
from lightning_prune.core.masks import MaskSet

LOSSES = {"cross_entropy": F.cross_entropy, "mse": F.mse_loss}


@dataclass(frozen=True)
class DataSource:
    """A map-style dataset, the batch size and the collate function of the Trainer's training loader."""

    dataset: Dataset
    batch_size: int
    collate_fn: Any

    @classmethod
    def from_loader(cls, loader: Any, what: str) -> DataSource:
        """Read the dataset out of a single ``DataLoader``.

        Raises:
            ValueError: naming ``what`` when the loader is missing, a collection of loaders, iterable-style
                or without a fixed ``batch_size``.
        """
        if loader is None:
            raise ValueError(f"InstantSoupPruning needs a {what} DataLoader for its ingredients and found none")
        if not isinstance(loader, DataLoader):
            raise ValueError(
                f"InstantSoupPruning trains its ingredients on the {what} data and needs a single DataLoader "
                f"there, got {type(loader).__name__}"
            )
        if not hasattr(loader.dataset, "__getitem__") or not hasattr(loader.dataset, "__len__"):
            raise ValueError(f"the {what} DataLoader's dataset must be map-style (__getitem__ and __len__)")
        if len(loader.dataset) == 0:
            raise ValueError(f"the {what} DataLoader's dataset is empty")
        if loader.batch_size is None:
            raise ValueError(f"the {what} DataLoader must have a fixed batch_size (no custom batch_sampler)")
        collate = loader.collate_fn if loader.collate_fn is not None else default_collate
        return cls(loader.dataset, loader.batch_size, collate)

    def batch(self, indices: Tensor) -> Any:
        """The batch at ``indices`` (one indexing for tensor datasets, collated samples otherwise)."""
        if isinstance(self.dataset, TensorDataset) and self.collate_fn is default_collate:
            return self.dataset[indices]
        return self.collate_fn([self.dataset[int(i)] for i in indices])

    def random_batches(self, steps: int, generator: torch.Generator, device: torch.device) -> Iterator[Any]:
        """``steps`` batches from seeded permutations of the dataset: a random subset of ``steps`` batches."""
        needed, permutations = steps * self.batch_size, []
        while sum(len(p) for p in permutations) < needed:
            permutations.append(torch.randperm(len(self.dataset), generator=generator))
        order = torch.cat(permutations) if permutations else torch.empty(0, dtype=torch.long)
        for step in range(steps):
            yield model_io.to_device(self.batch(order[step * self.batch_size : (step + 1) * self.batch_size]), device)

    def batches(self, device: torch.device) -> Iterator[Any]:
        """Every sample once, in order (validation)."""
        for start in range(0, len(self.dataset), self.batch_size):
            indices = torch.arange(start, min(start + self.batch_size, len(self.dataset)))
            yield model_io.to_device(self.batch(indices), device)


def train_source(trainer: pl.Trainer) -> DataSource:
    return DataSource.from_loader(trainer.train_dataloader, "training")


def val_source(trainer: pl.Trainer) -> DataSource:
    return DataSource.from_loader(validation_loader(trainer), "validation")


def validation_loss(
    module: pl.LightningModule, source: DataSource, loss_fn: Callable[[Tensor, Tensor], Tensor], weights: dict
) -> float:
    """Mean ``loss_fn`` over every sample of ``source`` with ``weights`` substituted into ``module``, in eval mode."""
    with eval_mode(module):
        return mean_loss(module, weights, source.batches(module.device), loss_fn)


def ingredient_seed(seed: int, round_index: int, ingredient: int) -> int:
    """A well-mixed 63-bit seed per (run seed, round, ingredient), the same on every machine."""
    return int(np.random.SeedSequence([seed, round_index, ingredient]).generate_state(2, np.uint64)[0] >> 1)


@contextmanager
def forked_rng(seed: int, device: torch.device) -> Iterator[torch.Generator]:
    """Seed torch's generators for an ingredient (dropout, ...) and restore them afterwards.

    Yields a separate CPU generator for data sampling. The main run's random stream is the same with
    or without ingredients, which keeps a resumed run identical to an uninterrupted one.
    """
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield torch.Generator().manual_seed(seed)


def ingredient_optimizer(
    main: torch.optim.Optimizer, module: nn.Module, state: ParameterTable, lr_scale: float, weight_decay_scale: float
) -> torch.optim.Optimizer:
    """A fresh optimizer of ``main``'s class and per-group hyper-parameters (current LR) over ``state``.

    As in the official code, ingredients start with empty optimizer state (moments, momentum) at the
    main run's current learning rate; the protocol scales LR and weight decay.

    Raises:
        ValueError: when the optimizer class cannot be rebuilt from its parameter groups.
    """
    name_of = {id(param): name for name, param in module.named_parameters()}
    groups = []
    for group in main.param_groups:
        params = [state[name_of[id(p)]] for p in group["params"] if id(p) in name_of and p.requires_grad]
        hyper = {key: value for key, value in group.items() if key != "params"}
        hyper["lr"] = float(group["lr"]) * lr_scale
        if "weight_decay" in hyper:
            hyper["weight_decay"] = float(group["weight_decay"]) * weight_decay_scale
        if params:
            groups.append({"params": params, **hyper})
    try:
        return type(main)(groups)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"cannot rebuild {type(main).__name__} for the ingredients from its parameter groups ({err})"
        ) from None


def cycled(values: Sequence[float], index: int) -> float:
    """``values[index]``, wrapping around: ingredient ``n`` takes the ``n``-th protocol, cyclically."""
    return float(values[index % len(values)])


@dataclass(frozen=True)
class Kitchen:
    """What every ingredient of one fit is trained with: its data, loss, look-ahead steps, protocols and seed."""

    source: DataSource
    loss: str
    lookahead_steps: int
    lr_multipliers: Sequence[float]
    weight_decay_multipliers: Sequence[float]
    seed: int

    def cook(
        self, module: pl.LightningModule, optimizer: torch.optim.Optimizer, round_index: int, index: int, mask: dict
    ) -> tuple[dict[str, Tensor], int]:
        """Ingredient ``index`` of round ``round_index``: ``module``'s weights under ``mask``, look-ahead trained.

        Returns the trained weights and the optimizer steps taken.

        Raises:
            FloatingPointError: when the ingredient's loss diverges, naming its round and protocol.
        """
        lr_scale, wd_scale = cycled(self.lr_multipliers, index), cycled(self.weight_decay_multipliers, index)
        device = module.device
        with forked_rng(ingredient_seed(self.seed, round_index, index), device) as generator:
            state = clone_state(module)
            ingredient_opt = ingredient_optimizer(optimizer, module, state, lr_scale, wd_scale)
            batches = self.source.random_batches(self.lookahead_steps, generator, device)
            try:
                steps = look_ahead(module, state, batches, LOSSES[self.loss], ingredient_opt, MaskSet(mask).bind(state))
            except FloatingPointError as err:
                raise FloatingPointError(
                    f"ingredient {index} of round {round_index} diverged (lr x{lr_scale}, weight decay x{wd_scale}): "
                    f"{err}; lower lr_multipliers"
                ) from None
        return {name: tensor.detach() for name, tensor in state.items()}, steps
