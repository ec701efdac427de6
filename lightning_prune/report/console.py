"""The console face of the report: the summary printed at the end of every run, and at the end of a sweep.

A run's summary is read back from ``summary.json`` and the CSV log: which data and model ran; the dense
model against the pruned one (parameters, nonzero parameters, MACs, measured latency and speed-up); per
pruner section one row per step (sparsity, accuracy before the step, right after pruning and after its
fine-tune, whether the fine-tune ran or was skipped and why); wall time per phase; the final figures. A
sweep's summary is its comparison table (:mod:`lightning_prune.report.sweep`). The layout read is
documented in :mod:`lightning_prune.report`; ``python -m lightning_prune.report <dir>`` draws the plots.

In your own Trainer, record what the app records and print the same summary::

    dense = model_size(module, module.example_input_array)  # lightning_prune.core.export
    trainer.fit(module, datamodule=datamodule)
    write_summary(path, "run", run_record(module, datamodule, dense))  # path: <default_root_dir>/summary.json
    print_summary(path)
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.rule import Rule
from rich.table import Table
from torch import nn

from lightning_prune.core.export import model_size
from lightning_prune.report import derived, read
from lightning_prune.report.read import Run, Step
from lightning_prune.report.sweep import Comparison, compare, write_sweep_report
from lightning_prune.report.write import find_runs

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
    for name, value in figures.items():
        table.add_row(name, _figure(name, value))
    return table


def dense_vs_pruned(run: Run) -> Table | None:
    """Dense against pruned: parameters, nonzero parameters, MACs (the ``run`` section's ``size``), latencies."""
    rows = []
    for name, before, after in derived.sizes(run.summary):
        change = f"{after / before - 1:+.1%}" if before and after is not None else ""
        rows.append((name, _count(before), _count(after), change))
    for latency in derived.latencies(run.summary):
        faster = f"{latency.dense_ms / latency.pruned_ms:.2f}x speed-up" if latency.dense_ms else ""
        rows.append((f"latency p50 (ms), {latency.label}", _ms(latency.dense_ms), _ms(latency.pruned_ms), faster))
    if not rows:
        return None
    table = Table(title="dense vs pruned", title_justify="left")
    for column in ("", "dense", "pruned", "change"):
        table.add_column(column, justify="left" if not column else "right")
    for row in rows:
        table.add_row(*row)
    if any(name.startswith("MACs") for name, *_ in rows):
        table.caption = (
            "MACs: Conv/Linear multiply-accumulates per example; zeros count (only removed channels cut them)"
        )
        table.caption_justify = "left"
    return table


def names_line(run: Run) -> str | None:
    """``data: digits (DigitsDataModule) | model: cnn (Classifier(net=SmallCNN))`` from the ``run`` section."""
    return " | ".join(f"{key}: {name}" for key, name in derived.names(run.summary).items()) or None


def run_record(module: nn.Module, datamodule: Any = None, dense: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the app adds to the ``run`` section: data and model names and the dense and pruned sizes.

    ``dense`` is :func:`~lightning_prune.core.export.model_size` of the model before fitting; the pruned size
    is measured now, on ``module.example_input_array`` when it has one.
    """
    pruned = model_size(module, getattr(module, "example_input_array", None))
    return {**describe(module, datamodule), "size": {"dense": dense, "pruned": pruned}}


def describe(module: nn.Module, datamodule: Any = None) -> dict[str, str]:
    """Class names: ``{"model": "Classifier(net=SmallCNN)", "data": "DigitsDataModule"}`` (own Trainer)."""
    names = {"model": call_name(module)}
    if datamodule is not None:
        names["data"] = call_name(datamodule)
    return names


def call_name(obj: Any) -> str:
    """``Class(arg=InnerClass)`` for the constructor arguments that are modules held under the same name."""
    children = dict(obj.named_children()) if isinstance(obj, nn.Module) else {}
    arguments = inspect.signature(type(obj).__init__).parameters
    inner = [f"{name}={call_name(children[name])}" for name in arguments if name in children]
    return f"{type(obj).__name__}({', '.join(inner)})" if inner else type(obj).__name__


def summary_renderables(run: Run) -> list:
    steps = read.steps(run)
    sections = dict.fromkeys(s.section for s in steps)
    parts: list = [Rule("lightning-prune summary", align="left")]
    names = names_line(run)
    parts += [names] if names else []
    parts += [step_table(name, [s for s in steps if s.section == name]) for name in sections]
    times = derived.phase_times(run)
    if times:
        parts.append(time_table(times))
    parts.append(final_table(run))
    size = dense_vs_pruned(run)
    parts += [size] if size is not None else []
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


def print_sweep_summary(path: str | os.PathLike, console: Console | None = None) -> Path:
    """Write the sweep's ``report.md`` (comparison, Pareto plot) into ``path`` and print the comparison."""
    _, directories = find_runs(path)
    runs = [read.load_run(directory) for directory in directories]
    report = write_sweep_report(Path(path), runs)
    comparison = compare(runs)
    hint = f"sweep report: {report}; per-job reports and plots: python -m lightning_prune.report {path}"
    (console or Console()).print(Group(Rule("lightning-prune sweep", align="left"), sweep_table(comparison), hint))
    return report


def sweep_table(comparison: Comparison) -> Table:
    """One row per job, labelled by its swept settings; the figures that differ between jobs, each best in bold.

    Losses are left to ``report.md`` (which has every figure) so the table fits a terminal.
    """
    figures = comparison.figures
    shown = [k for k in comparison.metrics if "loss" not in k and len({str(f.get(k)) for f in figures.values()}) > 1]
    table = Table(title=f"{len(comparison.labels)} jobs", title_justify="left")
    table.add_column("settings", no_wrap=True)
    table.add_column("job", justify="right")
    for key in shown:
        table.add_column(key.replace("_", " ").replace("/", " "), justify="right", overflow="fold")
    for name, label in comparison.labels.items():
        cells = [_figure(key, figures[name][key]) if key in figures[name] else "-" for key in shown]
        table.add_row(
            label, name, *(f"[bold]{c}[/bold]" if name in comparison.bests[k] else c for c, k in zip(cells, shown))
        )
    same = [k for k in comparison.metrics if k not in shown and "loss" not in k and k in figures[next(iter(figures))]]
    notes = [f"best per figure in bold; same in every job: {', '.join(same) or 'none'}"]
    notes += [f"common overrides: {' '.join(comparison.common)}"] if comparison.common else []
    table.caption, table.caption_justify = "; ".join(notes), "left"
    return table


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


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
