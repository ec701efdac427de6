"""The recipes benchmark runs recipes as users do and renders the README's recipe table from its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_prune.bench import docs, recipes
from lightning_prune.bench.__main__ import dispatch


def test_quick_run_records_each_recipes_time_and_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r.json"
    assert dispatch(["recipes", "scale=quick", f"out={out}"]) == 0
    result = json.loads(out.read_text())
    assert list(result["recipes"]) == ["iterative"]
    entry = result["recipes"]["iterative"]
    assert entry["command"] == "python -m lightning_prune.run recipe=iterative seed=0 debug=fast"
    assert entry["description"].startswith("Iterative magnitude pruning")
    assert entry["wall_s"] > entry["fit_s"] > 0
    assert entry["metric"] == "test/acc"
    assert 0 <= entry["value"] <= 1
    assert entry["sparsity"] == pytest.approx(0.5, abs=1e-3)  # debug=fast's target
    assert entry["params_nonzero"] < entry["params"]
    assert result["provenance"]["complete"] is True
    assert result["provenance"]["config"]["threads"] == 1

    committed = tmp_path / recipes.RESULT
    committed.parent.mkdir(parents=True)
    committed.write_text(out.read_text())
    monkeypatch.setattr(docs, "REPO", tmp_path)  # what bench.docs reads: docs/bench/recipes/recipes.json
    table = recipes.TABLES["table"]()
    row = next(line for line in table.splitlines() if line.startswith("| `iterative`"))
    assert "| Iterative magnitude pruning |" in row
    assert "`python -m lightning_prune.run recipe=iterative seed=0 debug=fast`" in row
    assert f"sparsity {entry['sparsity']:.2f}" in row
    assert "OMP_NUM_THREADS=1" in table


def test_recipe_names_glob_the_recipes_and_refuse_unknown_ones(tmp_path: Path) -> None:
    for name in ("b", "a"):
        (tmp_path / f"{name}.yaml").write_text(f"# Recipe {name}: what it does.\n# What: more.\n")
    assert recipes.recipe_names((), tmp_path) == ["a", "b"]
    assert recipes.recipe_names(["b"], tmp_path) == ["b"]
    with pytest.raises(ValueError, match=r"no recipe named \['c'\]; available: \['a', 'b'\]"):
        recipes.recipe_names(["c"], tmp_path)
    assert recipes.description(tmp_path / "a.yaml") == "Recipe a: what it does."


def test_every_recipe_is_measured_by_default() -> None:
    assert recipes.recipe_names() == sorted(path.stem for path in recipes.RECIPES_DIR.glob("*.yaml"))
