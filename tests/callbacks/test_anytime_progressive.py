"""AnytimeProgressivePruning: its refusals, the schedule to the weight, replay, baselines, resume, the recipe,
and the anytime metrics it counts after each megabatch."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_prune import AccuracyGate, AnytimeProgressivePruning, InstantSoupPruning
from lightning_prune.callbacks.anytime_progressive.metrics import anytime_metrics, batch_limit, count_errors
from lightning_prune.core.masks import keep_count
from lightning_prune.core.schedules import APP_TARGET_SPARSITY, app
from tests.callbacks.anytime_progressive.helpers import fit_app, megabatches, zeros
from tests.helpers import cnn_classifier


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target_sparsity": 1.0}, r"target_sparsity must be in \[0, 1\), got 1.0"),
        ({"target_sparsity": -0.2}, r"target_sparsity must be in \[0, 1\), got -0.2"),
        ({"target_sparsity": 0.1}, r"target_sparsity must be >= 0.20"),
        ({"num_megabatches": 0}, "num_megabatches must be an integer >= 1, got 0"),
        ({"epochs_per_megabatch": 1.5}, "epochs_per_megabatch must be an integer >= 1, got 1.5"),
        (
            {"schedule": "exponential"},
            r"schedule must be one of \['app', 'linear', 'cubic', 'oneshot'\], got 'exponential'",
        ),
        ({"snip_fraction": 0.0}, r"snip_fraction must be in \(0, 1\], got 0.0"),
        ({"snip_fraction": 1.5}, r"snip_fraction must be in \(0, 1\], got 1.5"),
        ({"snip_fraction": "0.2"}, r"snip_fraction must be in \(0, 1\], got '0.2'"),
        ({"scope": "row"}, "scope must be one of"),
        ({"replay": "buffer"}, r"replay must be one of \['full', 'partial', 'none'\], got 'buffer'"),
        ({"replay": "partial", "replay_fraction": 1.0}, r"replay_fraction must be in \(0, 1\) .*got 1.0"),
        ({"include_types": ["Dense"]}, "unknown module type"),
        ({"target_sparsity": "0.5"}, r"target_sparsity must be in \[0, 1\), got '0.5'"),
        ({"num_megabatches": "4"}, "num_megabatches must be an integer >= 1, got '4'"),
        ({"epochs_per_megabatch": "2"}, "epochs_per_megabatch must be an integer >= 1, got '2'"),
        ({"replay": "partial", "replay_fraction": "0.1"}, r"replay_fraction must be in \(0, 1\) .*got '0.1'"),
        ({"export_dir": 3}, r"export_dir must be a path \(str\) or None, got 3"),
    ],
)
def test_anytime_progressive_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AnytimeProgressivePruning(**kwargs)


def test_anytime_progressive_state_key() -> None:
    key = AnytimeProgressivePruning(target_sparsity=0.5, num_megabatches=4).state_key
    assert key.startswith("AnytimeProgressivePruning{")
    assert "'num_megabatches': 4" in key
    assert key != AnytimeProgressivePruning(target_sparsity=0.6, num_megabatches=4).state_key


@pytest.mark.parametrize(
    ("data", "max_epochs", "extra", "match"),
    [
        (lambda: megabatches(2), 6, (), "num_megabatches=3 differs from the data module's num_megabatches=2"),
        (
            lambda: megabatches(3),
            5,
            (),
            r"needs 6 training epochs \(num_megabatches=3 x epochs_per_megabatch=2\).*Trainer\(max_epochs=5",
        ),
        (
            lambda: megabatches(3),
            6,
            (AccuracyGate,),
            r"does not work with Trainer\(callbacks=\[\.\.\., AccuracyGate\]\)",
        ),
        (
            lambda: megabatches(3),
            6,
            (lambda: InstantSoupPruning(target_sparsity=0.5),),
            r"more than one pruning callback: AnytimeProgressivePruning .*InstantSoupPruning",
        ),
    ],
    ids=["other number of megabatches", "too few epochs", "with an ICE callback", "two pruners"],
)
def test_anytime_progressive_refuses_at_fit_start(
    trainer_kwargs: dict, data: Any, max_epochs: int, extra: tuple, match: str
) -> None:
    pruner = AnytimeProgressivePruning(num_megabatches=3, epochs_per_megabatch=2)
    callbacks = [pruner, *(make() for make in extra)]
    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=callbacks, **trainer_kwargs)
    with pytest.raises(ValueError, match=match):
        trainer.fit(cnn_classifier(widths=(8, 8)), datamodule=data())
    assert trainer.global_step == 0


def test_anytime_progressive_reaches_the_schedule_exactly_with_nested_masks(
    trainer_kwargs: dict, tmp_path: Path
) -> None:
    pruner, recorder, trainer, data = fit_app(trainer_kwargs, num=4, epochs=1, log_layers=True)
    history, schedule = pruner.pruning_state.history, app(APP_TARGET_SPARSITY, 4)
    total = pruner._masks.total()
    assert trainer.current_epoch == 4  # stopped after the last megabatch although max_epochs is 6
    for t, record in enumerate(history):
        kept = sum(int(m.sum()) for m in recorder.masks[t].values())
        assert kept == keep_count(total, schedule[t])  # density is the schedule's, to the weight
        assert record["sparsity"] == pytest.approx(1 - kept / total)
        if t:
            assert all((recorder.masks[t][k] <= recorder.masks[t - 1][k]).all() for k in recorder.masks[t])
    assert 1 - history[-1]["sparsity"] == pytest.approx(0.366, abs=2e-3)
    model = trainer.lightning_module
    for name, mask in pruner._masks.masks.items():  # pruned weights are exactly zero after training
        assert (model.get_parameter(name)[~mask] == 0).all()
    assert "classifier.weight" not in pruner._masks.masks

    # the anytime record: one per megabatch, CER the running sum of test errors, logged under app/
    sizes = data.megabatch_sizes()
    assert [r["train_samples"] for r in history] == [sum(sizes[: t + 1]) for t in range(4)]
    assert [r["cer"] for r in history] == list(torch.tensor([r["errors"] for r in history]).cumsum(0).tolist())
    for record in history:
        assert record["gen_gap"] == pytest.approx(record["train_acc"] - record["val_acc"])
        assert 0 <= record["test_acc"] <= 1
        assert record["cer_split"] == "test"
    metrics = trainer.callback_metrics
    assert float(metrics["app/cer"]) == history[-1]["cer"]
    assert float(metrics["app/test_acc"]) == pytest.approx(history[-1]["test_acc"])
    assert float(metrics["app/megabatch"]) == 4
    assert float(metrics["prune/sparsity"]) == pytest.approx(history[-1]["sparsity"])
    summary = json.loads((tmp_path / "summary.json").read_text())["anytime_progressive"]
    assert len(summary["history"]) == 4
    assert summary["tau"] == pytest.approx(4.5)
    assert summary["cer"] == history[-1]["cer"]
    assert summary["kept_params"] < summary["params"]
    # the end-of-run contract: the summary's sparsity is the one measured on the weights, the schedule finished
    assert summary["sparsity"] == summary["measured"]["sparsity"] == pytest.approx(zeros(pruner, model))
    assert summary["sparsity"] == pytest.approx(history[-1]["sparsity"], abs=1e-3)
    assert summary["finished"] is True
    assert "shortfall" not in summary


@pytest.mark.parametrize("replay", ["full", "partial", "none"])
def test_anytime_progressive_trains_each_megabatch_on_its_replay_set(trainer_kwargs: dict, replay: str) -> None:
    pruner, recorder, _, data = fit_app(trainer_kwargs, num=3, epochs=1, replay=replay, replay_fraction=0.2)
    expected = [len(data.train_indices(t, replay, 0.2)) for t in range(3)]
    assert [recorder.seen[t] for t in range(3)] == expected
    assert [r["train_samples"] for r in pruner.pruning_state.history] == expected
    if replay == "partial":
        sizes = data.megabatch_sizes()
        assert expected[2] == sizes[2] + round(0.2 * sizes[0]) + round(0.2 * sizes[1])


@pytest.mark.parametrize(("kwargs", "expected"), [({"schedule": "oneshot"}, "target"), ({"target_sparsity": 0.0}, 0)])
def test_anytime_progressive_oneshot_and_dense_baselines(trainer_kwargs: dict, kwargs: dict, expected: Any) -> None:
    pruner, recorder, *_ = fit_app(trainer_kwargs, num=3, epochs=1, **kwargs)
    sparsities = [r["sparsity"] for r in pruner.pruning_state.history]
    target = APP_TARGET_SPARSITY if expected == "target" else 0.0
    assert sparsities == [pytest.approx(target, abs=2e-3)] * 3
    for name in recorder.masks[0]:  # the first megabatch's mask is kept to the end
        assert torch.equal(recorder.masks[0][name], recorder.masks[2][name])


@pytest.mark.parametrize("resume_epoch", [2, 3], ids=["mid_megabatch", "megabatch_boundary"])
def test_anytime_progressive_resume_matches_uninterrupted(
    trainer_kwargs: dict, tmp_path: Path, resume_epoch: int
) -> None:
    trainer_kwargs = {**trainer_kwargs, "enable_checkpointing": True}
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    full, full_rec, full_trainer, _ = fit_app(trainer_kwargs, num=3, epochs=2, extra=(every_epoch,))
    # epoch 2 is megabatch 2's first epoch; after epoch 3 (megabatch 2's last) megabatch 3 starts
    ckpt = tmp_path / "ckpt" / f"epoch={resume_epoch}.ckpt"
    assert torch.load(ckpt, weights_only=True)  # callback state loads without pickled code
    trainer_kwargs["default_root_dir"] = str(tmp_path / "resumed")
    resumed, rec, trainer, data = fit_app(trainer_kwargs, num=3, epochs=2, ckpt=str(ckpt))
    assert data.megabatch == 2
    assert sorted(rec.first) == list(range(resume_epoch + 1, 6))
    for epoch, labels in rec.first.items():  # same data, same order
        assert torch.equal(labels, full_rec.first[epoch])
    for name, mask in full._masks.masks.items():
        torch.testing.assert_close(resumed._masks.masks[name], mask)
    for a, b in zip(full.pruning_state.history, resumed.pruning_state.history):
        for key in ("sparsity", "train_acc", "val_acc", "test_acc", "cer", "train_samples"):
            assert a[key] == pytest.approx(b[key]), key
    torch.testing.assert_close(trainer.callback_metrics["val/acc"], full_trainer.callback_metrics["val/acc"])


def test_anytime_progressive_recipe_composes_and_runs(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from lightning_prune.run import train
    from tests.helpers import REPO

    overrides = [
        "recipe=anytime_progressive",
        f"paths.output_dir={tmp_path}",
        "logger=none",
        "model.net.widths=[8,8]",
        "callbacks.anytime_progressive.epochs_per_megabatch=1",
        "trainer.max_epochs=4",
        "trainer.enable_progress_bar=false",
    ]
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose("run", overrides=overrides)
    assert cfg.callbacks.anytime_progressive.num_megabatches == cfg.data.num_megabatches == 4
    assert cfg.data.datamodule._target_ == "lightning_prune.data.DigitsDataModule"
    metrics = train(cfg)
    summary = json.loads((tmp_path / "summary.json").read_text())
    history = summary["anytime_progressive"]["history"]
    assert len(history) == 4
    assert history[-1]["sparsity"] == pytest.approx(APP_TARGET_SPARSITY, abs=2e-3)
    assert metrics["test/acc"] == pytest.approx(summary["anytime_progressive"]["test_acc"], abs=1e-6)


def test_anytime_metrics_without_a_test_set_counts_validation_errors() -> None:
    metrics = anytime_metrics({"train": (0, 10), "val": (2, 8)}, previous_cer=3)
    assert metrics == {"train_acc": 1.0, "val_acc": 0.75, "gen_gap": 0.25, "errors": 2, "cer": 5, "cer_split": "val"}


def test_anytime_metrics_of_an_empty_split_is_nan() -> None:
    assert math.isnan(anytime_metrics({"train": (0, 10), "val": (0, 0)}, 0)["gen_gap"])


@pytest.mark.parametrize(("limit", "expected"), [(1.0, 10), (0.25, 2), (0.01, 1), (0.0, 0), (3, 3), (30, 10)])
def test_batch_limit_follows_lightnings_limit_semantics(limit: float, expected: int) -> None:
    assert batch_limit(limit, 10) == expected


def test_count_errors_in_eval_mode_within_the_limit() -> None:
    net = nn.Sequential(nn.Linear(1, 2, bias=False), nn.Dropout(0.9)).train()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))  # positive x -> class 0
    x = torch.tensor([[1.0], [2.0], [-1.0], [3.0]])
    loader = DataLoader(TensorDataset(x, torch.tensor([0, 0, 0, 1])), batch_size=2)
    assert count_errors(net, loader, 1.0, lambda batch: batch) == (2, 4)  # dropout off: deterministic
    assert count_errors(net, loader, 1, lambda batch: batch) == (0, 2)
    assert net.training
    assert net[1].training


def test_count_errors_leaves_a_submodule_kept_in_eval_in_eval() -> None:
    net = nn.Sequential(nn.Linear(1, 2), nn.Dropout(0.5)).train()
    net[1].eval()  # as a user freezes a norm layer
    loader = DataLoader(TensorDataset(torch.ones(2, 1), torch.zeros(2, dtype=torch.long)), batch_size=2)
    count_errors(net, loader, 1.0, lambda batch: batch)
    assert net.training
    assert not net[1].training
