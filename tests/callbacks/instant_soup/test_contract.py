"""InstantSoupPruning keeps the end-of-run contract (issue 17): a later fit continues on the same model or is
refused, the Trainer's budget is checked at setup, no non-finite model is exported, and the summary's sparsity is
the measured one."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lightning_prune import InstantSoupPruning
from tests.callbacks.instant_soup.helpers import FAST, fit_soup, zeros
from tests.helpers import cnn_classifier

ROUNDS = {"target_sparsity": 0.8, "step_ratio": 0.4}  # 4 rounds, at optimizer steps 3, 9, 18 and 30 (t = 3)


def _summary(directory: Path | str) -> dict:
    return json.loads((Path(directory) / "summary.json").read_text())["instant_soup"]


class _Stop(Callback):
    """Stops training after epoch ``epoch`` (as EarlyStopping would); ``poison`` there instead makes a weight NaN."""

    def __init__(self, epoch: int, poison: str | None = None) -> None:
        self.epoch, self.poison = epoch, poison

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch and self.poison:
            with torch.no_grad():
                pl_module.get_parameter(self.poison).fill_(float("nan"))
        elif trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def test_instant_soup_second_fit_keeps_masks_and_rounds(digits, trainer_kwargs, tmp_path: Path):
    soup, model, _ = fit_soup(digits, trainer_kwargs, **ROUNDS)
    state, before = soup.pruning_state, zeros(soup, model)
    masks, cost = soup._masks.state_dict(), soup.ingredient_steps
    kwargs = {**trainer_kwargs, "default_root_dir": str(tmp_path / "b")}
    # one epoch (20 steps) is shorter than the schedule (30), which is done: the masks are held, no new round
    pl.Trainer(max_epochs=1, callbacks=[soup], **kwargs).fit(model, datamodule=digits)
    assert (state.step, state.num_steps, len(state.history), state.phase) == (4, 4, 4, "done")
    assert soup.ingredient_steps == cost
    assert all(torch.equal(soup._masks.masks[name], mask) for name, mask in masks.items())
    assert zeros(soup, model) >= before - 1e-9
    summary = _summary(tmp_path / "b")
    assert summary["sparsity"] == summary["measured"]["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert summary["finished"] is True


def test_instant_soup_refuses_another_model_in_a_later_fit(digits, trainer_kwargs):
    soup, _, _ = fit_soup(digits, trainer_kwargs, max_epochs=1, target_sparsity=0.5, step_ratio=0.3)
    trainer = pl.Trainer(max_epochs=1, callbacks=[soup], **trainer_kwargs)
    with pytest.raises(ValueError, match="already pruned another model"):
        trainer.fit(cnn_classifier(widths=(8, 8, 16, 16)), datamodule=digits)  # same shapes: masks would "fit"
    assert trainer.global_step == 0


def test_instant_soup_cut_short_warns_and_a_later_fit_runs_the_rounds_left(digits, trainer_kwargs, tmp_path: Path):
    with pytest.warns(UserWarning, match="ended before its schedule finished"):
        soup, model, _ = fit_soup(digits, trainer_kwargs, callbacks=[_Stop(0)], **ROUNDS)
    cut = _summary(trainer_kwargs["default_root_dir"])
    assert (cut["finished"], cut["rounds"]) == (False, 3)  # stopped at step 20 (an epoch), before the round at 30
    assert "target_sparsity=0.8 after 4 rounds not reached" in cut["shortfall"]
    assert cut["sparsity"] == pytest.approx(zeros(soup, model))
    kwargs = {**trainer_kwargs, "default_root_dir": str(tmp_path / "b")}
    with pytest.raises(ValueError, match=r"last round runs at optimizer step 10 .*max_steps=10\)"):
        pl.Trainer(max_steps=10, callbacks=[soup], **kwargs).fit(model, datamodule=digits)
    pl.Trainer(max_steps=11, callbacks=[soup], **kwargs).fit(model, datamodule=digits)
    state = soup.pruning_state
    assert [r["global_step"] for r in state.history] == [3, 9, 18, 30]  # the schedule's steps, across both fits
    assert state.sparsity == pytest.approx(0.8, abs=1e-3)
    summary = _summary(tmp_path / "b")
    assert summary["finished"] is True
    assert summary["sparsity"] == pytest.approx(zeros(soup, model))


def test_instant_soup_nan_after_the_last_round_is_not_exported(digits, trainer_kwargs, tmp_path: Path):
    name = "net.features.3.weight"
    out = tmp_path / "out"
    with pytest.raises(FloatingPointError, match=rf"not finite at fit end \({name}\)"):
        fit_soup(digits, trainer_kwargs, callbacks=[_Stop(1, poison=name)], export_dir=str(out), **ROUNDS)
    assert not out.exists()


def test_instant_soup_checks_max_steps_at_setup_to_the_step(digits, trainer_kwargs, tmp_path: Path):
    short = pl.Trainer(max_steps=30, callbacks=[InstantSoupPruning(**{**FAST, **ROUNDS})], **trainer_kwargs)
    with pytest.raises(ValueError, match=r"optimizer step 30 .*max_steps=30\) runs only 30 optimizer steps"):
        short.fit(cnn_classifier(widths=(8, 8, 16, 16)), datamodule=digits)
    assert short.global_step == 0
    kwargs = {**trainer_kwargs, "max_steps": 31}  # the last round at step 30, then one step of training
    soup, _, _ = fit_soup(digits, kwargs, max_epochs=None, **{**ROUNDS, "export_dir": str(tmp_path / "x")})
    assert soup.pruning_state.step == 4
    assert _summary(tmp_path / "x")["finished"] is True


def test_instant_soup_refuses_a_trainer_without_training_batches(digits, trainer_kwargs):
    trainer = pl.Trainer(
        max_epochs=2, limit_train_batches=0, callbacks=[InstantSoupPruning(**ROUNDS)], **trainer_kwargs
    )
    with pytest.raises(ValueError, match=r"InstantSoupPruning: the training data yields no batches"):
        trainer.fit(cnn_classifier(widths=(8, 8, 16, 16)), datamodule=digits)


@pytest.mark.parametrize("below", ["", "sub"], ids=["a file", "below a file"])
def test_instant_soup_refuses_an_export_dir_that_is_a_file(tmp_path: Path, below: str):
    (tmp_path / "taken").write_text("")
    with pytest.raises(ValueError, match="export_dir="):
        InstantSoupPruning(target_sparsity=0.5, export_dir=str(tmp_path / "taken" / below))
