"""bench instant_soup: Instant Soup Pruning vs IMP with rewinding vs one-shot magnitude pruning, in one run.

``python -m lightning_prune.bench instant_soup [overrides]``; every setting, the arms and the paper's
claims are in ``conf/bench/instant_soup/main.yaml``. Every arm of a seed starts from the same dense
pre-trained model and ends at the same sparsity; ``wall_s`` is an arm's whole fit (mask finding and
final training; the shared pre-training and the test pass are excluded), ``mask_steps`` the optimizer
steps spent before the final mask existed (ISP's ingredient steps included).

``measure.py`` runs the arms (:func:`run`); ``tables.py`` builds the docs tables and the README row.
"""

from lightning_prune.bench.instant_soup.measure import run
from lightning_prune.bench.instant_soup.tables import TABLES, headline

__all__ = ["TABLES", "headline", "run"]
