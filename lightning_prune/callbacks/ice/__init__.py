"""ICE-Pruning (Hu, Henderson, Cano, arXiv 2505.07411): three callbacks that act around a step-wise pruner.

:class:`AccuracyGate` skips fine-tunes after steps that barely hurt accuracy, :class:`LayerFreezing`
freezes the layers that moved least in a probe fine-tune, :class:`PruningAwareLR` sets each fine-tune's
rate from the remaining fraction of the weights. The paper's pruner is
:class:`~lightning_prune.BlockPruning`; any pruner that calls its listeners works. Two-stage tuning:
:mod:`~lightning_prune.callbacks.ice.tuning` (stage 1's space and objective) and
``python -m lightning_prune.callbacks.ice.stage2`` (stage 2).
"""

from lightning_prune.callbacks.ice.freezing import LayerFreezing
from lightning_prune.callbacks.ice.gate import AccuracyGate
from lightning_prune.callbacks.ice.lr import PruningAwareLR

__all__ = ["AccuracyGate", "LayerFreezing", "PruningAwareLR"]
