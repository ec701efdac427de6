"""The progress helper: silent off a terminal, under CI, when disabled, off rank zero, and before its delay."""

import io
import time

import pytest
from lightning.pytorch.utilities import rank_zero_only
from rich.console import Console
from rich.progress import Progress

from lightning_prune.progress import progress, progress_enabled, track


def terminal() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=100)


def test_enabled_only_on_a_terminal_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("LIGHTNING_PRUNE_PROGRESS", raising=False)
    assert progress_enabled(terminal())
    assert not progress_enabled(Console(file=io.StringIO()))


@pytest.mark.parametrize(("variable", "value"), [("CI", "true"), ("LIGHTNING_PRUNE_PROGRESS", "0")])
def test_ci_and_the_switch_silence_it(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    assert not progress_enabled(terminal())


def test_only_rank_zero_draws(monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 1, raising=False)
    console = terminal()
    assert not progress_enabled(console)
    with progress("latency table", total=3, enabled=True, delay_s=0, console=console) as advance:
        advance()
    assert console.file.getvalue() == ""


def test_draws_after_the_delay_and_counts_every_step():
    console = terminal()
    assert list(track(range(4), "knapsack", enabled=True, delay_s=60, console=console)) == [0, 1, 2, 3]
    assert console.file.getvalue() == ""  # quick phases print nothing
    with progress("soup ingredients", total=3, enabled=True, delay_s=0, console=console) as advance:
        for _ in range(3):
            advance()
            time.sleep(0.02)
    assert "soup ingredients" in console.file.getvalue()


def test_nests_under_a_running_training_bar():
    console = terminal()
    training = Progress(console=console)
    training.start()
    task = training.add_task("Epoch 0", total=2)
    for _ in track(range(3), "latency table", enabled=True, delay_s=0, console=console):
        training.advance(task)
    training.stop()
    assert "latency table" in console.file.getvalue()
    assert "Epoch 0" in console.file.getvalue()
