"""Benchmarks compose from conf/bench/NAME/ and record their provenance beside their figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_prune.bench import _compose
from lightning_prune.bench.__main__ import dispatch


def _conf(root: Path) -> Path:
    (root / "toy" / "scale").mkdir(parents=True)
    (root / "toy" / "main.yaml").write_text(
        "defaults:\n  - _self_\n  - scale: null\nout: ${oc.env:TOY_OUT}\nepochs: 10\nseed: 0\n"
    )
    (root / "toy" / "scale" / "quick.yaml").write_text("# @package _global_\nepochs: 1\n")
    return root


def test_a_benchmark_is_its_main_yaml_with_overrides(tmp_path: Path) -> None:
    root = _conf(tmp_path)
    assert _compose.available(root) == ["toy"]
    assert _compose.compose_benchmark("toy", [], root).epochs == 10
    assert _compose.compose_benchmark("toy", ["scale=quick"], root).epochs == 1
    assert _compose.compose_benchmark("toy", ["seed=3"], root).seed == 3
    with pytest.raises(ValueError, match=r"no benchmark named 'nope'; available: \['toy'\]"):
        _compose.compose_benchmark("nope", [], root)


def test_record_writes_command_commit_date_load_and_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOY_OUT", str(tmp_path / "out" / "toy.json"))
    cfg = _compose.compose_benchmark("toy", ["seed=3"], _conf(tmp_path / "conf"))
    record = _compose.recorder("toy", ["seed=3"], cfg)
    path = record({"speedup": 2.5}, complete=False)
    result = json.loads(path.read_text())
    provenance = result["provenance"]
    assert result["speedup"] == 2.5
    assert provenance["command"] == "python -m lightning_prune.bench toy seed=3"
    assert provenance["commit"] is None or len(provenance["commit"].split("-")[0]) == 40
    assert provenance["started"][:4].isdigit()
    assert provenance["complete"] is False
    assert len(provenance["host_load"]["at_start"]) == 3
    assert provenance["config"]["seed"] == 3


def test_unknown_benchmark_lists_the_available_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert dispatch(["nope"]) == 2
    assert "NAME is one of" in capsys.readouterr().out
