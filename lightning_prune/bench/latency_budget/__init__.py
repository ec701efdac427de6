"""``python -m lightning_prune.bench latency_budget``: LatencyBudgetPruning vs a uniform cut of equal latency.

Every setting, the arms and the paper's claim are in ``conf/bench/latency_budget/main.yaml``;
``compare.py`` measures, ``tables.py`` turns the committed JSON into docs/latency_budget.md's tables.
"""

from lightning_prune.bench.latency_budget.compare import run
from lightning_prune.bench.latency_budget.tables import TABLES, headline

__all__ = ["TABLES", "headline", "run"]
