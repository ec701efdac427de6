"""The ICE benchmark's quick mode: every arm runs and the JSON has the keys the issue names."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lightning_prune.bench import ice as ice_bench
from lightning_prune.bench._common import default_data
from lightning_prune.bench.ice import main
from lightning_prune.ice_tuning import STAGE1_SPACE

ARM_KEYS = {"wall_s", "test_acc", "sparsity", "finetune_epochs"}


def test_ice_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "ice.json"
    assert main(["--quick", "--out", str(out), "--threads", "1"]) == 0
    result = json.loads(out.read_text())
    assert result["dataset"] == "digits"
    arms = [result["baseline"], result["ice"], *result["ablations"].values()]
    assert set(result["ablations"]) == {"gate", "freezing", "lr"}
    assert result["complete"] is True
    assert all(set(arm) >= ARM_KEYS for arm in arms)
    assert len({round(arm["sparsity"], 6) for arm in arms}) == 1  # equal final sparsity in every arm
    assert result["speedup"] == result["baseline"]["wall_s"] / result["ice"]["wall_s"]
    assert result["acc_delta_pt"] == 100 * (result["ice"]["test_acc"] - result["baseline"]["test_acc"])
    assert result["ice"]["wall_s"] == result["ice"]["run_s"] + result["ice"]["search_s"]
    assert result["baseline"]["finetune_epochs"] == result["baseline"]["steps"]  # traditional: one per step
    assert set(result["ice_time_split_s"]) >= {"search", "evaluate", "finetune", "prune"}
    search = result["search"]
    thresholds = [trial["params"]["callbacks.ice_gate.threshold"] for trial in search["trials"]]
    assert thresholds == STAGE1_SPACE["callbacks.ice_gate.threshold"]  # one trial per threshold
    assert search["reference"]["finetune_epochs"] == result["baseline"]["steps"]  # the traditional pipeline
    assert min(trial["objective"] for trial in search["trials"]) == search["best_objective"]
    for trial in search["trials"]:  # trials are bounded on the whole validation split, not the gate's batches
        assert trial["drop_vs_reference_pt"] == 100.0 * (search["reference"]["val_acc"] - trial["val_acc"])
    assert result["ice"]["finetune_epochs"] >= 1  # the last step is always fine-tuned


def test_pretraining_depends_on_the_seed_only(tmp_path: Path) -> None:
    datamodule, _ = default_data(None, 0, batch_size=128, digits=True)
    work = replace(ice_bench.QUICK, pretrain_epochs=1)
    states = []
    for seed, disturbance in ((0, 1), (0, 2), (1, 1)):
        torch.manual_seed(disturbance)  # a process's own initial seed is arbitrary
        states.append(ice_bench.pretrain(datamodule, work, seed, tmp_path))
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])
    assert not all(torch.equal(states[0][key], states[2][key]) for key in states[0])


def test_ice_bench_sizes_and_skipping_the_ablations(tmp_path: Path) -> None:
    out = tmp_path / "ice.json"
    assert main(["--quick", "--skip-ablations", "--search-fraction", "0.5", "--out", str(out), "--threads", "1"]) == 0
    result = json.loads(out.read_text())
    assert result["ablations"] == {}
    assert result["workload"]["search_fraction"] == 0.5
    assert result["speedup"] == result["baseline"]["wall_s"] / result["ice"]["wall_s"]


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--search-fraction", "0"], r"--search-fraction must be in \(0, 1\], got 0.0"),
        (["--train-fraction", "1.5"], r"--train-fraction must be in \(0, 1\], got 1.5"),
        (["--trials", "-1"], "--trials must be >= 1, got -1"),
    ],
)
def test_ice_bench_refuses_bad_sizes_before_training(tmp_path: Path, monkeypatch, argv: list[str], match: str) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("the model was pre-trained before the sizes were checked")

    monkeypatch.setattr(ice_bench, "pretrain", no_training)
    with pytest.raises(ValueError, match=match):
        main(["--quick", "--out", str(tmp_path / "ice.json"), *argv])


def test_a_run_stopped_during_the_ablations_keeps_its_comparison(tmp_path: Path, monkeypatch) -> None:
    make_parts = ice_bench.make_parts

    def stop_at_the_first_ablation(params, parts, val_batches):
        if len(parts) == 1:
            raise KeyboardInterrupt
        return make_parts(params, parts, val_batches)

    monkeypatch.setattr(ice_bench, "make_parts", stop_at_the_first_ablation)
    out = tmp_path / "ice.json"
    with pytest.raises(KeyboardInterrupt):
        main(["--quick", "--search-fraction", "0.5", "--out", str(out), "--threads", "1"])
    result = json.loads(out.read_text())
    assert result["complete"] is False
    assert result["ablations"] == {}
    assert result["speedup"] == result["baseline"]["wall_s"] / result["ice"]["wall_s"]
