"""docs/guarantees.md stays true to this catalogue: its case count is the number of cases collected here, and
every test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import REPO

DOC = REPO / "docs" / "guarantees.md"
FAULTS = Path(__file__).resolve().parent


class _Collector:
    """A pytest plugin keeping the node ids a collection ends with."""

    def __init__(self) -> None:
        self.nodeids: list[str] = []

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.nodeids = [item.nodeid for item in session.items]


@pytest.fixture(scope="module")
def collected() -> list[str]:
    """Every case in tests/faults/, the slow ones included (``-m ""`` clears the default marker filter)."""
    collector = _Collector()
    args = ["--collect-only", "-q", "-m", "", "-p", "no:cacheprovider", "--rootdir", str(REPO), str(FAULTS)]
    assert pytest.main(args, plugins=[collector]) == pytest.ExitCode.OK
    return collector.nodeids


def test_the_documented_case_count_is_the_collected_one(collected):
    counts = re.findall(r"\*\*(\d+) cases\*\*", DOC.read_text())
    assert len(counts) == 1, "docs/guarantees.md must state the count once, as **N cases**"
    assert int(counts[0]) == len(collected), f"docs/guarantees.md: {counts[0]}; tests/faults/ holds {len(collected)}"
    assert len(collected) >= 100


def test_every_test_the_guarantees_name_exists(collected):
    named = set(re.findall(r"`(tests/faults/\w+\.py::\w+)`", DOC.read_text()))
    functions = {nodeid.split("[")[0] for nodeid in collected}
    assert named, "docs/guarantees.md names no test"
    assert sorted(named - functions) == []
    assert sorted(functions - named) == [], "every test in tests/faults/ holds a guarantee listed in the page"
