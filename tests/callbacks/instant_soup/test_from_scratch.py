"""InstantSoupPruning trained from scratch in a user's Trainer (issue 21): its defaults suit a pre-trained model (no
warm-up, rounds a few steps apart), so rounds due on a model that has not trained are warned of before any step."""

from __future__ import annotations

from tests.callbacks.instant_soup.helpers import fit_soup
from tests.helpers import warnings_before_first_step

UNTRAINED = "rank by magnitude the weights of a network a few steps old"


def test_rounds_in_the_first_steps_of_a_from_scratch_run_are_warned_before_any_step(digits, trainer_kwargs) -> None:
    with warnings_before_first_step() as early:
        soup, _, _ = fit_soup(digits, trainer_kwargs, target_sparsity=0.5, step_ratio=0.3)
    told = [message for message in early if UNTRAINED in message]
    assert len(told) == 1
    assert "its 2 pruning rounds run from optimizer step 3 to 9 (warmup_steps=0, calibration_steps=3)" in told[0]
    assert "Set warmup_steps=N" in told[0]
    assert soup.pruning_state.step == 2


def test_a_warm_up_is_not_warned(digits, trainer_kwargs) -> None:
    with warnings_before_first_step() as early:
        fit_soup(digits, trainer_kwargs, target_sparsity=0.5, step_ratio=0.3, warmup_steps=5)
    assert not [message for message in early if UNTRAINED in message]
