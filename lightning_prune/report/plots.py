"""The report's figures: each function takes read-back rows and returns a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` directly (no ``pyplot``: no global state, no GUI
backend, nothing left open); :func:`save` writes them as PNG through the Agg canvas. Each function assumes
its data is present; :mod:`lightning_prune.report.write` checks first and says why a plot is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from lightning_prune.report.read import Step

BEFORE, PRUNED, FINETUNED, SKIPPED, SPARSITY = "tab:gray", "tab:red", "tab:blue", "tab:orange", "tab:green"
PHASE_ORDER = ("dense", "prune", "evaluate", "finetune")
PHASE_COLORS = {"dense": "tab:gray", "prune": "tab:red", "evaluate": "tab:purple", "finetune": "tab:blue"}
EXTRA_COLORS = ("tab:olive", "tab:cyan", "tab:brown", "tab:pink", "gold")
AXIS_NAMES = {"latency_p50_ms": "latency p50 (ms per batch)"}


def save(figure: Figure, path: str | os.PathLike) -> None:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110)


def accuracy_sparsity(steps: Sequence[Step]) -> Figure:
    """Accuracy against sparsity, one point per step: after pruning, after fine-tune, skipped fine-tunes."""
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = figure.add_subplot()
    sections = list(dict.fromkeys(s.section for s in steps))
    for section in sections:
        rows = [s for s in steps if s.section == section]
        prefix = f"{section}: " if len(sections) > 1 else ""
        dense = [(0.0, rows[0].acc_before)] if rows[0].acc_before is not None else []
        finetuned = [(s.sparsity, s.acc_finetuned) for s in rows if s.acc_finetuned is not None]
        if finetuned:
            _line(ax, dense + finetuned, f"{prefix}after fine-tune", FINETUNED, "o", "-")
            for x, y in dense:
                ax.annotate("dense", (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
        else:
            before = [(s.sparsity_before, s.acc_before) for s in rows if s.acc_before is not None and s.before_fresh]
            _line(ax, before, f"{prefix}before step (last validation)", BEFORE, "o", "-")
        pruned = [(s.sparsity, s.acc_pruned) for s in rows if s.acc_pruned is not None]
        _line(ax, pruned, f"{prefix}right after pruning", PRUNED, "v", "--")
        skipped = [(s.sparsity, s.acc_pruned) for s in rows if s.finetune == "skipped" and s.acc_pruned is not None]
        if skipped:
            ax.scatter(*zip(*skipped), marker="x", s=70, color=SKIPPED, zorder=4, label=f"{prefix}fine-tune skipped")
        for s in rows:
            y = s.acc_finetuned if s.acc_finetuned is not None else s.acc_pruned
            if y is not None:
                ax.annotate(str(s.step), (s.sparsity, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
    ax.set(xlabel="sparsity (selected weights pruned)", ylabel="accuracy", title="Accuracy vs sparsity by step")
    _min_span(ax, 0.02)
    _percent(ax.xaxis, ax.yaxis)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return figure


def timeline(log: dict[str, list[tuple[float, float]]], monitor: str, steps: Sequence[Step]) -> Figure:
    """Per-epoch accuracy (left axis) and sparsity (right axis) from the CSV log, pruning steps marked."""
    figure = Figure(figsize=(7.2, 4.0), layout="constrained")
    ax = figure.add_subplot()
    handles = []
    if log.get(monitor):
        handles += ax.plot(*zip(*log[monitor]), color=FINETUNED, marker="o", markersize=3, label=monitor)
    right = ax.twinx()
    if log.get("prune/sparsity"):
        handles += right.plot(*zip(*log["prune/sparsity"]), color=SPARSITY, marker="s", markersize=3, label="sparsity")
    right.set(ylim=(0, 1.02), ylabel="sparsity")
    seen: set[str] = set()
    for epoch in sorted({s.epoch for s in steps if s.epoch is not None}):
        at = [s for s in steps if s.epoch == epoch]
        skipped = any(s.finetune == "skipped" for s in at)
        label = "pruning step, a fine-tune skipped" if skipped else "pruning step"
        line = ax.axvline(epoch - 0.5, color=SKIPPED if skipped else BEFORE, ls="--" if skipped else ":", lw=1)
        if label not in seen:
            seen.add(label)
            line.set_label(label)
            handles.append(line)
        names = ",".join(str(s.step) for s in at)
        ax.annotate(names, (epoch - 0.5, 1.0), xycoords=("data", "axes fraction"), fontsize=7, ha="center", va="bottom")
    ax.set(xlabel="epoch", ylabel=monitor)
    ax.set_title("Training timeline (pruning steps run at epoch start)", pad=14)
    _percent(right.yaxis, *([ax.yaxis] if "acc" in monitor else []))
    ax.grid(alpha=0.3)
    figure.legend(handles=handles, fontsize=8, loc="outside lower center", ncols=len(handles))
    return figure


def time_split(times: dict[str, dict[str, float]], wall_s: float | None) -> Figure:
    """Stacked wall-time bars per section; the skipped fine-tunes' estimated cost hatched, outside the total."""
    figure = Figure(figsize=(7.2, 1.6 + 0.55 * len(times)), layout="constrained")
    ax = figure.add_subplot()
    names = list(times)
    phases = [p for p in PHASE_ORDER if any(t.get(p) for t in times.values())]
    phases += sorted({p for t in times.values() for p, v in t.items() if v and p not in phases})
    total = max(sum(t.values()) for t in times.values()) or 1.0
    left = [0.0] * len(names)
    extra = iter(EXTRA_COLORS * 3)
    for phase in phases:
        widths = [times[name].get(phase, 0.0) for name in names]
        estimate = phase == "skipped (est.)"
        color = PHASE_COLORS.get(phase) or ("white" if estimate else "lightgray" if phase == "other" else next(extra))
        label = f"{phase} ({widths[0]:.2f} s)" if len(names) == 1 else phase
        label = label.replace("skipped (est.)", "skipped fine-tunes, est.") + (" (not spent)" if estimate else "")
        bars = ax.barh(
            names,
            widths,
            left=left,
            color=color,
            edgecolor="black" if estimate else "white",
            linewidth=0.6,
            hatch="//" if estimate else None,
            label=label,
        )
        for bar, width in zip(bars, widths):
            if width > 0.07 * total:
                ax.text(
                    bar.get_x() + width / 2,
                    bar.get_y() + bar.get_height() / 2,
                    f"{width:.1f}s",
                    ha="center",
                    va="center",
                    fontsize=8,
                    backgroundcolor="white" if estimate else "none",
                )
        left = [a + b for a, b in zip(left, widths)]
    title = "Wall time by phase" + (f" (run: {wall_s:.1f} s)" if wall_s else "")
    ax.set(xlabel="seconds", title=title)
    ax.invert_yaxis()
    figure.legend(fontsize=8, ncols=min(len(phases), 4), loc="outside lower center")
    return figure


def layers(
    sparsity: dict[str, dict[str, float]], widths: dict[str, tuple[dict[str, float], dict[str, float]]]
) -> Figure:
    """Per-layer sparsity bars (one series per section) and/or kept-unit bars (before vs after, per section)."""
    panels = [("sparsity", name, values) for name, values in sparsity.items()]
    panels += [("widths", name, pair) for name, pair in widths.items()]
    count = max(len(p[2] if p[0] == "sparsity" else p[2][0]) for p in panels)
    figure = Figure(figsize=(7.2 * len(panels) ** 0.5, 1.4 + 0.3 * count), layout="constrained")
    for index, (kind, section, values) in enumerate(panels):
        ax = figure.add_subplot(1, len(panels), index + 1)
        if kind == "sparsity":
            labels, prefix = _short_names(list(values))
            bars = ax.barh(labels, list(values.values()), color=PRUNED, label=section)
            ax.bar_label(bars, [f"{v:.0%}" for v in values.values()], padding=3, fontsize=8)
            ax.set(xlim=(0, 1.1), xlabel="sparsity", title=f"Per-layer sparsity ({section})")
            _percent(ax.xaxis)
        else:
            before, after = values
            labels, prefix = _short_names(list(before))
            positions = range(len(labels))
            ax.barh([p - 0.2 for p in positions], list(before.values()), 0.4, color=BEFORE, label="before")
            ax.barh(
                [p + 0.2 for p in positions], [after.get(k, 0.0) for k in before], 0.4, color=FINETUNED, label="after"
            )
            ax.set_yticks(list(positions), labels)
            ax.bar_label(
                ax.containers[1],
                [f"{after[k]:.0f}/{v:.0f}" if k in after else "not recorded" for k, v in before.items()],
                padding=3,
                fontsize=8,
            )
            ax.set(xlabel="units (channels / neurons)", title=f"Kept units per layer ({section})")
            ax.legend(fontsize=8)
        ax.invert_yaxis()
        if prefix:
            ax.set_ylabel(f"layer (under {prefix})")
        ax.grid(axis="x", alpha=0.3)
    return figure


def latency_accuracy(series: dict[str, list[tuple[float, float]]], dense_ms: float | None) -> Figure:
    """Accuracy against measured latency: one series per source (CSV epochs, steps, final)."""
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = figure.add_subplot()
    markers = iter("os*D^")
    for label, points in series.items():
        marker = next(markers, "o")
        if len(points) > 1:
            ax.plot(*zip(*points), marker=marker, label=label)
        else:
            ax.scatter(*zip(*points), marker=marker, s=120 if marker == "*" else 40, zorder=3, label=label)
    if dense_ms is not None:
        ax.axvline(dense_ms, color=BEFORE, ls=":", label=f"dense model ({dense_ms:.2f} ms)")
    ax.set(xlabel="latency p50 (ms per batch)", ylabel="accuracy", title="Accuracy vs measured latency")
    _percent(ax.yaxis)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure


def pareto(jobs: dict[str, dict[str, float]], accuracy: str, axes: Sequence[tuple[str, int]]) -> Figure:
    """Jobs as points (accuracy vs each of ``axes``: ``(figure, +1 higher / -1 lower is better)``), front and bests.

    ``jobs`` is keyed by each job's label (its swept settings), which names its point and the bests.
    """
    figure = Figure(figsize=(6.0 * len(axes), 4.4), layout="constrained")
    for index, (metric, direction) in enumerate(axes):
        ax = figure.add_subplot(1, len(axes), index + 1)
        points = {name: (f[metric], f[accuracy]) for name, f in jobs.items() if metric in f and accuracy in f}
        ax.scatter(*zip(*points.values()), color=BEFORE, zorder=2, label="job")
        for name, point in points.items():
            ax.annotate(name, point, xytext=(6, -12), textcoords="offset points", fontsize=8)
        front = pareto_front(points, direction)
        ax.plot(
            *zip(*(points[n] for n in front)),
            color=FINETUNED,
            ls="--",
            marker="o",
            mfc="none",
            ms=11,
            label="Pareto front",
        )
        best_acc = max(points, key=lambda n: points[n][1])
        best_x = max(points, key=lambda n: direction * points[n][0])
        ax.scatter(
            *points[best_acc],
            marker="*",
            s=260,
            color=SKIPPED,
            edgecolor="black",
            zorder=3,
            label=f"best {accuracy} ({best_acc})",
        )
        ax.scatter(
            *points[best_x],
            marker="D",
            s=90,
            facecolor="none",
            edgecolor=PRUNED,
            linewidth=2,
            zorder=3,
            label=f"best {metric} ({best_x})",
        )
        ax.margins(0.12)
        ax.set(xlabel=AXIS_NAMES.get(metric, metric) + (" (lower is better)" if direction < 0 else ""), ylabel=accuracy)
        ax.set_title(f"{accuracy} vs {metric} across jobs")
        _percent(ax.yaxis, *([ax.xaxis] if metric == "sparsity" else []))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return figure


def pareto_front(points: dict[str, tuple[float, float]], direction: int) -> list[str]:
    """Names of the points no other point beats on both x (in ``direction``) and y (higher), sorted by x."""

    def dominated(name: str) -> bool:
        x, y = points[name]
        return any(direction * ox >= direction * x and oy >= y and (ox, oy) != (x, y) for ox, oy in points.values())

    return sorted((n for n in points if not dominated(n)), key=lambda n: points[n][0])


def _line(ax, points: list, label: str, color: str, marker: str, style: str) -> None:
    if points:
        ax.plot(*zip(*points), color=color, marker=marker, ls=style, label=label)


def _min_span(ax, span: float) -> None:
    """Widen the y range to at least ``span`` (not past 100 %) so a 0.1-point wobble does not fill the plot."""
    low, high = ax.get_ylim()
    if high - low < span:
        top = min((low + high + span) / 2, 1.002) if high <= 1.002 else (low + high + span) / 2
        ax.set_ylim(top - span, top)


def _percent(*axes) -> None:
    for axis in axes:
        axis.set_major_formatter(PercentFormatter(1.0, decimals=None))


def _short_names(names: list[str]) -> tuple[list[str], str]:
    """Layer names without a ``.weight`` suffix and their common dotted prefix (two parts kept), and that prefix."""
    parts = [name.removesuffix(".weight").split(".") for name in names]
    common = 0
    while len(names) > 1 and all(len(p) > common + 2 and p[common] == parts[0][common] for p in parts):
        common += 1
    prefix = ".".join(parts[0][:common])
    return [".".join(p[common:]) for p in parts], prefix
