import json
import math

import lightning.pytorch as pl
import pytest
import torch

from lightning_prune import BlockPruning, load_pruned
from lightning_prune.core.structured import architecture_spec
from tests.callbacks.iterative.helpers import StopAt, fit_with_checkpoints
from tests.helpers import cnn_classifier, resnet_classifier


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step_ratio": 0}, r"step_ratio must be in \(0, 1\), got 0"),
        ({"step_ratio": 1.0}, r"step_ratio must be in \(0, 1\), got 1.0"),
        ({"step_ratio": "0.5"}, r"step_ratio must be in \(0, 1\), got '0.5'"),
        ({"step_ratio": None}, r"step_ratio must be in \(0, 1\), got None"),
        ({"block_types": []}, "block_types must be a non-empty list"),
        ({"block_types": "BasicBlock"}, "block_types must be a non-empty list"),
        ({"target_sparsity": 1.0}, r"target_sparsity must be in \(0, 1\), got 1.0"),
        ({"finetune_epochs": -1}, "finetune_epochs must be an integer >= 0, got -1"),
        ({"warmup_epochs": True}, "warmup_epochs must be an integer >= 0, got True"),
        ({"on_nonfinite": "ignore"}, r"on_nonfinite must be one of \['raise', 'skip'\]"),
        ({"include_names": "("}, r"include_names: '\(' is not a valid regular expression"),
        ({"target_sparsity": "0.5"}, r"target_sparsity must be in \(0, 1\), got '0.5'"),
        ({"finetune_epochs": "1"}, "finetune_epochs must be an integer >= 0, got '1'"),
        ({"log_layers": "no"}, "log_layers must be true or false, got 'no'"),
        ({"export_dir": __file__}, r"export_dir='.*test_block_pruning.py' is an existing file"),
    ],
)
def test_block_pruning_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BlockPruning(**kwargs)


def test_block_pruning_state_key():
    assert BlockPruning().state_key == BlockPruning().state_key
    assert BlockPruning(target_sparsity=0.5).state_key != BlockPruning().state_key
    assert "BlockPruning" in BlockPruning().state_key


@pytest.mark.parametrize(
    ("kwargs", "make_model", "max_epochs", "message"),
    [
        (
            {},
            cnn_classifier,
            3,
            r"block_types=\['BasicBlock', 'EncoderBlock', .*\] matched no module of Classifier: pass the class",
        ),
        (
            {"step_ratio": 0.5, "warmup_epochs": 2, "finetune_epochs": 2},
            resnet_classifier,
            5,
            r"BlockPruning needs 10 training epochs \(warmup_epochs=2 \+ 4 steps x finetune_epochs=2\).*max_epochs=5",
        ),
    ],
    ids=["no such block", "too few epochs"],
)
def test_block_pruning_refuses_before_training(kwargs, make_model, max_epochs, message, digits, trainer_kwargs):
    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=[BlockPruning(**kwargs)], **trainer_kwargs)
    with pytest.raises(ValueError, match=message):
        trainer.fit(make_model(), datamodule=digits)
    assert trainer.global_step == 0


def test_removes_block_filters_physically_and_exports(digits, trainer_kwargs, tmp_path):
    pruning = BlockPruning(step_ratio=0.5, warmup_epochs=1, finetune_epochs=1, stop_when_done=True)
    model = resnet_classifier()
    params_before = sum(p.numel() for p in model.parameters())
    trainer = pl.Trainer(max_epochs=10, callbacks=[pruning], limit_train_batches=5, **trainer_kwargs)
    trainer.fit(model, datamodule=digits)
    assert [r["block"] for r in pruning.pruning_state.history] == [
        "net.stages.0.0",
        "net.stages.0.1",
        "net.stages.1.0",
        "net.stages.1.1",
    ]
    assert [b.conv1.out_channels for b in (model.net.stages[0][0], model.net.stages[1][1])] == [8, 16]
    assert model.net.stages[1][1].conv2.out_channels == 32  # residual width untouched
    assert sum(p.numel() for p in model.parameters()) < params_before
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.parameters()}
    assert trainer.current_epoch == 5  # warm-up + 4 blocks x 1 fine-tune epoch, then stopped

    summary = json.loads((tmp_path / "summary.json").read_text())["block_pruning"]
    assert summary["sparsity"] == pytest.approx(pruning.pruning_state.sparsity)
    assert summary["steps"] == summary["finetunes_run"] == 4
    assert summary["layer_sparsity"]["net.stages.0.0.conv1.weight"] == pytest.approx(0.5)
    assert trainer.callback_metrics["prune/sparsity"] == pytest.approx(summary["sparsity"])
    fresh = resnet_classifier()
    load_pruned(fresh, tmp_path / "pruned_model.pt")
    torch.testing.assert_close(fresh.state_dict(), model.state_dict())


def test_target_sparsity_stops_before_the_last_block(digits, trainer_kwargs):
    pruning = BlockPruning(step_ratio=0.5, target_sparsity=0.05, finetune_epochs=1, export_dir=None)
    trainer = pl.Trainer(max_epochs=10, callbacks=[pruning], limit_train_batches=2, **trainer_kwargs)
    trainer.fit(resnet_classifier(), datamodule=digits)
    assert pruning.pruning_state.sparsity >= 0.05
    assert 0 < pruning.pruning_state.step < 4


def test_resume_after_physical_shrink_loads_into_fresh_model(digits, trainer_kwargs, tmp_path):
    args = {"step_ratio": 0.5, "warmup_epochs": 1, "finetune_epochs": 1}

    def fit(root, **kwargs):
        return fit_with_checkpoints(
            digits, trainer_kwargs, root, resnet_classifier, args, pruner=BlockPruning, **kwargs
        )

    full, full_model, _ = fit(tmp_path / "full")
    fit(tmp_path / "cut", stop_at=2)
    ckpt = tmp_path / "cut" / "ckpt" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["state_dict"]["net.stages.0.0.conv1.weight"].shape[0] == 8
    resumed, resumed_model, _ = fit(tmp_path / "cut", ckpt_path=ckpt)
    assert architecture_spec(resumed_model) == architecture_spec(full_model)
    torch.testing.assert_close(resumed_model.state_dict(), full_model.state_dict())
    assert resumed.pruning_state.sparsity == full.pruning_state.sparsity


def test_second_fit_keeps_the_architecture_and_reports_against_the_dense_sizes(digits, trainer_kwargs, tmp_path):
    pruning, model = BlockPruning(step_ratio=0.5, finetune_epochs=1), resnet_classifier()
    pl.Trainer(max_epochs=4, callbacks=[pruning], limit_train_batches=2, **trainer_kwargs).fit(model, datamodule=digits)
    architecture, sparsity = architecture_spec(model), pruning.pruning_state.sparsity
    trainer = pl.Trainer(max_epochs=2, callbacks=[pruning], limit_train_batches=2, **trainer_kwargs)
    trainer.fit(model, datamodule=digits)
    assert trainer.current_epoch == 2
    assert architecture_spec(model) == architecture
    summary = json.loads((tmp_path / "summary.json").read_text())["block_pruning"]
    assert summary["sparsity"] == summary["measured"]["sparsity"] == pytest.approx(sparsity)
    assert summary["layer_sparsity"]["net.stages.0.0.conv1.weight"] == pytest.approx(0.5)  # against the dense size
    assert summary["finished"] is True


def test_block_pruning_cut_short_warns_naming_the_blocks_left(digits, trainer_kwargs, tmp_path):
    pruning = BlockPruning(step_ratio=0.5, finetune_epochs=1)
    trainer = pl.Trainer(max_epochs=4, callbacks=[pruning, StopAt(1)], limit_train_batches=2, **trainer_kwargs)
    with pytest.warns(UserWarning, match=r"BlockPruning ended before .*all 4 steps \(2 of 4 steps taken\) not reached"):
        trainer.fit(resnet_classifier(), datamodule=digits)
    summary = json.loads((tmp_path / "summary.json").read_text())["block_pruning"]
    assert summary["finished"] is False
    assert summary["sparsity"] == pytest.approx(pruning.pruning_state.sparsity)


class _Rates(pl.Callback):
    """After the pruner's epoch-start step: the rate and whether the momentum of a shrunk weight survived."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, bool]] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        state = optimizer.state.get(pl_module.net.stages[0][0].conv1.weight, {})
        self.seen.append((optimizer.param_groups[0]["lr"], "momentum_buffer" in state))


def test_a_step_keeps_the_schedule_and_the_surviving_momentum(digits, trainer_kwargs):
    # A fresh configure_optimizers restarted the cosine at its top and dropped the momentum: ResNet-18 from
    # scratch, pruned after 2 of 4 epochs, ended 19-56 pt below plain training; 2 pt with both kept.
    pruning, rates = BlockPruning(step_ratio=0.5, warmup_epochs=1, finetune_epochs=0, export_dir=None), _Rates()
    model = resnet_classifier(scheduler="cosine", lr=0.1)
    trainer = pl.Trainer(max_epochs=3, callbacks=[pruning, rates], limit_train_batches=2, **trainer_kwargs)
    trainer.fit(model, datamodule=digits)
    assert model.net.stages[0][0].conv1.out_channels == 8
    cosine = [0.1 * (1 + math.cos(math.pi * epoch / 3)) / 2 for epoch in range(3)]
    assert [lr for lr, _ in rates.seen] == pytest.approx(cosine)
    assert [kept for _, kept in rates.seen] == [False, True, True]
