"""The console summary printed at the end of every run, read back from ``summary.json`` and the CSV log.

Per pruner section: one row per step (sparsity, accuracy before the step, right after pruning and after
its fine-tune, whether the fine-tune ran or was skipped and why); then wall time per phase and the final
figures (accuracy, sparsity, parameters, latency). The layout it reads is documented in
:mod:`lightning_prune.report`; ``python -m lightning_prune.report <run dir>`` draws the same as plots.
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console, Group
from rich.rule import Rule
from rich.table import Table

from lightning_prune.report import derived, read
from lightning_prune.report.read import Run, Step

FINETUNE_STYLE = {"ran": "green", "skipped": "yellow", "none": "dim"}
PERCENT_FIGURES = {"test/acc", "val/acc", "sparsity"}  # R² and losses print as plain numbers
COUNT_FIGURES = {"params", "params_nonzero", "finetunes_skipped"}
CAPTIONS = {
    "acc before": "last validation before the step",
    "pruned": "right after pruning",
    "fine-tuned": "after its fine-tune",
}


def step_table(section: str, steps: list[Step]) -> Table:
    """One row per step; the accuracy columns no step fills are left out."""
    table = Table(title=f"pruning steps: {section}", title_justify="left")

    columns = {
        "step": [str(s.step) for s in steps],
        "epoch": [_text(s.epoch) for s in steps],
        "sparsity": [f"{s.sparsity:.1%}" for s in steps],
        "acc before": [_percent(s.acc_before if s.before_fresh else None) for s in steps],
        "pruned": [_percent(s.acc_pruned) for s in steps],
        "fine-tuned": [_percent(s.acc_finetuned) for s in steps],
        "fine-tune": [_finetune(s.finetune, s.reason) for s in steps],
    }
    shown = {name: cells for name, cells in columns.items() if any(c not in ("", "-") for c in cells)}
    for name in shown:
        last = name == "fine-tune"
        table.add_column(name, justify="left" if last else "right", no_wrap=not last)
    for row in zip(*shown.values()):
        table.add_row(*row)
    table.caption = "; ".join(f"{name}: {meaning}" for name, meaning in CAPTIONS.items() if name in shown)
    table.caption_justify = "left"
    return table


def time_table(times: dict[str, dict[str, float]]) -> Table:
    table = Table(title="wall time per phase (s)", title_justify="left")
    phases = list(dict.fromkeys(p for t in times.values() for p in t))
    table.add_column("section")
    for phase in phases:
        table.add_column(phase, justify="right")
    for name, phase_times in times.items():
        table.add_row(name, *(f"{phase_times[p]:.2f}" if p in phase_times else "" for p in phases))
    return table


def final_table(run: Run) -> Table:
    """Final metrics, sparsity, size (parameters, nonzero parameters), latency and speed-up when measured."""
    figures = derived.final_figures(run)
    table = Table(title="final", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    latency, dense = derived.final_latency(run.summary)
    for name, value in figures.items():
        table.add_row(name, _figure(name, value))
        if name == "latency_p50_ms" and dense is not None:
            table.add_row("  dense model", f"{dense:.3f}")
            table.add_row("  speed-up", f"{dense / latency:.2f}x" if latency else "-")
    return table


def summary_renderables(run: Run) -> list:
    steps = read.steps(run)
    sections = dict.fromkeys(s.section for s in steps)
    parts: list = [Rule("lightning-prune summary", align="left")]
    parts += [step_table(name, [s for s in steps if s.section == name]) for name in sections]
    times = derived.phase_times(run)
    if times:
        parts.append(time_table(times))
    parts.append(final_table(run))
    others = read.other_histories(run.summary)
    hint = f"full report with plots: python -m lightning_prune.report {run.path}"
    if others:
        hint = f"also recorded: {', '.join(f'{k} ({len(v)} records)' for k, v in others.items())}; " + hint
    parts.append(hint)
    return parts


def print_summary(path: str | os.PathLike, console: Console | None = None) -> None:
    """Print the summary of the run whose ``summary.json`` is at ``path`` (the app calls this at the end)."""
    run = read.load_run(Path(path).parent)
    (console or Console()).print(Group(*summary_renderables(run)))


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _finetune(value: str, reason: str) -> str:
    style = FINETUNE_STYLE.get(value)
    text = f"[{style}]{value}[/{style}]" if style else value
    return f"{text}: {reason}" if reason else text


def _figure(name: str, value: float) -> str:
    if name in PERCENT_FIGURES:
        return f"{value:.2%}"
    if name in COUNT_FIGURES:
        return f"{value:,.0f}"
    return f"{value:.1f}" if name == "wall_s" else f"{value:.3f}"
