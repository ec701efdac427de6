"""AnytimeProgressivePruning keeps the end-of-run contract (issue 17): a later fit continues on the same model or
is refused, the Trainer's budget is checked at setup, no non-finite model is exported, and the summary's sparsity
is the measured one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_prune import AnytimeProgressivePruning
from lightning_prune.core.schedules import APP_TARGET_SPARSITY
from tests.callbacks.anytime_progressive.helpers import fit_app, megabatches, zeros
from tests.helpers import cnn_classifier


def _summary(directory: Path) -> dict:
    return json.loads((directory / "summary.json").read_text())["anytime_progressive"]


class _Stop(Callback):
    """Stops training after epoch ``epoch`` (as EarlyStopping would); ``poison`` there instead makes a weight NaN."""

    def __init__(self, epoch: int, poison: str | None = None) -> None:
        self.epoch, self.poison = epoch, poison

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.current_epoch == self.epoch and self.poison:
            with torch.no_grad():
                pl_module.get_parameter(self.poison).fill_(float("nan"))
        elif trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def test_anytime_progressive_second_fit_keeps_masks_and_history(trainer_kwargs: dict, tmp_path: Path) -> None:
    pruner, _, trainer, data = fit_app(trainer_kwargs, num=3, epochs=1)
    model, state = trainer.lightning_module, pruner.pruning_state
    before, masks = zeros(pruner, model), {k: v.clone() for k, v in pruner._masks.masks.items()}
    assert before == pytest.approx(state.sparsity, abs=1e-3)
    again = pl.Trainer(max_epochs=2, callbacks=[pruner], **{**trainer_kwargs, "default_root_dir": str(tmp_path / "b")})
    again.fit(model, datamodule=data)  # a finished schedule trains on with its masks held, no new step
    assert again.current_epoch == 2
    assert (state.step, state.phase, len(state.history)) == (3, "done", 3)
    assert all(torch.equal(pruner._masks.masks[k], mask) for k, mask in masks.items())
    assert zeros(pruner, model) >= before - 1e-9  # was 0.0: the masks were rebuilt dense
    summary = _summary(tmp_path / "b")
    assert summary["sparsity"] == summary["measured"]["sparsity"] == pytest.approx(before, abs=1e-3)
    assert summary["finished"] is True


def test_anytime_progressive_refuses_another_model_in_a_later_fit(trainer_kwargs: dict) -> None:
    pruner, _, _, data = fit_app(trainer_kwargs, num=2, epochs=1)
    trainer = pl.Trainer(max_epochs=2, callbacks=[pruner], **trainer_kwargs)
    with pytest.raises(ValueError, match="already pruned another model"):
        trainer.fit(cnn_classifier(widths=(8, 8)), datamodule=data)
    assert trainer.global_step == 0


def test_anytime_progressive_cut_short_warns_and_a_later_fit_finishes_the_schedule(
    trainer_kwargs: dict, tmp_path: Path
) -> None:
    with pytest.warns(UserWarning, match="ended before its schedule finished"):
        pruner, _, trainer, data = fit_app(trainer_kwargs, num=3, epochs=2, extra=(_Stop(2),))
    cut = _summary(tmp_path)
    assert (cut["finished"], cut["megabatches_done"]) == (False, 2)
    assert "not reached" in cut["shortfall"]
    assert cut["sparsity"] == pytest.approx(zeros(pruner, trainer.lightning_module))
    kwargs = {**trainer_kwargs, "default_root_dir": str(tmp_path / "b")}
    with pytest.raises(ValueError, match=r"needs 3 training epochs \(3 epochs left of the schedule"):
        pl.Trainer(max_epochs=2, callbacks=[pruner], **kwargs).fit(trainer.lightning_module, datamodule=data)
    again = pl.Trainer(max_epochs=4, callbacks=[pruner], **kwargs)
    again.fit(trainer.lightning_module, datamodule=data)  # megabatch 2's last epoch, then megabatch 3's two
    assert again.current_epoch == 3  # stopped when done
    history = pruner.pruning_state.history
    assert [r["epochs_trained"] for r in history] == [2, 2, 2]
    assert history[-1]["sparsity"] == pytest.approx(APP_TARGET_SPARSITY, abs=2e-3)
    summary = _summary(tmp_path / "b")
    assert summary["finished"] is True
    assert summary["sparsity"] == pytest.approx(zeros(pruner, trainer.lightning_module))


def test_anytime_progressive_fit_from_a_checkpoint_after_a_fit(trainer_kwargs: dict, tmp_path: Path) -> None:
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    kwargs = {**trainer_kwargs, "enable_checkpointing": True}
    pruner, _, trainer, data = fit_app(kwargs, num=3, epochs=1, extra=(every_epoch,))
    masks = {k: v.clone() for k, v in pruner._masks.masks.items()}
    again = pl.Trainer(max_epochs=5, callbacks=[pruner], **trainer_kwargs)
    again.fit(trainer.lightning_module, datamodule=data, ckpt_path=str(tmp_path / "ckpt" / "epoch=0.ckpt"))
    assert pruner.pruning_state.step == 3
    assert again.current_epoch == 3
    assert all(torch.equal(pruner._masks.masks[k], mask) for k, mask in masks.items())


def test_anytime_progressive_nan_after_the_last_step_is_not_exported(trainer_kwargs: dict, tmp_path: Path) -> None:
    name = "net.features.3.weight"
    with pytest.raises(FloatingPointError, match=rf"not finite at fit end \({name}\)"):
        fit_app(trainer_kwargs, num=3, epochs=1, extra=(_Stop(2, poison=name),), export_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_anytime_progressive_max_steps_is_checked_per_megabatch(trainer_kwargs: dict, tmp_path: Path) -> None:
    needed = fit_app(trainer_kwargs, num=3, epochs=1)[2].global_step  # later megabatches replay: more steps each
    app = AnytimeProgressivePruning(num_megabatches=3, epochs_per_megabatch=1)
    short = pl.Trainer(max_steps=needed - 1, callbacks=[app], **trainer_kwargs)
    with pytest.raises(ValueError, match=rf"needs {needed} optimizer steps .*max_steps={needed - 1}\)"):
        short.fit(cnn_classifier(widths=(8, 8)), datamodule=megabatches(3))
    assert short.global_step == 0
    pruner = AnytimeProgressivePruning(num_megabatches=3, epochs_per_megabatch=1, export_dir=str(tmp_path / "x"))
    exact = pl.Trainer(max_steps=needed, callbacks=[pruner], **trainer_kwargs)
    exact.fit(cnn_classifier(widths=(8, 8)), datamodule=megabatches(3))
    assert _summary(tmp_path / "x")["finished"] is True


def test_anytime_progressive_refuses_a_trainer_without_training_batches(trainer_kwargs: dict) -> None:
    pruner = AnytimeProgressivePruning(num_megabatches=3, epochs_per_megabatch=1)
    trainer = pl.Trainer(max_epochs=3, limit_train_batches=0, callbacks=[pruner], **trainer_kwargs)
    with pytest.raises(ValueError, match=r"yields no batches \(limit_train_batches=0"):
        trainer.fit(cnn_classifier(widths=(8, 8)), datamodule=megabatches(3))


@pytest.mark.parametrize("below", ["", "sub"], ids=["a file", "below a file"])
def test_anytime_progressive_refuses_an_export_dir_that_is_a_file(tmp_path: Path, below: str) -> None:
    (tmp_path / "taken").write_text("")
    with pytest.raises(ValueError, match="export_dir="):
        AnytimeProgressivePruning(export_dir=str(tmp_path / "taken" / below))
