"""LatencyBudgetPruning keeps the end-of-run contract: what it reports is the model, or the run says why.

A second fit continues on the pruned net without re-planning; another model, another pruner, a Trainer too
short or without batches, unwritable paths are refused before any training; NaN weights after a step or at
fit end are never exported; a run cut short warns; the summary's sparsity and parameters are measured.
"""

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

import lightning_prune.callbacks.latency_budget.shrink as shrink_module
from lightning_prune import IterativePruning, LatencyBudgetPruning
from lightning_prune.core.structured import architecture_spec, count_parameters
from lightning_prune.models import MLP, Classifier

# Cheap timing (see test_latency_budget.py); a mild budget an MLP reaches on a loaded machine.
FAST = {"threads": 1, "repeats": 10, "rounds": 2, "lut_repeats": 5, "batch_size": 128, "tolerance": 0.3}


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def mlp_classifier():
    return Classifier(MLP((1, 8, 8), 10, hidden=(256, 256)), 10, (1, 8, 8))


def pruner(**kwargs):
    settings = {"budget_fraction": 0.7, "num_steps": 1, "warmup_epochs": 0, "round_to": 16, **FAST, **kwargs}
    return LatencyBudgetPruning(**settings)


def summary_of(tmp_path):
    return json.loads((tmp_path / "summary.json").read_text())["latency_budget"]


class StopAt(pl.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def test_a_normal_run_reports_what_it_measures_and_a_second_fit_keeps_the_pruned_net(digits, trainer_kwargs, tmp_path):
    model, pruning = mlp_classifier(), pruner(warmup_epochs=1)
    pl.Trainer(max_epochs=2, callbacks=[pruning], limit_train_batches=2, **trainer_kwargs).fit(model, datamodule=digits)
    summary = summary_of(tmp_path)
    assert summary["finished"] is True
    assert "shortfall" not in summary
    assert summary["measured"] == {"sparsity": summary["sparsity"], "params": summary["params"]}
    calibration = summary["calibration"]  # its cost is reported and bounded by the layer shapes
    assert 0 < calibration["entries_timed"] <= 5 * calibration["layer_shapes"]
    assert calibration["calibration_s"] >= 0
    assert calibration["round_to"] == 16
    assert summary["params"] == count_parameters(model) == pruning.pruning_state.history[-1]["params"]
    assert summary["sparsity"] == pytest.approx(pruning.pruning_state.sparsity)
    assert summary["sparsity"] > 0
    pruned, dense_ms, history = architecture_spec(model), pruning._budget.dense_ms, pruning.pruning_state.history

    # One epoch is less than warmup + step + fine-tune: a finished schedule needs no more and trains on.
    again = pl.Trainer(max_epochs=1, callbacks=[pruning], limit_train_batches=2, **trainer_kwargs)
    again.fit(model, datamodule=digits)
    assert again.current_epoch == 1
    assert architecture_spec(model) == pruned  # no re-plan, no second step
    assert pruning._budget.dense_ms == dense_ms  # no recalibration on the pruned net
    assert pruning.pruning_state.history == history
    optimized = {id(p) for group in again.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.parameters()}
    assert summary_of(tmp_path)["measured"]["params"] == count_parameters(model)


def test_a_second_fit_on_another_model_is_refused(digits, trainer_kwargs):
    pruning = pruner()
    trainer = pl.Trainer(max_epochs=1, callbacks=[pruning], limit_train_batches=2, **trainer_kwargs)
    trainer.fit(mlp_classifier(), datamodule=digits)
    trainer = pl.Trainer(max_epochs=1, callbacks=[pruning], limit_train_batches=2, **trainer_kwargs)
    with pytest.raises(ValueError, match="already pruned another model"):
        trainer.fit(mlp_classifier(), datamodule=digits)
    assert trainer.global_step == 0


def test_a_run_cut_short_warns_and_says_so_in_the_summary(digits, trainer_kwargs, tmp_path):
    pruning = pruner(num_steps=2)
    trainer = pl.Trainer(max_epochs=3, callbacks=[pruning, StopAt(0)], limit_train_batches=2, **trainer_kwargs)
    with pytest.warns(UserWarning, match="LatencyBudgetPruning ended before its schedule finished"):
        trainer.fit(mlp_classifier(), datamodule=digits)
    summary = summary_of(tmp_path)
    assert summary["finished"] is False
    assert "num_steps=2" in summary["shortfall"]
    assert summary["measured"]["params"] == summary["params"]


def test_another_pruner_in_the_trainer_is_refused(digits, trainer_kwargs):
    trainer = pl.Trainer(max_epochs=2, callbacks=[pruner(), IterativePruning(target_sparsity=0.5)], **trainer_kwargs)
    with pytest.raises(ValueError, match=r"more than one pruning callback: LatencyBudgetPruning.*IterativePruning"):
        trainer.fit(mlp_classifier(), datamodule=digits)


def poison(model):
    with torch.no_grad():
        model.net.layers[1].weight[0, 0] = float("nan")


class PoisonAtTrainEnd(pl.Callback):
    def on_train_end(self, trainer, pl_module):
        poison(pl_module)


def test_nan_after_a_step_is_refused_and_nothing_is_exported(monkeypatch, digits, trainer_kwargs, tmp_path):
    remove = shrink_module.remove_channels_and_heads

    def remove_and_diverge(model, *args, **kwargs):
        remove(model, *args, **kwargs)
        poison(model)

    monkeypatch.setattr(shrink_module, "remove_channels_and_heads", remove_and_diverge)
    trainer = pl.Trainer(max_epochs=1, callbacks=[pruner()], limit_train_batches=2, **trainer_kwargs)
    with pytest.raises(FloatingPointError, match=r"not finite after step 1 \(net\.layers\.1\.weight"):
        trainer.fit(mlp_classifier(), datamodule=digits)
    assert not (tmp_path / "pruned_model.pt").exists()


def test_nan_at_fit_end_is_refused_and_nothing_is_exported(digits, trainer_kwargs, tmp_path):
    callbacks = [PoisonAtTrainEnd(), pruner()]
    trainer = pl.Trainer(max_epochs=1, callbacks=callbacks, limit_train_batches=2, **trainer_kwargs)
    with pytest.raises(FloatingPointError, match=r"not finite at fit end \(net\.layers\.1\.weight"):
        trainer.fit(mlp_classifier(), datamodule=digits)
    assert not (tmp_path / "pruned_model.pt").exists()
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.parametrize(
    ("limits", "match"),
    [
        ({"max_steps": 3}, r"needs 3 training epochs \(warmup_epochs=1 .* = 6 optimizer steps.*max_steps=3"),
        ({"max_epochs": 5, "limit_train_batches": 0}, "yields no batches"),
    ],
    ids=["max_steps", "no-batches"],
)
def test_a_trainer_that_cannot_run_the_schedule_is_refused_at_setup(digits, trainer_kwargs, limits, match):
    batches = {"limit_train_batches": 2, **limits}
    trainer = pl.Trainer(callbacks=[pruner(num_steps=2, warmup_epochs=1)], **batches, **trainer_kwargs)
    with pytest.raises(ValueError, match=match):
        trainer.fit(mlp_classifier(), datamodule=digits)
    assert trainer.global_step == 0


def test_unwritable_paths_are_refused_at_construction(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=r"export_dir=.* is an existing file"):
        LatencyBudgetPruning(export_dir=str(a_file))
    with pytest.raises(ValueError, match=r"export_dir=.* lies below .*, which is a file"):
        LatencyBudgetPruning(export_dir=str(a_file / "out"))
    with pytest.raises(ValueError, match=r"lut_path=.* is a directory"):
        LatencyBudgetPruning(lut_path=str(tmp_path))
    paths = LatencyBudgetPruning(lut_path="~/lut.json", export_dir="~/out")
    assert (paths.lut_path, paths.export_dir) == (str(Path.home() / "lut.json"), str(Path.home() / "out"))
