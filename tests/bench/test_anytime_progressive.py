"""The anytime_progressive benchmark: a quick run writes every promised field; its tables read the committed JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_prune.bench import anytime_progressive
from lightning_prune.bench.__main__ import dispatch
from lightning_prune.bench._compose import compose_benchmark

ARM_KEYS = {"test_acc", "gen_gap", "mean_gen_gap", "cer", "kept_params", "params", "per_megabatch", "wall_s", "cpu_s"}


def test_anytime_progressive_quick_benchmark_writes_the_promised_json(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    assert dispatch(["anytime_progressive", "scale=quick", f"out={out}"]) == 0
    result = json.loads(out.read_text())
    assert result["dataset"] == "digits"
    for arm in ("dense", "app", "oneshot"):
        assert set(result[arm]) >= ARM_KEYS, arm
        assert len(result[arm]["per_megabatch"]) == result["setup"]["num_megabatches"] == 3
        assert 0 <= result[arm]["test_acc"] <= 1
        assert -1 <= result[arm]["gen_gap"] <= 1
    assert result["dense"]["kept_params"] == result["dense"]["params"]
    # APP and one-shot end at the same size, about 1/3 of the pruned layers' weights
    assert result["app"]["kept_params"] == result["oneshot"]["kept_params"] < result["dense"]["kept_params"]
    assert [r["sparsity"] for r in result["oneshot"]["per_megabatch"]] == [result["oneshot"]["sparsity"]] * 3
    assert result["setup"]["optimizer"] == "sgd lr=0.05 restarted per megabatch, x0.1 at 40%/80%"
    provenance = result["provenance"]
    assert provenance["complete"] is True
    assert provenance["command"] == f"python -m lightning_prune.bench anytime_progressive scale=quick out={out}"
    assert provenance["config"]["num_megabatches"] == 3
    assert "environment" in result


def test_anytime_progressive_ablation_turns_the_lr_decay_off() -> None:
    assert compose_benchmark("anytime_progressive").lr_decay is True
    assert compose_benchmark("anytime_progressive", ["ablation=no_lr_decay"]).lr_decay is False


@pytest.mark.parametrize("key", list(anytime_progressive.TABLES))
def test_anytime_progressive_tables_read_the_committed_json(key: str) -> None:
    table = anytime_progressive.TABLES[key]()
    assert table.startswith("| ")
    assert len(table.splitlines()) >= 3


def test_anytime_progressive_headline_names_the_method_and_its_page() -> None:
    row = anytime_progressive.headline()
    assert row["method"] == "Anytime Progressive Pruning"
    assert "vs dense" in row["measured"]
    assert row["evidence"] == "[docs/anytime_progressive.md](docs/anytime_progressive.md)"
