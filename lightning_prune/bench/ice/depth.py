"""ICE's speed-up as the network deepens: the comparison at each depth of one ResNet family (``axis=depth``).

The paper's speed-up comes from fine-tunes the gate skips, so it is bounded by blocks divided by the fine-tunes
still run, and only deep nets (ResNet-152's ~50 blocks) leave room for "up to 9.61x". Here every depth in
``depths`` (basic blocks per stage, the same in every stage) runs the benchmark's comparison — pre-training,
the traditional pipeline, ICE's stage 1 and stage 2 — on ``seed``, and the deepest on each of
``deepest_seeds``; speed-ups include the search. The JSON's ``depths`` (one row per depth, means over its seeds)
is rewritten after every comparison, with each seed's figures in ``runs``.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lightning_prune.bench._common import environment, print_table
from lightning_prune.bench._compose import Record
from lightning_prune.bench.ice import arms
from lightning_prune.bench.ice.compare import compare, load_data


def check(cfg: DictConfig) -> None:
    """Refuse a depth list the sweep cannot run, before any training."""
    depths = cfg.depths
    if depths is None:
        return
    if not depths or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in depths):
        raise ValueError(f"depths must be a non-empty list of blocks per stage, each an int >= 1, got {list(depths)}")
    seeds = cfg.deepest_seeds
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"deepest_seeds must be a non-empty list of distinct seeds, got {list(seeds or [])}")


def sweep(cfg: DictConfig, work: arms.Workload, record: Record) -> None:
    """Every depth's comparison, shallowest first; the record is written after each one."""
    plan = schedule(list(cfg.depths), cfg.seed, list(cfg.deepest_seeds))
    runs: list[dict[str, Any]] = []
    for index, (blocks, seed) in enumerate(plan):
        shaped = replace(work, blocks=tuple([blocks] * len(work.widths)))
        datamodule, dataset = load_data(cfg, shaped, seed)
        with tempfile.TemporaryDirectory(prefix="ice-depth-") as tmp:
            result, _, _ = compare(datamodule, dataset, shaped, seed, Path(tmp))
        runs.append(run_row(result))
        record(depth_result(dataset, runs, work), complete=index == len(plan) - 1)
    _report(runs)


def schedule(depths: list[int], seed: int, deepest_seeds: list[int]) -> list[tuple[int, int]]:
    """(blocks per stage, seed) in running order: each depth once on ``seed``, the deepest on every deepest seed."""
    deepest = max(depths)
    return [(d, s) for d in sorted(set(depths)) for s in (deepest_seeds if d == deepest else [seed])]


def run_row(result: dict[str, Any]) -> dict[str, Any]:
    """One comparison's figures: what the depth table averages, and what explains them."""
    ice, baseline = result["ice"], result["baseline"]
    return {
        "blocks": sum(result["workload"]["blocks"]),
        "seed": result["workload"]["seed"],
        "speedup": result["speedup"],
        "acc_delta_pt": result["acc_delta_pt"],
        "speedup_without_search": result["speedup_without_search"],
        "search_share": ice["search_s"] / ice["wall_s"],
        "baseline_s": baseline["wall_s"],
        "ice_s": ice["wall_s"],
        "baseline_acc": baseline["test_acc"],
        "ice_acc": ice["test_acc"],
        "sparsity": ice["sparsity"],
        "finetunes": f"{ice['finetune_epochs']} of {ice['steps']}",
        "best_params": result["search"]["best_params"],
        "trials": result["search"]["trials"],  # why stage 1 chose what it chose
    }


def depth_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per depth: means over its seeds (speed-up with the search included)."""
    rows = []
    for blocks in sorted({run["blocks"] for run in runs}):
        mine = [run for run in runs if run["blocks"] == blocks]
        rows.append(
            {
                "blocks": blocks,
                "speedup": statistics.fmean(run["speedup"] for run in mine),
                "acc_delta_pt": statistics.fmean(run["acc_delta_pt"] for run in mine),
                "seeds": [run["seed"] for run in mine],
                "search_share": statistics.fmean(run["search_share"] for run in mine),
                "speedup_without_search": statistics.fmean(run["speedup_without_search"] for run in mine),
            }
        )
    return rows


def depth_result(dataset: str, runs: list[dict[str, Any]], work: arms.Workload) -> dict[str, Any]:
    return {"dataset": dataset, "depths": depth_rows(runs), "runs": runs, "workload": vars(work).copy(),
            "environment": environment()}  # fmt: skip


def _report(runs: list[dict[str, Any]]) -> None:
    rows = [(r["blocks"], r["speedup"], r["acc_delta_pt"], r["search_share"], r["seeds"]) for r in depth_rows(runs)]
    print_table(
        "ICE-Pruning vs iterative by depth", ["blocks", "speedup", "acc_delta_pt", "search share", "seeds"], rows
    )
