"""Lightning callbacks, one method per module or subpackage, all driving :mod:`lightning_prune.core`."""

from lightning_prune.callbacks.anytime_progressive import AnytimeProgressivePruning
from lightning_prune.callbacks.block_pruning import BlockPruning
from lightning_prune.callbacks.distillation import Distillation
from lightning_prune.callbacks.ice import AccuracyGate, LayerFreezing, PruningAwareLR
from lightning_prune.callbacks.instant_soup import InstantSoupPruning
from lightning_prune.callbacks.iterative import IterativePruning
from lightning_prune.callbacks.latency_benchmark import LatencyBenchmark
from lightning_prune.callbacks.latency_budget import LatencyBudgetPruning
from lightning_prune.callbacks.odf2nna import DenseUnitPruning
from lightning_prune.callbacks.protocol import PruningCallback, PruningListener, PruningState, find_pruner

__all__ = [
    "AccuracyGate",
    "AnytimeProgressivePruning",
    "BlockPruning",
    "DenseUnitPruning",
    "Distillation",
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
