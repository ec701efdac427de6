"""bench latency_budget: a quick composed run writes every arm's figures, the checks and its provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_prune.bench.__main__ import dispatch
from lightning_prune.bench._compose import compose_benchmark
from lightning_prune.bench.latency_budget import TABLES, headline, tables
from tests.helpers import REPO

ARM_KEYS = {"measured_ms", "test_acc", "macs", "params"}
ORT_KEYS = {"ort_ms", "ort_p50_ms", "ort_p90_ms", "ort_spread", "ort_max_abs_diff", "ort_over_eager", "onnx_bytes"}
PAIRED = {"speedup_paired", "ort_speedup_paired"}  # dense vs pruned, per runtime, median per-round ratio


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

    # both runtimes, timed side by side: eager and ONNX Runtime speed-ups of each pruned arm over dense
    assert result["onnxruntime"]["provider"] == "CPUExecutionProvider"
    assert set(result["dense"]) >= ORT_KEYS
    for arm in ("ours", "uniform"):
        assert ORT_KEYS | PAIRED | {"speedup", "ort_speedup"} <= set(result[arm])
        assert set(result["per_seed"][0][arm]) >= ORT_KEYS | PAIRED
        assert result[arm]["ort_speedup"] == pytest.approx(result["dense"]["ort_ms"] / result[arm]["ort_ms"])
        assert result[arm]["ort_speedup_paired"] > 0
    assert result["checks"]["ort_max_abs_diff"] <= 1e-4
    assert result["checks"]["ort_parity_ok"] is True
    monkeypatch.setattr(tables, "load_result", lambda relative: result)  # the docs' tables, from this run
    rendered = {key: make() for key, make in TABLES.items()}
    assert "ONNX Runtime" in rendered["setup"]
    mean = rendered["runtimes"].splitlines()[-1]
    assert mean.startswith("| mean of 1 |")
    assert f"{result['ours']['ort_speedup_paired']:.2f}" in mean
    assert "ONNX Runtime" in headline()["measured"]
    provenance = result["provenance"]
    assert provenance["complete"] is True
    assert provenance["command"].startswith("python -m lightning_prune.bench latency_budget scale=quick")
    assert provenance["config"]["lut_path"] == "bench_out/latency_lut_128.json"  # interpolations resolved


def test_main_config_holds_the_committed_run_settings() -> None:
    cfg = compose_benchmark("latency_budget")
    committed = json.loads((REPO / "docs/bench/latency_budget/main.json").read_text())
    assert committed["provenance"]["command"].startswith("python -m lightning_prune.bench latency_budget")
    settings = committed["provenance"]["config"]
    for key in ("budget_fraction", "steps", "batch_size", "threads", "rounds", "round_to", "repeats", "lut_repeats"):
        assert cfg[key] == settings[key], key
    for key in ("pretrain_epochs", "finetune_epochs", "final_epochs", "onnxruntime", "ratios"):
        assert cfg[key] == settings[key], key
    assert set(settings["seeds"]) <= set(cfg.seeds)  # a committed run may take fewer seeds (an override)
