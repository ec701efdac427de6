"""Unstructured importance scores: higher means more worth keeping.

Every function maps ``{name: weight}`` (plus gradients where needed) to ``{name: score}`` of the same
shapes; ``SCORES`` names the ones that need only the weights, which is what config strings select.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor


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
