"""The numbers a report derives from a summary: final figures, latency, time per phase, per-layer values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lightning_prune.report.read import Run, as_dict, as_list, as_number, pruning_histories, sections

# Final figures shown in tables, and which way is better (+1: higher, -1: lower).
DIRECTION = {
    "test/acc": 1,
    "val/acc": 1,
    "test/r2": 1,
    "val/r2": 1,
    "sparsity": 1,
    "test/loss": -1,
    "val/loss": -1,
    "params": -1,
    "params_nonzero": -1,
    "latency_p50_ms": -1,
    "finetunes_skipped": 1,
    "wall_s": -1,
}
# Where final figures come from: a section's own keys, then its (or the run's) logged metrics.
SECTION_FIGURES = {
    "sparsity": "sparsity",
    "param_reduction": "sparsity",
    "params": "params",
    "params_nonzero": "params_nonzero",
    "params_after": "params_nonzero",
    "finetunes_skipped": "finetunes_skipped",
    "wall_s": "wall_s",
}
_METRICS = ("test/acc", "val/acc", "test/r2", "val/r2", "test/loss", "val/loss")
METRIC_FIGURES = {k: k for k in _METRICS} | {"prune/sparsity": "sparsity"}


def final_figures(run: Run) -> dict[str, float]:
    """The run's headline numbers: accuracy, loss, sparsity, size, latency, fine-tunes skipped, wall time.

    Metrics come from ``run.metrics`` first, then each section's ``metrics``; sparsity and size from the
    pruner sections (``sparsity`` or ``param_reduction``; ``params``/``params_nonzero`` or ``params_after``),
    else from a ``prune/sparsity`` metric.
    """
    figures: dict[str, float] = {}
    for data in _run_first(run.summary):
        _take(figures, data, SECTION_FIGURES)
        _take(figures, as_dict(data.get("metrics")), METRIC_FIGURES)
    latency, _ = final_latency(run.summary)
    if latency is not None:
        figures["latency_p50_ms"] = latency
    return {key: figures[key] for key in DIRECTION if key in figures}


def _take(figures: dict[str, float], data: dict[str, Any], names: dict[str, str]) -> None:
    """Copy ``data[source]`` to ``figures[target]`` for each ``source: target`` not already set."""
    for source, target in names.items():
        if target not in figures and as_number(data.get(source)) is not None:
            figures[target] = float(data[source])


@dataclass
class Latency:
    """One measured latency: what measured it (``label``), the pruned and the dense model's p50 in ms per batch.

    ``column`` is the CSV log column holding its per-epoch values, ``None`` when it has none.
    """

    label: str
    pruned_ms: float
    dense_ms: float | None
    column: str | None


def latencies(summary: dict[str, Any]) -> list[Latency]:
    """Every final latency the run measured, the primary one (:func:`final_latency`) first.

    Read from what the callbacks write: LatencyBenchmark's section (a ``history`` of records with ``p50_ms``
    per batch size: the ``fit_start`` record is the dense reference, the last is the final model; else the
    ``latency/<batch>/p50_ms`` and ``.../speedup`` metrics), a latency-budget section (``measured_ms`` against
    ``dense_ms`` at its ``batch_size``), a ``latency/p50_ms`` metric, or a ``*latency*`` section's ``p50_ms``.
    """
    found: list[Latency] = []
    metrics: dict[str, Any] = {}
    for data in reversed(_run_first(summary)):
        metrics.update(as_dict(data.get("metrics")))
    if as_number(metrics.get("latency/p50_ms")) is not None:
        dense = as_number(metrics.get("latency/dense_p50_ms"))
        found.append(Latency("latency/p50_ms metric", float(metrics["latency/p50_ms"]), dense, "latency/p50_ms"))
    found += sorted(_benchmark_latencies(summary, metrics), key=lambda lat: -_batch(lat.label))
    for name, data in sections(summary).items():
        measured, dense = as_number(data.get("measured_ms")), as_number(data.get("dense_ms"))
        if measured is not None and dense is not None:
            batch = as_number(data.get("batch_size"))
            where = f"batch {int(batch)} ({name} check)" if batch is not None else f"{name} check"
            found.append(Latency(where, measured, dense, "latency/measured_ms"))
        elif "latency" in name and as_number(data.get("p50_ms")) is not None:
            found.append(Latency(name, float(data["p50_ms"]), as_number(data.get("dense_p50_ms")), "latency/p50_ms"))
    return found


def _benchmark_latencies(summary: dict[str, Any], metrics: dict[str, Any]) -> list[Latency]:
    """One :class:`Latency` per batch size LatencyBenchmark measured (its section, else its logged metrics)."""
    for data in sections(summary).values():
        records = [r for r in as_list(data.get("history")) if isinstance(r, dict) and isinstance(r.get("p50_ms"), dict)]
        if records:
            reference = next((r for r in records if r.get("when") == "fit_start"), None)
            final = records[-1]["p50_ms"]
            return [
                Latency(
                    f"batch {b}",
                    float(ms),
                    as_number((reference or {}).get("p50_ms", {}).get(b)),
                    f"latency/{b}/p50_ms",
                )
                for b, ms in final.items()
                if as_number(ms) is not None
            ]
    found = []
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "latency" and parts[2] == "p50_ms" and as_number(value) is not None:
            speedup = as_number(metrics.get(f"latency/{parts[1]}/speedup"))
            dense = float(value) * speedup if speedup is not None else None
            found.append(Latency(f"batch {parts[1]}", float(value), dense, key))
    return found


def _batch(label: str) -> float:
    number = as_number(label.removeprefix("batch ").split()[0])
    return number if number is not None else 0.0


def final_latency(summary: dict[str, Any]) -> tuple[float | None, float | None]:
    """``(p50_ms, dense_p50_ms)`` of the primary latency, or ``(None, None)``.

    The primary one is a ``latency/p50_ms`` metric, else LatencyBenchmark's largest batch, else a latency-budget
    section's final check, else a ``*latency*`` section's ``p50_ms``.
    """
    found = latencies(summary)
    return (found[0].pruned_ms, found[0].dense_ms) if found else (None, None)


SIZES = {"params": "parameters", "params_nonzero": "nonzero parameters", "macs": "MACs per example"}


def sizes(summary: dict[str, Any]) -> list[tuple[str, float | None, float | None]]:
    """``[(name, dense, pruned)]`` for parameters, nonzero parameters and MACs, from the ``run`` section's ``size``."""
    size = as_dict(as_dict(summary.get("run")).get("size"))
    dense, pruned = as_dict(size.get("dense")), as_dict(size.get("pruned"))
    rows = [(name, as_number(dense.get(key)), as_number(pruned.get(key))) for key, name in SIZES.items()]
    return [row for row in rows if row[1] is not None or row[2] is not None]


def names(summary: dict[str, Any]) -> dict[str, str]:
    """``{"data": ..., "model": ...}`` as the ``run`` section names them (either may be absent)."""
    section = as_dict(summary.get("run"))
    return {key: section[key] for key in ("data", "model") if isinstance(section.get(key), str)}


def phase_times(run: Run) -> dict[str, dict[str, float]]:
    """``{section: {phase: seconds}}`` from every ``time_s``; pruners also get ``other`` and ``skipped (est.)``.

    ``other`` is the run's wall time not covered by the pruner's phases (setup, testing, logging);
    ``skipped (est.)`` is what the skipped fine-tunes would have cost at the mean cost of those that ran: an
    estimate of time saved, not time spent.
    """
    parts, pruners = sections(run.summary), pruning_histories(run.summary)
    wall = as_number(parts.get("run", {}).get("wall_s"))
    times = {}
    for name, data in parts.items():
        phases = {k: float(v) for k, v in as_dict(data.get("time_s")).items() if as_number(v) is not None}
        if not phases:
            continue
        if name in pruners:
            finetunes = [r.get("finetune") for r in pruners[name]]
            ran, skipped = finetunes.count("ran"), finetunes.count("skipped")
            if wall is not None and wall > sum(phases.values()):
                phases["other"] = wall - sum(phases.values())
            if ran and skipped and phases.get("finetune"):
                phases["skipped (est.)"] = skipped * phases["finetune"] / ran
        times[name] = phases
    return times


def layer_values(summary: dict[str, Any], key: str) -> dict[str, dict[str, float]]:
    """``{section: {layer: value}}`` for a per-layer dict such as ``layer_sparsity`` or ``widths_after``."""
    found = {}
    for name, data in sections(summary).items():
        values = {str(k): float(v) for k, v in as_dict(data.get(key)).items() if as_number(v) is not None}
        if values:
            found[name] = values
    return found


def _run_first(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The sections with ``run`` first: the app's figures win over a callback's."""
    parts = sections(summary)
    return sorted(parts.values(), key=lambda data: data is not parts.get("run"))
