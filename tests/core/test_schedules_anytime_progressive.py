"""Anytime Progressive Pruning's per-megabatch schedules (core/schedules.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lightning_prune.core.schedules import (
    APP_TARGET_SPARSITY,
    MEGABATCH_SCHEDULES,
    app,
    app_exponent,
    megabatch_sparsities,
)


def test_app_is_the_papers_density_schedule() -> None:
    # reference code: density 0.8 ** e, e = linspace(1, tau, M), tau = 4.5
    expected = [1 - 0.8**e for e in np.linspace(1, 4.5, 8)]
    np.testing.assert_allclose(app(APP_TARGET_SPARSITY, 8), expected, rtol=0, atol=1e-12)
    assert app_exponent(APP_TARGET_SPARSITY) == pytest.approx(4.5)
    density = 1 - APP_TARGET_SPARSITY
    assert density == pytest.approx(0.366, abs=5e-4)


def test_app_derives_tau_from_the_target() -> None:
    steps = app(0.9, 5)
    tau = np.log(0.1) / np.log(0.8)
    np.testing.assert_allclose(steps, [1 - 0.8**e for e in np.linspace(1, tau, 5)], atol=1e-12)
    assert steps[0] == pytest.approx(0.2)
    assert steps[-1] == pytest.approx(0.9)
    assert all(a < b for a, b in itertools.pairwise(steps))


def test_app_single_step_goes_to_the_target() -> None:
    assert app(0.5, 1) == [0.5]


def test_app_target_at_the_first_density_is_flat() -> None:
    np.testing.assert_allclose(app(0.2, 3), [0.2, 0.2, 0.2], atol=1e-12)


@pytest.mark.parametrize(
    ("target", "num_steps", "match"),
    [
        (0.1, 4, r"target_sparsity must be >= 0.20"),
        (0.0, 4, r"target_sparsity must be in \(0, 1\)"),
        (1.0, 4, r"target_sparsity must be in \(0, 1\)"),
        (0.5, 0, "num_steps must be >= 1"),
    ],
)
def test_app_bad_arguments(target: float, num_steps: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        app(target, num_steps)


@pytest.mark.parametrize("schedule", list(MEGABATCH_SCHEDULES))
def test_megabatch_sparsities_end_on_the_target_and_never_fall(schedule: str) -> None:
    steps = megabatch_sparsities(schedule, 0.6, 4)
    assert len(steps) == 4
    assert steps[-1] == pytest.approx(0.6)
    assert all(a <= b for a, b in itertools.pairwise(steps))


def test_megabatch_sparsities_of_a_zero_target_train_dense() -> None:
    assert megabatch_sparsities("app", 0.0, 3) == [0.0, 0.0, 0.0]  # no "app" refusal of a target below 0.2


def test_oneshot_is_the_target_from_the_first_megabatch() -> None:
    assert megabatch_sparsities("oneshot", 0.6, 3) == [0.6, 0.6, 0.6]
