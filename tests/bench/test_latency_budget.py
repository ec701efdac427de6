"""bench latency_budget: a quick composed run writes every arm's figures, the checks and its provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_prune.bench.__main__ import dispatch
from lightning_prune.bench._compose import compose_benchmark
from tests.helpers import REPO

ARM_KEYS = {"measured_ms", "test_acc", "macs", "params"}


def test_quick_latency_budget_writes_the_promised_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the latency table and ours' exports go under ./bench_out
    out = tmp_path / "x.json"
    threads = torch.get_num_threads()
    try:
        assert dispatch(["latency_budget", "scale=quick", f"out={out}"]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    assert {"device", "dense_ms", "budget_ms", "lut_r", "dense", "ours", "uniform", "dataset", "environment"} <= set(
        result
    )
    assert set(result["dense"]) >= ARM_KEYS
    assert ARM_KEYS | {"lut_predicted_ms", "speedup_over_mac_reduction"} <= set(result["ours"])
    assert ARM_KEYS | {"lut_predicted_ms", "ratio"} <= set(result["uniform"])
    assert result["dataset"] == "digits"
    assert result["budget_ms"] == pytest.approx(result["dense_ms"] * result["budget_fraction"])
    assert len(result["per_seed"]) == 1
    assert -1.0 <= result["lut_r"] <= 1.0
    assert set(result["checks"]) >= {"ours_within_budget_per_seed", "ours_acc_minus_uniform", "noise_max_spread"}
    assert (tmp_path / "bench_out" / "latency_lut_128.json").exists()
    provenance = result["provenance"]
    assert provenance["complete"] is True
    assert provenance["command"].startswith("python -m lightning_prune.bench latency_budget scale=quick")
    assert provenance["config"]["lut_path"] == "bench_out/latency_lut_128.json"  # interpolations resolved


def test_main_config_holds_the_committed_run_settings() -> None:
    cfg = compose_benchmark("latency_budget")
    committed = json.loads((REPO / "docs/bench/latency_budget/main.json").read_text())["settings"]
    for key in ("budget_fraction", "steps", "batch_size", "threads", "rounds", "round_to", "repeats", "lut_repeats"):
        assert cfg[key] == committed[key], key
    for key in ("pretrain_epochs", "finetune_epochs", "final_epochs"):
        assert cfg[key] == committed[key], key
    assert list(cfg.ratios) == committed["ratios"]
    assert len(cfg.seeds) == committed["seeds"]
