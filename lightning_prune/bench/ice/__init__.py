"""ICE-Pruning against traditional iterative pruning: ``python -m lightning_prune.bench ice`` (``conf/bench/ice/``).

One process, one pre-trained dense model (trained once, not counted in any arm), one data set and
seed, the same block-wise structured pruning (``step_ratio`` of every block's inner filters, so the
final sparsity is the same in every arm):

- ``baseline``: traditional iterative pruning, a 1-epoch fine-tune after every block, nothing frozen,
  the module's fixed learning rate;
- ``ice``: stage-1 search on ``search_fraction`` of the training data (2 %, the paper's proportion):
  first the traditional pipeline on that subset (its final accuracy is the reference of the accuracy
  bound), then Optuna trials over :data:`~lightning_prune.callbacks.ice.tuning.STAGE1_SPACE`, each a
  whole ICE run on the subset, one per gate threshold (enqueued: the threshold sets the cost, so a few
  trials must span it; the other parameters are random), scored by
  :func:`~lightning_prune.callbacks.ice.tuning.bounded_time_objective` (at most ``max_drop_pt`` below
  the reference, fastest wins); then the run with the best point and all three parts, the gate
  fine-tuning after the last step (``finetune_last``); its ``wall_s`` includes the whole search, as in
  the paper;
- ``ablations``: each part named in ``ablations`` alone, with stage 1's values for that part (no search).

The JSON is written once baseline and ICE are measured and again after each ablation; its provenance
says ``complete: true`` only in the last write, so a run stopped during the ablations keeps its main
comparison. MNIST (``data_dir``, default ``../shared/data/mnist`` when present), else digits; the JSON
says which, and records the workload.

With ``depths`` set (``axis=depth``), the comparison runs instead at each depth of the same ResNet family, no
ablations, and the JSON's ``depths`` lists speed-up and accuracy delta per depth (:mod:`.depth`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lightning_prune.bench._common import print_table, quiet
from lightning_prune.bench._compose import Record
from lightning_prune.bench.ice import arms, depth
from lightning_prune.bench.ice.compare import compare, load_data, progress
from lightning_prune.bench.ice.tables import TABLES, headline
from lightning_prune.core.validate import check_choice, check_fraction, check_int

__all__ = ["TABLES", "headline", "run"]


def run(cfg: DictConfig, record: Record) -> None:
    """Baseline, ICE (stage 1 + stage 2) and the ablations, recording after the comparison and each ablation."""
    work = arms.Workload(**OmegaConf.to_container(cfg.workload, resolve=True))
    check_sizes(work, list(cfg.ablations))
    depth.check(cfg)
    quiet()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.depths:
        depth.sweep(cfg, work, record)
        return
    datamodule, dataset = load_data(cfg, work, cfg.seed)
    with tempfile.TemporaryDirectory(prefix="ice-bench-") as tmp:
        root = Path(tmp)
        result, state, best = compare(datamodule, dataset, work, cfg.seed, root)
        ablations = list(cfg.ablations)
        record(result, complete=not ablations)
        for index, name in enumerate(ablations, start=1):
            progress(f"ablation: {name} only")
            only = arms.make_parts(best, (name,), work.val_batches)
            result["ablations"][name] = arms.run_arm(state, datamodule, work, only, cfg.seed, root)
            record(result, complete=index == len(ablations))
    _report(result)


def check_sizes(work: arms.Workload, ablations: list[str]) -> None:
    """Refuse fractions, trial counts and parts that would fail only after pre-training and the baseline."""
    check_fraction("workload.train_fraction", work.train_fraction, closed_high=True)
    check_fraction("workload.search_fraction", work.search_fraction, closed_high=True)
    check_int("workload.trials", work.trials, low=1)
    for name in ablations:
        check_choice("ablations", name, tuple(arms.PARTS))


def _report(result: dict[str, Any]) -> None:
    rows = [("baseline", result["baseline"]), ("ice", result["ice"])]
    rows += [(f"{name} only", arm) for name, arm in result["ablations"].items()]
    print_table(
        f"ICE-Pruning vs iterative ({result['dataset']}): speedup {result['speedup']:.2f}x, "
        f"acc delta {result['acc_delta_pt']:+.2f} pt",
        ["arm", "wall_s", "test_acc", "sparsity", "finetune_epochs", "skipped"],
        [(n, a["wall_s"], a["test_acc"], a["sparsity"], a["finetune_epochs"], a["finetunes_skipped"]) for n, a in rows],
    )
