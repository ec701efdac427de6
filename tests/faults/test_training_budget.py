"""A Trainer that cannot run the schedule is refused at setup, before the first optimizer step.

Before issue 17, ``Trainer(max_steps=...)`` without ``max_epochs`` stopped a run at 3 of 5 steps silently, and an
empty training loader exported a dense model as pruned; ``fit`` returned normally in both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.setups import PRUNERS, SETUPS, Setup, empty_training_data, trainer

# The data module refuses an empty training set itself (it cannot split 0 samples into megabatches).
EMPTY_SET_MESSAGE = {"AnytimeProgressivePruning": "num_megabatches=2 exceeds the 0 training samples"}


def _refused(setup: Setup, root: Path, trainer_kwargs: dict, data=None, **overrides) -> str:
    run = trainer(setup, root, trainer_kwargs, [setup.make()], **overrides)
    with pytest.raises(ValueError) as error:
        run.fit(setup.model(), datamodule=data if data is not None else setup.data())
    assert run.global_step == 0
    assert not (root / "pruned_model.pt").exists()
    return str(error.value)


@pytest.mark.parametrize("name", PRUNERS)
def test_max_steps_too_short_for_the_schedule_is_refused(name, tmp_path, trainer_kwargs):
    message = _refused(SETUPS[name], tmp_path, trainer_kwargs, max_steps=1, max_epochs=None)
    assert "optimizer steps" in message
    assert "max_steps=1" in message
    assert name in message


@pytest.mark.parametrize("name", PRUNERS)
def test_no_training_batches_is_refused(name, tmp_path, trainer_kwargs):
    message = _refused(SETUPS[name], tmp_path, trainer_kwargs, limit_train_batches=0)
    assert "yields no batches" in message
    assert "limit_train_batches=0" in message


@pytest.mark.parametrize("name", PRUNERS)
def test_empty_training_set_is_refused(name, tmp_path, trainer_kwargs):
    setup = SETUPS[name]
    message = _refused(setup, tmp_path, trainer_kwargs, data=empty_training_data(setup))
    assert EMPTY_SET_MESSAGE.get(name, "yields no batches") in message
