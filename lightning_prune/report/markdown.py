"""What the run and the sweep reports share: markdown tables, number formatting, and saving plots beside them."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPORT = "report.md"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A markdown table; numbers through :func:`fmt`, ``|`` escaped."""
    cells = [[fmt(cell).replace("|", "\\|") for cell in row] for row in rows]
    return [f"| {' | '.join(headers)} |", f"|{'---|' * len(headers)}", *(f"| {' | '.join(row)} |" for row in cells)]


def fmt(value: Any) -> str:
    """Integers and integral floats without decimals, other floats with 4; None as a dash."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def matplotlib_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


class Plots:
    """Saves each figure beside ``report.md`` and remembers why the ones not drawn were skipped."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.skipped: dict[str, str] = {}
        self.available = matplotlib_available()

    def add(self, name: str, title: str, missing: str | None, *args: Any) -> list[str]:
        """Draw ``plots.<name>(*args)`` into ``<name>.png`` unless ``missing`` says why not; markdown lines."""
        if missing is None and not self.available:
            missing = "matplotlib is not installed (pip install 'lightning-prune[report]')"
        if missing is not None:
            self.skipped[title] = missing
            (self.directory / f"{name}.png").unlink(missing_ok=True)  # from an earlier report of this directory
            return []
        from lightning_prune.report import plots

        figure = getattr(plots, name)(*args)
        plots.save(figure, self.directory / f"{name}.png")
        return [f"![{title}]({name}.png)", ""]

    def skipped_lines(self) -> list[str]:
        if not self.skipped:
            return []
        return ["## Plots not drawn", "", *(f"- **{title}**: {why}." for title, why in self.skipped.items()), ""]
