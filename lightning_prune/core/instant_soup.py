"""Instant Soup building blocks in plain torch: superposed masks, look-ahead ingredients, weight interpolation.

Instant Soup Pruning (Jaiswal et al., ICML 2023, Alg. 2) trains cheap copies of a model ("ingredients")
for a few steps on random data subsets, takes a magnitude mask from each and superposes them into one.
An ingredient here is a dict of cloned tensors run through the unchanged model with
``torch.func.functional_call``, so neither the model nor whatever framework object holds it is copied.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lightning_prune.core import model_io
from lightning_prune.core.masks import MaskSet, masks_from_scores
from lightning_prune.core.validate import check_choice

COMBINE_RULES = ("union", "intersection", "vote")


def votes_needed(rule: str, members: int) -> int:
    """How many members must keep a weight for ``rule`` to keep it: any, all, or a strict majority."""
    check_choice("combine", rule, COMBINE_RULES)
    return {"union": 1, "intersection": members, "vote": members // 2 + 1}[rule]


def superpose(masks: Sequence[Mapping[str, Tensor]], rule: str = "union") -> dict[str, Tensor]:
    """One keep-mask from several by ``rule``: ``"union"``, ``"intersection"`` or ``"vote"`` (strict majority).

    Example::

        >>> a = {"w": torch.tensor([True, True, False, False])}
        >>> b = {"w": torch.tensor([True, False, True, False])}
        >>> c = {"w": torch.tensor([True, True, False, False])}
        >>> [superpose([a, b, c], rule)["w"].tolist() for rule in ("union", "intersection", "vote")]
        [[True, True, True, False], [True, False, False, False], [True, True, False, False]]
    """
    if not masks:
        raise ValueError("superpose needs at least one mask")
    soup = MaskSoup()
    for mask in masks:
        soup.add(mask, {name: torch.zeros(m.shape) for name, m in mask.items()})
    return soup.combined(rule)


class MaskSoup:
    """Members' keep-masks (as vote counts) and importance scores (as a running sum), superposed at the end.

    Holding two tensors per parameter, not one mask and one score per member, keeps the memory of a
    round independent of the number of ingredients.
    """

    def __init__(self) -> None:
        self.votes: dict[str, Tensor] = {}
        self.score_sum: dict[str, Tensor] = {}
        self.members = 0

    def add(self, mask: Mapping[str, Tensor], scores: Mapping[str, Tensor]) -> None:
        for name, keep in mask.items():
            vote, score = keep.to("cpu", torch.int32), scores[name].detach().to("cpu", torch.float64)
            self.votes[name] = self.votes[name] + vote if name in self.votes else vote
            self.score_sum[name] = self.score_sum[name] + score if name in self.score_sum else score
        self.members += 1

    def combined(self, rule: str) -> dict[str, Tensor]:
        """The superposed keep-mask before any adjustment (its sparsity is whatever the rule gives)."""
        needed = votes_needed(rule, self.members)
        return {name: votes >= needed for name, votes in self.votes.items()}

    def mask(
        self, sparsity: float, current: Mapping[str, Tensor] | None, rule: str = "union", scope: str = "global"
    ) -> dict[str, Tensor]:
        """The superposed mask adjusted to exactly ``sparsity`` (nested in ``current``).

        Weights the rule keeps rank above all others; within each group the members' mean score
        decides. A union keeps at least as many weights as any member, so the adjustment drops the
        union's weakest; an intersection or vote may keep fewer, so the best-scored others are added.
        Ranking by the main model's own score instead would turn the union into a no-op: the main
        model's mask is a member, and it is exactly the top of that score.
        """
        if self.members == 0:
            raise ValueError("MaskSoup.mask needs at least one member; call add() first")
        return masks_from_scores(_lexicographic(self.combined(rule), self.score_sum), sparsity, current, scope)


def _lexicographic(first: Mapping[str, Tensor], then: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Scores ordering by ``first`` (True above False), ties broken by ``then``, as exact integer ranks.

    Adding a large offset to real-valued scores would lose their order to float32 rounding; ranks
    stay exact up to 2**23 weights (``masks_from_scores`` ranks in float32).
    """
    flat = torch.cat([then[name].flatten() for name in first])
    ranks = torch.empty(flat.numel(), dtype=torch.float64)
    ranks[torch.argsort(flat, stable=True)] = torch.arange(flat.numel(), dtype=torch.float64)
    keys = ranks + flat.numel() * torch.cat([first[name].flatten() for name in first]).to(torch.float64)
    out, offset = {}, 0
    for name, mask in first.items():
        out[name] = keys[offset : offset + mask.numel()].view_as(mask)
        offset += mask.numel()
    return out


class ParameterTable(dict):
    """Cloned tensors by parameter name; ``get_parameter`` lets a :class:`MaskSet` bind to them as to a module."""

    def get_parameter(self, name: str) -> Tensor:
        return self[name]


def clone_state(model: nn.Module) -> ParameterTable:
    """Detached copies of every parameter (trainable ones require grad again) and buffer of ``model``."""
    table = ParameterTable()
    for name, param in model.named_parameters():
        table[name] = param.detach().clone().requires_grad_(param.requires_grad)
    for name, buffer in model.named_buffers():
        table[name] = buffer.detach().clone()
    return table


@torch.no_grad()
def load_state(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Copy ``state`` (as from :func:`clone_state`) into ``model``'s parameters and buffers, in place."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if name in state:
            tensor.copy_(state[name])


def look_ahead(
    model: nn.Module,
    state: ParameterTable,
    batches: Iterable[Any],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    masks: MaskSet | None = None,
) -> int:
    """Train the ingredient ``state`` through ``model``'s forward on ``batches``; returns the steps taken.

    ``model`` itself is untouched: its forward runs with ``state`` substituted for its parameters and
    buffers (BatchNorm statistics update the cloned buffers). ``masks``, bound to ``state``, are applied
    after every step so pruned weights stay zero, as in the main model.

    Raises:
        FloatingPointError: when the loss becomes non-finite (the ingredient's protocol diverged).
    """
    steps = 0
    if masks is not None:
        masks.apply()
    with torch.enable_grad():
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(*_scored_with(model, state, batch))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"ingredient loss is {float(loss.detach())} at look-ahead step {steps + 1}")
            loss.backward()
            optimizer.step()
            if masks is not None:
                masks.apply()
            steps += 1
    return steps


@torch.no_grad()
def mean_loss(
    model: nn.Module,
    state: Mapping[str, Tensor],
    batches: Iterable[Any],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
) -> float:
    """Sample-weighted mean of ``loss_fn`` over ``batches`` with ``state`` substituted into ``model``."""
    total, count = 0.0, 0
    for batch in batches:
        logits, targets = _scored_with(model, state, batch)
        total += float(loss_fn(logits, targets)) * len(targets)
        count += len(targets)
    return total / count if count else math.nan


def _scored_with(model: nn.Module, state: Mapping[str, Tensor], batch: Any) -> tuple[Tensor, Tensor]:
    """``model_io.scored`` with ``state`` substituted for ``model``'s parameters and buffers."""
    return model_io.scored(model, batch, lambda inputs: functional_call(model, dict(state), *model_io.as_args(inputs)))


def interpolate(a: Mapping[str, Tensor], b: Mapping[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """``(1 - alpha) * a + alpha * b`` for floating tensors; integer ones (BN batch counters) come from ``a``.

    Example::

        >>> interpolate({"w": torch.tensor([0.0, 2.0])}, {"w": torch.tensor([1.0, 0.0])}, 0.25)["w"].tolist()
        [0.25, 1.5]
    """
    return {
        name: torch.lerp(t.detach(), b[name].detach().to(t.dtype), alpha) if t.is_floating_point() else t.detach()
        for name, t in a.items()
    }


MIX_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def best_mix(
    soup: Mapping[str, Tensor],
    ingredient: Mapping[str, Tensor],
    evaluate: Callable[[Mapping[str, Tensor]], float],
    grid: Sequence[float] = MIX_GRID,
) -> tuple[dict[str, Tensor], float, float]:
    """Mix ``ingredient`` into ``soup`` with the coefficient of ``grid`` that minimises ``evaluate``.

    ``alpha = 0`` (the soup unchanged) is always a candidate, so an ingredient that hurts is left out,
    as in Wortsman et al.'s greedy soup. Returns (new soup, alpha, its loss); ties keep the smaller alpha.
    """
    best: tuple[dict[str, Tensor], float, float] | None = None
    for alpha in sorted({0.0, *grid}):
        mixed = interpolate(soup, ingredient, alpha)
        loss = evaluate(mixed)
        if best is None or loss < best[2]:
            best = (mixed, alpha, loss)
    return best
