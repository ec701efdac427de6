"""The zoo matrix's session plumbing: the baseline cache, each cell's outcome, and ``ZOO_RECORD=1`` recording."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.zoo import cells, record
from tests.zoo.expected import ACC_BOUND_PT, ACC_BOUND_PT_BY_MODEL, EXPECTED, Refused, Warned, XFail, all_cells
from tests.zoo.models import ZOO


@pytest.fixture(scope="session")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict[str, Any]]:
    """``baseline(model)``: plain training in the model's Trainer (no callback), fitted once per session."""

    def get(name: str) -> dict[str, Any]:
        if name not in record.BASELINES:
            done = cells.fit(ZOO[name], tmp_path_factory.mktemp(f"baseline-{name}"), [])
            record.BASELINES[name] = {"acc": round(cells.evaluate(done.module, done.val_loader), 4),
                                      "fit_s": round(done.seconds, 1)}  # fmt: skip
        return record.BASELINES[name]

    return get


def _outcome(item: pytest.Item, report: pytest.TestReport) -> str:
    expected = EXPECTED.get(item.callspec.params["cell"])
    if hasattr(report, "wasxfail"):
        return "xfail" if report.skipped else "xpass"  # a non-strict xfail that passed this time
    if isinstance(expected, XFail) and report.failed and str(report.longrepr).startswith("[XPASS"):
        return "xpass"
    if report.skipped:
        return "skipped"
    if report.failed:
        return "fail"
    if isinstance(expected, Warned):
        return "warned"
    return "refused" if isinstance(expected, Refused) else "pass"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if "zoo_cell" not in item.keywords or report.when not in ("setup", "call"):
        return
    if report.when == "call" or report.outcome != "passed":  # a skip at setup (importorskip) or the call's result
        entry = record.cell(*item.callspec.params["cell"])
        entry["outcome"] = _outcome(item, report)
        entry["wall_s"] = round(report.duration, 1)
        expected = EXPECTED.get(item.callspec.params["cell"])
        entry["kind"] = cells.COLUMNS[entry["callback"]].target
        if isinstance(expected, XFail):
            entry["reason"], entry["short"] = expected.reason, expected.short
        if isinstance(expected, Warned):
            entry["short"] = expected.short


def pytest_runtest_setup(item: pytest.Item) -> None:
    if "zoo_cell" in item.keywords:
        record.tick()


def pytest_runtest_teardown(item: pytest.Item) -> None:
    if "zoo_cell" in item.keywords:
        record.tick()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if os.environ.get(record.ENV) != "1" or not record.CELLS:
        return
    problems = record.complete(all_cells())
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if problems:
        message = f"{record.ENV}=1: {record.OUT} not written, the matrix did not run whole and as expected: {problems}"
    else:
        settings = {"max_epochs": cells.MAX_EPOCHS, "cell_limit_s": cells.CELL_LIMIT_S, "acc_bound_pt": ACC_BOUND_PT,
                    "acc_bound_pt_by_model": ACC_BOUND_PT_BY_MODEL, "target_sparsity": cells.TARGET}  # fmt: skip
        names = {"columns": {c.name: c.title for c in cells.COLUMNS.values()},
                 "models": {m.name: m.title for m in ZOO.values()}}  # fmt: skip
        path = record.write(all_cells(), {"settings": settings, **names})
        message = f"{record.ENV}=1: wrote {Path(path).relative_to(record.REPO)}"
    if reporter is not None:
        reporter.write_line(message)
