"""The committed matrix (docs/zoo/matrix.json, the README's table) is the record of the matrix as it is expected now."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from lightning_prune.bench import zoo
from tests.helpers import warnings_before_first_step
from tests.zoo import record
from tests.zoo.cells import COLUMNS
from tests.zoo.expected import EXPECTED, Refused, Warned, XFail, all_cells
from tests.zoo.models import ZOO


def committed() -> dict:
    return json.loads(record.OUT.read_text())


def test_the_record_has_every_cell_with_the_outcome_expected_today() -> None:
    """A cell whose expectation changed (a bug fixed, a refusal added) needs the matrix re-recorded."""
    cells = {(cell["model"], cell["callback"]): cell for cell in committed()["cells"]}
    assert sorted(cells) == sorted(all_cells()), "re-record: ZOO_RECORD=1 python -m pytest tests/zoo -m zoo"
    for key, cell in cells.items():
        expected = EXPECTED.get(key)
        allowed = {Refused: {"refused"}, Warned: {"warned"}, XFail: {"xfail", "xpass"}}.get(type(expected), {"pass"})
        assert cell["outcome"] in allowed, f"{key}: recorded {cell['outcome']}, expected {allowed}; re-record"


def test_the_record_names_columns_and_models_as_the_tests_do() -> None:
    result = committed()
    assert result["columns"] == {c.name: c.title for c in COLUMNS.values()}
    assert result["models"] == {m.name: m.title for m in ZOO.values()}
    assert result["command"] == record.COMMAND


@pytest.mark.parametrize("kind", ["sparsity", "shrink", "budget", "measured"])
def test_a_working_cell_shows_what_it_reached(kind: str) -> None:
    figures = {"acc_delta_pt": -1.25, "params_removed": 0.47, "latency_vs_dense": 0.78}
    text = zoo._cell_text({"outcome": "pass", "kind": kind, "figures": figures})
    assert text.startswith("✓")
    assert text.endswith("-1.2 pt")
    assert ("47% params" in text) == (kind == "shrink")
    assert ("0.78x latency" in text) == (kind == "budget")


def test_refusals_and_bugs_read_as_such() -> None:
    assert zoo._cell_text({"outcome": "refused"}) == "refuses"
    assert zoo._cell_text({"outcome": "xfail", "short": "crash"}) == "✗ crash"
    passed = {"outcome": "xpass", "short": "overshoots", "figures": {"acc_delta_pt": -2.0}}
    assert zoo._cell_text(passed) == "✗ overshoots (this run: -2.0 pt)"


def test_a_warned_cell_shows_what_it_measured_and_that_it_was_warned() -> None:
    cell = {"outcome": "warned", "short": "SNIP on an untrained net", "message": "APP: SNIP prunes | at step 0",
            "figures": {"acc": 0.8, "acc_delta_pt": -15.6}}  # fmt: skip
    assert zoo._cell_text(cell) == "⚠ -15.6 pt (warned)"
    assert zoo._detail(cell) == (
        "SNIP on an untrained net; warned before the first step: APP: SNIP prunes \\| at step 0 "
        "(acc 0.8, acc_delta_pt -15.6)"
    )


def test_a_warning_counts_only_before_the_first_optimizer_step() -> None:
    """A warned cell whose warning comes late, or never, finds nothing here and fails."""
    weight = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    with warnings_before_first_step() as early:
        warnings.warn("at fit start", UserWarning, stacklevel=1)
        weight.grad = torch.ones(1)
        optimizer.step()
        warnings.warn("after the first step", UserWarning, stacklevel=1)
    assert early == ["at fit start"]


def test_the_count_names_warned_cells_only_when_there_are_some() -> None:
    outcomes = ["pass", "refused", "xfail", "xpass"]
    assert zoo._counts({"cells": [{"outcome": o} for o in outcomes]}) == "1 work, 1 refuse, 2 known bugs"
    warned = [*outcomes, "warned"]
    assert (
        zoo._counts({"cells": [{"outcome": o} for o in warned]})
        == "1 work, 1 refuse, 1 warn of the cause, 2 known bugs"
    )
