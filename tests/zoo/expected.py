"""What each matrix cell is expected to do: work (no entry), refuse at fit start, or fail today (a strict xfail).

``Refused(match)``: the fit raises before any optimizer step and the message contains ``match``. ``XFail(reason)``:
a bug, said precisely; the cell asserts that it works, so the fix makes it XPASS (a failure under
``xfail_strict``) and the entry must go. Everything not listed must work: the target reached (within
``SPARSITY_TOLERANCE``, or at least ``MIN_SHRINK`` of the parameters removed, or the latency budget met) and the
validation accuracy no more than ``ACC_BOUND_PT`` below plain training in the same Trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.zoo.cells import COLUMNS
from tests.zoo.models import ZOO

ACC_BOUND_PT = 5.0  # issue 21: no callback's defaults end a from-scratch run more than 5 pt below plain training
SPARSITY_TOLERANCE = 0.01
MIN_SHRINK = 0.1  # structured pruners: at least this share of all parameters removed


@dataclass(frozen=True)
class Refused:
    match: str


@dataclass(frozen=True)
class XFail:
    reason: str  # what goes wrong, precisely (pytest shows it; docs/zoo.md lists it)
    short: str  # the README cell: "crash", "prunes nothing", "-21 pt", ...


EXPECTED: dict[tuple[str, str], Refused | XFail] = {}

SLOW_COLUMNS: dict[str, set[str]] = {}  # model -> columns whose cell runs under -m slow (all of a slow model's)


def all_cells() -> list[tuple[str, str]]:
    return [(model, column) for model in ZOO for column in COLUMNS]


def marks(model: str, column: str) -> list[Any]:
    found: list[Any] = []
    if ZOO[model].slow or column in SLOW_COLUMNS.get(model, set()):
        found.append(pytest.mark.slow)
    expected = EXPECTED.get((model, column))
    if isinstance(expected, XFail):
        found.append(pytest.mark.xfail(strict=True, reason=expected.reason))
    return found
