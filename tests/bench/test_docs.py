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


COMMITTED = sorted(str(path.relative_to(REPO)) for path in (REPO / "docs" / "bench").rglob("*.json"))


@pytest.mark.parametrize("relative", COMMITTED)
def test_every_committed_json_feeds_a_table(relative: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Changing every figure of a committed JSON changes (or breaks) some table: no committed JSON is ignored."""
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    monkeypatch.setattr(docs, "REPO", tmp_path)
    assert docs.stale(tmp_path) == []
    path = tmp_path / relative
    result = json.loads(path.read_text())
    _scale_numbers(result)
    path.write_text(json.dumps(result))
    try:
        changed = docs.stale(tmp_path)
    except (KeyError, ValueError):  # a figure that also names a row (epsilon=0.15) no longer matches: it is read
        return
    assert changed, f"changing every figure of {relative} left every table as it was"


def test_readme_is_a_front_door() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert len(readme.splitlines()) <= 250
    setup = "pip install torch==2.14.1 torchvision==0.29.1 -e '.[test]' && python -m lightning_prune.run recipe=iter"
    assert setup in readme
    assert ". .venv/bin/activate && python -m pytest" in readme
    assert "python -m lightning_prune.run recipe=iterative" in ci
    assert "python -m pytest" in ci


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
