"""scikit-learn's bundled data sets (they ship with the package: no download, ever)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn import datasets
from sklearn.preprocessing import StandardScaler

from lightning_prune.data.arrays import ArrayDataModule

TABLES = {
    "breast_cancer": datasets.load_breast_cancer,
    "wine": datasets.load_wine,
    "iris": datasets.load_iris,
    "digits": datasets.load_digits,
    "diabetes": datasets.load_diabetes,
}


class DigitsDataModule(ArrayDataModule):
    """The 1,797 8x8 handwritten digits as ``1x8x8`` images scaled to [0, 1] (10 classes).

    Example::

        >>> dm = DigitsDataModule(batch_size=32)
        >>> dm.setup()
        >>> dm.input_shape, dm.num_classes, len(dm.train_set), len(dm.val_set), len(dm.test_set)
        ((1, 8, 8), 10, 1257, 270, 270)
    """

    def load_arrays(self) -> tuple[np.ndarray, ...]:
        bunch = datasets.load_digits()
        return (bunch.images[:, None] / 16.0).astype(np.float32), bunch.target.astype(np.int64)


class TabularDataModule(ArrayDataModule):
    """A bundled table as flat feature vectors, standardised with statistics of the training split only.

    Args:
        name: one of ``breast_cancer``, ``wine``, ``iris``, ``digits`` (flat), ``diabetes`` (regression).
        **kwargs: split and loader arguments of :class:`ArrayDataModule`.
    """

    def __init__(self, name: str = "breast_cancer", **kwargs: object) -> None:
        if name not in TABLES:
            raise ValueError(f"name must be one of {sorted(TABLES)}, got {name!r}")
        super().__init__(**kwargs)
        self.name = name

    def load_arrays(self) -> tuple[np.ndarray, ...]:
        bunch = TABLES[self.name]()
        y = bunch.target.astype(np.float32 if self.name == "diabetes" else np.int64)
        return bunch.data.astype(np.float32), y

    def transform(self, x_train: np.ndarray, x_other: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        scaler = StandardScaler().fit(x_train)
        return scaler.transform(x_train).astype(np.float32), [scaler.transform(x).astype(np.float32) for x in x_other]
