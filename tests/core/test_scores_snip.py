from __future__ import annotations

import math

import torch
from torch import nn

from lightning_prune.core.masks import masks_from_scores
from lightning_prune.core.scores import loss_gradients, snip


def _tiny_linear() -> nn.Linear:
    net = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, -1.0]]))
    return net


def test_snip_on_a_hand_checked_linear_layer() -> None:
    # x = (1, 2), y = 1: logits W x = (5, -2); dL/dlogits = (p, -p) with p = softmax(5, -2)[0] = 1 / (1 + e^-7);
    # dL/dW = outer((p, -p), x) = [[p, 2p], [-p, -2p]]; |g * w| = [[p, 4p], [0, 2p]], normalised by 7p.
    net = _tiny_linear()
    grads = loss_gradients(net, ["weight"], [(torch.tensor([[1.0, 2.0]]), torch.tensor([1]))])
    p = 1 / (1 + math.exp(-7))
    torch.testing.assert_close(grads["weight"], torch.tensor([[p, 2 * p], [-p, -2 * p]]))
    scores = snip({"weight": net.weight}, grads)
    torch.testing.assert_close(scores["weight"], torch.tensor([[1 / 7, 4 / 7], [0.0, 2 / 7]]))
    keep_three = masks_from_scores(scores, 0.25)["weight"]
    assert keep_three.tolist() == [[True, True], [False, True]]
    # nested: at 50 % the survivors compete, and the pruned weight stays pruned
    assert masks_from_scores(scores, 0.5, current={"weight": keep_three})["weight"].tolist() == [
        [False, True],
        [False, True],
    ]


def test_gradients_are_summed_over_batches() -> None:
    net = _tiny_linear()
    a = (torch.tensor([[1.0, 2.0]]), torch.tensor([1]))
    b = (torch.tensor([[0.5, -1.0], [2.0, 0.0]]), torch.tensor([0, 1]))
    both = loss_gradients(net, ["weight"], [a, b])["weight"]
    separate = loss_gradients(net, ["weight"], [a])["weight"] + loss_gradients(net, ["weight"], [b])["weight"]
    torch.testing.assert_close(both, separate)


def test_scoring_leaves_the_model_untouched() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    grads = loss_gradients(net, ["0.weight", "3.weight"], [(x, y)])
    assert set(grads) == {"0.weight", "3.weight"}
    assert grads["0.weight"].abs().sum() > 0
    assert not net.training
    assert all(p.grad is None for p in net.parameters())
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key])
