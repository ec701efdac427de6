"""The matched-latency benchmark's tables for docs/latency_budget.md and its README row, from the committed JSON."""

from __future__ import annotations

from lightning_prune.bench.docs import load_result, settings_table

RESULT = "docs/bench/latency.json"
NAMES = {"uniform": "uniform", "global_magnitude": "global magnitude", "global_taylor": "global Taylor"}


def paired_table() -> str:
    """Per seed: ours against its budget, then each baseline's accuracy and latency relative to ours."""
    result = load_result(RESULT)
    baselines = list(result["summary"])
    header = ["seed", "budget ms", "ours ms", "ours acc", *(f"{NAMES[b]} acc (ms / ours')" for b in baselines)]
    lines = ["| " + " | ".join(header) + " |", "|---:|" + "---:|" * (len(header) - 1)]
    for row in result["paired"]:
        within = "" if row["ours_within_budget"] else " (over budget)"
        cells = [str(row["seed"]), f"{row['budget_ms']:.2f}", f"{row['ours_ms']:.2f}{within}", f"{row['ours_acc']:.4f}"]
        for name in baselines:
            relative = row[f"{name}_ms"] / row["ours_ms"]
            matched = "" if row[f"{name}_matched"] else ", not matched"
            cells.append(f"{row[f'{name}_acc']:.4f} ({relative:.3f}{matched})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_table() -> str:
    """Ours minus each baseline in points, per seed and in the mean, and every arm's speed-up per MAC cut."""
    result = load_result(RESULT)
    seeds = len(result["paired"])
    lines = [
        "| baseline | ours - baseline per seed (pt) | mean ± stdev (pt) | seeds ours ahead | seeds matched ±3 % "
        "| baseline's speed-up / MAC cut |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, s in result["summary"].items():
        per_seed = ", ".join(f"{d:+.2f}" for d in s["ours_minus_pt"])
        spread = f" ± {s['stdev_pt']:.2f}" if s["stdev_pt"] is not None else ""
        lines.append(
            f"| {NAMES[name]} | {per_seed} | {s['mean_pt']:+.2f}{spread} | {s['ours_ahead_seeds']}/{seeds} "
            f"| {s['matched_seeds']}/{seeds} | {result['speedup_over_mac_cut'][name]:.2f} |"
        )
    ours = result["speedup_over_mac_cut"]["ours"]
    lines.append(f"| (ours) | | | | | {ours:.2f} |")
    return "\n".join(lines)


def setup_table() -> str:
    """What the committed run ran."""
    result = load_result(RESULT)
    cfg = result["provenance"]["config"]
    rows = [
        ("data", f"{result['dataset']}, {cfg['train_fraction']:.0%} of the training split, the whole test split"),
        ("model", f"`lightning_prune.models.ResNet`, blocks {cfg['blocks']}, widths {cfg['widths']}"),
        ("device, threads; latency batch", f"{result['device']}, {cfg['threads']}; {cfg['batch_size']}"),
        ("budget", f"{cfg['budget_fraction']} x the dense latency at fit start"),
        (
            "dense epochs; ours: steps x fine-tune epochs, then final epochs (every arm trains as long)",
            f"{cfg['pretrain_epochs']}; {cfg['steps']} x {cfg['finetune_epochs']}, {cfg['final_epochs']}",
        ),
        (
            "matching",
            f"bisection, within {cfg['match_tolerance']:.0%}, at most {cfg['max_probes']} probes of "
            f"{cfg['match_rounds']} round-robin rounds",
        ),
        ("final timing: round-robin rounds x calls", f"{cfg['rounds']} x {cfg['repeats']}"),
        ("table r, predicted vs measured, per seed", ", ".join(f"{r:.2f}" for r in result["lut_r_per_seed"])),
        ("seeds", len(result["paired"])),
    ]
    return settings_table(rows, result["provenance"])


def headline() -> dict[str, str]:
    """The README's row: ours against each baseline at equal measured latency, the issue's target beside it."""
    result = load_result(RESULT)
    seeds = len(result["paired"])
    against = "; ".join(
        f"{s['mean_pt']:+.2f} pt vs {NAMES[name]} (ahead {s['ours_ahead_seeds']}/{seeds})"
        for name, s in result["summary"].items()
    )
    met = sum(row["ours_within_budget"] for row in result["paired"])
    uniform = result["summary"]["uniform"]
    hit = uniform["mean_pt"] >= 1.0 and uniform["ours_ahead_seeds"] >= 4 and met == seeds
    return {
        "method": "latency-aware structured pruning at equal measured latency",
        "claim": "more accurate than uniform / global pruning at the same latency (target: ≥ +1 pt vs uniform, "
        "ahead in 4 of 5 seeds)",
        "measured": f"{against}; budget met in {met}/{seeds} seeds: target {'met' if hit else 'missed'}",
        "evidence": "[docs/latency_budget.md](docs/latency_budget.md)",
    }


TABLES = {"paired": paired_table, "summary": summary_table, "setup": setup_table}
