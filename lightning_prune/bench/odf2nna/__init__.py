"""``python -m lightning_prune.bench odf2nna``: ODF2NNA on the bundled tabular sets against four other arms.

Every setting is in ``conf/bench/odf2nna/main.yaml``. Per data set and seed (split and initialisation), the
wide 3x256 ReLU MLP trains until its validation loss has not improved for ``patience`` epochs; that point is
shared as a checkpoint (the wide net's best-validation weights, what ``DenseUnitPruning(restore_best=True)``
rebuilds from) and every arm trains ``retrain_epochs`` more from it:

- ``wide``: the wide net, trained on.
- ``control``: ``DenseUnitPruning(epsilon=0)``: the rebuilt arm's path with every unit kept, so
  ``rebuilt - control`` is what removing units costs and ``control - wide`` what the path itself costs.
- ``rebuilt``: :class:`~lightning_prune.DenseUnitPruning` at the setting ``(epsilon, retrain_lr_scale)`` chosen
  on validation from the grid ``epsilons`` x ``retrain_lr_scales`` (:func:`~.protocol.choose_setting`: the largest
  epsilon whose seed-mean validation loss against the wide net, less ``margin`` standard errors, is within
  ``tolerance``).
- ``faithful``: the paper's procedure, plain transfer (``compensation="none"``) and the layer-max reference
  (``reference_quantile=1.0``), its own grid ``epsilons`` x ``faithful_retrain_lr_scales`` chosen by the same rule.
- ``magnitude``: one-shot global magnitude pruning to the rebuilt arm's parameter count; same shapes.
- ``scratch``: the rebuilt widths, freshly initialised, trained as long as the whole pipeline.

Each arm is tested with the weights of its best validation loss (for the pruned arms the pruned net before
any retraining is a candidate too). ``test_metric`` is accuracy, or R² on diabetes; latency is the median of
timed CPU forwards of the bare net at ``torch.set_num_threads(threads)``. Modules: ``arms`` (one arm),
``protocol`` (the seeds, the grid, the choice), ``summary`` (seeds pooled), ``tables`` (docs/odf2nna.md).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lightning_prune.bench._common import environment, print_table, quiet
from lightning_prune.bench._compose import Record
from lightning_prune.bench.odf2nna.arms import ARMS, DATASETS, HIDDEN
from lightning_prune.bench.odf2nna.protocol import run_dataset
from lightning_prune.bench.odf2nna.summary import summarise
from lightning_prune.bench.odf2nna.tables import TABLES, headline
from lightning_prune.callbacks import DenseUnitPruning

__all__ = ["TABLES", "check_settings", "headline", "run"]


def check_settings(cfg: DictConfig) -> None:
    """Refuse unknown data sets and every grid setting DenseUnitPruning would refuse, before any training.

    Raises:
        ValueError: naming the setting, its value and what is allowed.
    """
    unknown = sorted(set(cfg.datasets) - set(DATASETS))
    if unknown or not cfg.datasets:
        raise ValueError(f"datasets must be a non-empty list of {list(DATASETS)}, got {list(cfg.datasets)}")
    if not isinstance(cfg.margin, (int, float)) or isinstance(cfg.margin, bool) or cfg.margin < 0:
        raise ValueError(f"margin must be a number of standard errors >= 0, got {cfg.margin!r}")
    target = cfg.target_reduction
    if target is not None and (not isinstance(target, (int, float)) or isinstance(target, bool) or not 0 < target < 1):
        raise ValueError(f"target_reduction must be null or a fraction in (0, 1), got {target!r}")
    for scale in cfg.faithful_retrain_lr_scales:
        DenseUnitPruning(retrain_lr_scale=scale, compensation="none")
    for epsilon, scale in itertools.product(cfg.epsilons, cfg.retrain_lr_scales):
        DenseUnitPruning(
            epsilon=epsilon,
            retrain_lr_scale=scale,
            reference_quantile=cfg.reference_quantile,
            compensation=cfg.compensation,
            carry_optimizer_state=not cfg.fresh_optimizer,
            restore_best=cfg.restore_best,
        )


def run(cfg: DictConfig, record: Record) -> None:
    """Every data set in turn (recorded after each), then the final JSON and a console table."""
    check_settings(cfg)
    quiet()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        started, datasets = time.perf_counter(), {}
        for name in cfg.datasets:
            datasets[name] = summarise(run_dataset(name, cfg), cfg.tolerance, cfg.margin)
            record(_result(cfg, datasets, started), complete=name == cfg.datasets[-1])
    finally:
        torch.set_num_threads(threads)
    rows = [
        [name, arm, round(d[arm]["params"]), d[arm]["test_metric"], d[arm]["latency_ms_b1"], d[arm]["latency_ms_b256"]]
        for name, d in datasets.items()
        for arm in ARMS
        if arm in d
    ]
    print_table("ODF2NNA (DenseUnitPruning)", ["dataset", "arm", "params", "test metric", "ms b1", "ms b256"], rows)


def _result(cfg: DictConfig, datasets: dict[str, Any], started: float) -> dict[str, Any]:
    """The JSON's figures (``record`` adds the provenance): the layout the committed results have."""
    settings: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    return {
        "datasets": datasets,
        "protocol": {key: value for key, value in settings.items() if key != "out"},
        "metric": {name: DATASETS[name] for name in datasets},
        "hidden": list(HIDDEN),
        "wall_s": time.perf_counter() - started,
        "environment": {**environment(), "torch_threads": cfg.threads},
    }
