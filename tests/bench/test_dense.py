from __future__ import annotations

import argparse
import json

import pytest
import torch

from lightning_prune.bench import dense
from lightning_prune.bench.dense import ARMS, choose_setting, main

KEYS = {"params", "test_metric", "latency_ms_b1", "latency_ms_b256"}


def test_dense_bench_quick_writes_the_promised_keys(tmp_path) -> None:
    out = tmp_path / "dense.json"
    threads = torch.get_num_threads()
    try:
        assert main(["--quick", "--datasets", "breast_cancer", "diabetes", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # the benchmark times on one thread; give the session its threads back
    result = json.loads(out.read_text())
    assert set(result["datasets"]) == {"breast_cancer", "diabetes"}
    for name, arms in result["datasets"].items():
        for arm in ARMS:
            assert set(arms[arm]) >= KEYS, (name, arm)
        assert arms["rebuilt"]["params"] < arms["wide"]["params"]
        assert arms["control"]["params"] == arms["wide"]["params"]  # epsilon 0 keeps every unit
        ratios = {"param_reduction", "speedup_b1", "speedup_b256", "transfer_gain", "metric_delta_vs_control"}
        assert ratios <= set(arms["ratios"])
        assert isinstance(arms["rebuilt"]["epsilon_within_tolerance"], bool)
        for arm in ("control", "rebuilt", "magnitude"):
            assert {"val_metric_before_retraining", "test_metric_before_retraining"} <= set(arms[arm])
            assert arms[arm]["kept_before_retraining_seeds"] in (0, 1)
    assert result["metric"] == {"breast_cancer": "acc", "diabetes": "r2"}
    assert result["environment"]["torch_threads"] == 1


def test_wide_phase_checkpoint_resumes_where_the_wide_phase_stopped(tmp_path) -> None:
    """The pruned arms rebuild at the epoch after the last one trained (they used to train one wide epoch
    more), from the wide net's best-validation weights."""
    settings = argparse.Namespace(patience=1, max_wide_epochs=4, lr=1e-3, restore_best=True)
    datamodule = dense.TabularDataModule("wine", batch_size=32, seed=0)
    datamodule.setup()
    best = dense.BestWeights()
    path, epochs = dense._train_wide(datamodule, 0, best, str(tmp_path), settings)
    state = torch.load(path, weights_only=True)
    batches_per_epoch = -(-len(datamodule.train_set) // 32)
    assert 2 <= epochs <= 4
    assert state["global_step"] == epochs * batches_per_epoch
    for name, value in best.state.items():
        torch.testing.assert_close(state["state_dict"][name], value, rtol=0, atol=0)


def test_best_weights_keep_the_pruned_net_when_no_epoch_beats_it(tmp_path) -> None:
    """A net offered before fine-tuning with a lower validation loss than any epoch is the one loaded."""
    datamodule = dense.TabularDataModule("wine", batch_size=32, seed=0)
    datamodule.setup()
    module = dense.build_module(datamodule, dense.HIDDEN, 1e-3)
    best = dense.BestWeights()
    offered = {k: v.clone() for k, v in module.state_dict().items()}
    best.offer(-1.0, module, before_finetuning=True)  # no cross-entropy is below zero
    dense.fit_arm(datamodule, module, 2, [], best)
    assert best.chose_before_finetuning
    for name, value in offered.items():
        torch.testing.assert_close(module.state_dict()[name], value, rtol=0, atol=0)
    assert dense.split_loss(module, datamodule, "val") > 0


def test_choose_setting_uses_validation_only() -> None:
    grid = {
        (0.3, 1.0): 0.97,
        (0.3, 0.1): 0.96,
        (0.5, 1.0): 0.962,
        (0.5, 0.1): 0.966,
        (0.7, 1.0): 0.90,
        (0.7, 0.1): 0.91,
    }
    assert choose_setting(grid, wide_val=0.97, tolerance=0.005) == (0.5, 0.1)  # largest epsilon, best scale within
    assert choose_setting(grid, wide_val=0.99, tolerance=0.005) == (0.3, 1.0)  # none within: smallest epsilon's best
    assert choose_setting({(0.5, 1.0): 0.97, (0.5, 0.1): 0.97}, wide_val=0.97, tolerance=0.0) == (0.5, 1.0)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--reference-quantile", "2"], "reference_quantile must be a number in"),
        (["--epsilons", "0.5", "1.5"], "epsilon must be a number in"),
        (["--retrain-lr-scales", "1", "0"], "retrain_lr_scale must be a number in"),
    ],
)
def test_dense_bench_refuses_bad_settings_before_training(tmp_path, monkeypatch, argv: list[str], match: str) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("a net was trained before the settings were checked")

    monkeypatch.setattr(dense, "_train_wide", no_training)
    out = tmp_path / "dense.json"
    with pytest.raises(ValueError, match=match):
        main(["--datasets", "wine", "--out", str(out), *argv])
    assert not out.exists()
