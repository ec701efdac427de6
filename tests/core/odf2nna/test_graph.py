"""Which Linear layers are hidden layers of a plain stack; the others skipped with a reason, none at all refused."""

from __future__ import annotations

import pytest
from torch import nn

from lightning_prune.core.odf2nna import HiddenLayer, find_hidden_layers
from tests.core.odf2nna.nets import GRID, FunctionalNet, Residual, Shared, known_net


def test_find_hidden_layers_plain_stack_in_forward_order() -> None:
    layers = find_hidden_layers(known_net(), GRID[:1])
    assert layers == [HiddenLayer("0", "2"), HiddenLayer("2", "4")]


def test_find_hidden_layers_user_module_with_norms() -> None:
    layers = find_hidden_layers(FunctionalNet(), GRID[:2])
    assert layers == [HiddenLayer("encoder", "middle", ("norm",)), HiddenLayer("middle", "head", ("layer_norm",))]
    assert find_hidden_layers(FunctionalNet(), GRID[:2], include_names="^enc") == [layers[0]]


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (Residual(), "Not part of a plain feed-forward stack: 'a': .*branch.*'b': it feeds a residual add"),
        (Shared(), "'a': it feeds 'b', which runs 2 times per forward.*'b': it runs 2 times per forward"),
        (nn.Sequential(nn.Linear(2, 3)), "no hidden layer"),
    ],
)
def test_find_hidden_layers_refuses(model: nn.Module, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        find_hidden_layers(model, GRID[:2])


def test_find_hidden_layers_include_names_matching_nothing() -> None:
    with pytest.raises(ValueError, match="include_names='nothing'"):
        find_hidden_layers(known_net(), GRID[:1], include_names="nothing")
