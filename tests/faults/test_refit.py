"""A pruner used for a second ``fit``: it continues on the same model with nothing regrown, or refuses another model.

Lightning users call ``fit`` twice (tuning then training, notebooks), with ``validate``/``test`` in between, or
resume with ``ckpt_path``. Before issue 17 a second fit undid the pruning while the summary still said 60 %.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.faults.setups import SETUPS, Setup, measure, pruner_params, selected, shapes, trainer, zero_positions

# A fit, evaluation and a second fit (or a checkpointed fit and a refused resume) of the latency pruner, which
# times its latency table: over 2 s on a busy 2-core host.
LONG = pruner_params(slow=("LatencyBudgetPruning",))


def _first_fit(setup: Setup, root: Path, trainer_kwargs: dict, checkpoint: bool = False):
    pruner, model = setup.make(), setup.model()
    callbacks = [pruner, *([ModelCheckpoint(dirpath=root / "ckpt", save_last=True)] if checkpoint else [])]
    first = trainer(setup, root / "first", trainer_kwargs, callbacks, enable_checkpointing=checkpoint)
    first.fit(model, datamodule=setup.data())
    return pruner, model


def _assert_kept(setup: Setup, pruner, model, before: dict) -> None:
    """After the second fit: same architecture, no new step, no pruned weight regrown, sparsity not lower."""
    assert shapes(model) == before["shapes"]
    assert pruner.pruning_state.step == before["step"]
    now = measure(setup, pruner, model.state_dict())
    assert now["sparsity"] >= before["measured"]["sparsity"] - 1e-9, (now, before["measured"])
    assert now["params"] <= before["measured"]["params"]
    if not setup.structured:  # masks held: every weight zero after the first fit is still zero
        zeros = zero_positions(model)
        regrown = {n: int((before["zeros"][n] & ~zeros[n]).sum()) for n in selected(setup, pruner, setup.model())}
        assert not any(regrown.values()), regrown


def _snapshot(setup: Setup, pruner, model) -> dict:
    return {
        "shapes": shapes(model),
        "step": pruner.pruning_state.step,
        "measured": measure(setup, pruner, model.state_dict()),
        "zeros": zero_positions(model),
    }


@pytest.mark.parametrize("name", pruner_params())
def test_second_fit_on_the_same_model_keeps_the_pruning(name, tmp_path, trainer_kwargs):
    setup = SETUPS[name]
    pruner, model = _first_fit(setup, tmp_path, trainer_kwargs)
    before = _snapshot(setup, pruner, model)
    assert before["step"] > 0
    trainer(setup, tmp_path / "second", trainer_kwargs, [pruner]).fit(model, datamodule=setup.data())
    _assert_kept(setup, pruner, model, before)


@pytest.mark.parametrize("name", LONG)
def test_second_fit_after_validate_and_test_keeps_the_pruning(name, tmp_path, trainer_kwargs):
    setup = SETUPS[name]
    pruner, model = _first_fit(setup, tmp_path, trainer_kwargs)
    before = _snapshot(setup, pruner, model)
    between = trainer(setup, tmp_path / "eval", trainer_kwargs, [pruner])
    data = setup.data()
    between.validate(model, datamodule=data)
    between.test(model, datamodule=data)
    _assert_kept(setup, pruner, model, before)
    trainer(setup, tmp_path / "second", trainer_kwargs, [pruner]).fit(model, datamodule=setup.data())
    _assert_kept(setup, pruner, model, before)


@pytest.mark.parametrize("name", pruner_params())
def test_fit_with_ckpt_path_after_a_fit_keeps_the_pruning(name, tmp_path, trainer_kwargs):
    setup = SETUPS[name]
    pruner, model = _first_fit(setup, tmp_path, trainer_kwargs, checkpoint=True)
    before = _snapshot(setup, pruner, model)
    last = tmp_path / "ckpt" / "last.ckpt"
    assert last.exists()
    callbacks = [pruner, ModelCheckpoint(dirpath=tmp_path / "ckpt2")]
    again = trainer(setup, tmp_path / "second", trainer_kwargs, callbacks, enable_checkpointing=True)
    again.fit(model, datamodule=setup.data(), ckpt_path=last)
    _assert_kept(setup, pruner, model, before)


@pytest.mark.parametrize("name", pruner_params())
def test_second_fit_on_another_model_is_refused(name, tmp_path, trainer_kwargs):
    setup = SETUPS[name]
    pruner, model = _first_fit(setup, tmp_path, trainer_kwargs)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    other = trainer(setup, tmp_path / "second", trainer_kwargs, [pruner])
    with pytest.raises(ValueError, match="already pruned another model"):
        other.fit(setup.model(), datamodule=setup.data())
    assert other.global_step == 0
    assert not (tmp_path / "second" / "pruned_model.pt").exists()
    torch.testing.assert_close(model.state_dict(), weights)  # the first model is left as it was


@pytest.mark.parametrize("name", LONG)
def test_resume_from_another_configuration_is_refused(name, tmp_path, trainer_kwargs):
    """A checkpoint whose pruning state belongs to another configuration (Lightning alone would only warn and
    start this pruner afresh on an already pruned model)."""
    setup = SETUPS[name]
    _first_fit(setup, tmp_path, trainer_kwargs, checkpoint=True)
    other = trainer(setup, tmp_path / "other", trainer_kwargs, [setup.make(**setup.other)])
    with pytest.raises(ValueError, match=r"holds no state for .*different pruning configuration"):
        other.fit(setup.model(), datamodule=setup.data(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert not (tmp_path / "other" / "pruned_model.pt").exists()
