"""Writing ``report.md`` and its PNG plots for one run directory, or for every job of a sweep plus a comparison."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_prune.report import derived, read
from lightning_prune.report.derived import Latency
from lightning_prune.report.markdown import REPORT, Plots, fmt, table
from lightning_prune.report.read import Run, Step
from lightning_prune.report.sweep import write_sweep_report


def find_runs(path: str | Path) -> tuple[str, list[Path]]:
    """``("run", [path])`` for a run directory, ``("sweep", [job dirs])`` for a Hydra sweep directory.

    A ``summary.json`` path stands for its directory. Job directories are the immediate subdirectories
    holding a ``summary.json``, in numeric order.

    Raises:
        FileNotFoundError: naming ``path`` when it does not exist or holds no ``summary.json`` at either level.
    """
    path = Path(path)
    if path.is_file() and path.name == read.SUMMARY:
        path = path.parent
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path}: no such directory; expected a run directory (with summary.json) or a Hydra sweep directory"
        )
    if (path / read.SUMMARY).is_file():
        return "run", [path]
    jobs = [child for child in path.iterdir() if child.is_dir() and (child / read.SUMMARY).is_file()]
    if not jobs:
        raise FileNotFoundError(
            f"{path}: no summary.json in it nor in its subdirectories; expected a run directory written by "
            f"`python -m lightning_prune.run` (<dir>/summary.json) or a sweep directory (<dir>/<job>/summary.json)"
        )
    return "sweep", sorted(jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def write_report(path: str | Path) -> Path:
    """Write ``report.md`` and plots into ``path`` (and into each job directory of a sweep); return its path."""
    kind, directories = find_runs(path)
    runs = [read.load_run(directory) for directory in directories]
    for run in runs:
        write_run_report(run)
    if kind == "run":
        return runs[0].path / REPORT
    return write_sweep_report(Path(path), runs)


def write_run_report(run: Run) -> Path:
    """``report.md`` of one run (tables always; plots when matplotlib and their data are there)."""
    steps, figures = read.steps(run), derived.final_figures(run)
    parts = read.sections(run.summary)
    lines = [f"# Pruning report: {run.name}", "", _sources(run), ""]
    lines += ["## Final figures", "", *table(["figure", "value"], [[k, v] for k, v in figures.items()]), ""]
    lines += size_lines(derived.sizes(run.summary))
    plots = Plots(run.path)
    for section in dict.fromkeys(s.section for s in steps):
        lines += [f"## Pruning steps: {section}", "", *step_table([s for s in steps if s.section == section]), ""]
    lines += plots.add("accuracy_sparsity", "Accuracy vs sparsity by step", _accuracy_missing(steps), steps)
    monitor = read.monitor(run.summary)
    timeline_missing = _missing(
        bool(run.log.get(monitor) or run.log.get("prune/sparsity")),
        f"no CSV log with `{monitor}` or `prune/sparsity` columns at {read.CSV_LOG}",
    )
    lines += plots.add("timeline", "Training timeline", timeline_missing, run.log, monitor, steps)
    times = derived.phase_times(run)
    wall = read.as_number(parts.get("run", {}).get("wall_s"))
    lines += ["## Time per phase", "", *time_table(times), ""] if times else []
    lines += plots.add("time_split", "Wall time by phase", _missing(times, "no section has a `time_s`"), times, wall)
    sparsity = derived.layer_values(run.summary, "layer_sparsity")
    widths = _widths(run.summary)
    layers_missing = _missing(sparsity or widths, "no `layer_sparsity` nor `widths_before`/`widths_after` dicts")
    lines += plots.add("layers", "Per-layer sparsity and kept units", layers_missing, sparsity, widths)
    measured = derived.latencies(run.summary)
    lines += latency_lines(measured)
    series = latency_series(run, steps, figures, monitor)
    latency_missing = _missing(
        series,
        "no latency measured (no LatencyBenchmark or latency-budget section, no `latency/...` metric or CSV column)",
    )
    dense = measured[0].dense_ms if measured else None
    lines += plots.add("latency_accuracy", "Accuracy vs latency", latency_missing, series, dense)
    for name, records in read.other_histories(run.summary).items():
        lines += [f"## History: {name}", "", *records_table(records), ""]
    lines += plots.skipped_lines()
    path = run.path / REPORT
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def step_table(steps: Sequence[Step]) -> list[str]:
    headers = ["step", "epoch", "sparsity", "acc before", "acc after pruning", "acc after fine-tune", "fine-tune"]
    headers += ["reason", "detail"]
    rows = [
        [
            s.step,
            s.epoch,
            s.sparsity,
            s.acc_before if s.before_fresh else None,
            s.acc_pruned,
            s.acc_finetuned,
            s.finetune,
            s.reason,
            detail_text(s.detail),
        ]
        for s in steps
    ]
    note = "acc before: last validation before the step (- when it ran in the same epoch as the previous step)."
    return [*table(headers, rows), "", note]


def detail_text(detail: dict[str, Any]) -> str:
    shown = {k: v for k, v in detail.items() if not k.endswith(("acc_before", "acc_after", "acc_finetuned"))}
    return ", ".join(f"{k}={fmt(v)}" for k, v in shown.items())


def time_table(times: dict[str, dict[str, float]]) -> list[str]:
    phases = list(dict.fromkeys(p for t in times.values() for p in t))
    rows = [[name, *(f"{t[p]:.2f}" if p in t else None for p in phases)] for name, t in times.items()]
    note = (
        "Seconds. `other`: the run's wall time outside the pruner's phases (setup, testing, logging). "
        "`skipped (est.)`: what the skipped fine-tunes would have cost at the mean cost of those that ran; "
        "time saved, not spent."
    )
    return [*table(["section", *phases], rows), "", note]


def records_table(records: list[dict[str, Any]]) -> list[str]:
    keys = list(dict.fromkeys(k for r in records for k, v in r.items() if read.is_scalar(v)))
    return table(keys, [[r.get(k) for k in keys] for r in records])


# ---------------------------------------------------------------- data checks


def size_lines(rows: Sequence[tuple[str, float | None, float | None]]) -> list[str]:
    """Dense against pruned: parameters, nonzero parameters, MACs, with the pruned/dense ratio."""
    if not rows:
        return []
    cells = [
        [name, dense, pruned, f"{pruned / dense:.3f}" if dense and pruned is not None else None]
        for name, dense, pruned in rows
    ]
    note = "MACs: Conv/Linear multiply-accumulates per example; zeros count, so only removed channels cut them."
    return ["## Dense vs pruned", "", *table(["size", "dense", "pruned", "pruned / dense"], cells), "", note, ""]


def latency_lines(measured: Sequence[Latency]) -> list[str]:
    """A table of every final latency: dense and pruned p50 and the speed-up."""
    if not measured:
        return []
    rows = [
        [m.label, _ms(m.dense_ms), _ms(m.pruned_ms), f"{m.dense_ms / m.pruned_ms:.2f}x" if m.dense_ms else None]
        for m in measured
    ]
    headers = ["measured at", "dense p50 (ms per batch)", "pruned p50 (ms per batch)", "speed-up"]
    return ["## Latency", "", *table(headers, rows), ""]


def _ms(value: float | None) -> str | None:
    return None if value is None else f"{value:.3f}"


def latency_series(run: Run, steps: Sequence[Step], figures: dict[str, float], monitor: str) -> dict[str, list]:
    """``{label: [(latency_ms, accuracy)]}`` from the CSV log's epochs, the steps, and the final figures."""
    series: dict[str, list] = {}
    column = next((m.column for m in derived.latencies(run.summary) if m.column in run.log), None)
    latency_by_epoch = dict(run.log.get(column or "latency/p50_ms", []))
    accuracy_by_epoch = dict(run.log.get(monitor, []))
    epochs = [(latency_by_epoch[e], accuracy_by_epoch[e]) for e in latency_by_epoch if e in accuracy_by_epoch]
    if epochs:
        series[f"per epoch ({column} vs {monitor}, CSV log)"] = epochs
    by_step = []
    for s in steps:
        accuracy = s.acc_finetuned if s.acc_finetuned is not None else s.acc_pruned
        if s.latency_ms is not None and accuracy is not None:
            by_step.append((s.latency_ms, accuracy))
    if by_step:
        series["per pruning step"] = by_step
    final_acc = next((figures[k] for k in ("test/acc", "val/acc") if k in figures), None)
    if "latency_p50_ms" in figures and final_acc is not None:
        series["final model"] = [(figures["latency_p50_ms"], final_acc)]
    return series


def _sources(run: Run) -> str:
    read_from = [f"`{read.SUMMARY}`"] + ([f"`{read.CSV_LOG}`"] if run.log else [])
    text = f"Run directory `{run.path}`; read from {', '.join(read_from)}; sections: {', '.join(run.summary)}."
    text += "".join(f" {key.capitalize()}: {name}." for key, name in derived.names(run.summary).items())
    return text + (f" Overrides: `{' '.join(run.overrides)}`." if run.overrides else "")


def _widths(summary: dict[str, Any]) -> dict[str, tuple[dict[str, float], dict[str, float]]]:
    before, after = derived.layer_values(summary, "widths_before"), derived.layer_values(summary, "widths_after")
    return {name: (before[name], after[name]) for name in before if name in after}


def _accuracy_missing(steps: Sequence[Step]) -> str | None:
    if not steps:
        return "no section has a `history` of records with `sparsity`"
    measured = any(v is not None for s in steps for v in (s.acc_before, s.acc_pruned, s.acc_finetuned))
    return None if measured else "the history records hold no accuracy (`acc_*` keys)"


def _missing(present: Any, reason: str) -> str | None:
    return None if present else reason
