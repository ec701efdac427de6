"""What is checkable before training is refused at construction, naming the argument.

Before issue 17 a bad ``export_dir`` failed only after all training as a bare OS error, and numbers given as
strings (as YAML or a CLI may give them: ``target_sparsity="0.5"``) raised ``TypeError: '<' not supported``.
The numeric arguments are discovered from each constructor's signature, so a new one is covered at once.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from lightning_prune import (
    AccuracyGate,
    AnytimeProgressivePruning,
    BlockPruning,
    DenseUnitPruning,
    InstantSoupPruning,
    IterativePruning,
    LatencyBenchmark,
    LatencyBudgetPruning,
    LayerFreezing,
    PruningAwareLR,
)
from lightning_prune.core import validate

CALLBACKS = [
    IterativePruning,
    BlockPruning,
    AnytimeProgressivePruning,
    InstantSoupPruning,
    DenseUnitPruning,
    LatencyBudgetPruning,
    AccuracyGate,
    LayerFreezing,
    PruningAwareLR,
    LatencyBenchmark,
]
BY_NAME = {cls.__name__: cls for cls in CALLBACKS}
# What a callback needs to be built at all.
REQUIRED: dict[str, dict[str, Any]] = {
    "IterativePruning": {"target_sparsity": 0.5},
    "InstantSoupPruning": {"target_sparsity": 0.5},
}
# Arguments that only count in a context: the string is given there, where a number would be used.
CONTEXT: dict[tuple[str, str], dict[str, Any]] = {
    ("IterativePruning", "num_steps"): {"schedule": "cubic"},
    ("IterativePruning", "rewind_epoch"): {"warmup_epochs": 1},
    ("LatencyBudgetPruning", "latency_budget_ms"): {"budget_fraction": None},
    ("InstantSoupPruning", "copy_sparsities"): {"variant": "ims", "target_sparsity": None},
}
# A valid value for numeric arguments whose default is None (the string given is this value's text).
VALID = {
    "target_sparsity": 0.5,
    "num_steps": 3,
    "rewind_epoch": 0,
    "latency_budget_ms": 3.0,
    "calibration_steps": 3,
    "patience": 3,
    "retrain_epochs": 2,
    "threads": 1,
    "val_batches": 4,
    "base_lr": 0.01,  # PruningAwareLR: None scales the user's rate
    "delta": 0.5,  # PruningAwareLR: None picks the mode's default
    "round_to": 8,  # LatencyBudgetPruning: None picks the device's SIMD channel block
}
# Numeric by annotation, yet a string is legitimate: none today (e.g. a "1:3" slice syntax would go here).
SKIP: dict[tuple[str, str], str] = {}


def _kind(annotation: Any) -> str | None:
    """``"number"``, ``"numbers"`` (a sequence of them) or ``None``, from an annotation written as text."""
    words = set(re.findall(r"\w+", str(annotation)))
    if not words & {"int", "float"}:
        return None
    return "numbers" if "Sequence" in words or "list" in words else "number"


def numeric_arguments() -> list[tuple[str, str, str]]:
    found = []
    for cls in CALLBACKS:
        for parameter in inspect.signature(cls.__init__).parameters.values():
            kind = _kind(parameter.annotation)
            if kind and (cls.__name__, parameter.name) not in SKIP:
                found.append((cls.__name__, parameter.name, kind))
    return found


NUMERIC = numeric_arguments()


def _build(name: str, **kwargs: Any) -> Any:
    return BY_NAME[name](**{**REQUIRED.get(name, {}), **kwargs})


def _number(name: str, argument: str) -> Any:
    default = inspect.signature(BY_NAME[name].__init__).parameters[argument].default
    value = VALID[argument] if default is None else default
    return list(value) if isinstance(value, tuple) else value


def _as_string(value: Any, form: str) -> Any:
    if not isinstance(value, list):
        return str(value)
    return [str(v) for v in value] if form == "list of strings" else str(value[0])


def _named(argument: str, message: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(argument)}(?!\w)", message) is not None


def test_every_callback_has_numeric_arguments_discovered():
    assert {name for name, _, _ in NUMERIC} == set(BY_NAME)
    assert ("IterativePruning", "target_sparsity", "number") in NUMERIC
    assert ("LatencyBenchmark", "batch_sizes", "numbers") in NUMERIC
    assert not any(argument in ("prune_head", "export_dir", "monitor") for _, argument, _ in NUMERIC)


@pytest.mark.parametrize(
    ("name", "argument", "kind", "form"),
    [
        (name, argument, kind, form)
        for name, argument, kind in NUMERIC
        for form in (["string"] if kind == "number" else ["string", "list of strings"])
    ],
)
def test_number_given_as_a_string_is_refused_naming_it(name, argument, kind, form):
    context, number = CONTEXT.get((name, argument), {}), _number(name, argument)
    _build(name, **{**context, argument: number})  # the number itself is accepted
    value = _as_string(number, form)
    with pytest.raises(ValueError) as error:
        _build(name, **{**context, argument: value})
    assert _named(argument, str(error.value)), f"{argument}={value!r}: {error.value}"


@pytest.mark.parametrize("name", list(BY_NAME))
def test_export_dir_an_existing_file_is_refused(name, tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match=rf"export_dir={re.escape(repr(str(path)))} is an existing file"):
        _build(name, export_dir=str(path))


@pytest.mark.parametrize("name", list(BY_NAME))
def test_export_dir_below_a_file_is_refused(name, tmp_path):
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "out"
    with pytest.raises(ValueError, match=r"export_dir=.* lies below .*file'?, which is a file"):
        _build(name, export_dir=str(path))


@pytest.mark.parametrize("name", list(BY_NAME))
def test_export_dir_not_writable_is_refused(name, tmp_path, monkeypatch):
    """A read-only folder (simulated: the tests may run as root, who may write anywhere)."""
    monkeypatch.setattr(validate.os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(ValueError, match=r"export_dir=.* cannot be created or written: .* is not writable"):
        _build(name, export_dir=str(tmp_path / "out"))


@pytest.mark.parametrize("name", list(BY_NAME))
def test_export_dir_with_a_tilde_is_expanded(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _build(name, export_dir="~/out").export_dir == str(Path(tmp_path) / "out")


@pytest.mark.parametrize("where", ["a directory", "below a file"])
def test_lut_path_not_a_writable_file_is_refused(where, tmp_path):
    (tmp_path / "file").write_text("")
    path = tmp_path if where == "a directory" else tmp_path / "file" / "table.json"
    with pytest.raises(ValueError, match="lut_path="):
        LatencyBudgetPruning(lut_path=str(path))
