import pytest

from lightning_prune.core.schedules import cubic, fixed_ratio, linear, sparsity_schedule


def test_fixed_ratio_prunes_fraction_of_remaining_and_clips_last_step():
    assert fixed_ratio(0.8, 0.5) == pytest.approx([0.5, 0.75, 0.8])
    assert fixed_ratio(0.75, 0.5) == pytest.approx([0.5, 0.75])


def test_cubic_is_zhu_gupta():
    # s_t = s_f + (s_i - s_f) (1 - t/n)^3
    assert cubic(0.9, 3) == pytest.approx([0.9 - 0.9 * (2 / 3) ** 3, 0.9 - 0.9 * (1 / 3) ** 3, 0.9])
    steps = cubic(0.9, 10)
    increments = [b - a for a, b in zip([0.0, *steps], steps)]
    assert increments == sorted(increments, reverse=True)


def test_linear():
    assert linear(0.6, 3) == pytest.approx([0.2, 0.4, 0.6])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "fixed", "step_ratio": None, "num_steps": None}, "needs step_ratio"),
        ({"name": "cubic", "step_ratio": None, "num_steps": None}, "needs num_steps"),
        ({"name": "exp", "step_ratio": 0.2, "num_steps": 2}, "schedule must be one of"),
    ],
)
def test_schedule_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sparsity_schedule(target_sparsity=0.5, **kwargs)
