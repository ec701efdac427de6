import pytest
import torch

from lightning_prune.core.scores import SCORES, lamp, magnitude, snip


def test_lamp_matches_hand_computed_values():
    # squares 1, 4, 9 -> suffix sums 14, 13, 9 -> scores 1/14, 4/13, 1
    scores = lamp({"w": torch.tensor([3.0, -1.0, 2.0])})["w"]
    torch.testing.assert_close(scores, torch.tensor([1.0, 1 / 14, 4 / 13]))


def test_lamp_gives_every_layer_a_weight_scoring_one():
    scores = lamp({"small": torch.tensor([0.01, 0.02]), "large": torch.tensor([10.0, 20.0, 30.0])})
    assert scores["small"].max() == 1.0
    assert scores["large"].max() == 1.0


def test_magnitude_and_snip():
    w = torch.tensor([-2.0, 1.0, 0.5])
    torch.testing.assert_close(magnitude({"w": w})["w"], torch.tensor([2.0, 1.0, 0.5]))
    s = snip({"w": w}, {"w": torch.tensor([1.0, -4.0, 0.0])})["w"]
    torch.testing.assert_close(s, torch.tensor([2 / 6, 4 / 6, 0.0]))
    assert s.sum() == pytest.approx(1.0)


def test_score_registry_names():
    assert set(SCORES) == {"magnitude", "lamp"}
