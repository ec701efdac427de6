"""Lightning callbacks, one method per file, all driving :mod:`lightning_prune.core`."""

from lightning_prune.callbacks.dense_rebuild import DenseUnitPruning
from lightning_prune.callbacks.ice_freezing import LayerFreezing
from lightning_prune.callbacks.ice_gate import AccuracyGate
from lightning_prune.callbacks.ice_lr import PruningAwareLR
from lightning_prune.callbacks.instant_soup import InstantSoupPruning
from lightning_prune.callbacks.iterative import IterativePruning
from lightning_prune.callbacks.latency_benchmark import LatencyBenchmark
from lightning_prune.callbacks.latency_budget import LatencyBudgetPruning
from lightning_prune.callbacks.progressive import AnytimeProgressivePruning
from lightning_prune.callbacks.protocol import PruningCallback, PruningListener, PruningState, find_pruner

__all__ = [
    "AccuracyGate",
    "AnytimeProgressivePruning",
    "DenseUnitPruning",
    "InstantSoupPruning",
    "IterativePruning",
    "LatencyBenchmark",
    "LatencyBudgetPruning",
    "LayerFreezing",
    "PruningAwareLR",
    "PruningCallback",
    "PruningListener",
    "PruningState",
    "find_pruner",
]
