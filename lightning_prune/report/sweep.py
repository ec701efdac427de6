"""The sweep-level report: one row per job, labelled by its swept settings (bests in bold), and a Pareto plot.

A job's label is what the sweep varied for it, each key shortened to its last distinct part
(``callbacks.iterative.target_sparsity=0.8`` → ``target_sparsity=0.8``); ``job <n>`` only when nothing varied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lightning_prune.report import derived
from lightning_prune.report.derived import DIRECTION
from lightning_prune.report.markdown import REPORT, Plots, fmt, table
from lightning_prune.report.read import Run

ACCURACIES = ("test/acc", "val/acc")
PARETO_AXES = (("sparsity", 1), ("latency_p50_ms", -1))
BEST_NOTE = (
    "Best per figure in **bold** (higher is better for accuracy, sparsity and skipped fine-tunes; lower "
    "for loss, parameters, latency and wall time)."
)


@dataclass
class Comparison:
    """The jobs of a sweep side by side: their labels, final figures and which job is best at each figure."""

    labels: dict[str, str]
    common: list[str]
    swept: list[str]
    metrics: list[str]
    figures: dict[str, dict[str, float]]
    bests: dict[str, set[str]]


def compare(runs: list[Run]) -> Comparison:
    """Labels, figures and bests of the jobs ``runs`` (in order)."""
    figures = {run.name: derived.final_figures(run) for run in runs}
    common, varying = split_overrides(runs)
    metrics = [key for key in DIRECTION if any(key in f for f in figures.values())]
    swept = list(dict.fromkeys(_key(o) for overrides in varying.values() for o in overrides))
    labels = job_labels(varying)
    return Comparison(labels, common, swept, metrics, figures, {key: best_jobs(figures, key) for key in metrics})


def write_sweep_report(path: Path, runs: list[Run]) -> Path:
    """``report.md`` + ``pareto.png`` in the sweep directory ``path`` (links to job reports that exist)."""
    comparison = compare(runs)
    lines = [f"# Sweep report: {path.name}", ""]
    lines += [*intro_lines(path, comparison), "", "## Comparison", "", *comparison_lines(path, comparison), ""]
    lines += [BEST_NOTE, ""]
    jobs = {comparison.labels[name]: figures for name, figures in comparison.figures.items()}
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


def intro_lines(path: Path, comparison: Comparison) -> list[str]:
    text = f"{len(comparison.labels)} jobs in `{path}`."
    if comparison.swept:
        text += f" Swept: `{' '.join(comparison.swept)}`."
    if comparison.common:
        text += f" Common overrides: `{' '.join(comparison.common)}`."
    return [text]


def comparison_lines(path: Path, comparison: Comparison) -> list[str]:
    """The comparison as a markdown table: settings (linked to the job's report when written), job, figures."""
    rows = []
    for name, label in comparison.labels.items():
        link = f"{name}/{REPORT}" if (path / name / REPORT).is_file() else f"{name}/"
        values = [fmt(comparison.figures[name].get(key)) for key in comparison.metrics]
        bold = [name in comparison.bests[key] for key in comparison.metrics]
        rows.append([f"[{label}]({link})", name, *(f"**{v}**" if b else v for v, b in zip(values, bold))])
    return table(["settings", "job", *comparison.metrics], rows)


def split_overrides(runs: list[Run]) -> tuple[list[str], dict[str, list[str]]]:
    """Overrides shared by every job, and each job's others (what the sweep varied)."""
    common = [o for o in runs[0].overrides if all(o in run.overrides for run in runs)] if runs else []
    return common, {run.name: [o for o in run.overrides if o not in common] for run in runs}


def job_labels(varying: dict[str, list[str]]) -> dict[str, str]:
    """``{job: "target_sparsity=0.8 seed=1"}``: each varied key cut to its shortest suffix no other key shares."""
    keys = list(dict.fromkeys(_key(o) for overrides in varying.values() for o in overrides))
    short = {key: _short_key(key, keys) for key in keys}
    labels = {}
    for name, overrides in varying.items():
        parts = [f"{short[_key(o)]}={o.partition('=')[2]}" if "=" in o else o for o in overrides]
        labels[name] = " ".join(parts) or f"job {name}"
    counts = {label: list(labels.values()).count(label) for label in labels.values()}
    return {name: f"{label} (job {name})" if counts[label] > 1 else label for name, label in labels.items()}


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def _short_key(key: str, keys: list[str]) -> str:
    parts = key.split(".")
    for size in range(1, len(parts) + 1):
        suffix = ".".join(parts[-size:])
        if not any(other != key and (other == suffix or other.endswith("." + suffix)) for other in keys):
            return suffix
    return key


def best_jobs(jobs: dict[str, dict[str, float]], key: str) -> set[str]:
    """The jobs with the best value of ``key`` (ties included; none when all jobs agree), by :data:`DIRECTION`."""
    values = {name: figures[key] for name, figures in jobs.items() if key in figures}
    if len(set(values.values())) < 2:
        return set()
    best = max(DIRECTION[key] * value for value in values.values())
    return {name for name, value in values.items() if DIRECTION[key] * value == best}
