import pytest
import torch
from torch import nn

from lightning_prune.core.masks import MaskSet, check_finite, keep_count, masks_from_scores


def test_global_masks_keep_exact_count_across_layers():
    scores = {"a": torch.tensor([1.0, 5.0, 3.0, 0.5]), "b": torch.tensor([[4.0, 2.0], [6.0, 0.1]])}
    masks = masks_from_scores(scores, sparsity=0.5, scope="global")
    assert masks["a"].tolist() == [False, True, True, False]
    assert masks["b"].tolist() == [[True, False], [True, False]]
    assert sum(int(m.sum()) for m in masks.values()) == 4


def test_layer_masks_give_each_layer_the_sparsity():
    scores = {"a": torch.tensor([1.0, 5.0, 3.0, 0.5]), "b": torch.tensor([4.0, 2.0, 6.0, 0.1])}
    masks = masks_from_scores(scores, sparsity=0.5, scope="layer")
    assert masks["a"].tolist() == [False, True, True, False]
    assert masks["b"].tolist() == [True, False, True, False]


def test_masks_are_nested_pruned_weights_never_return():
    scores = {"a": torch.tensor([9.0, 1.0, 2.0, 3.0])}
    current = {"a": torch.tensor([False, True, True, True])}
    masks = masks_from_scores(scores, sparsity=0.5, current=current)
    assert masks["a"].tolist() == [False, False, True, True]
    # Asking for less sparsity than already reached cannot regrow a pruned weight.
    assert not masks_from_scores(scores, sparsity=0.0, current=current)["a"][0]


def test_non_finite_scores_refuse_to_prune():
    with pytest.raises(FloatingPointError, match="'a' contain 1 non-finite"):
        masks_from_scores({"a": torch.tensor([1.0, float("nan")])}, 0.5)
    check_finite({"a": torch.ones(3)}, "scores")


def test_unknown_scope_is_rejected():
    with pytest.raises(ValueError, match="scope must be one of"):
        masks_from_scores({"a": torch.ones(2)}, 0.5, scope="row")


@pytest.mark.parametrize(
    ("total", "sparsity", "kept"), [(10, 0.0, 10), (10, 0.5, 5), (10, 0.31, 7), (3, 0.999, 1), (7, 1.0, 0)]
)
def test_keep_count(total, sparsity, kept):
    assert keep_count(total, sparsity) == kept


def test_maskset_holds_zeros_and_reports_sparsity():
    model = nn.Linear(3, 2, bias=False)
    masks = MaskSet.dense(model, ["weight"])
    masks.update({"weight": torch.tensor([[True, False, True], [False, False, True]])})
    masks.bind(model).apply()
    assert (model.weight == 0).sum() == 3
    with torch.no_grad():
        model.weight.add_(1.0)
    masks.apply()
    assert model.weight[0, 1] == 0
    assert model.weight[1, 0] == 0
    assert masks.sparsity() == pytest.approx(0.5)
    assert masks.layer_sparsity() == {"weight": pytest.approx(0.5)}
    assert masks.state_dict()["weight"].dtype == torch.bool


def test_maskset_rejects_shape_mismatch_and_unknown_names():
    model = nn.Linear(3, 2)
    masks = MaskSet({"weight": torch.ones(4, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"mask for 'weight' has shape \(4, 3\), parameter has \(2, 3\)"):
        masks.bind(model)
    with pytest.raises(KeyError, match="no mask named 'bias'"):
        masks.update({"bias": torch.ones(2, dtype=torch.bool)})
