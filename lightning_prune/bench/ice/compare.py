"""One comparison of the ICE benchmark: pre-train, the traditional pipeline, then ICE's two stages, on one seed."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from lightning_prune.bench._common import Stopwatch, default_data, environment
from lightning_prune.bench.ice import arms
from lightning_prune.data import MNISTDataModule
from lightning_prune.data.arrays import ArrayDataModule


def load_data(cfg: DictConfig, work: arms.Workload, seed: int) -> tuple[ArrayDataModule, str]:
    datamodule, name = default_data(cfg.data_dir, seed, batch_size=128, digits=cfg.digits)
    if name == "mnist":
        datamodule = MNISTDataModule(
            str(datamodule.data_dir), batch_size=128, seed=seed, train_fraction=work.train_fraction
        )
        datamodule.setup()
    return datamodule, name


def compare(
    datamodule: ArrayDataModule, dataset: str, work: arms.Workload, seed: int, root: Path
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """Baseline and ICE from one pre-trained model: the JSON record, the dense weights and stage 1's choice."""
    progress(f"{dataset}: {len(datamodule.train_set)} training images, {sum(work.blocks)} blocks, seed {seed}")
    state = arms.pretrain(datamodule, work, seed, root)
    progress("baseline: traditional iterative pruning")
    baseline = arms.run_arm(state, datamodule, work, [], seed, root)
    progress(f"ice stage 1: {work.trials} trials on {work.search_fraction:.0%} of the training data")
    with Stopwatch() as search_watch:
        search = arms.stage1(state, arms.subset(datamodule, work.search_fraction), work, seed, root)
    best = search["best_params"]
    progress(f"ice stage 2 with {best}")
    ice = arms.run_arm(state, datamodule, work, arms.make_parts(best, tuple(arms.PARTS), work.val_batches), seed, root)
    ice["run_s"], ice["search_s"] = ice["wall_s"], search_watch.seconds
    ice["wall_s"] = ice["run_s"] + ice["search_s"]
    return comparison(dataset, baseline, ice, search, work, len(datamodule.train_set), seed), state, best


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


def progress(message: str) -> None:
    print(f"[bench ice] {message}", file=sys.stderr, flush=True)
