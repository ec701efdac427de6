"""The ICE benchmark at scale=quick: every arm runs and the JSON has the promised fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lightning_prune.bench.__main__ import dispatch
from lightning_prune.bench._common import default_data
from lightning_prune.bench._compose import compose_benchmark
from lightning_prune.bench.ice import arms, tables
from lightning_prune.callbacks.ice.tuning import STAGE1_SPACE

ARM_KEYS = {"wall_s", "test_acc", "sparsity", "finetune_epochs"}


def _run(tmp_path: Path, *overrides: str) -> dict:
    out = tmp_path / "ice.json"
    assert dispatch(["ice", "scale=quick", f"out={out}", *overrides]) == 0
    return json.loads(out.read_text())


def test_ice_bench_quick(tmp_path: Path) -> None:
    result = _run(tmp_path)
    assert result["dataset"] == "digits"
    arms_run = [result["baseline"], result["ice"], *result["ablations"].values()]
    assert set(result["ablations"]) == {"gate", "freezing", "lr"}
    assert result["provenance"]["complete"] is True
    assert result["provenance"]["config"]["workload"]["blocks"] == [2, 2]
    assert all(set(arm) >= ARM_KEYS for arm in arms_run)
    assert len({round(arm["sparsity"], 6) for arm in arms_run}) == 1  # equal final sparsity in every arm
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
    cfg = compose_benchmark("ice", ["scale=quick", "workload.pretrain_epochs=1"])
    work = arms.Workload(**OmegaConf.to_container(cfg.workload))
    datamodule, _ = default_data(None, 0, batch_size=128, digits=True)
    states = []
    for seed, disturbance in ((0, 1), (0, 2), (1, 1)):
        torch.manual_seed(disturbance)  # a process's own initial seed is arbitrary
        states.append(arms.pretrain(datamodule, work, seed, tmp_path))
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])
    assert not all(torch.equal(states[0][key], states[2][key]) for key in states[0])


def test_ice_bench_one_ablation_and_sizes_as_overrides(tmp_path: Path) -> None:
    result = _run(tmp_path, "ablation=gate_only", "workload.search_fraction=0.5")
    assert set(result["ablations"]) == {"gate"}
    assert result["workload"]["search_fraction"] == 0.5
    assert result["provenance"]["config"]["ablations"] == ["gate"]
    assert result["speedup"] == result["baseline"]["wall_s"] / result["ice"]["wall_s"]


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("workload.search_fraction=0", r"workload.search_fraction must be in \(0, 1\], got 0"),
        ("workload.train_fraction=1.5", r"workload.train_fraction must be in \(0, 1\], got 1.5"),
        ("workload.trials=-1", "workload.trials must be an integer >= 1, got -1"),
        ("ablations=[gate,pruner]", r"ablations must be one of \['gate', 'freezing', 'lr'\], got 'pruner'"),
    ],
)
def test_ice_bench_refuses_bad_settings_before_training(tmp_path: Path, monkeypatch, override: str, match: str) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("the model was pre-trained before the settings were checked")

    monkeypatch.setattr(arms, "pretrain", no_training)
    with pytest.raises(ValueError, match=match):
        dispatch(["ice", "scale=quick", f"out={tmp_path / 'ice.json'}", override])


def test_a_run_stopped_during_the_ablations_keeps_its_comparison(tmp_path: Path, monkeypatch) -> None:
    make_parts = arms.make_parts

    def stop_at_the_first_ablation(params, parts, val_batches):
        if len(parts) == 1:
            raise KeyboardInterrupt
        return make_parts(params, parts, val_batches)

    monkeypatch.setattr(arms, "make_parts", stop_at_the_first_ablation)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "workload.search_fraction=0.5")
    result = json.loads((tmp_path / "ice.json").read_text())
    assert result["provenance"]["complete"] is False
    assert result["ablations"] == {}
    assert result["speedup"] == result["baseline"]["wall_s"] / result["ice"]["wall_s"]


def test_the_depth_axis_compares_at_every_depth_and_the_deepest_on_each_seed(tmp_path: Path) -> None:
    result = _run(tmp_path, "axis=depth", "depths=[1,2]", "deepest_seeds=[0,1]")
    assert result["provenance"]["complete"] is True
    assert [(run["blocks"], run["seed"]) for run in result["runs"]] == [(2, 0), (4, 0), (4, 1)]  # two stages
    rows = {row["blocks"]: row for row in result["depths"]}
    assert set(rows) == {2, 4}
    assert (rows[2]["seeds"], rows[4]["seeds"]) == ([0], [0, 1])
    deepest = [run for run in result["runs"] if run["blocks"] == 4]
    assert rows[4]["speedup"] == pytest.approx(sum(run["speedup"] for run in deepest) / 2)
    assert rows[4]["acc_delta_pt"] == pytest.approx(sum(run["acc_delta_pt"] for run in deepest) / 2)
    for run in result["runs"]:
        assert run["speedup"] == run["baseline_s"] / run["ice_s"]  # the search is inside ICE's time
        assert 0 < run["search_share"] < 1
    assert result["workload"]["distill"] is True  # the paper's fine-tune loss, in both arms


def test_distillation_runs_in_both_arms_when_asked(tmp_path: Path) -> None:
    cfg = compose_benchmark("ice", ["scale=quick", "workload.distill=true"])
    work = arms.Workload(**OmegaConf.to_container(cfg.workload))
    datamodule, _ = default_data(None, 0, batch_size=128, digits=True)
    state = arms.pretrain(datamodule, work, 0, tmp_path)
    baseline = arms.run_arm(state, datamodule, work, [], 0, tmp_path)
    ice = arms.run_arm(state, datamodule, work, arms.make_parts({}, tuple(arms.PARTS), 2), 0, tmp_path)
    assert baseline["distill_kd"] > 0
    assert ice["distill_kd"] > 0


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("depths=[]", "depths must be a non-empty list"),
        ("depths=[0,2]", "each an int >= 1, got \\[0, 2\\]"),
        ("deepest_seeds=[1,1]", "deepest_seeds must be a non-empty list of distinct seeds"),
    ],
)
def test_the_depth_axis_refuses_bad_lists_before_training(tmp_path: Path, override: str, match: str) -> None:
    extra = [] if override.startswith("depths") else ["depths=[1]"]
    with pytest.raises(ValueError, match=match):
        dispatch(["ice", "scale=quick", f"out={tmp_path / 'ice.json'}", override, *extra])
    assert not (tmp_path / "ice.json").exists()


def test_the_depth_tables_render_from_a_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(tmp_path, "axis=depth", "depths=[1]", "deepest_seeds=[0]")
    monkeypatch.setattr(tables, "load_result", lambda relative: result)
    rows = tables.depth().splitlines()[2:]
    (row,) = rows
    assert row.startswith("| 2 | 0 | **")
    assert f"{result['depths'][0]['speedup']:.2f}x" in row
    verdict = tables.depth_verdict()
    assert verdict.startswith("At 2 blocks (1 seeds):")
    assert ("**met**" in verdict) == (
        result["depths"][0]["speedup"] >= 5 and result["depths"][0]["acc_delta_pt"] >= -0.5
    )
