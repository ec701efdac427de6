"""Boolean keep-masks held by multiplying weights in place after each optimizer step.

Multiplying in place (one fused ``_foreach_mul_`` per step) keeps pruned weights exactly zero for any
optimizer, with no forward hooks and no ``weight_orig`` re-parametrisation, so the model's own
``state_dict`` always holds the pruned weights: there is nothing to fold at export.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn


class MaskSet:
    """Keep-masks (``True`` = weight kept) for named parameters of one model.

    Example::

        >>> model = nn.Linear(4, 2)
        >>> masks = MaskSet.dense(model, ["weight"])
        >>> masks.update({"weight": torch.tensor([[True, False, True, True], [True, True, True, False]])})
        >>> masks.bind(model).apply()
        >>> int((model.weight == 0).sum()), masks.sparsity()
        (2, 0.25)
    """

    def __init__(self, masks: Mapping[str, Tensor]) -> None:
        self.masks: dict[str, Tensor] = {name: mask.detach().to("cpu", torch.bool) for name, mask in masks.items()}
        self._params: list[Tensor] = []
        self._factors: list[Tensor] = []

    @classmethod
    def dense(cls, model: nn.Module, names: list[str]) -> MaskSet:
        """All-kept masks shaped like the named parameters."""
        return cls({name: torch.ones_like(model.get_parameter(name), dtype=torch.bool) for name in names})

    def bind(self, model: nn.Module) -> MaskSet:
        """Point the masks at ``model``'s parameters (after a restore, a device move or a DDP wrap)."""
        self._params = [model.get_parameter(name) for name in self.masks]
        for name, param in zip(self.masks, self._params):
            if param.shape != self.masks[name].shape:
                raise ValueError(
                    f"mask for {name!r} has shape {tuple(self.masks[name].shape)}, parameter has {tuple(param.shape)}"
                )
        self._factors = [mask.to(param.device, param.dtype) for mask, param in zip(self.masks.values(), self._params)]
        return self

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights; idempotent, so calling it after every batch is safe under accumulation."""
        if self._params:
            torch._foreach_mul_(self._params, self._factors)

    def update(self, new_masks: Mapping[str, Tensor]) -> None:
        """Replace masks (same names) and refresh the bound factors."""
        for name, mask in new_masks.items():
            if name not in self.masks:
                raise KeyError(f"no mask named {name!r}; masks exist for {list(self.masks)}")
            self.masks[name] = mask.detach().to("cpu", torch.bool)
        if self._params:
            self._factors = [mask.to(p.device, p.dtype) for mask, p in zip(self.masks.values(), self._params)]

    def kept(self) -> int:
        return sum(int(mask.sum()) for mask in self.masks.values())

    def total(self) -> int:
        return sum(mask.numel() for mask in self.masks.values())

    def sparsity(self) -> float:
        """Fraction of the masked weights that are pruned."""
        total = self.total()
        return 0.0 if total == 0 else 1.0 - self.kept() / total

    def layer_sparsity(self) -> dict[str, float]:
        return {name: 1.0 - float(mask.float().mean()) for name, mask in self.masks.items()}

    def state_dict(self) -> dict[str, Tensor]:
        return {name: mask.clone() for name, mask in self.masks.items()}


def check_finite(named: Mapping[str, Tensor], what: str) -> None:
    """Refuse to turn NaN/inf scores into a mask: a silent NaN mask would prune arbitrary weights."""
    for name, tensor in named.items():
        if not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise FloatingPointError(f"{what} for {name!r} contain {bad} non-finite value(s); refusing to prune")


def keep_count(total: int, sparsity: float) -> int:
    """Weights kept at ``sparsity`` out of ``total``; rounded so that repeated steps never overshoot."""
    return max(0, min(total, math.ceil(round((1.0 - sparsity) * total, 6))))


def masks_from_scores(
    scores: Mapping[str, Tensor],
    sparsity: float,
    current: Mapping[str, Tensor] | None = None,
    scope: str = "global",
) -> dict[str, Tensor]:
    """Nested keep-masks at exactly ``sparsity``: the top scores among weights that ``current`` still keeps.

    ``scope="global"`` ranks all layers together (scores must be comparable, e.g. LAMP or magnitude of
    a homogeneous net); ``"layer"`` gives every layer the same sparsity. Already pruned weights never
    come back, so masks only ever shrink.
    """
    check_finite(scores, "scores")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    alive = {
        name: (current[name].to(s.device) if current is not None else torch.ones_like(s, dtype=torch.bool))
        for name, s in scores.items()
    }
    ranked = {name: scores[name].detach().float().masked_fill(~alive[name], -math.inf) for name in scores}
    if scope == "layer":
        masks = {
            name: _top_k_mask(r.flatten(), keep_count(r.numel(), sparsity)).view_as(r) for name, r in ranked.items()
        }
    else:
        flat = torch.cat([r.flatten() for r in ranked.values()])
        keep = _top_k_mask(flat, keep_count(flat.numel(), sparsity))
        masks, offset = {}, 0
        for name, r in ranked.items():
            masks[name] = keep[offset : offset + r.numel()].view_as(r)
            offset += r.numel()
    return {name: (mask & alive[name]).cpu() for name, mask in masks.items()}


SCOPES = ("global", "layer")


def _top_k_mask(flat: Tensor, k: int) -> Tensor:
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        mask[torch.topk(flat, k, sorted=False).indices] = True
    return mask
