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
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lightning_prune.bench._common import Stopwatch, default_data, environment, print_table, quiet
from lightning_prune.bench._compose import Record
from lightning_prune.bench.ice import arms
from lightning_prune.bench.ice.tables import TABLES, headline
from lightning_prune.core.validate import check_choice, check_fraction, check_int
from lightning_prune.data import MNISTDataModule
from lightning_prune.data.arrays import ArrayDataModule

__all__ = ["TABLES", "headline", "run"]


def run(cfg: DictConfig, record: Record) -> None:
    """Baseline, ICE (stage 1 + stage 2) and the ablations, recording after the comparison and each ablation."""
    work = arms.Workload(**OmegaConf.to_container(cfg.workload, resolve=True))
    check_sizes(work, list(cfg.ablations))
    quiet()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    datamodule, dataset = load_data(cfg, work)
    with tempfile.TemporaryDirectory(prefix="ice-bench-") as tmp:
        root = Path(tmp)
        _progress(f"{dataset}: {len(datamodule.train_set)} training images; pre-training {work.pretrain_epochs} epochs")
        state = arms.pretrain(datamodule, work, cfg.seed, root)
        _progress("baseline: traditional iterative pruning")
        baseline = arms.run_arm(state, datamodule, work, [], cfg.seed, root)
        _progress(f"ice stage 1: {work.trials} trials on {work.search_fraction:.0%} of the training data")
        with Stopwatch() as search_watch:
            search = arms.stage1(state, arms.subset(datamodule, work.search_fraction), work, cfg.seed, root)
        best = search["best_params"]
        _progress(f"ice stage 2 with {best}")
        parts = arms.make_parts(best, tuple(arms.PARTS), work.val_batches)
        ice = arms.run_arm(state, datamodule, work, parts, cfg.seed, root)
        ice["run_s"], ice["search_s"] = ice["wall_s"], search_watch.seconds
        ice["wall_s"] = ice["run_s"] + ice["search_s"]
        result = comparison(dataset, baseline, ice, search, work, len(datamodule.train_set), cfg.seed)
        ablations = list(cfg.ablations)
        record(result, complete=not ablations)
        for index, name in enumerate(ablations, start=1):
            _progress(f"ablation: {name} only")
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


def load_data(cfg: DictConfig, work: arms.Workload) -> tuple[ArrayDataModule, str]:
    datamodule, name = default_data(cfg.data_dir, cfg.seed, batch_size=128, digits=cfg.digits)
    if name == "mnist":
        datamodule = MNISTDataModule(
            str(datamodule.data_dir), batch_size=128, seed=cfg.seed, train_fraction=work.train_fraction
        )
        datamodule.setup()
    return datamodule, name


def comparison(
    dataset: str,
    baseline: dict[str, Any],
    ice: dict[str, Any],
    search: dict[str, Any],
    work: arms.Workload,
    train_samples: int,
    seed: int,
) -> dict[str, Any]:
    """The JSON record of baseline vs ICE; ``ablations`` fills in as they finish."""
    return {
        "dataset": dataset,
        "baseline": baseline,
        "ice": ice,
        "ablations": {},
        "speedup": baseline["wall_s"] / ice["wall_s"],
        "acc_delta_pt": 100.0 * (ice["test_acc"] - baseline["test_acc"]),
        "finetunes_skipped": ice["finetunes_skipped"],
        # Hardware-free and search-free views of the same comparison.
        "finetune_epochs_ratio": baseline["finetune_epochs"] / max(1, ice["finetune_epochs"]),
        "speedup_without_search": baseline["wall_s"] / ice["run_s"],
        "ice_time_split_s": {"search": ice["search_s"], **ice["time_s"]},
        "search": search,
        "workload": {**asdict(work), "train_samples": train_samples, "seed": seed},
        "environment": environment(),
    }


def _progress(message: str) -> None:
    print(f"[bench ice] {message}", file=sys.stderr, flush=True)


def _report(result: dict[str, Any]) -> None:
    rows = [("baseline", result["baseline"]), ("ice", result["ice"])]
    rows += [(f"{name} only", arm) for name, arm in result["ablations"].items()]
    print_table(
        f"ICE-Pruning vs iterative ({result['dataset']}): speedup {result['speedup']:.2f}x, "
        f"acc delta {result['acc_delta_pt']:+.2f} pt",
        ["arm", "wall_s", "test_acc", "sparsity", "finetune_epochs", "skipped"],
        [(n, a["wall_s"], a["test_acc"], a["sparsity"], a["finetune_epochs"], a["finetunes_skipped"]) for n, a in rows],
    )
