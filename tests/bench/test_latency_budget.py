import json

import pytest
import torch

from lightning_prune.bench.latency import main

ARM_KEYS = {"measured_ms", "test_acc", "macs", "params"}


def test_quick_latency_benchmark_writes_the_promised_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the run writes its table and exports under ./bench_out
    # A mild budget: the smallest allowed net of a 1-epoch ResNet on a loaded CI machine can time above 0.5x dense.
    threads = torch.get_num_threads()
    try:
        assert main(["--quick", "--budget-fraction", "0.75", "--out", str(tmp_path / "latency.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads((tmp_path / "latency.json").read_text())
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
    assert (tmp_path / "bench_out" / "latency_lut_128.json").exists()
