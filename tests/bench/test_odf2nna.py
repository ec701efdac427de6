"""bench odf2nna: the quick run writes every promised field; the protocol's parts on their own."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from lightning_prune.bench.__main__ import dispatch
from lightning_prune.bench._compose import REPO
from lightning_prune.bench.odf2nna import TABLES, headline, protocol, tables
from lightning_prune.bench.odf2nna.arms import ARMS, HIDDEN, BestValidation, build_module, fit_arm, split_loss
from lightning_prune.bench.odf2nna.protocol import choose_setting
from lightning_prune.bench.odf2nna.tables import RUNS
from lightning_prune.data import TabularDataModule

KEYS = {"params", "test_metric", "latency_ms_b1", "latency_ms_b256"}


def test_odf2nna_bench_quick_writes_the_promised_keys(tmp_path, monkeypatch) -> None:
    out = tmp_path / "odf2nna.json"
    threads = torch.get_num_threads()
    assert dispatch(["odf2nna", "scale=quick", f"out={out}"]) == 0
    assert torch.get_num_threads() == threads  # the benchmark times on one thread and gives the threads back
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
        assert isinstance(arms["faithful"]["epsilon_within_tolerance"], bool)
        assert arms["faithful"]["params"] < arms["wide"]["params"]
        assert {"faithful_param_reduction", "faithful_metric_delta", "rebuilt_minus_faithful"} <= set(arms["ratios"])
        assert len(arms["faithful_grid"]["epsilon=0.8,retrain_lr_scale=1.0"]["val_delta_seeds"]) == 1
        for arm in ("control", "rebuilt", "faithful", "magnitude"):
            assert {"val_metric_before_retraining", "test_metric_before_retraining"} <= set(arms[arm])
            assert arms[arm]["kept_before_retraining_seeds"] in (0, 1)
    assert result["metric"] == {"breast_cancer": "acc", "diabetes": "r2"}
    assert result["environment"]["torch_threads"] == 1
    assert result["protocol"]["epsilons"] == [0.8]
    assert result["provenance"]["command"] == f"python -m lightning_prune.bench odf2nna scale=quick out={out}"
    assert result["provenance"]["complete"] is True
    monkeypatch.setattr(tables, "_result", lambda name: result)  # a fresh run's JSON renders every table
    for key, table in TABLES.items():
        assert table().startswith("| "), key


def test_wide_phase_checkpoint_resumes_where_the_wide_phase_stopped(tmp_path) -> None:
    """The pruned arms rebuild at the epoch after the last one trained (they used to train one wide epoch
    more), from the wide net's best-validation weights."""
    settings = SimpleNamespace(patience=1, max_wide_epochs=4, lr=1e-3, restore_best=True)
    datamodule = TabularDataModule("wine", batch_size=32, seed=0)
    datamodule.setup()
    best = BestValidation()
    path, epochs = protocol._train_wide(datamodule, 0, best, str(tmp_path), settings)
    state = torch.load(path, weights_only=True)
    batches_per_epoch = -(-len(datamodule.train_set) // 32)
    assert 2 <= epochs <= 4
    assert state["global_step"] == epochs * batches_per_epoch
    for name, value in best.state.items():
        torch.testing.assert_close(state["state_dict"][name], value, rtol=0, atol=0)


def test_the_faithful_arm_transfers_plainly_against_the_layer_max(tmp_path, monkeypatch) -> None:
    """The paper's procedure from the shared checkpoint: no replacement of the removed units, the layer's largest
    score as the reference; the default arm from the same checkpoint keeps its own settings."""
    made = []

    class Recorded(protocol.DenseUnitPruning):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            made.append(self)

    monkeypatch.setattr(protocol, "DenseUnitPruning", Recorded)
    settings = SimpleNamespace(
        patience=1, max_wide_epochs=3, lr=1e-3, restore_best=True, retrain_epochs=1, reference_quantile=0.99,
        fresh_optimizer=False, compensation="least_squares", repeats=3, warmup=1,
    )  # fmt: skip
    datamodule = TabularDataModule("wine", batch_size=32, seed=0)
    datamodule.setup()
    path, epochs = protocol._train_wide(datamodule, 0, BestValidation(), str(tmp_path), settings)
    faithful = protocol._rebuilt_arm(datamodule, epochs, (0.5, 1.0), path, settings, faithful=True)
    default = protocol._rebuilt_arm(datamodule, epochs, (0.5, 1.0), path, settings)
    assert (made[0].compensation, made[0].reference_quantile) == ("none", 1.0)
    assert (made[1].compensation, made[1].reference_quantile) == ("least_squares", 0.99)
    assert made[0].rebuilt
    assert faithful["params"] < made[0].params_before
    # the layer-max reference keeps fewer units than the 0.99 quantile at the same epsilon
    assert sum(faithful["widths"]) <= sum(default["widths"])


def test_best_validation_keeps_the_pruned_net_when_no_epoch_beats_it(tmp_path) -> None:
    """A net offered before fine-tuning with a lower validation loss than any epoch is the one loaded."""
    datamodule = TabularDataModule("wine", batch_size=32, seed=0)
    datamodule.setup()
    module = build_module(datamodule, HIDDEN, 1e-3)
    best = BestValidation()
    offered = {k: v.clone() for k, v in module.state_dict().items()}
    best.offer(-1.0, module, before_finetuning=True)  # no cross-entropy is below zero
    fit_arm(datamodule, module, 2, [], best)
    assert best.chose_before_finetuning
    for name, value in offered.items():
        torch.testing.assert_close(module.state_dict()[name], value, rtol=0, atol=0)
    assert split_loss(module, datamodule, "val") > 0


def test_choose_setting_uses_validation_only() -> None:
    wide = 0.97
    grid = {
        (0.3, 1.0): [0.97 - wide],
        (0.3, 0.1): [0.96 - wide],
        (0.5, 1.0): [0.962 - wide],
        (0.5, 0.1): [0.966 - wide],
        (0.7, 1.0): [0.90 - wide],
        (0.7, 0.1): [0.91 - wide],
    }
    assert choose_setting(grid, tolerance=0.005) == (0.5, 0.1)  # largest epsilon, best scale within
    lower = {key: [delta - 0.02] for key, delta in ((key, values[0]) for key, values in grid.items())}
    assert choose_setting(lower, tolerance=0.005) == (0.3, 1.0)  # none within: smallest epsilon's best
    assert choose_setting({(0.5, 1.0): [0.0], (0.5, 0.1): [0.0]}, tolerance=0.0) == (0.5, 1.0)


def test_the_margin_asks_room_in_proportion_to_the_seeds_disagreement() -> None:
    """Same seed-mean validation loss at both epsilons; the seeds disagree at the larger one, so with a margin
    of one standard error the smaller is chosen (the mean alone chooses the larger)."""
    grid = {(0.6, 1.0): [-0.004, -0.004, -0.004, -0.004], (0.7, 1.0): [0.01, -0.018, 0.01, -0.018]}
    assert choose_setting(grid, tolerance=0.005) == (0.7, 1.0)
    assert choose_setting(grid, tolerance=0.005, margin=1.0) == (0.6, 1.0)  # 0.7: -0.004 - 0.0081 < -0.005


def test_a_size_target_takes_the_least_pruning_that_reaches_it() -> None:
    deltas = {(0.5, 1.0): [0.0], (0.6, 1.0): [0.0], (0.7, 1.0): [-0.004], (0.8, 1.0): [-0.02]}
    removed = {(0.5, 1.0): 0.6, (0.6, 1.0): 0.72, (0.7, 1.0): 0.9, (0.8, 1.0): 0.97}
    assert choose_setting(deltas, 0.005, reductions=removed) == (0.7, 1.0)  # no target: the largest within
    assert choose_setting(deltas, 0.005, reductions=removed, target_reduction=0.7) == (0.6, 1.0)
    assert choose_setting(deltas, 0.005, reductions=removed, target_reduction=0.95) == (0.7, 1.0)  # none within


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["reference_quantile=2"], r"reference_quantile must be in \(0, 1\], got 2"),
        (["margin=-1"], r"margin must be a number of standard errors >= 0, got -1"),
        (["target_reduction=1.5"], r"target_reduction must be null or a fraction in \(0, 1\), got 1.5"),
        (["faithful_retrain_lr_scales=[0]"], r"retrain_lr_scale must be in \(0, 1\], got 0"),
        (["epsilons=[0.5,1.5]"], r"epsilon must be in \[0, 1\), got 1.5"),
        (["retrain_lr_scales=[1,0]"], r"retrain_lr_scale must be in \(0, 1\], got 0"),
        (["compensation=median"], r"compensation must be one of \['least_squares', 'mean', 'none'\]"),
        (
            ["datasets=[wine,iris]"],
            r"datasets must be a non-empty list of \[.*'diabetes'\], got \['wine', 'iris'\]",
        ),
    ],
)
def test_odf2nna_bench_refuses_bad_settings_before_training(tmp_path, monkeypatch, overrides, match: str) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("a net was trained before the settings were checked")

    monkeypatch.setattr(protocol, "_train_wide", no_training)
    out = tmp_path / "odf2nna.json"
    with pytest.raises(ValueError, match=match):
        dispatch(["odf2nna", "datasets=[wine]", f"out={out}", *overrides])
    assert not out.exists()


def test_odf2nna_tables_and_headline_come_from_the_committed_jsons() -> None:
    for key, table in TABLES.items():
        assert table().startswith("| "), key
    row = headline()
    assert set(row) == {"method", "claim", "measured", "evidence"}
    assert row["evidence"] == "[docs/odf2nna.md](docs/odf2nna.md)"


def test_every_committed_odf2nna_json_is_cited_by_the_docs_page() -> None:
    page = (REPO / "docs" / "odf2nna.md").read_text()
    committed = sorted(path.name for path in (REPO / "docs" / "bench" / "odf2nna").glob("*.json"))
    assert committed == sorted(f"{name}.json" for name, _ in RUNS)
    for name in committed:
        assert f"bench/odf2nna/{name}" in page, f"docs/bench/odf2nna/{name} is cited by no table"
