from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_prune.core.instant_soup import (
    MaskSoup,
    best_mix,
    clone_state,
    interpolate,
    load_state,
    look_ahead,
    superpose,
    votes_needed,
)
from lightning_prune.core.masks import MaskSet

A = {"w": torch.tensor([True, True, True, False, False, False])}
B = {"w": torch.tensor([True, True, False, True, False, False])}
C = {"w": torch.tensor([True, False, False, False, True, False])}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("union", [True, True, True, True, True, False]),
        ("intersection", [True, False, False, False, False, False]),
        ("vote", [True, True, False, False, False, False]),
    ],
)
def test_superpose_rules_on_hand_made_masks(rule, expected):
    assert superpose([A, B, C], rule)["w"].tolist() == expected


def test_vote_is_a_strict_majority():
    assert votes_needed("vote", 2) == 2
    assert votes_needed("vote", 4) == 3
    assert votes_needed("vote", 5) == 3
    assert superpose([A, B], "vote")["w"].tolist() == superpose([A, B], "intersection")["w"].tolist()


def test_superpose_rejects_unknown_rule_and_no_masks():
    with pytest.raises(ValueError, match="combine must be one of"):
        superpose([A], "mean")
    with pytest.raises(ValueError, match="at least one mask"):
        superpose([], "union")


def _soup(members):
    soup = MaskSoup()
    for mask, scores in members:
        soup.add({"w": torch.tensor(mask)}, {"w": torch.tensor(scores)})
    return soup


def test_union_is_trimmed_to_exact_sparsity_by_mean_score():
    # Each member keeps 2 of 6; the union keeps 4; the two with the highest mean score survive.
    soup = _soup(
        [
            ([True, True, False, False, False, False], [0.9, 0.8, 0.1, 0.7, 0.0, 0.0]),
            ([False, False, True, True, False, False], [0.2, 0.1, 0.9, 0.8, 0.0, 0.0]),
        ]
    )
    # mean scores [0.55, 0.45, 0.5, 0.75, 0, 0]: of the union {0, 1, 2, 3}, indices 3 and 0 survive
    assert soup.mask(sparsity=4 / 6, current=None, rule="union")["w"].tolist() == [
        True,
        False,
        False,
        True,
        False,
        False,
    ]


def test_intersection_is_topped_up_by_mean_score():
    soup = _soup(
        [
            ([True, True, False, False], [0.9, 0.8, 0.7, 0.0]),
            ([True, False, True, False], [0.9, 0.1, 0.8, 0.0]),
        ]
    )
    # intersection keeps only index 0; sparsity 0.5 needs 2 kept: index 2 (mean 0.75) beats index 1 (0.45)
    assert soup.mask(0.5, None, "intersection")["w"].tolist() == [True, False, True, False]


def test_superposed_weights_outrank_any_score():
    # index 3 has the best mean score but no member keeps it: the union's members come first
    soup = _soup(
        [
            ([True, False, False, False], [0.2, 0.0, 0.0, 5.0]),
            ([False, True, False, False], [0.0, 0.1, 0.0, 5.0]),
        ]
    )
    assert soup.mask(0.5, None, "union")["w"].tolist() == [True, True, False, False]


def test_soup_mask_is_nested_in_current():
    soup = _soup([([True, True, True, True], [1.0, 2.0, 3.0, 4.0])])
    current = {"w": torch.tensor([True, True, True, False])}
    assert soup.mask(0.5, current, "union")["w"].tolist() == [False, True, True, False]


def test_interpolate_and_best_mix():
    soup, ingredient = {"w": torch.tensor([0.0, 0.0])}, {"w": torch.tensor([1.0, 1.0])}
    assert interpolate(soup, ingredient, 0.3)["w"].tolist() == pytest.approx([0.3, 0.3])
    mixed, alpha, loss = best_mix(soup, ingredient, lambda w: float((w["w"] - 0.4).abs().sum()))
    assert alpha == pytest.approx(0.4)
    assert loss == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(mixed["w"], torch.tensor([0.4, 0.4]))
    _, alpha, _ = best_mix(soup, ingredient, lambda w: float(w["w"].abs().sum()))
    assert alpha == 0.0  # an ingredient that only hurts is left out


def test_interpolate_keeps_integer_buffers_of_the_soup():
    mixed = interpolate({"n": torch.tensor(3)}, {"n": torch.tensor(9)}, 0.5)
    assert int(mixed["n"]) == 3


def test_look_ahead_trains_a_clone_under_masks_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = clone_state(model)
    mask = {"0.weight": torch.rand(8, 4) > 0.5}
    masks = MaskSet(mask).bind(state)
    batches = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(5)]
    optimizer = torch.optim.SGD([t for t in state.values() if t.requires_grad], lr=0.1)
    steps = look_ahead(model, state, batches, nn.functional.cross_entropy, optimizer, masks)
    assert steps == 5
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name])
    assert (state["0.weight"][~mask["0.weight"]] == 0).all()
    assert not torch.equal(state["3.weight"], before["3.weight"])
    assert int(state["1.num_batches_tracked"]) == 5
    load_state(model, state)
    torch.testing.assert_close(model.state_dict()["3.weight"], state["3.weight"])


def test_look_ahead_refuses_a_diverged_ingredient():
    model = nn.Linear(2, 2)
    state = clone_state(model)
    optimizer = torch.optim.SGD([state["weight"], state["bias"]], lr=0.1)
    batch = (torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))
    with pytest.raises(FloatingPointError, match="look-ahead step 1"):
        look_ahead(model, state, [batch], nn.functional.cross_entropy, optimizer)
