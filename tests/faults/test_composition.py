"""Every pair of our callbacks in one Trainer, a callback with a second instance of itself included: it works
(a short fit completes and each callback writes its own summary section), or it is refused at fit start, before
the first optimizer step, by a message naming both (or, for a listener without a pruner, saying it needs one).

Before issue 17 two pruners in one Trainer clashed silently: the first one's stop ended training, the second
stopped short of its target, and its summary section overwrote the first one's.
"""

from __future__ import annotations

import itertools
import json

import lightning.pytorch as pl
import pytest

from lightning_prune import AccuracyGate, LatencyBenchmark, LayerFreezing, PruningAwareLR
from tests.faults.setups import PRUNERS, SETUPS, trainer

LISTENERS = ["AccuracyGate", "LayerFreezing", "PruningAwareLR"]
NAMES = [*PRUNERS, *LISTENERS, "LatencyBenchmark"]
ABBREVIATION = dict(zip(["It", "Bl", "APP", "ISP", "DU", "LB", "Gate", "Frz", "LR", "Bench"], NAMES))

# The expected outcome of every pair, by row and column (symmetric; checked below):
#   W      works: the fit completes and each callback writes its own summary section
#   2      two pruners: refused, "more than one pruning callback", naming both
#   A      APP trains every epoch: it refuses listeners (or the listener refuses it), naming both
#   S      a listener beside a pruner with no steps (ODF2NNA's one rebuild): find_pruner's refusal, naming both
#   N      a listener with no pruner at all: find_pruner's refusal ("needs exactly one")
#   B      two LatencyBenchmarks: refused, "more than one LatencyBenchmark" (they would share a summary section)
EXPECTED_TABLE = """
        It   Bl   APP  ISP  DU   LB   Gate Frz  LR   Bench
It      2    2    2    2    2    2    W    W    W    W
Bl      2    2    2    2    2    2    W    W    W    W
APP     2    2    2    2    2    2    A    A    A    W
ISP     2    2    2    2    2    2    W    W    W    W
DU      2    2    2    2    2    2    S    S    S    W
LB      2    2    2    2    2    2    W    W    W    W
Gate    W    W    A    W    S    W    N    N    N    N
Frz     W    W    A    W    S    W    N    N    N    N
LR      W    W    A    W    S    W    N    N    N    N
Bench   W    W    W    W    W    W    N    N    N    B
"""
SECTION = {name: SETUPS[name].section for name in PRUNERS} | {
    "AccuracyGate": "ice_gate",
    "LayerFreezing": "ice_freezing",
    "PruningAwareLR": "ice_lr",
    "LatencyBenchmark": "latency_benchmark",
}
# A second instance of the same class differs in its state_key (Lightning refuses two with the same key).
SECOND = {name: SETUPS[name].other for name in PRUNERS} | {
    "AccuracyGate": {"threshold": 0.5},
    "LayerFreezing": {"fraction": 0.5},
    "PruningAwareLR": {"base_lr": 0.01},
    "LatencyBenchmark": {"batch_sizes": [2], "filename": "latency_2.json"},
}
OTHERS = {
    "AccuracyGate": AccuracyGate,
    "LayerFreezing": LayerFreezing,
    "PruningAwareLR": PruningAwareLR,
    "LatencyBenchmark": lambda **kw: LatencyBenchmark(**{"batch_sizes": [1], "threads": 1, "repeats": 3, **kw}),
}


def expected() -> dict[tuple[str, str], str]:
    header, *rows = [line.split() for line in EXPECTED_TABLE.strip().splitlines()]
    return {
        (ABBREVIATION[row[0]], ABBREVIATION[column]): outcome
        for row in rows
        for column, outcome in zip(header, row[1:])
    }


EXPECTED = expected()
PAIRS = list(itertools.combinations_with_replacement(NAMES, 2))


def _make(name: str, second: bool):
    kwargs = SECOND[name] if second else {}
    return SETUPS[name].make(**kwargs) if name in SETUPS else OTHERS[name](**kwargs)


def test_the_table_covers_every_pair_once_and_is_symmetric():
    assert set(EXPECTED) == set(itertools.product(NAMES, NAMES))
    assert all(EXPECTED[a, b] == EXPECTED[b, a] for a, b in EXPECTED)
    assert set(EXPECTED.values()) <= {"W", "2", "A", "S", "N", "B"}


def _model(setup, trained: bool, trainer_kwargs: dict):
    """The setup's model; trained for two dense epochs first beside the gate (it refuses an A0 at chance level)."""
    model = setup.model()
    if trained:
        pl.Trainer(max_epochs=2, **trainer_kwargs).fit(model, datamodule=setup.data())
    return model


def _refusal(outcome: str, a: str, b: str) -> str:
    """A regular expression the refusal must match."""
    listener = a if a in LISTENERS else b
    return {
        "2": "more than one pruning callback",
        "A": rf"AnytimeProgressivePruning does not work with .*{listener}|{listener} cannot work with Anytime",
        "S": rf"{listener} cannot work with DenseUnitPruning: that pruner has no pruning steps",
        "N": rf"({a}|{b}) works around a pruning callback and needs exactly one .*found none",
        "B": "more than one LatencyBenchmark",
    }[outcome]


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_pair_of_callbacks_works_or_is_refused_naming_both(a, b, tmp_path, trainer_kwargs):
    outcome = EXPECTED[a, b]
    pruner = next((name for name in (a, b) if name in PRUNERS), "IterativePruning")  # its model and data
    setup = SETUPS[pruner]
    run = trainer(setup, tmp_path, trainer_kwargs, [_make(a, False), _make(b, a == b)])
    if outcome == "W":
        run.fit(_model(setup, "AccuracyGate" in (a, b), trainer_kwargs), datamodule=setup.data())
        sections = set(json.loads((tmp_path / "summary.json").read_text()))
        assert len(sections) == 2, f"{a} and {b} wrote the summary sections {sorted(sections)}"  # none overwritten
        assert a == b or sections == {SECTION[a], SECTION[b]}
        return
    with pytest.raises(ValueError, match=_refusal(outcome, a, b)) as error:
        run.fit(setup.model(), datamodule=setup.data())
    assert run.global_step == 0
    message = str(error.value)
    if outcome != "N":
        assert a in message
        assert b in message
        if a == b:
            assert message.count(a) >= 2  # the same class twice: both instances named
    assert not (tmp_path / "summary.json").exists()
