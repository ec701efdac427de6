"""lightning-prune: PyTorch Lightning callbacks that make neural-network pruning cheap, composable and measurable.

Add a callback to your own ``Trainer``::

    from lightning_prune import IterativePruning
    trainer = Trainer(callbacks=[IterativePruning(target_sparsity=0.8, step_ratio=0.3)])

or run a ready recipe: ``python -m lightning_prune.run recipe=iterative``.
"""

from lightning_prune.callbacks import (
    AccuracyGate,
    AnytimeProgressivePruning,
    BlockPruning,
    DenseUnitPruning,
    Distillation,
    InstantSoupPruning,
    IterativePruning,
    LatencyBenchmark,
    LatencyBudgetPruning,
    LayerFreezing,
    PruningAwareLR,
    PruningCallback,
    PruningListener,
    PruningState,
)
from lightning_prune.callbacks._trainer import resize_on_load
from lightning_prune.core import deploy as deploy
from lightning_prune.core.export import load_model, load_pruned

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
    "load_model",
    "load_pruned",
    "resize_on_load",
]
__version__ = "0.1.0"
