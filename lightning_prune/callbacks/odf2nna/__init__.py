"""ODF2NNA in a Trainer: :class:`DenseUnitPruning` and its helpers.

- ``callback.py``: :class:`DenseUnitPruning`, the hooks and what it exports.
- ``trigger.py``: when the rebuild happens (``wide_epochs``, a ``patience`` plateau) and from which weights
  (``restore_best``).
- ``scoring.py``: the units' moments over the training data, merged across ranks.
- ``carry.py``: the optimizer and schedulers carried over the physical shrink, and the retraining rate.

The framework-free engine (graph, scores, replacement, rebuild) is :mod:`lightning_prune.core.odf2nna`.
"""

from lightning_prune.callbacks.odf2nna.callback import DenseUnitPruning

__all__ = ["DenseUnitPruning"]
