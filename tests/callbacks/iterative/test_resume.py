"""IterativePruning resumed from a checkpoint: the same masks, weights and metrics as the uninterrupted run."""

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.callbacks.iterative.helpers import fit_with_checkpoints
from tests.helpers import cnn_classifier


@pytest.mark.parametrize("stop_at", [1, 3])  # before the first step, and between steps
def test_resume_equals_uninterrupted_run(digits, trainer_kwargs, tmp_path, stop_at):
    args = {"target_sparsity": 0.8, "step_ratio": 0.5, "warmup_epochs": 2, "finetune_epochs": 2}
    full, full_model, full_trainer = fit_with_checkpoints(
        digits, trainer_kwargs, tmp_path / "full", cnn_classifier, args
    )
    fit_with_checkpoints(digits, trainer_kwargs, tmp_path / "cut", cnn_classifier, args, stop_at=stop_at)
    ckpt = tmp_path / "cut" / "ckpt" / "last.ckpt"
    torch.load(ckpt, weights_only=True)
    resumed, resumed_model, resumed_trainer = fit_with_checkpoints(
        digits, trainer_kwargs, tmp_path / "cut", cnn_classifier, args, ckpt_path=ckpt
    )
    torch.testing.assert_close(resumed.state_dict()["masks"], full.state_dict()["masks"])
    torch.testing.assert_close(resumed_model.state_dict(), full_model.state_dict())
    assert resumed_trainer.callback_metrics["val/acc"] == full_trainer.callback_metrics["val/acc"]
    assert [r["epoch"] for r in resumed.pruning_state.history] == [r["epoch"] for r in full.pruning_state.history]


def test_checkpoint_of_another_configuration_is_refused(digits, trainer_kwargs, tmp_path):
    args = {"target_sparsity": 0.5, "step_ratio": 0.5, "warmup_epochs": 1}
    fit_with_checkpoints(digits, trainer_kwargs, tmp_path / "a", cnn_classifier, args, stop_at=0)
    other = {**args, "target_sparsity": 0.8}
    with pytest.raises(
        ValueError,
        match=r"holds no state for IterativePruning\{.*'target_sparsity': 0.8.*different pruning configuration",
    ):
        fit_with_checkpoints(
            digits,
            trainer_kwargs,
            tmp_path / "b",
            cnn_classifier,
            other,
            ckpt_path=tmp_path / "a" / "ckpt" / "last.ckpt",
        )


def test_a_dense_checkpoint_can_be_continued_with_pruning(digits, trainer_kwargs, tmp_path):
    dense = pl.Trainer(
        max_epochs=1,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "dense", save_last=True, save_top_k=0)],
        limit_train_batches=2,
        **{**trainer_kwargs, "enable_checkpointing": True},
    )
    dense.fit(cnn_classifier(), datamodule=digits)
    args = {"target_sparsity": 0.5, "step_ratio": 0.5, "warmup_epochs": 1}
    pruning, _, _ = fit_with_checkpoints(
        digits, trainer_kwargs, tmp_path / "pruned", cnn_classifier, args, ckpt_path=tmp_path / "dense" / "last.ckpt"
    )
    assert pruning.pruning_state.sparsity == pytest.approx(0.5, abs=1e-3)


def test_a_run_resumed_after_its_schedule_ended_stops_as_the_uninterrupted_one_did(digits, trainer_kwargs, tmp_path):
    """stop_when_done: the last checkpoint was written when the schedule ended; resuming it trains no further."""
    args = {"target_sparsity": 0.5, "step_ratio": 0.5, "warmup_epochs": 1, "stop_when_done": True}
    full, full_model, full_trainer = fit_with_checkpoints(digits, trainer_kwargs, tmp_path, cnn_classifier, args)
    assert full.pruning_state.phase == "done"
    assert full_trainer.current_epoch < 12  # stopped when done, not at max_epochs
    _, resumed_model, resumed_trainer = fit_with_checkpoints(
        digits, trainer_kwargs, tmp_path, cnn_classifier, args, ckpt_path=tmp_path / "ckpt" / "last.ckpt"
    )
    assert resumed_trainer.current_epoch == full_trainer.current_epoch
    torch.testing.assert_close(resumed_model.state_dict(), full_model.state_dict())


def test_latency_budget_pruning_resumed_after_its_schedule_ended_stops_too(digits, trainer_kwargs, tmp_path):
    """The same shared rule for the latency pruner, which overrides on_train_start (it calibrates there)."""
    from lightning_prune import LatencyBudgetPruning

    args = {"budget_fraction": 0.95, "num_steps": 1, "warmup_epochs": 1, "stop_when_done": True, "threads": 1}
    args |= {"repeats": 3, "rounds": 1, "lut_repeats": 3, "tolerance": 0.5, "export_dir": str(tmp_path / "out")}
    full, _, full_trainer = fit_with_checkpoints(
        digits, trainer_kwargs, tmp_path, cnn_classifier, args, pruner=LatencyBudgetPruning
    )
    assert full.pruning_state.phase == "done"
    _, _, resumed_trainer = fit_with_checkpoints(
        digits, trainer_kwargs, tmp_path, cnn_classifier, args, ckpt_path=tmp_path / "ckpt" / "last.ckpt",
        pruner=LatencyBudgetPruning,
    )  # fmt: skip
    assert resumed_trainer.current_epoch == full_trainer.current_epoch < 12
