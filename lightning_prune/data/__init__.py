"""LightningDataModules over real data that needs no download: sklearn's bundled sets, MNIST IDX, .npz."""

from lightning_prune.data.arrays import ArrayDataModule, EpochSeededSampler, NpzDataModule
from lightning_prune.data.megabatch import MegabatchDataModule
from lightning_prune.data.mnist import MNISTDataModule, read_idx
from lightning_prune.data.sklearn import DigitsDataModule, TabularDataModule

__all__ = [
    "ArrayDataModule",
    "DigitsDataModule",
    "EpochSeededSampler",
    "MNISTDataModule",
    "MegabatchDataModule",
    "NpzDataModule",
    "TabularDataModule",
    "read_idx",
]
