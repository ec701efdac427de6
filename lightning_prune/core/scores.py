"""Unstructured importance scores: higher means more worth keeping.

Every function maps ``{name: weight}`` (plus gradients where needed) to ``{name: score}`` of the same
shapes; ``SCORES`` names the ones that need only the weights, which is what config strings select.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_prune.core import model_io


def magnitude(weights: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """|w|: the classic criterion; comparable across layers only when their scales are similar."""
    return {name: w.detach().abs() for name, w in weights.items()}


def lamp(weights: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """LAMP (Lee et al., ICLR 2021): w_u^2 / sum of w_v^2 over the layer's weights at least as large.

    Scores are comparable across layers, so one global threshold gives layer-adaptive sparsities, and
    each layer's largest weight scores exactly 1, so no layer is ever pruned away entirely.
    """
    scores = {}
    for name, w in weights.items():
        squared = w.detach().float().flatten() ** 2
        sorted_sq, order = torch.sort(squared)
        suffix = torch.flip(torch.cumsum(torch.flip(sorted_sq, [0]), 0), [0])
        flat = torch.empty_like(squared)
        flat[order] = sorted_sq / suffix.clamp_min(torch.finfo(suffix.dtype).tiny)
        scores[name] = flat.view_as(w)
    return scores


def snip(weights: Mapping[str, Tensor], grads: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """SNIP connection sensitivity (Lee et al., ICLR 2019): |g * w|, normalised to sum to one overall."""
    raw = {name: (grads[name].detach() * w.detach()).abs().float() for name, w in weights.items()}
    total = sum(float(s.sum()) for s in raw.values())
    return {name: s / total if total > 0 else s for name, s in raw.items()}


SCORES: dict[str, Callable[[Mapping[str, Tensor]], dict[str, Tensor]]] = {"magnitude": magnitude, "lamp": lamp}


def sp_lamp(channel_norms: Tensor) -> Tensor:
    """SP-LAMP (Pan et al., arXiv 2305.14403): LAMP moved from weights to channels.

    ``channel_norms`` holds each channel's L2 norm (over every weight slice the channel owns, summed over
    its dependency group); channel u scores ||F_u||^2 / sum of ||F_v||^2 over the channels at least as
    large. The strongest channel of every group scores exactly 1, so scores compare across layers of any
    width and a budgeted selection never empties a layer for free.

    Example::

        >>> [round(s, 3) for s in sp_lamp(torch.tensor([2.0, 1.0, 4.0])).tolist()]
        [0.2, 0.048, 1.0]
    """
    return lamp({"channels": channel_norms.detach().float().flatten()})["channels"]


def loss_gradients(
    model: nn.Module,
    names: Sequence[str],
    batches: Iterable[Any],
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> dict[str, Tensor]:
    """Gradients of ``loss_fn(logits, targets)`` for the named parameters, summed over ``batches`` (SNIP's term).

    Batches and outputs are read by :mod:`lightning_prune.core.model_io` (``(x, y)``, dict batches with
    ``labels``, outputs with ``.logits``).

    The model runs in training mode, as SNIP scores it, but its buffers (BatchNorm running statistics)
    are restored afterwards and no ``.grad`` is written, so scoring leaves the model and the optimizer
    exactly as they were. Parameters the loss does not reach get zero gradients.

    Example::

        >>> net = nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = net.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        >>> grads = loss_gradients(net, ["weight"], [(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))])
        >>> [round(v, 4) for v in grads["weight"].flatten().tolist()]
        [-0.2689, 0.0, 0.2689, 0.0]
    """
    params = [model.get_parameter(name) for name in names]
    totals = [torch.zeros_like(param) for param in params]
    saved = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    was_training = model.training
    model.train()
    try:
        for batch in batches:
            grads = torch.autograd.grad(loss_fn(*model_io.scored(model, batch)), params, allow_unused=True)
            for total, grad in zip(totals, grads):
                if grad is not None:
                    total += grad.detach()
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(saved[name])
    return dict(zip(names, totals))
