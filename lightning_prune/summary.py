"""The short console table printed at the end of a run, read back from ``summary.json``."""

from __future__ import annotations

import json
import os

from rich.console import Console
from rich.table import Table


def summary_table(summary: dict) -> Table:
    """One row per pruning step (sparsity, fine-tune ran/skipped), then the run's final metrics."""
    table = Table(title="lightning-prune summary")
    for column in ("step", "epoch", "sparsity", "finetune", "detail"):
        table.add_column(column)
    for section in summary.values():
        for record in section.get("history", []) if isinstance(section, dict) else []:
            detail = ", ".join(
                f"{k}={_fmt(v)}" for k, v in record.items() if k not in {"step", "epoch", "sparsity", "finetune"}
            )
            table.add_row(
                str(record.get("step", "")),
                str(record.get("epoch", "")),
                _fmt(record.get("sparsity")),
                str(record.get("finetune", "")),
                detail,
            )
    metrics = summary.get("run", {}).get("metrics", {})
    for name in ("test/acc", "val/acc", "prune/sparsity"):
        if name in metrics:
            table.add_row("final", "", "", "", f"{name}={metrics[name]:.4f}")
    return table


def print_summary(path: str | os.PathLike) -> None:
    with open(path) as handle:
        Console().print(summary_table(json.load(handle)))


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
