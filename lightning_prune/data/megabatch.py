"""Megabatches: a training set that arrives in M parts over time, with replay of the parts already seen.

Anytime Progressive Pruning (Misra et al., arXiv 2204.01640) trains on megabatch 1, then 1-2, ... (full
replay), or on the newest one only, or on the newest one plus a small buffer of each earlier one.
:class:`MegabatchDataModule` holds the split and serves, per megabatch, the training data a replay mode
asks for; :class:`~lightning_prune.AnytimeProgressivePruning` moves it along with :meth:`set_megabatch`.
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, SequentialSampler, Subset

from lightning_prune.data.arrays import EpochSeededSampler

REPLAY_MODES = ("full", "partial", "none")
HOLDOUT_KEY = 2  # keeps the holdout draw's random stream apart from the replay buffers' and SNIP's
# What a split of your own loader keeps of it (its batch size too); its sampler gives way to the megabatch's.
LOADER_SETTINGS = (
    "num_workers", "collate_fn", "pin_memory", "timeout", "worker_init_fn", "multiprocessing_context",
    "prefetch_factor", "persistent_workers", "pin_memory_device", "in_order",
)  # fmt: skip


def check_replay(replay: str, replay_fraction: float) -> None:
    """Refuse an unknown replay mode or a partial-replay fraction outside (0, 1)."""
    if not isinstance(replay, str) or replay not in REPLAY_MODES:
        raise ValueError(f"replay must be one of {list(REPLAY_MODES)}, got {replay!r}")
    if (
        isinstance(replay_fraction, bool)
        or not isinstance(replay_fraction, (int, float))
        or not 0 < replay_fraction < 1
    ):
        raise ValueError(
            f"replay_fraction must be in (0, 1) (share of each earlier megabatch kept), got {replay_fraction!r}"
        )


def seeded_sample(indices: Tensor, count: int, *key: int) -> Tensor:
    """``count`` of ``indices`` (order kept), drawn with a generator seeded by ``key``: same key, same sample."""
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))
    chosen = torch.randperm(len(indices), generator=generator)[: min(count, len(indices))]
    return indices[chosen.sort().values]


class MegabatchDataModule(pl.LightningDataModule):
    """A training set split into ``num_megabatches`` seeded parts, served one megabatch (plus replay) at a time.

    The training set comes from a wrapped LightningDataModule (any whose ``train_dataloader()`` wraps a
    map-style dataset: :class:`~lightning_prune.data.DigitsDataModule`, ``MNISTDataModule``, your own) or
    from ``train_set``; validation and test sets are served whole. Alone, the module serves megabatch 0;
    :meth:`set_megabatch` (called by the APP callback at each megabatch's first epoch) selects another.

    Args:
        datamodule: the data module to take train/val/test sets from; or give the sets directly.
        train_set: a map-style dataset of ``(x, y)`` pairs (with ``val_set``, instead of ``datamodule``).
        val_set: validation set (required with ``train_set``).
        test_set: optional test set.
        num_megabatches: number of parts M, at least 1 and at most the number of training samples.
        shuffle: split a seeded permutation (i.i.d. megabatches) or, if ``False``, the dataset order (a
            stream in the order it arrived, as the paper's code does).
        batch_size: batch size of every loader; ``None`` takes the wrapped module's (64 without one).
        seed: seed of the split, of the replay buffers and of the per-epoch shuffling.
        num_workers: DataLoader workers.
        num_classes: number of classes when the sets are given directly (the wrapped module's otherwise).

    Raises:
        ValueError: for a bad argument, or at ``setup`` when there are more megabatches than samples.

    Example::

        >>> from lightning_prune.data import DigitsDataModule
        >>> dm = MegabatchDataModule(DigitsDataModule(), num_megabatches=4)
        >>> dm.setup()
        >>> dm.megabatch_sizes()
        [315, 314, 314, 314]
        >>> dm.set_megabatch(2, replay="partial", replay_fraction=0.1)
        >>> len(dm.current_train_set())  # megabatch 2 + 10 % of megabatches 0 and 1
        377
    """

    def __init__(
        self,
        datamodule: pl.LightningDataModule | None = None,
        train_set: Dataset | None = None,
        val_set: Dataset | None = None,
        test_set: Dataset | None = None,
        num_megabatches: int = 8,
        shuffle: bool = True,
        batch_size: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if (datamodule is None) == (train_set is None):
            raise ValueError("give either datamodule=<a LightningDataModule> or train_set=<dataset> (with val_set)")
        if train_set is not None and val_set is None:
            raise ValueError("train_set needs val_set: the anytime record compares train and validation accuracy")
        if isinstance(num_megabatches, bool) or not isinstance(num_megabatches, int) or num_megabatches < 1:
            raise ValueError(f"num_megabatches must be an integer >= 1, got {num_megabatches!r}")
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(
                f"batch_size must be >= 1, got {batch_size!r} (an integer, or None for the wrapped module's)"
            )
        self.datamodule, self.num_megabatches, self.shuffle = datamodule, num_megabatches, shuffle
        self.train_set, self.val_set, self.test_set = train_set, val_set, test_set
        self.batch_size = batch_size if batch_size is not None else getattr(datamodule, "batch_size", 64)
        self.seed, self.num_workers, self.num_classes = seed, num_workers, num_classes
        self.megabatches: list[Tensor] = []  # each megabatch's training samples (its holdout taken out)
        self.holdouts: list[Tensor] = []  # each megabatch's held-out samples (the paper's 90/10 split)
        self.holdout_fraction = 0.0
        self.input_shape: tuple[int, ...] = ()
        self.megabatch, self.replay, self.replay_fraction = 0, "full", 0.1
        # Set by from_loaders: the user's DataLoader settings, drop_last and whether an epoch is shuffled.
        self.loader_settings: dict[str, object] = {}
        self.drop_last, self.shuffle_epochs = False, True

    @classmethod
    def from_loaders(
        cls, train_loader: object, val_loader: object, num_megabatches: int, seed: int = 0, requester: str = "APP"
    ) -> MegabatchDataModule:
        """Megabatches of your own training loader's dataset, served with its batch size and settings.

        ``train_loader``'s ``collate_fn``, workers, ``pin_memory``, ``drop_last`` (and the rest of
        ``LOADER_SETTINGS``) are kept; its sampler gives way to the megabatch subset's: seeded shuffling
        each epoch, or in order when ``train_loader`` read its data in order. Validation reads
        ``val_loader``'s dataset. Set up at once.

        Raises:
            ValueError: for anything but a DataLoader over a map-style dataset with ``__len__`` and a
                ``batch_size``, no validation loader, or fewer samples than ``num_megabatches``;
                the message names ``requester`` and the fix.
        """
        own = "or pass trainer.fit(model, datamodule=MegabatchDataModule(train_set=..., val_set=...))"
        if not isinstance(train_loader, DataLoader):
            raise ValueError(
                f"{requester} splits your training data into megabatches and needs one torch DataLoader as the "
                f"training data of fit; got {type(train_loader).__name__}; pass one, {own}"
            )
        dataset = train_loader.dataset
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            raise ValueError(
                f"{requester} splits your training dataset into num_megabatches={num_megabatches} parts by index, so "
                f"it needs a map-style dataset with __len__ and __getitem__; got {type(dataset).__name__}. Wrap your "
                f"samples in a map-style Dataset, {own}"
            )
        if train_loader.batch_size is None:
            raise ValueError(
                f"{requester} rebuilds the training loader for each megabatch's subset and needs its batch size; "
                "your training DataLoader has batch_size=None (a custom batch_sampler). Pass DataLoader(dataset, "
                f"batch_size=...), {own}"
            )
        if not isinstance(val_loader, DataLoader):
            raise ValueError(
                f"{requester} records validation accuracy after each megabatch and needs a validation DataLoader: "
                f"trainer.fit(model, train_loader, val_loader); got {type(val_loader).__name__}"
            )
        if len(dataset) < num_megabatches:
            raise ValueError(
                f"num_megabatches={num_megabatches} exceeds the {len(dataset)} samples of your training dataset; "
                f"lower {requester}(num_megabatches=...) to at most {len(dataset)}, so that every megabatch holds one"
            )
        data = cls(train_set=dataset, val_set=val_loader.dataset, num_megabatches=num_megabatches, seed=seed)
        data.batch_size, data.drop_last = train_loader.batch_size, train_loader.drop_last
        data.num_workers = train_loader.num_workers
        data.loader_settings = {k: getattr(train_loader, k) for k in LOADER_SETTINGS if hasattr(train_loader, k)}
        data.shuffle_epochs = not isinstance(train_loader.sampler, SequentialSampler)
        data.setup()
        return data

    def prepare_data(self) -> None:
        if self.datamodule is not None:
            self.datamodule.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.megabatches:
            return
        if self.datamodule is not None:
            self._take_sets(self.datamodule)
        total = len(self.train_set)
        if self.num_megabatches > total:
            raise ValueError(
                f"num_megabatches={self.num_megabatches} exceeds the {total} training samples; it must be at most "
                "the number of training samples, so that every megabatch holds at least one"
            )
        order = torch.randperm(total, generator=torch.Generator().manual_seed(self.seed)) if self.shuffle else None
        order = order if order is not None else torch.arange(total)
        self._parts = list(torch.tensor_split(order, self.num_megabatches))
        self.set_holdout(self.holdout_fraction)
        sample = self.train_set[0]
        # (x, y) samples have an input shape; dict samples (Hugging Face) have none to give.
        is_pair = isinstance(sample, (tuple, list)) and sample and isinstance(sample[0], torch.Tensor)
        self.input_shape = tuple(sample[0].shape) if is_pair else ()

    def _take_sets(self, datamodule: pl.LightningDataModule) -> None:
        datamodule.setup("fit")
        self.train_set = datamodule.train_dataloader().dataset
        self.val_set = datamodule.val_dataloader().dataset
        if _has_test(datamodule):
            datamodule.setup("test")
            self.test_set = datamodule.test_dataloader().dataset
        if self.num_classes is None:
            self.num_classes = getattr(datamodule, "num_classes", None)

    # ---------------------------------------------------------------- which samples

    def set_holdout(self, fraction: float) -> None:
        """Hold out a seeded ``fraction`` of every megabatch (none for 0) for picking its best weights.

        The paper splits each megabatch 90/10 into train and validation; training then reads only the train
        part, and the held-out part of the megabatches being trained on ranks the epochs' weights.

        Raises:
            ValueError: for a fraction outside [0, 1), or one leaving a megabatch without training samples.
        """
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise ValueError(f"holdout_fraction must be in [0, 1) (share of each megabatch held out), got {fraction!r}")
        self.holdout_fraction = fraction
        if not getattr(self, "_parts", None):
            return  # set up later: setup() splits with this fraction
        self.megabatches, self.holdouts = [], []
        for index, part in enumerate(self._parts):
            held = seeded_sample(part, round(fraction * len(part)), self.seed, HOLDOUT_KEY, index)
            kept = part[~torch.isin(part, held)]
            if len(kept) == 0:
                raise ValueError(
                    f"holdout_fraction={fraction} leaves megabatch {index + 1} ({len(part)} samples) nothing to train "
                    "on; lower it or use fewer, larger megabatches"
                )
            self.megabatches.append(kept)
            self.holdouts.append(held)

    def holdout_indices(self, megabatch: int, replay: str = "full") -> Tensor:
        """Held-out indices of the megabatches trained on at ``megabatch``: 0..t with full replay, else t."""
        self._check_megabatch(megabatch)
        parts = self.holdouts[: megabatch + 1] if replay == "full" else self.holdouts[megabatch : megabatch + 1]
        return torch.cat(parts)

    def megabatch_sizes(self) -> list[int]:
        return [len(part) for part in self.megabatches]

    def train_indices(self, megabatch: int, replay: str = "full", replay_fraction: float = 0.1) -> Tensor:
        """Training-set indices for ``megabatch`` under ``replay``.

        ``"full"``: megabatches 0..t; ``"none"``: t only; ``"partial"``: t plus a fixed, seeded buffer of
        ``replay_fraction`` of each earlier megabatch (the same buffer at every later megabatch).
        """
        self._check_megabatch(megabatch)
        check_replay(replay, replay_fraction)
        parts = self.megabatches
        if replay == "full":
            earlier = parts[:megabatch]
        elif replay == "none":
            earlier = []
        else:
            earlier = [
                seeded_sample(p, max(1, round(replay_fraction * len(p))), self.seed, j)
                for j, p in enumerate(parts[:megabatch])
            ]
        return torch.cat([*earlier, parts[megabatch]])

    def set_megabatch(self, megabatch: int, replay: str = "full", replay_fraction: float = 0.1) -> None:
        """Serve ``megabatch`` (with ``replay``) from the next ``train_dataloader()`` call on."""
        self.train_indices(megabatch, replay, replay_fraction)  # validates
        self.megabatch, self.replay, self.replay_fraction = megabatch, replay, replay_fraction

    def current_train_set(self) -> Subset:
        return Subset(self.train_set, self.train_indices(self.megabatch, self.replay, self.replay_fraction).tolist())

    def _check_megabatch(self, megabatch: int) -> None:
        if not self.megabatches:
            raise RuntimeError("MegabatchDataModule.setup() has not run yet")
        if not 0 <= megabatch < self.num_megabatches:
            raise ValueError(f"megabatch must be in [0, {self.num_megabatches - 1}], got {megabatch}")

    # ---------------------------------------------------------------- loaders

    def train_dataloader(self) -> DataLoader:
        dataset, trainer = self.current_train_set(), self.trainer
        epoch = trainer.current_epoch if trainer is not None else 0
        if trainer is not None and trainer.world_size > 1:
            sampler = DistributedSampler(dataset, trainer.world_size, trainer.global_rank, shuffle=True, seed=self.seed)
        elif self.shuffle_epochs:
            sampler = EpochSeededSampler(len(dataset), self.seed)
        else:
            return self.loader(dataset, drop_last=self.drop_last)
        # Set here: when the loader is rebuilt at an epoch's start, Lightning's own set_epoch has already run.
        sampler.set_epoch(epoch)
        return self.loader(dataset, sampler=sampler, drop_last=self.drop_last)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise ValueError("MegabatchDataModule has no test set (give test_set= or a datamodule with a test split)")
        return self.loader(self.test_set)

    def loader(self, dataset: Dataset, batch_size: int | None = None, **kwargs: object) -> DataLoader:
        """A loader with this module's workers, settings and batch size (unless given); in order unless a sampler."""
        settings = {"num_workers": self.num_workers, **self.loader_settings, **kwargs}
        return DataLoader(dataset, batch_size=batch_size or self.batch_size, **settings)


def _has_test(datamodule: pl.LightningDataModule) -> bool:
    return type(datamodule).test_dataloader is not pl.LightningDataModule.test_dataloader
