"""The model-zoo matrix (every callback x every zoo model), rendered from the zoo tests' record.

``ZOO_RECORD=1 python -m pytest tests/zoo -m zoo`` runs every cell of ``tests/zoo/`` and writes
``docs/zoo/matrix.json``; ``python -m lightning_prune.bench.docs`` renders it: ``TABLES["matrix"]`` is the
README's one-row-per-model table, ``TABLES["cells"]`` the full list in docs/zoo.md (each refusal's message, each
warning's, each known bug, each figure). Nothing here runs a model.
"""

from __future__ import annotations

from typing import Any

from lightning_prune.bench.docs import load_result

RESULT = "docs/zoo/matrix.json"
MARK = {"pass": "✓", "refused": "refuses", "warned": "⚠", "xfail": "✗"}


def _cell_text(cell: dict[str, Any]) -> str:
    """A README cell: what a working callback reached and its accuracy vs plain training, or why not."""
    outcome = cell["outcome"]
    if outcome == "refused":
        return MARK["refused"]
    if outcome == "xfail":
        return f"{MARK['xfail']} {cell['short']}"
    if outcome == "warned":  # the user was warned of the cause before the harm: what the run then measured
        return f"{MARK['warned']} {cell['figures']['acc_delta_pt']:+.1f} pt (warned)"
    if outcome == "xpass":  # a timing-dependent known issue that passed in this run
        return f"{MARK['xfail']} {cell['short']} (this run: {cell['figures']['acc_delta_pt']:+.1f} pt)"
    figures, reached = cell["figures"], ""
    if cell["kind"] == "shrink":
        reached = f" {figures['params_removed']:.0%} params,"
    elif cell["kind"] == "budget":
        reached = f" {figures['latency_vs_dense']:.2f}x latency,"
    return f"{MARK['pass']}{reached} {figures['acc_delta_pt']:+.1f} pt"


def _by_model(result: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for cell in result["cells"]:
        rows.setdefault(cell["model"], {})[cell["callback"]] = cell
    return rows


def matrix(path: str = RESULT) -> str:
    """README: a row per callback configuration, a column per zoo model (the legend is the README's own line)."""
    result = load_result(path)
    columns, models, rows = result["columns"], result["models"], _by_model(result)
    lines = ["| callback | " + " | ".join(models.values()) + " |", "|---" * (len(models) + 1) + "|"]
    for column, title in columns.items():
        lines.append(f"| {title} | " + " | ".join(_cell_text(rows[model][column]) for model in models) + " |")
    return "\n".join(lines)


def _wider(settings: dict[str, Any], models: dict[str, str]) -> str:
    wider = settings.get("acc_bound_pt_by_model", {})
    listed = ", ".join(f"{bound:g} pt for {models[name]}" for name, bound in wider.items())
    return f" ({listed}: plain training alone spreads that wide over data orders)" if listed else ""


def _counts(result: dict[str, Any]) -> str:
    outcomes = [cell["outcome"] for cell in result["cells"]]
    bugs = outcomes.count("xfail") + outcomes.count("xpass")
    warned = f", {outcomes.count('warned')} warn of the cause" if "warned" in outcomes else ""
    return f"{outcomes.count('pass')} work, {outcomes.count('refused')} refuse{warned}, {bugs} known bugs"


def cells(path: str = RESULT) -> str:
    """docs/zoo.md: every cell with its outcome and what it measured, refused with or failed on."""
    result = load_result(path)
    columns, models = result["columns"], result["models"]
    lines = ["| model | callback | outcome | what happened | wall time |", "|---|---|---|---|---|"]
    for cell in result["cells"]:
        lines.append(
            f"| {models[cell['model']]} | {columns[cell['callback']]} | {cell['outcome']} | {_detail(cell)} | "
            f"{cell['wall_s']:.1f} s |"
        )
    baselines = ", ".join(f"{models[name]} {entry['acc']:.3f}" for name, entry in result["baselines"].items())
    settings = result["settings"]
    lines += [
        "",
        f"{_counts(result)}. A cell works when its target is reached (sparsity {settings['target_sparsity']}, "
        f"parameters removed, the latency budget) and validation accuracy ends at most "
        f"{settings['acc_bound_pt']:g} pt below plain training in the same Trainer{_wider(settings, models)}. "
        f"Plain training (validation accuracy, the reference of every cell): {baselines}. Every cell trains "
        f"{settings['max_epochs']} epochs from scratch; a cell is stopped after {settings['cell_limit_s']} s of CPU "
        "time. "
        f"`{result['command']}` at commit {result['commit'][:7]}, {result['date']}, {result['zoo_wall_s']:.0f} s "
        f"in all on {result['host']['cpus']} cores (load {result['host']['load_at_end']:.1f} at the end).",
    ]
    return "\n".join(lines)


def _detail(cell: dict[str, Any]) -> str:
    if cell["outcome"] == "refused":
        return _escape(cell["message"])
    if cell["outcome"] == "warned":
        return _escape(
            f"{cell['short']}; warned {cell.get('when', 'before the first step')}: {cell['message']} "
            f"({_figures(cell['figures'])})"
        )
    if cell["outcome"] in ("xfail", "xpass"):
        seen = cell.get("error") or _figures(cell.get("figures", {}))
        verdict = "passed this run" if cell["outcome"] == "xpass" else "seen"
        return _escape(f"{cell['reason']} ({verdict}: {seen})")
    return _figures(cell["figures"])


def _figures(figures: dict[str, Any]) -> str:
    shown = {key: value for key, value in figures.items() if key not in ("fit_s", "measurements")}
    return ", ".join(f"{key} {value}" for key, value in shown.items())


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


TABLES = {"matrix": matrix, "cells": cells}
