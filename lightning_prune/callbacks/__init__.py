"""Lightning callbacks, one method per file, all driving :mod:`lightning_prune.core`."""

from lightning_prune.callbacks._protocol import PruningCallback, PruningListener, PruningState, find_pruner
from lightning_prune.callbacks.dense_rebuild import DenseUnitPruning
from lightning_prune.callbacks.iterative import IterativePruning

__all__ = ["DenseUnitPruning", "IterativePruning", "PruningCallback", "PruningListener", "PruningState", "find_pruner"]
