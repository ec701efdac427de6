"""Instant Soup Pruning (Jaiswal et al., ICML 2023): the callback and the helpers only it uses.

``callback.py`` holds :class:`InstantSoupPruning`; ``rounds.py`` decides one round (denoised pruning or a
model soup) and applies it; ``ingredients.py`` trains the ingredients (data, optimizer, seeds) in plain torch;
``checks.py`` validates arguments and the Trainer (its step budget); ``report.py`` builds the logged metrics
and the summary, verified against the weights.
The framework-free pieces (mask superposition, look-ahead training, weight mixing) are
:mod:`lightning_prune.core.instant_soup`.
"""

from lightning_prune.callbacks.instant_soup.callback import InstantSoupPruning

__all__ = ["InstantSoupPruning"]
