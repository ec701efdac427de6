"""The numbers a report derives from a summary: final figures, latency, time per phase, per-layer values."""

from __future__ import annotations

from typing import Any

from lightning_prune.report.read import Run, as_dict, as_number, pruning_histories, sections

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


def final_latency(summary: dict[str, Any]) -> tuple[float | None, float | None]:
    """``(p50_ms, dense_p50_ms)``: from a ``latency/p50_ms`` metric, else a ``*latency*`` section's ``p50_ms``."""
    latency = dense = None
    for data in _run_first(summary):
        metrics = as_dict(data.get("metrics"))
        latency = latency if latency is not None else as_number(metrics.get("latency/p50_ms"))
        dense = dense if dense is not None else as_number(metrics.get("latency/dense_p50_ms"))
    for name, data in sections(summary).items():
        if "latency" in name:
            latency = latency if latency is not None else as_number(data.get("p50_ms"))
            dense = dense if dense is not None else as_number(data.get("dense_p50_ms"))
    return latency, dense


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
