"""In-memory array data with fixed seeded splits and a data order that survives resuming.

Every module here keeps its data as tensors (the sets are small) and shuffles with a sampler seeded
by ``(seed, epoch)``: a run resumed from a checkpoint sees the same batches as an uninterrupted one,
which is what makes "resume equals uninterrupted" testable exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import DataLoader, Sampler, Subset, TensorDataset


class EpochSeededSampler(Sampler[int]):
    """A permutation drawn from ``seed + epoch``; Lightning calls ``set_epoch`` before every epoch."""

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


class ArrayDataModule(pl.LightningDataModule):
    """Train/val/test splits of ``(x, y)`` arrays, stratified and seeded.

    Subclasses implement :meth:`load_arrays` returning ``(x, y)`` or ``(x, y, x_test, y_test)`` when the
    data comes with its own test split. ``train_fraction`` keeps a seeded, stratified part of the
    training split (cheap search stages, smoke runs); validation and test are never reduced.

    Args:
        val_fraction: share of the data (of the training data when a test split is given) held out.
        test_fraction: share held out for testing when the data has no test split.
        train_fraction: share of the training split actually used, in (0, 1].
        batch_size: batch size of every loader.
        seed: seed of the splits and of the per-epoch shuffling.
        num_workers: DataLoader workers (0 is fastest for in-memory tensors).
        classes: keep only these class labels, renumbered ``0..len(classes)-1`` in the order given (a
            transfer task: pre-train on some classes, prune while fine-tuning on the others); ``None``: all.
    """

    def __init__(
        self,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        train_fraction: float = 1.0,
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
        classes: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        for name, value in [("val_fraction", val_fraction), ("test_fraction", test_fraction)]:
            if not 0 < value < 1:
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        if not 0 < train_fraction <= 1:
            raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.val_fraction, self.test_fraction, self.train_fraction = val_fraction, test_fraction, train_fraction
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.classes = _checked_classes(classes)
        self.train_set = self.val_set = self.test_set = None
        self.input_shape: tuple[int, ...] = ()
        self.num_classes = 0

    def load_arrays(self) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def transform(self, x_train: np.ndarray, x_other: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Hook for preprocessing fitted on the training split only (e.g. standardisation)."""
        return x_train, list(x_other)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        arrays = self.load_arrays()
        if self.classes is not None:
            arrays = _only_classes(arrays, self.classes)
        x, y = arrays[0], arrays[1]
        if len(arrays) == 4:
            x_train, y_train, x_test, y_test = arrays
            x_train, x_val, y_train, y_val = self._split(x_train, y_train, self.val_fraction)
        else:
            x_rest, x_test, y_rest, y_test = self._split(x, y, self.test_fraction)
            x_train, x_val, y_train, y_val = self._split(x_rest, y_rest, self.val_fraction / (1 - self.test_fraction))
        if self.train_fraction < 1:
            x_train, _, y_train, _ = self._split(x_train, y_train, 1 - self.train_fraction)
        x_train, (x_val, x_test) = self.transform(x_train, [x_val, x_test])
        self.train_set, self.val_set, self.test_set = (
            _tensor_dataset(a, b) for a, b in [(x_train, y_train), (x_val, y_val), (x_test, y_test)]
        )
        self.input_shape = tuple(x_train.shape[1:])
        self.num_classes = int(max(y_train.max(), y_val.max(), y_test.max())) + 1 if _is_labels(y) else 1

    def _split(self, x: np.ndarray, y: np.ndarray, fraction: float) -> list[np.ndarray]:
        stratify = y if _is_labels(y) else None
        return train_test_split(x, y, test_size=fraction, random_state=self.seed, stratify=stratify)

    def train_dataloader(self) -> DataLoader:
        distributed = self.trainer is not None and self.trainer.world_size > 1
        # Under DDP Lightning swaps in a DistributedSampler, itself seeded by (seed, epoch).
        sampler = None if distributed else EpochSeededSampler(len(self.train_set), self.seed)
        return self._loader(self.train_set, sampler=sampler, shuffle=distributed)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    def _loader(self, dataset: TensorDataset | Subset, **kwargs: object) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers, **kwargs)


class NpzDataModule(ArrayDataModule):
    """Arrays from a ``.npz`` file the user points to (``x``/``y``, plus ``x_test``/``y_test`` if present).

    Raises:
        FileNotFoundError: naming the path, when it does not exist.
        KeyError: naming the missing array and the arrays the file has.
    """

    def __init__(self, path: str, x_key: str = "x", y_key: str = "y", **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.path, self.x_key, self.y_key = os.path.expanduser(os.fspath(path)), x_key, y_key

    def load_arrays(self) -> tuple[np.ndarray, ...]:
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"NpzDataModule: path {self.path!r} does not exist")
        with np.load(self.path) as data:
            for key in (self.x_key, self.y_key):
                if key not in data:
                    raise KeyError(f"NpzDataModule: {self.path!r} has no array {key!r}; it has {sorted(data.files)}")
            if f"{self.x_key}_test" in data and f"{self.y_key}_test" in data:
                return tuple(data[k] for k in (self.x_key, self.y_key, f"{self.x_key}_test", f"{self.y_key}_test"))
            return data[self.x_key], data[self.y_key]


def _checked_classes(classes: Sequence[int] | None) -> list[int] | None:
    if classes is None:
        return None
    listed = list(classes)
    if not listed or len(set(listed)) != len(listed) or not all(isinstance(c, int) and c >= 0 for c in listed):
        raise ValueError(f"classes must be None or distinct integer labels >= 0, got {classes!r}")
    return listed


def _only_classes(arrays: tuple[np.ndarray, ...], classes: list[int]) -> tuple[np.ndarray, ...]:
    """Each ``(x, y)`` pair of ``arrays`` restricted to ``classes``, labels renumbered by their position."""
    renumber = {label: index for index, label in enumerate(classes)}
    kept: list[np.ndarray] = []
    for x, y in zip(arrays[::2], arrays[1::2]):
        if not _is_labels(y):
            raise ValueError(f"classes={classes} needs integer labels; the data's are {y.dtype}")
        missing = sorted(set(classes) - set(np.unique(y).tolist()))
        if missing:
            raise ValueError(f"classes={classes}: labels {missing} do not occur in the data")
        keep = np.isin(y, classes)
        kept += [x[keep], np.vectorize(renumber.__getitem__, otypes=[np.int64])(y[keep])]
    return tuple(kept)


def _is_labels(y: np.ndarray) -> bool:
    return np.issubdtype(y.dtype, np.integer)


def _tensor_dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    targets: Tensor = torch.as_tensor(y, dtype=torch.long if _is_labels(y) else torch.float32)
    return TensorDataset(torch.as_tensor(x, dtype=torch.float32), targets)
