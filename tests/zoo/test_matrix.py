"""Every callback on every zoo model: it works, or it refuses at fit start; a known bug is a strict xfail.

A cell fits a zoo model from scratch in its Trainer with one column's callbacks (:mod:`tests.zoo.cells`), passing
the loaders straight to ``fit``. "Works" means the target is reached, measured on the weights (sparsity of the
selected weights, parameters removed, the latency budget's final side-by-side check, the benchmark's records), and
the validation accuracy ends at most ``ACC_BOUND_PT`` below plain training in the same Trainer. "Refuses" means the
fit raises before any optimizer step, with the message asserted. "Warns" means a warning naming the cause and the
fix is emitted before any optimizer step and the target is reached; the accuracy is recorded, not bounded (the user
was told). Cells that do none of these today are listed in
:data:`tests.zoo.expected.EXPECTED` as strict xfails naming what goes wrong, so a fix turns them into failures (XPASS)
until their entry is removed. ``ZOO_RECORD=1 python -m pytest tests/zoo -m zoo`` also writes docs/zoo/matrix.json,
the README's matrix (``python -m lightning_prune.bench.docs`` renders it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import warnings_before_first_step
from tests.zoo import cells, record
from tests.zoo.expected import (
    EXPECTED,
    MIN_SHRINK,
    SPARSITY_TOLERANCE,
    Refused,
    Warned,
    acc_bound_pt,
    all_cells,
    marks,
)
from tests.zoo.models import ZOO

pytestmark = pytest.mark.zoo


def _params() -> list[Any]:
    return [pytest.param((m, c), marks=[pytest.mark.zoo_cell, *marks(m, c)], id=f"{m}-{c}") for m, c in all_cells()]


@pytest.mark.parametrize("cell", _params())
def test_cell(cell: tuple[str, str], baseline: Callable[[str], dict[str, Any]], tmp_path: Path) -> None:
    model, column = cell
    zoo, spec = ZOO[model], cells.COLUMNS[column]
    if zoo.needs:
        pytest.importorskip(zoo.needs)
    entry = record.cell(model, column)
    expected = EXPECTED.get(cell)
    if isinstance(expected, Refused):
        _assert_refused(zoo, spec, tmp_path, expected, entry)
        return
    reference = baseline(model)["acc"]  # before the cell's own fit: its time is the baseline's, not the cell's
    callbacks = spec.make(zoo, str(tmp_path / "out"))
    run = cells.Cell(zoo, tmp_path, callbacks)
    later: list[str] = []
    try:
        with warnings_before_first_step(later) as early:
            run.fit()
    except Exception as error:
        entry["error"] = record.error_text(error)
        entry["global_step"] = run.trainer.global_step
        raise
    figures = cells.measure(spec, run, callbacks, tmp_path / "out")
    figures["acc_delta_pt"] = round(100 * (figures["acc"] - reference), 1)
    entry["figures"] = figures
    _assert_reached(spec, figures)
    if isinstance(expected, Warned):
        seen = early if expected.when == Warned.when else later
        told = [message for message in seen if expected.match in message]
        assert told, f"no warning containing {expected.match!r} {expected.when}; seen: {seen}"
        entry["message"], entry["when"] = told[0][:300], expected.when
        return  # the user was told why the accuracy falls short: the bound is not theirs to rely on
    bound = acc_bound_pt(model)
    assert figures["acc_delta_pt"] >= -bound, (
        f"validation accuracy {figures['acc']:.3f} is {-figures['acc_delta_pt']} pt below plain training's "
        f"{reference:.3f} (bound {bound} pt)"
    )


def _assert_refused(zoo: Any, spec: cells.Column, root: Path, expected: Refused, entry: dict[str, Any]) -> None:
    run = cells.Cell(zoo, root, spec.make(zoo, str(root / "out")))
    with pytest.raises(Exception) as caught:
        run.fit()
    entry["message"] = record.error_text(caught.value)
    assert run.trainer.global_step == 0, f"refused after {run.trainer.global_step} optimizer steps, not at fit start"
    assert expected.match in str(caught.value)


def _assert_reached(spec: cells.Column, figures: dict[str, Any]) -> None:
    if spec.target == "sparsity":
        assert figures["sparsity"] == pytest.approx(figures["target"], abs=SPARSITY_TOLERANCE)
    elif spec.target == "shrink":
        assert figures["params_removed"] >= MIN_SHRINK, f"removed {figures['params_removed']:.1%} of the parameters"
    elif spec.target == "budget":
        assert figures["met_budget"], f"latency {figures['latency_vs_dense']} of dense misses the budget"
        assert figures["params_removed"] > 0
    else:
        assert figures["measurements"] == ["fit_start", "fit_end"]


def test_a_measuring_callback_leaves_the_training_run_unchanged(tmp_path: Path) -> None:
    """LatencyBenchmark only times the model: the weights it ends with equal plain training's, bit for bit."""
    zoo = ZOO["mlp"]  # no BatchNorm, no dropout: only the data order could differ
    plain = cells.fit(zoo, tmp_path / "plain", [])
    measured = cells.fit(zoo, tmp_path / "measured", cells.latency_benchmark(zoo, str(tmp_path / "out")))
    for (name, weight), other in zip(plain.module.state_dict().items(), measured.module.state_dict().values()):
        assert torch.equal(weight, other), f"{name} differs"
