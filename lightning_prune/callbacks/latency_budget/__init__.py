"""Latency-aware structured pruning: :class:`LatencyBudgetPruning` (SP-LAMP, latency table, group knapsack).

``callback.py`` holds the callback and its hooks, ``checks.py`` its argument, Trainer and budget checks,
``report.py`` the final check and the summary, ``state.py`` what it checkpoints; the decisions themselves
are pure torch, in :mod:`lightning_prune.core.latency_budget`.
"""

from lightning_prune.callbacks.latency_budget.callback import LatencyBudgetPruning

__all__ = ["LatencyBudgetPruning"]
