import itertools
import random

import pytest

from lightning_prune.core.latency_budget.knapsack import group_knapsack


def brute_force(costs, values, budget):
    best, best_value = None, float("-inf")
    for choice in itertools.product(*(range(len(c)) for c in costs)):
        cost = sum(c[j] for c, j in zip(costs, choice))
        value = sum(v[j] for v, j in zip(values, choice))
        if cost <= budget + 1e-9 and value > best_value:
            best, best_value = list(choice), value
    return best, best_value


def random_case(rng, integer):
    classes = rng.randint(1, 4)
    costs, values = [], []
    for _ in range(classes):
        options = rng.randint(1, 5)
        draw = (lambda: rng.randint(0, 9)) if integer else (lambda: rng.uniform(0.0, 5.0))
        costs.append([draw() for _ in range(options)])
        values.append([rng.uniform(0.0, 10.0) for _ in range(options)])
    budget = rng.randint(min(sum(min(c) for c in costs), 30), 30) if integer else rng.uniform(0.0, 12.0)
    return costs, values, budget


def value_of(values, choice):
    return sum(v[j] for v, j in zip(values, choice))


@pytest.mark.parametrize("seed", range(60))
def test_exact_on_integer_costs_matches_brute_force(seed):
    rng = random.Random(seed)
    costs, values, budget = random_case(rng, integer=True)
    spare = budget - sum(min(c) for c in costs)
    choice = group_knapsack(costs, values, budget, resolution=max(1, int(spare)))  # one grid step = one unit
    expected, expected_value = brute_force(costs, values, budget)
    assert choice is not None
    assert expected is not None
    assert value_of(values, choice) == pytest.approx(expected_value)
    assert sum(c[j] for c, j in zip(costs, choice)) <= budget


@pytest.mark.parametrize("seed", range(60))
def test_float_costs_always_fit_and_lose_at_most_one_grid_step_per_class(seed):
    rng = random.Random(1000 + seed)
    costs, values, budget = random_case(rng, integer=False)
    resolution = 200
    choice = group_knapsack(costs, values, budget, resolution=resolution)
    expected, _ = brute_force(costs, values, budget)
    if expected is None:
        assert choice is None
        return
    assert sum(c[j] for c, j in zip(costs, choice)) <= budget + 1e-9
    spare = budget - sum(min(c) for c in costs)
    _, shrunk_value = brute_force(costs, values, budget - len(costs) * spare / resolution)
    assert value_of(values, choice) >= shrunk_value - 1e-9


def test_infeasible_budget_returns_none():
    assert group_knapsack([[2.0, 3.0], [1.0]], [[1.0, 2.0], [1.0]], budget=2.5) is None


def test_zero_spare_takes_the_cheapest_options():
    assert group_knapsack([[1.0, 2.0], [3.0, 1.0]], [[0.0, 9.0], [9.0, 0.0]], budget=2.0) == [0, 1]


@pytest.mark.parametrize(
    ("costs", "values", "resolution", "message"),
    [
        ([[1.0]], [[1.0], [2.0]], 10, "same number of classes"),
        ([[]], [[]], 10, "at least one option"),
        ([[-1.0]], [[1.0]], 10, "costs must be >= 0"),
        ([[1.0]], [[1.0]], 0, "resolution must be an integer >= 1"),
    ],
)
def test_bad_arguments(costs, values, resolution, message):
    with pytest.raises(ValueError, match=message):
        group_knapsack(costs, values, 5.0, resolution)
