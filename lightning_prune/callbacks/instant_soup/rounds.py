"""One Instant Soup round, decided on rank 0: denoised pruning (ISP, Alg. 2) or a model soup (IMS, Alg. 3).

Each function takes the model, the round's settings and ``cook(index, mask)``, which trains ingredient
``index`` from the current weights under ``mask`` (see :class:`~.ingredients.Kitchen`), and returns the
round's decision (``masks`` or ``weights``) with what it cost, ready to be broadcast; :func:`decide` picks
the round's kind for a callback and :func:`apply_plan` applies the broadcast decision on every rank.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from lightning_prune.callbacks.instant_soup.ingredients import LOSSES, cycled, validation_loss
from lightning_prune.core.instant_soup import MaskSoup, best_mix, clone_state, load_state
from lightning_prune.core.masks import MaskSet, masks_from_scores
from lightning_prune.core.scores import SCORES
from lightning_prune.progress import track

Cook = Callable[[int, dict], tuple[dict[str, Tensor], int]]


def denoised_prune(
    model: nn.Module,
    names: Sequence[str],
    current: Mapping[str, Tensor],
    sparsity: float,
    round_index: int,
    cook: Cook,
    *,
    num_ingredients: int,
    importance: str,
    scope: str,
    combine: str,
    trim: bool = True,
) -> dict[str, Any]:
    """Alg. 2: the model's own mask and each ingredient's, superposed by ``combine``.

    ``trim`` adjusts the superposed mask to exactly ``sparsity``; without it the mask is the raw superposition
    (the paper's union keeps every weight some member kept, so it ends denser than ``sparsity``).
    """
    score, soup, started, steps = SCORES[importance], MaskSoup(), time.perf_counter(), 0
    main_scores = score({name: model.get_parameter(name) for name in names})
    main_mask = masks_from_scores(main_scores, sparsity, current, scope)
    soup.add(main_mask, main_scores)
    for index in track(range(num_ingredients), f"soup round {round_index + 1}: ingredients"):
        state, taken = cook(index, current)
        scores = score({name: state[name] for name in names})
        soup.add(masks_from_scores(scores, sparsity, current, scope), scores)
        steps += taken
    masks = soup.mask(sparsity, current, combine, scope) if trim else soup.combined(combine)
    total = sum(mask.numel() for mask in masks.values())
    superposed = sum(int(m.sum()) for m in soup.combined(combine).values())
    moved = sum(int((masks[name] & ~main_mask[name]).sum()) for name in masks)
    return {
        "masks": masks,
        "ingredient_steps": steps,
        "ingredient_s": time.perf_counter() - started,
        "superposed_sparsity": 1.0 - superposed / total,
        "kept_not_in_model_mask": moved / max(1, sum(int(m.sum()) for m in masks.values())),
        "trimmed": trim,
    }


def model_soup(
    model: nn.Module,
    names: Sequence[str],
    cook: Cook,
    val_loss: Callable[[Mapping[str, Tensor]], float],
    *,
    num_ingredients: int,
    copy_sparsities: Sequence[float],
    importance: str,
    scope: str,
) -> dict[str, Any]:
    """Alg. 3: weakly trained sparse copies mixed one by one into the weights where ``val_loss`` improves."""
    started, steps, alphas = time.perf_counter(), 0, []
    soup = {name: tensor.detach() for name, tensor in clone_state(model).items()}
    main_scores = SCORES[importance]({name: soup[name] for name in names})
    loss_before = loss = val_loss(soup)
    for index in track(range(num_ingredients), "model soup: ingredients"):
        mask = masks_from_scores(main_scores, cycled(copy_sparsities, index), None, scope)
        state, taken = cook(index, mask)
        soup, alpha, loss = best_mix(soup, state, val_loss)
        alphas.append(alpha)
        steps += taken
    return {
        "weights": {name: tensor.cpu() for name, tensor in soup.items()},
        "ingredient_steps": steps,
        "ingredient_s": time.perf_counter() - started,
        "mix_alphas": alphas,
        "val_loss_before": loss_before,
        "val_loss_after": loss,
    }


def decide(cb: Any, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``cb``'s current round: denoised masks (ISP) or mixed weights (IMS), decided on rank 0."""
    round_index = cb.pruning_state.step
    cook = partial(cb._cook, model, optimizer, round_index)
    settings = {"num_ingredients": cb.num_ingredients, "importance": cb.importance, "scope": cb.scope}
    if cb.variant == "ims":
        val_loss = partial(validation_loss, model, cb._val, LOSSES[cb.loss])
        return model_soup(model, cb._names, cook, val_loss, copy_sparsities=cb.copy_sparsities, **settings)
    sparsity, current = cb._sparsities[round_index], cb._masks.masks
    trim = cb.trim_every_round or round_index == len(cb._sparsities) - 1
    return denoised_prune(
        model, cb._names, current, sparsity, round_index, cook, combine=cb.combine, trim=trim, **settings
    )


def apply_plan(model: nn.Module, masks: MaskSet | None, new_masks: dict | None, weights: dict | None) -> None:
    """Apply a broadcast decision on every rank: ``new_masks`` into ``masks`` (held at once), or mixed ``weights``."""
    if new_masks is not None:
        masks.update(new_masks)
        masks.apply()
    if weights is not None:
        load_state(model, weights)
