"""Seeds pooled into the figures a table reports: per arm and data set, and the ratios the claim is judged by."""

from __future__ import annotations

import statistics
from typing import Any

from lightning_prune.bench.odf2nna.arms import ARMS
from lightning_prune.bench.odf2nna.protocol import grid_name, standard_error, val_deltas

PRUNED = ("control", "rebuilt", "faithful", "magnitude")  # arms with a net before retraining


def summarise(per_seed: list[dict[str, dict[str, Any]]], tolerance: float, margin: float = 0.0) -> dict[str, Any]:
    """Mean parameters and metric, median latency over seeds; the per-seed metrics kept alongside.

    ``rebuilt.epsilon_within_tolerance`` (and ``faithful``'s) is false when no candidate met the validation
    rule and the smallest epsilon was reported as a fallback. Each grid point keeps its per-seed validation
    differences to the wide net (``val_delta_seeds``), so another choice rule can be judged from the JSON.
    """
    result: dict[str, Any] = {}
    for arm in [arm for arm in ARMS if arm in per_seed[0]]:
        runs = [seed_result[arm] for seed_result in per_seed]
        metrics = [run["test_metric"] for run in runs]
        result[arm] = {
            "params": statistics.mean(run["params_nonzero"] for run in runs),
            "test_metric": statistics.mean(metrics),
            "test_metric_std": statistics.pstdev(metrics),
            "test_metric_seeds": metrics,
            "latency_ms_b1": statistics.median(run["latency_ms_b1"] for run in runs),
            "latency_ms_b256": statistics.median(run["latency_ms_b256"] for run in runs),
        }
    for arm in [arm for arm in PRUNED if arm in per_seed[0]]:
        for key in ("val_metric_before_retraining", "test_metric_before_retraining"):
            result[arm][key] = statistics.mean(seed_result[arm][key] for seed_result in per_seed)
        result[arm]["kept_before_retraining_seeds"] = sum(s[arm]["kept_before_retraining"] for s in per_seed)
    result["wide"]["val_metric"] = statistics.mean(seed_result["wide"]["val_metric"] for seed_result in per_seed)
    result["wide"]["wide_epochs_seeds"] = [seed_result["wide_epochs"] for seed_result in per_seed]
    for arm, grid in (("rebuilt", "grid"), ("faithful", "faithful_grid")):
        if arm in per_seed[0]:
            result[grid] = _grid(per_seed, grid)
            _chosen(result[arm], per_seed, arm, grid, tolerance, margin)
    wide, rebuilt = result["wide"], result["rebuilt"]
    result["ratios"] = {
        "param_reduction": 1 - rebuilt["params"] / wide["params"],
        "metric_delta": rebuilt["test_metric"] - wide["test_metric"],
        "speedup_b1": wide["latency_ms_b1"] / rebuilt["latency_ms_b1"],
        "speedup_b256": wide["latency_ms_b256"] / rebuilt["latency_ms_b256"],
        "magnitude_speedup_b256": wide["latency_ms_b256"] / result["magnitude"]["latency_ms_b256"],
        "transfer_gain": rebuilt["test_metric"] - result["scratch"]["test_metric"],
        "metric_delta_vs_control": rebuilt["test_metric"] - result["control"]["test_metric"],
        "control_delta": result["control"]["test_metric"] - wide["test_metric"],
    }
    if "faithful" in result:
        faithful = result["faithful"]
        result["ratios"]["faithful_param_reduction"] = 1 - faithful["params"] / wide["params"]
        result["ratios"]["faithful_metric_delta"] = faithful["test_metric"] - wide["test_metric"]
        result["ratios"]["rebuilt_minus_faithful"] = rebuilt["test_metric"] - faithful["test_metric"]
    return result


def _grid(per_seed: list[dict[str, Any]], grid: str) -> dict[str, Any]:
    """Seed means of every grid point, with the per-seed validation differences to the wide net."""
    deltas = val_deltas(per_seed, grid)
    keys = ("params", "val_metric", "test_metric", "test_metric_before_retraining")
    return {
        grid_name(setting): {
            **{key: statistics.mean(seed_result[grid][setting][key] for seed_result in per_seed) for key in keys},
            "val_delta_seeds": deltas[setting],
        }
        for setting in per_seed[0][grid]
    }


def _chosen(
    figures: dict[str, Any], per_seed: list[dict[str, Any]], arm: str, grid: str, tolerance: float, margin: float
) -> None:
    """The chosen setting's epsilon, rate and widths, and whether it met the validation rule (not a fallback)."""
    figures["widths_seeds"] = [seed_result[arm]["widths"] for seed_result in per_seed]
    figures["epsilon"] = per_seed[0][arm]["epsilon"]
    figures["retrain_lr_scale"] = per_seed[0][arm]["retrain_lr_scale"]
    deltas = val_deltas(per_seed, grid)
    chosen = (figures["epsilon"], figures["retrain_lr_scale"])
    lower = statistics.mean(deltas[chosen]) - margin * standard_error(deltas[chosen])
    figures["epsilon_within_tolerance"] = lower >= -tolerance
