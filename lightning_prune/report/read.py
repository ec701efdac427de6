"""Reading what a run left behind (``summary.json``, ``csv/metrics.csv``, Hydra's overrides) into plain rows.

Everything here is pure Python over the files: no Lightning, no matplotlib, so the end-of-run console
summary (:mod:`lightning_prune.report.console`) shares it at no cost. The layout these functions expect is
documented in :mod:`lightning_prune.report`.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SUMMARY = "summary.json"
CSV_LOG = Path("csv") / "metrics.csv"
OVERRIDES = Path(".hydra") / "overrides.yaml"
DEFAULT_MONITOR = "val/acc"
# Keys of a history record the step table shows in its own columns (everything else scalar goes to "detail").
KNOWN_KEYS = {"step", "epoch", "sparsity", "finetune", "reason"}
LATENCY_KEYS = ("latency/p50_ms", "p50_ms", "latency_ms", "measured_ms")


@dataclass
class Step:
    """One pruning step of one section's history, normalised.

    ``acc_before`` is what the record holds; ``before_fresh`` is False when no validation ran since the
    previous step (same epoch: the previous fine-tune was skipped), so the value describes an older model.
    """

    section: str
    step: int
    epoch: int | None
    sparsity: float
    sparsity_before: float
    acc_before: float | None
    before_fresh: bool
    acc_pruned: float | None
    acc_finetuned: float | None
    finetune: str
    reason: str
    latency_ms: float | None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """One run directory: its summary, its CSV log as ``{column: [(epoch, value), ...]}``, its overrides."""

    path: Path
    summary: dict[str, Any]
    log: dict[str, list[tuple[float, float]]]
    overrides: list[str]

    @property
    def name(self) -> str:
        return self.path.name


def load_run(path: str | Path) -> Run:
    """Read one run directory (``summary.json`` required; CSV log and overrides optional).

    Raises:
        FileNotFoundError: naming the missing ``summary.json``.
        ValueError: naming a ``summary.json`` that is not a JSON object.
    """
    path = Path(path)
    summary_path = path / SUMMARY
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path}: no such file; a run directory holds the summary.json of its run")
    try:
        summary = json.loads(summary_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{summary_path}: not valid JSON ({err})") from err
    if not isinstance(summary, dict):
        raise ValueError(f"{summary_path}: expected a JSON object of sections, got {type(summary).__name__}")
    return Run(path, summary, read_csv_log(path / CSV_LOG), read_overrides(path / OVERRIDES))


def read_csv_log(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Lightning's CSVLogger file as ``{column: [(epoch, value), ...]}`` (empty cells dropped; {} if absent)."""
    if not path.is_file():
        return {}
    series: dict[str, list[tuple[float, float]]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            epoch = as_number(row.get("epoch"))
            for column, cell in row.items():
                value = as_number(cell)
                if column not in ("epoch", "step") and value is not None and epoch is not None:
                    series.setdefault(column, []).append((epoch, value))
    return series


def read_overrides(path: Path) -> list[str]:
    if not path.is_file():
        return []
    loaded = yaml.safe_load(path.read_text())
    return [str(item) for item in loaded or []]


# ---------------------------------------------------------------- sections


def sections(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The summary's sections that are JSON objects (every callback's, and ``run``)."""
    return {name: data for name, data in summary.items() if isinstance(data, dict)}


def pruning_histories(summary: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Sections whose ``history`` records carry a ``sparsity``: the pruners' step lists."""
    found = {}
    for name, data in sections(summary).items():
        records = [r for r in as_list(data.get("history")) if isinstance(r, dict)]
        if any(as_number(r.get("sparsity")) is not None for r in records):
            found[name] = [r for r in records if as_number(r.get("sparsity")) is not None]
    return found


def other_histories(summary: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Sections with a ``history`` of records but no sparsity in them (gates, LR schedules, ...)."""
    pruners = pruning_histories(summary)
    found = {}
    for name, data in sections(summary).items():
        records = [r for r in as_list(data.get("history")) if isinstance(r, dict)]
        if name not in pruners and records:
            found[name] = records
    return found


def steps(run: Run) -> list[Step]:
    """Every pruner section's history as :class:`Step` rows, with after-fine-tune accuracy from the CSV log."""
    rows = []
    for name, records in pruning_histories(run.summary).items():
        previous_sparsity, previous_epoch = 0.0, None
        for index, record in enumerate(records):
            epoch = as_int(record.get("epoch"))
            monitor, before = _accuracy(record, "_before")
            step = Step(
                section=name,
                step=as_int(record.get("step")) or index + 1,
                epoch=epoch,
                sparsity=float(record["sparsity"]),
                sparsity_before=previous_sparsity,
                acc_before=before,
                before_fresh=index == 0 or epoch is None or epoch != previous_epoch,
                acc_pruned=_accuracy(record, "_after")[1],
                acc_finetuned=_accuracy(record, "_finetuned")[1],
                finetune=str(record.get("finetune") or ""),
                reason=str(record.get("reason") or ""),
                latency_ms=_first_number(record, LATENCY_KEYS),
                detail={k: v for k, v in record.items() if k not in KNOWN_KEYS and is_scalar(v)},
            )
            if step.acc_finetuned is None and step.finetune not in ("skipped", "none"):
                step.acc_finetuned = _finetuned_from_log(run.log, monitor or DEFAULT_MONITOR, records, index)
            rows.append(step)
            previous_sparsity, previous_epoch = step.sparsity, epoch
    return rows


def monitor(summary: dict[str, Any]) -> str:
    """The accuracy metric the pruners recorded (``val/acc`` from ``val/acc_before``), default ``val/acc``."""
    for records in pruning_histories(summary).values():
        for record in records:
            for suffix in ("_before", "_after", "_finetuned"):
                name, _ = _accuracy(record, suffix)
                if name:
                    return name
    return DEFAULT_MONITOR


def _accuracy(record: dict[str, Any], suffix: str) -> tuple[str | None, float | None]:
    """``(monitor, value)`` of the first key ``acc<suffix>`` or ``<monitor><suffix>`` naming an accuracy."""
    for key, value in record.items():
        if key.endswith(suffix) and "acc" in key[: -len(suffix)] and as_number(value) is not None:
            monitor = key[: -len(suffix)]
            return (monitor if "/" in monitor else None), float(value)
    return None, None


def _finetuned_from_log(
    log: dict[str, list[tuple[float, float]]], monitor: str, records: list[dict[str, Any]], index: int
) -> float | None:
    """The monitored value at the last epoch of step ``index``'s fine-tune (before the next step's epoch)."""
    epoch = as_int(records[index].get("epoch"))
    values = log.get(monitor)
    if epoch is None or not values:
        return None
    later = [as_int(r.get("epoch")) for r in records[index + 1 :]]
    next_epoch = next((e for e in later if e is not None and e > epoch), math.inf)
    inside = [value for at, value in values if epoch <= at < next_epoch]
    return inside[-1] if inside else None


# ---------------------------------------------------------------- small helpers


def as_number(value: Any) -> float | None:
    """``value`` as a finite float when it is a number or a numeric string; else None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def as_int(value: Any) -> int | None:
    number = as_number(value)
    return int(number) if number is not None else None


def _first_number(record: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    return next((as_number(record[k]) for k in keys if as_number(record.get(k)) is not None), None)


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None
