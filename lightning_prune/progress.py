"""Progress bars for long phases outside Lightning's loops: latency-table builds, soup ingredients, knapsack.

Lightning's progress bar covers training; a callback that works for a while in a hook (measuring a
lookup table, training soup ingredients, solving a knapsack) wraps that work in :func:`track` or
:func:`progress`. The bar is drawn only where someone can see it: on rank zero, on a terminal, not under
``CI=true``, not with ``LIGHTNING_PRUNE_PROGRESS=0`` (or ``enabled=False``), and only once the phase has
run longer than ``delay_s``: quick phases print nothing. It shares rich's global console with Lightning's
``RichProgressBar``, so it nests under a running training bar instead of fighting it. Until it shows,
each step costs one addition and one clock read.

Example::

    >>> from lightning_prune.progress import progress, track
    >>> sum(track(range(3), "latency table"))
    3
    >>> with progress("knapsack", total=2) as advance:
    ...     advance()
    ...     advance()
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from lightning.pytorch.utilities import rank_zero_only
from rich import get_console
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

ENV = "LIGHTNING_PRUNE_PROGRESS"
FALSE = {"0", "false", "no", "off"}
T = TypeVar("T")


def progress_enabled(console: Console | None = None) -> bool:
    """Whether a bar may be drawn here: rank zero, a terminal, not CI, not disabled by ``LIGHTNING_PRUNE_PROGRESS``."""
    if os.environ.get(ENV, "").strip().lower() in FALSE:
        return False
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        return False
    if getattr(rank_zero_only, "rank", 0) != 0:
        return False
    return (console or get_console()).is_terminal


class _Bar:
    """Counts steps; starts a rich bar on the first step after ``delay_s`` when allowed."""

    def __init__(self, description: str, total: int | None, enabled: bool, delay_s: float, console: Console) -> None:
        self.description, self.total, self.enabled, self.delay_s = description, total, enabled, delay_s
        self.console, self.count, self.started = console, 0, time.perf_counter()
        self.progress: Progress | None = None
        self.task = None

    def advance(self, steps: int = 1) -> None:
        self.count += steps
        if self.progress is None:
            if not self.enabled or time.perf_counter() - self.started < self.delay_s:
                return
            self._start()
        self.progress.update(self.task, completed=self.count)

    def _start(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn() if self.total else TextColumn("{task.completed}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=self.total, completed=self.count)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@contextmanager
def progress(
    description: str,
    total: int | None = None,
    enabled: bool | None = None,
    delay_s: float = 0.5,
    console: Console | None = None,
) -> Iterator[Callable[..., None]]:
    """Yield ``advance(steps=1)``; a bar ``description`` (``total`` steps, if known) shows once ``delay_s`` passed.

    Args:
        description: what is being done, e.g. ``"latency table"``.
        total: number of steps, or ``None`` for a counter without a bar end.
        enabled: ``None`` decides by :func:`progress_enabled`; ``False`` never shows; ``True`` shows even off a
            terminal (still rank zero only).
        delay_s: seconds before anything is drawn.
        console: rich console to draw on (default: rich's global one, shared with Lightning's bar).
    """
    console = console or get_console()
    allowed = progress_enabled(console) if enabled is None else enabled and getattr(rank_zero_only, "rank", 0) == 0
    bar = _Bar(description, total, allowed, delay_s, console)
    try:
        yield bar.advance
    finally:
        bar.close()


def track(
    items: Iterable[T],
    description: str,
    total: int | None = None,
    enabled: bool | None = None,
    delay_s: float = 0.5,
    console: Console | None = None,
) -> Iterator[T]:
    """Iterate ``items`` under :func:`progress` (``total`` defaults to ``len(items)`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(description, total, enabled, delay_s, console) as advance:
        for item in items:
            yield item
            advance()
