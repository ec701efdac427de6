"""The sweep-level report: one row per job (its overrides, final figures, bests in bold) and a Pareto plot."""

from __future__ import annotations

from pathlib import Path

from lightning_prune.report import derived
from lightning_prune.report.derived import DIRECTION
from lightning_prune.report.read import Run
from lightning_prune.report.write import REPORT, Plots, fmt, table

ACCURACIES = ("test/acc", "val/acc")
PARETO_AXES = (("sparsity", 1), ("latency_p50_ms", -1))


def write_sweep_report(path: Path, runs: list[Run]) -> Path:
    """``report.md`` + ``pareto.png`` in the sweep directory ``path`` (the job reports are already written)."""
    jobs = {run.name: derived.final_figures(run) for run in runs}
    common, varying = split_overrides(runs)
    metrics = [key for key in DIRECTION if any(key in figures for figures in jobs.values())]
    bests = {key: best_jobs(jobs, key) for key in metrics}
    rows = []
    for run in runs:
        values = [_bold(fmt(jobs[run.name].get(key)), run.name in bests[key]) for key in metrics]
        rows.append([f"[{run.name}]({run.name}/{REPORT})", " ".join(varying[run.name]) or "-", *values])
    lines = [f"# Sweep report: {path.name}", ""]
    lines += [f"{len(runs)} jobs in `{path}`." + (f" Common overrides: `{' '.join(common)}`." if common else ""), ""]
    lines += ["## Comparison", "", *table(["job", "overrides", *metrics], rows), ""]
    lines += [
        "Best per figure in **bold** (higher is better for accuracy, sparsity and skipped fine-tunes; lower "
        "for loss, parameters, latency and wall time).",
        "",
    ]
    accuracy = next((a for a in ACCURACIES if sum(a in f for f in jobs.values()) >= 2), None)
    axes = [(m, d) for m, d in PARETO_AXES if accuracy and sum(m in f and accuracy in f for f in jobs.values()) >= 2]
    missing = (
        None if axes else "fewer than two jobs report both an accuracy (test/acc or val/acc) and a sparsity or latency"
    )
    plots = Plots(path)
    lines += plots.add("pareto", "Pareto plot across jobs", missing, jobs, accuracy, axes)
    lines += plots.skipped_lines()
    report = path / REPORT
    report.write_text("\n".join(lines).rstrip() + "\n")
    return report


def split_overrides(runs: list[Run]) -> tuple[list[str], dict[str, list[str]]]:
    """Overrides shared by every job, and each job's others (what the sweep varied)."""
    common = [o for o in runs[0].overrides if all(o in run.overrides for run in runs)] if runs else []
    return common, {run.name: [o for o in run.overrides if o not in common] for run in runs}


def best_jobs(jobs: dict[str, dict[str, float]], key: str) -> set[str]:
    """The jobs with the best value of ``key`` (ties included; none when all jobs agree), by :data:`DIRECTION`."""
    values = {name: figures[key] for name, figures in jobs.items() if key in figures}
    if len(set(values.values())) < 2:
        return set()
    best = max(DIRECTION[key] * value for value in values.values())
    return {name for name, value in values.items() if DIRECTION[key] * value == best}


def _bold(text: str, bold: bool) -> str:
    return f"**{text}**" if bold else text
