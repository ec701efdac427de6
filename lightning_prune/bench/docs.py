"""Regenerate every results table in README.md and docs/*.md from the benchmark JSONs.

``python -m lightning_prune.bench.docs`` rewrites them; ``--check`` only reports the tables whose text
differs from what their JSON gives (the test suite runs the check, so a committed table cannot drift
from its evidence). A table lives between two markers::

    <!-- bench-table: odf2nna main -->
    ...generated, never edited by hand...
    <!-- /bench-table -->

``odf2nna main`` names ``TABLES["main"]`` of ``lightning_prune.bench.odf2nna``: a function that reads
its JSON under ``docs/bench/odf2nna/`` (with :func:`load_result`) and returns markdown. ``docs headline``
is the README's one-row-per-method table, built from each benchmark module's ``headline()``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning_prune.bench._compose import REPO

MARKER = re.compile(r"(<!-- bench-table: (\S+) (\S+) -->\n)(.*?)(<!-- /bench-table -->)", re.S)
# Modules whose headline() gives a row of the README's results table, in the README's order.
HEADLINE_MODULES = ("ice", "latency_budget", "latency", "instant_soup", "odf2nna", "anytime_progressive", "iterative")


def load_result(relative: str) -> dict[str, Any]:
    """A committed benchmark JSON, by its path from the repository root (``docs/bench/<method>/<name>.json``)."""
    return json.loads((REPO / relative).read_text())


def settings_table(rows: list[tuple[str, Any]], provenance: dict[str, Any] | None = None) -> str:
    """A benchmark's setup as a two-column table; with ``provenance``, the host load its run started under."""
    host = (provenance or {}).get("host_load") or {}
    if host.get("at_start"):
        rows = [*rows, ("host load average (1, 5, 15 min) at start; CPUs", f"{host['at_start']}; {host['cpus']}")]
    return "\n".join(["| setting | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)])


def documents(root: Path = REPO) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def table(module: str, key: str) -> str:
    """The markdown of ``TABLES[key]`` in ``lightning_prune.bench.<module>``, ending in one newline."""
    tables: dict[str, Callable[[], str]] = importlib.import_module(f"lightning_prune.bench.{module}").TABLES
    if key not in tables:
        raise KeyError(f"lightning_prune.bench.{module} has no table {key!r}; it has {sorted(tables)}")
    return tables[key]().rstrip("\n") + "\n"


def regenerate(text: str) -> str:
    """``text`` with every marked table rebuilt from its JSON."""
    return MARKER.sub(lambda m: m.group(1) + table(m.group(2), m.group(3)) + m.group(5), text)


def stale(root: Path = REPO) -> list[str]:
    """``file: module key`` for every marked table whose committed text differs from its JSON's."""
    found = []
    for path in documents(root):
        text = path.read_text()
        for match in MARKER.finditer(text):
            if match.group(4) != table(match.group(2), match.group(3)):
                found.append(f"{path.relative_to(root)}: {match.group(2)} {match.group(3)}")
    return found


def headline() -> str:
    """README's results table: one row per method, each from that method's benchmark JSON."""
    rows = [importlib.import_module(f"lightning_prune.bench.{name}").headline() for name in HEADLINE_MODULES]
    lines = ["| method | paper's claim | measured here | evidence |", "|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['claim']} | {r['measured']} | {r['evidence']} |" for r in rows]
    return "\n".join(lines)


TABLES = {"headline": headline}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightning_prune.bench.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="list stale tables and exit 1 if any; write nothing")
    args = parser.parse_args(argv)
    if args.check:
        found = stale()
        for line in found:
            print(f"stale: {line} (run python -m lightning_prune.bench.docs)")
        return 1 if found else 0
    for path in documents():
        text = path.read_text()
        new = regenerate(text)
        if new != text:
            path.write_text(new)
            print(f"rewrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
