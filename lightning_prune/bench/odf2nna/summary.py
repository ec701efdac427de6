"""Seeds pooled into the figures a table reports: per arm and data set, and the ratios the claim is judged by."""

from __future__ import annotations

import statistics
from typing import Any

from lightning_prune.bench.odf2nna.arms import ARMS
from lightning_prune.bench.odf2nna.protocol import grid_name


def summarise(per_seed: list[dict[str, dict[str, Any]]], tolerance: float) -> dict[str, Any]:
    """Mean parameters and metric, median latency over seeds; the per-seed metrics kept alongside.

    ``rebuilt.epsilon_within_tolerance`` is false when no candidate met the validation tolerance and the
    smallest epsilon was reported as a fallback.
    """
    result: dict[str, Any] = {}
    for arm in ARMS:
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
    for arm in ("control", "rebuilt", "magnitude"):
        for key in ("val_metric_before_retraining", "test_metric_before_retraining"):
            result[arm][key] = statistics.mean(seed_result[arm][key] for seed_result in per_seed)
        result[arm]["kept_before_retraining_seeds"] = sum(s[arm]["kept_before_retraining"] for s in per_seed)
    result["rebuilt"]["widths_seeds"] = [seed_result["rebuilt"]["widths"] for seed_result in per_seed]
    result["rebuilt"]["epsilon"] = per_seed[0]["rebuilt"]["epsilon"]
    result["wide"]["val_metric"] = statistics.mean(seed_result["wide"]["val_metric"] for seed_result in per_seed)
    result["wide"]["wide_epochs_seeds"] = [seed_result["wide_epochs"] for seed_result in per_seed]
    result["grid"] = {
        grid_name(setting): {
            key: statistics.mean(seed_result["grid"][setting][key] for seed_result in per_seed)
            for key in ("params", "val_metric", "test_metric", "test_metric_before_retraining")
        }
        for setting in per_seed[0]["grid"]
    }
    wide, rebuilt = result["wide"], result["rebuilt"]
    rebuilt["retrain_lr_scale"] = per_seed[0]["rebuilt"]["retrain_lr_scale"]
    chosen_val = result["grid"][grid_name((rebuilt["epsilon"], rebuilt["retrain_lr_scale"]))]["val_metric"]
    rebuilt["epsilon_within_tolerance"] = chosen_val >= wide["val_metric"] - tolerance
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
    return result
