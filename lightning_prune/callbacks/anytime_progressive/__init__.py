"""Anytime Progressive Pruning (Misra et al., arXiv 2204.01640): prune as megabatches of data arrive.

``callback.py`` holds :class:`AnytimeProgressivePruning`; ``checks.py`` its fit-start refusals (the
Trainer's budget per megabatch included); ``continuation.py`` how a later ``fit`` carries the schedule on;
``metrics.py`` the errors counted after each megabatch and the anytime metrics built from them;
``report.py`` what it logs and exports, verified against the weights; ``snip.py`` its pruning step.
"""

from lightning_prune.callbacks.anytime_progressive.callback import AnytimeProgressivePruning

__all__ = ["AnytimeProgressivePruning"]
