"""Every committed results table equals what its benchmark JSON gives (python -m lightning_prune.bench.docs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lightning_prune.bench import docs
from lightning_prune.bench._compose import REPO


def test_committed_tables_match_their_json() -> None:
    assert docs.stale() == []


def test_readme_and_each_method_page_carry_generated_tables() -> None:
    marked = {path.name: len(docs.MARKER.findall(path.read_text())) for path in docs.documents()}
    assert marked["README.md"] >= 1, "the README's results table must be generated"
    for name in ("ice.md", "latency_budget.md", "instant_soup.md", "odf2nna.md", "anytime_progressive.md"):
        assert marked.get(name, 0) >= 1, f"docs/{name} has no generated table"


def test_a_changed_json_makes_its_tables_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    monkeypatch.setattr(docs, "REPO", tmp_path)
    assert docs.stale(tmp_path) == []
    path = sorted((tmp_path / "docs" / "bench").rglob("*.json"))[0]
    result = json.loads(path.read_text())
    _scale_numbers(result)
    path.write_text(json.dumps(result))
    assert docs.stale(tmp_path), f"changing every figure of {path.name} left every table as it was"


def _scale_numbers(node: object) -> object:
    """Every float in ``node`` (in place) times 0.5: any table that prints one changes."""
    if isinstance(node, dict):
        for key, value in node.items():
            node[key] = _scale_numbers(value)
    elif isinstance(node, list):
        node[:] = [_scale_numbers(value) for value in node]
    elif isinstance(node, float):
        return node * 0.5
    return node
