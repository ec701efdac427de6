"""LatencyBudgetPruning against torch-pruning's pruners at equal measured latency (``bench latency``).

Per seed one dense ResNet trains, ours (:class:`LatencyBudgetPruning`) prunes a copy to the budget, and each
baseline (:mod:`.baselines`: uniform, global magnitude, global Taylor) gets the ratio at which its one-shot cut
of the same dense weights times within ``match_tolerance`` of ours' final model, side by side
(:func:`~lightning_prune.bench.latency.matching.bisect_ratio`); then each baseline trains as many epochs as
ours. All final models are timed round-robin and tested on the whole test split. The JSON's ``paired`` holds one
row per seed (ours and every baseline: accuracy, measured ms, whether matched), ``summary`` the paired accuracy
differences (mean, spread, seeds ahead), and each arm's speed-up over dense per MAC cut. Written after each seed.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig

from lightning_prune.bench._common import environment, print_table, quiet
from lightning_prune.bench.latency.baselines import BASELINES
from lightning_prune.bench.latency.seed import one_seed
from lightning_prune.bench.latency.tables import TABLES, headline
from lightning_prune.core.devices import device_name

__all__ = ["TABLES", "headline", "run"]


def run(cfg: DictConfig, record: Callable[..., Any]) -> None:
    """Every seed's matched comparison; the record (paired rows, summary) is rewritten after each seed."""
    check(cfg)
    quiet()
    torch.set_num_threads(cfg.threads)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    runs: list[dict[str, Any]] = []
    for index, seed in enumerate(cfg.seeds):
        runs.append(one_seed(cfg, seed, device))
        result = summarise(cfg, runs, device)
        record(result, complete=index == len(cfg.seeds) - 1)
    _print(result)


def check(cfg: DictConfig) -> None:
    """Refuse baselines and matching settings that would fail only after a seed's training."""
    unknown = [name for name in cfg.baselines if name not in BASELINES]
    if unknown or not cfg.baselines:
        raise ValueError(f"baselines must be a non-empty list from {list(BASELINES)}, got {list(cfg.baselines)}")
    if not 0 < cfg.match_tolerance < 1:
        raise ValueError(f"match_tolerance must be in (0, 1), got {cfg.match_tolerance!r}")


def paired_row(run: dict[str, Any], baselines: list[str]) -> dict[str, Any]:
    """One seed: ours against each baseline (issue 18's field names for ``uniform``; ``<baseline>_*`` for each)."""
    arms = run["arms"]
    row = {
        "seed": run["seed"],
        "ours_acc": arms["ours"]["test_acc"],
        "ours_ms": arms["ours"]["measured_ms"],
        "budget_ms": run["budget_ms"],
        "ours_within_budget": arms["ours"]["measured_ms"] <= run["budget_ms"] * (1 + run["budget_tolerance"]),
    }
    for name in baselines:
        row |= {f"{name}_acc": arms[name]["test_acc"], f"{name}_ms": arms[name]["measured_ms"]}
        row[f"{name}_matched"] = abs(arms[name]["measured_ms"] / arms["ours"]["measured_ms"] - 1) <= run["tolerance"]
    return row


def summarise(cfg: DictConfig, runs: list[dict[str, Any]], device: str) -> dict[str, Any]:
    baselines = list(cfg.baselines)
    paired = [paired_row(run, baselines) for run in runs]
    summary = {}
    for name in baselines:
        diffs = [100.0 * (row["ours_acc"] - row[f"{name}_acc"]) for row in paired]
        summary[name] = {
            "ours_minus_pt": diffs,
            "mean_pt": statistics.fmean(diffs),
            "stdev_pt": statistics.stdev(diffs) if len(diffs) > 1 else None,
            "ours_ahead_seeds": sum(diff > 0 for diff in diffs),
            "matched_seeds": sum(row[f"{name}_matched"] for row in paired),
        }
    return {
        "device": device_name(torch.device(device)),
        "dataset": runs[0]["dataset"],
        "budget_fraction": cfg.budget_fraction,
        "paired": paired,
        "summary": summary,
        "budget_met_every_seed": all(row["ours_within_budget"] for row in paired),
        "speedup_over_mac_cut": {
            name: statistics.fmean(run["arms"][name]["speedup_over_mac_cut"] for run in runs)
            for name in ["ours", *baselines]
        },
        "lut_r_per_seed": [run["lut_r"] for run in runs],
        "per_seed": runs,
        "environment": environment(),
    }


def _print(result: dict[str, Any]) -> None:
    rows = [
        (name, s["mean_pt"], s["stdev_pt"] or 0.0, s["ours_ahead_seeds"], s["matched_seeds"])
        for name, s in result["summary"].items()
    ]
    seeds = len(result["paired"])
    print_table(
        f"ours - baseline at equal measured latency ({seeds} seed(s), budget met every seed: "
        f"{result['budget_met_every_seed']})",
        ["baseline", "mean pt", "stdev pt", "seeds ours ahead", "seeds matched"],
        rows,
    )
