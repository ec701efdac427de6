"""The paper's protocol: copies that differ (LR, weight decay, data order) and the raw union of their masks."""

from __future__ import annotations

import pytest

from lightning_prune import InstantSoupPruning
from tests.callbacks.instant_soup.helpers import fit_soup, zeros


def test_default_copies_differ_in_learning_rate_and_weight_decay():
    soup = InstantSoupPruning(target_sparsity=0.5)
    assert len(set(soup.lr_multipliers)) >= 3
    assert len(set(soup.weight_decay_multipliers)) >= 3


def test_raw_union_keeps_more_than_the_schedule_until_the_last_round(digits, trainer_kwargs):
    soup, model, _ = fit_soup(digits, trainer_kwargs, target_sparsity=0.6, step_ratio=0.3, max_epochs=3)
    history = soup.pruning_state.history
    assert len(history) == 3
    assert not history[0]["trimmed"]
    assert not history[1]["trimmed"]
    assert history[-1]["trimmed"]
    scheduled = soup._sparsities
    # Ingredients trained under other rates keep weights the model's own mask dropped: the union is denser.
    assert history[0]["sparsity"] < scheduled[0] - 0.005
    assert history[0]["sparsity"] == pytest.approx(history[0]["superposed_sparsity"])
    assert zeros(soup, model) == pytest.approx(0.6, abs=0.002)


def test_trim_every_round_gives_each_round_its_scheduled_sparsity(digits, trainer_kwargs):
    soup, _, _ = fit_soup(
        digits, trainer_kwargs, target_sparsity=0.6, step_ratio=0.3, max_epochs=3, trim_every_round=True
    )
    for record, scheduled in zip(soup.pruning_state.history, soup._sparsities):
        assert record["trimmed"]
        assert record["sparsity"] == pytest.approx(scheduled, abs=0.002)


def test_trim_every_round_must_be_a_bool():
    with pytest.raises(ValueError, match="trim_every_round must be True or False, got 'yes'"):
        InstantSoupPruning(target_sparsity=0.5, trim_every_round="yes")
