"""The benchmark's tables for docs/latency_budget.md and its README row, from the committed JSON only."""

from __future__ import annotations

from typing import Any

from lightning_prune.bench.docs import load_result, settings_table

MAIN = "docs/bench/latency_budget/main.json"
ARMS = ("dense", "ours", "uniform")


def arm_row(name: str, arm: dict[str, Any]) -> list[Any]:
    """An arm's row: measured ms, test accuracy, MMACs, parameters, speed-up, MAC cut and their ratio."""
    return [
        name,
        arm["measured_ms"],
        arm["test_acc"],
        arm["macs"] / 1e6,
        int(arm["params"]),
        arm.get("speedup", 1.0),
        arm.get("mac_reduction", 1.0),
        arm.get("speedup_over_mac_reduction", 1.0),
    ]


def runtime_row(name: str, arm: dict[str, Any], dense: dict[str, Any]) -> list[Any]:
    """An arm in both runtimes: eager and ONNX Runtime ms, then its speed-up over ``dense`` in each.

    Speed-ups paired (median of per-round ratios), then from the lowest round medians; last, ONNX Runtime
    over eager for the arm itself (paired).
    """
    return [
        name,
        arm["measured_ms"],
        arm["ort_ms"],
        arm.get("speedup_paired", 1.0),
        arm.get("ort_speedup_paired", 1.0),
        dense["measured_ms"] / arm["measured_ms"],
        dense["ort_ms"] / arm["ort_ms"],
        arm["ort_over_eager"],
    ]


def setup_table() -> str:
    """What the committed run ran: data, device, timing and schedule settings."""
    result = load_result(MAIN)
    # Argparse-era JSONs keep their settings under "settings", composed runs under the provenance's config.
    cfg = result.get("settings") or result["provenance"]["config"]
    seeds = cfg["seeds"] if isinstance(cfg["seeds"], int) else len(cfg["seeds"])
    rows = [
        ("data, model", f"{result['dataset']}, ResNet (`lightning_prune.models.ResNet` defaults)"),
        ("device, threads", f"{result['device']}, {cfg['threads']}"),
        ("latency batch size", cfg["batch_size"]),
        ("budget", f"{cfg['budget_fraction']} x the dense latency at fit start"),
        (
            "dense epochs, then steps x fine-tune epochs, then final epochs",
            (f"{cfg['pretrain_epochs']}, {cfg['steps']} x {cfg['finetune_epochs']}, {cfg['final_epochs']}"),
        ),
        ("final timing: round-robin rounds x calls", f"{cfg['rounds']} x {cfg['repeats']}"),
        ("uniform ratios swept", f"{min(cfg['ratios'])} to {max(cfg['ratios'])}, {len(cfg['ratios'])} ratios"),
        ("seeds", seeds),
        ("runtimes timed side by side", _runtimes(result, cfg)),
    ]
    return settings_table(rows, result["provenance"])


def _runtimes(result: dict[str, Any], cfg: dict[str, Any]) -> str:
    if "ort_ms" not in result["dense"]:
        return "eager PyTorch"
    ort = result["onnxruntime"]
    return (
        f"eager PyTorch and ONNX Runtime {ort['version']} ({ort['provider']}, {cfg['threads']} intra-op thread(s)), "
        "each final model exported by `torch.onnx.export(dynamo=True)`"
    )


def arms_table() -> str:
    """The three arms, means over seeds, from the committed JSON."""
    result = load_result(MAIN)
    ratios = result["uniform"]["ratio"]
    names = {
        "dense": "dense",
        "ours": "ours (SP-LAMP + knapsack)",
        "uniform": f"uniform (ratio {min(ratios):.2f}-{max(ratios):.2f})",
    }
    lines = [
        f"| arm (mean of {len(result['per_seed'])} seeds) | measured ms | test acc | MMACs | params | speed-up "
        "| MAC cut | speed-up / MAC cut |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ARMS:
        _, ms, acc, macs, params, speedup, cut, ratio = arm_row(name, result[name])
        figures = f"{ms:.2f} | {acc:.3f} | {macs:.2f} | {params:,} | {speedup:.2f} | {cut:.1f} | {ratio:.2f}"
        lines.append(f"| {names[name]} | {figures} |")
    return "\n".join(lines)


def runtimes_table() -> str:
    """Dense vs pruned speed-up in eager PyTorch and ONNX Runtime, per seed and in the mean, timed side by side."""
    result = load_result(MAIN)
    lines = [
        "| seed | dense ms, eager / ORT | ours, eager | ours, ORT | uniform, eager | uniform, ORT "
        "| ORT / eager (dense, ours, uniform) | ORT max abs diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    runs = [(f"seed {run['seed']}", run) for run in result["per_seed"]]
    for label, arms in [*runs, (f"mean of {len(runs)}", result)]:
        dense, ours, uniform = (runtime_row(name, arms[name], arms["dense"]) for name in ARMS)
        cells = [f"{row[3 + runtime]:.2f} ({row[5 + runtime]:.2f})" for row in (ours, uniform) for runtime in (0, 1)]
        over_eager = ", ".join(f"{row[7]:.2f}" for row in (dense, ours, uniform))
        largest = max(arms[name]["ort_max_abs_diff"] for name in ARMS)
        figures = " | ".join([f"{dense[1]:.2f} / {dense[2]:.2f}", *cells, over_eager, f"{largest:.1e}"])
        lines.append(f"| {label} | {figures} |")
    return "\n".join(lines)


def seeds_table() -> str:
    """Per seed: the callback's budget (from its fit-start timing), the final round-robin timing, accuracies."""
    result = load_result(MAIN)
    lines = [
        "| seed | dense ms at fit start | budget ms | dense ms, final | ours ms, final | ours / budget | ours / dense "
        "| ours acc | uniform acc | uniform ratio | table r |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run, r in zip(result["per_seed"], result["lut_r_per_seed"]):
        dense, ours, uniform, budget = run["dense"]["measured_ms"], run["ours"], run["uniform"], run["budget_ms"]
        lines.append(
            f"| {run['seed']} | {run['dense_ms']:.2f} | {budget:.2f} | {dense:.2f} | {ours['measured_ms']:.2f} "
            f"| {ours['measured_ms'] / budget:.3f} | {ours['measured_ms'] / dense:.3f} "
            f"| {ours['test_acc']:.3f} | {uniform['test_acc']:.3f} | {run['uniform_ratio']:.2f} | {r:.2f} |"
        )
    return "\n".join(lines)


def sweep_table() -> str:
    """The uniform ratio sweep: each one-shot cut's latency over ours' final model's, per seed (chosen in bold)."""
    runs = load_result(MAIN)["per_seed"]
    lines = ["| uniform ratio | " + " | ".join(f"seed {run['seed']}" for run in runs) + " |"]
    lines.append("|---:|" + "---:|" * len(runs))
    for i, point in enumerate(runs[0]["sweep"]):
        cells = []
        for run in runs:
            cell = f"{run['sweep'][i]['relative']:.2f}"
            cells.append(f"**{cell}**" if run["sweep"][i]["ratio"] == run["uniform_ratio"] else cell)
        lines.append(f"| {point['ratio']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def checks_table() -> str:
    """What the paper claims, checked: budget met, accuracy against uniform at equal latency."""
    result = load_result(MAIN)
    checks, seeds = result["checks"], len(result["per_seed"])
    rows = [
        (
            "ours within 5 % of its budget (round-robin timing)",
            f"{sum(checks['ours_within_budget_per_seed'])}/{seeds} seeds",
        ),
        ("ours' latency / dense", f"{checks['ours_fraction_of_dense']:.3f} (budget {result['budget_fraction']:.2f})"),
        ("ours' accuracy - uniform's (mean)", f"{100 * checks['ours_acc_minus_uniform']:+.1f} pt"),
        ("seeds where ours >= uniform", f"{checks['ours_acc_ge_uniform_seeds']}/{seeds}"),
        ("uniform's latency / ours'", f"{checks['uniform_over_ours_latency']:.2f}"),
        ("largest round-to-round spread of the final timing", f"{checks['noise_max_spread']:.2f}"),
        ("table r, predicted vs measured (median over seeds)", f"{result['lut_r']:.2f}"),
    ]
    if "ort_max_abs_diff" in checks:
        rows += [
            (
                "ONNX Runtime vs eager outputs, largest abs difference (1e-4 allowed)",
                f"{checks['ort_max_abs_diff']:.1e}",
            ),
            ("largest round-to-round spread of the ONNX Runtime timing", f"{checks['ort_noise_max_spread']:.2f}"),
        ]
    return "\n".join(["| check | measured |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)])


def headline() -> dict[str, str]:
    """The README's row: the budget met, and accuracy against a uniform cut of equal measured latency."""
    result = load_result(MAIN)
    checks, seeds = result["checks"], len(result["per_seed"])
    return {
        "method": "latency-aware structured pruning (`LatencyBudgetPruning`)",
        "claim": "HALP / SP-LAMP: meets a latency budget, more accurate than a uniform cut of equal latency",
        "measured": (
            f"budget met in {sum(checks['ours_within_budget_per_seed'])}/{seeds} seeds (ours at "
            f"{checks['ours_fraction_of_dense']:.2f} of dense for {result['budget_fraction']:.2f}); "
            f"{100 * checks['ours_acc_minus_uniform']:+.1f} pt vs uniform (ahead in "
            f"{checks['ours_acc_ge_uniform_seeds']}/{seeds} seeds)" + _speedups(result)
        ),
        "evidence": "[docs/latency_budget.md](docs/latency_budget.md)",
    }


def _speedups(result: dict[str, Any]) -> str:
    if "ort_speedup_paired" not in result["ours"]:
        return ""
    runs = result["per_seed"]

    def spread(key: str) -> str:
        values = [run["ours"][key] for run in runs]
        return f"{min(values):.1f}-{max(values):.1f}x" if len(values) > 1 else f"{values[0]:.2f}x"

    return (
        f"; ours vs dense, timed side by side: {spread('speedup_paired')} faster in PyTorch eager, "
        f"{spread('ort_speedup_paired')} in ONNX Runtime (per seed)"
    )


TABLES = {
    "setup": setup_table,
    "arms": arms_table,
    "runtimes": runtimes_table,
    "seeds": seeds_table,
    "sweep": sweep_table,
    "checks": checks_table,
}
