"""Lightning callbacks, one method per file, all driving :mod:`lightning_prune.core`."""

from lightning_prune.callbacks._protocol import PruningCallback, PruningListener, PruningState, find_pruner
from lightning_prune.callbacks.iterative import IterativePruning
from lightning_prune.callbacks.progressive import AnytimeProgressivePruning

__all__ = [
    "AnytimeProgressivePruning",
    "IterativePruning",
    "PruningCallback",
    "PruningListener",
    "PruningState",
    "find_pruner",
]
