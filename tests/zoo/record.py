"""The matrix's record: every cell's outcome and figures, written to ``docs/zoo/matrix.json`` with ``ZOO_RECORD=1``.

The tests fill :data:`CELLS` (figures, refusal and warning messages, errors); ``conftest.py`` adds each cell's
outcome from its pytest report and, at the end of a session that ran the whole matrix with every cell as
expected, writes the JSON that ``python -m lightning_prune.bench.docs`` renders into the README
(:mod:`lightning_prune.bench.zoo`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "docs" / "zoo" / "matrix.json"
ENV = "ZOO_RECORD"
COMMAND = "ZOO_RECORD=1 python -m pytest tests/zoo -m zoo"
CELLS: dict[tuple[str, str], dict[str, Any]] = {}
BASELINES: dict[str, dict[str, Any]] = {}
CLOCK: dict[str, float] = {}  # first zoo test's start, last one's end (perf_counter)
# xpass: a non-strict (timing-dependent) xfail passed; warned: warned at fit start, accuracy recorded, not bounded
EXPECTED_OUTCOMES = ("pass", "refused", "warned", "xfail", "xpass")


def cell(model: str, column: str) -> dict[str, Any]:
    return CELLS.setdefault((model, column), {"model": model, "callback": column})


def error_text(error: BaseException) -> str:
    """``Type: message`` of an exception, its first line only, at most 300 characters."""
    first = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first[:300]}"


def tick() -> None:
    now = time.perf_counter()
    CLOCK.setdefault("start", now)
    CLOCK["end"] = now


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def _host() -> dict[str, Any]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpus": os.cpu_count(), "omp_threads": os.environ.get("OMP_NUM_THREADS"), "load_at_end": load}


def complete(expected: list[tuple[str, str]]) -> list[str]:
    """Why the record cannot be written: cells that did not run or did not end as expected (empty: all good)."""
    problems = [f"{m}-{c}: not run" for m, c in expected if (m, c) not in CELLS or "outcome" not in CELLS[(m, c)]]
    problems += [
        f"{m}-{c}: {CELLS[(m, c)]['outcome']}"
        for m, c in expected
        if CELLS.get((m, c), {}).get("outcome", "pass") not in EXPECTED_OUTCOMES
    ]
    return problems


def write(expected: list[tuple[str, str]], described: dict[str, Any]) -> Path:
    record = {
        "command": COMMAND,
        "argv": " ".join(["python -m pytest", *sys.argv[1:]]),
        "commit": _commit(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "zoo_wall_s": round(CLOCK.get("end", 0.0) - CLOCK.get("start", 0.0), 1),
        "host": _host(),
        **described,
        "baselines": BASELINES,
        "cells": [CELLS[key] for key in expected],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    return OUT
