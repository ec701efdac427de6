"""Anytime Progressive Pruning (Misra et al., arXiv 2204.01640): prune as megabatches of data arrive.

``callback.py`` holds :class:`AnytimeProgressivePruning`; ``checks.py`` its fit-start refusals;
``metrics.py`` the errors counted after each megabatch and the anytime metrics built from them.
"""

from lightning_prune.callbacks.anytime_progressive.callback import AnytimeProgressivePruning

__all__ = ["AnytimeProgressivePruning"]
