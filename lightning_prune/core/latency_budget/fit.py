"""A layer's latency as an affine function of its channel counts, fitted to a few timed shapes.

Timing every ``(c_in, c_out)`` a knapsack asks about costs thousands of entries on a real network
(ResNet-18 at ``round_to=4``: ~15 minutes on a CPU) and each entry is noisy on a shared machine. What a
CPU rewards is not proportional either: a layer has a fixed cost (dispatch, memory-format conversion,
the BatchNorm's pass) that a few channels less do not move, then a slope in its MACs. So each layer
signature is timed at :data:`POINTS` shapes on the channel grid (full, three quarters, half, a quarter of
its output width at full input width; half its input width) and fitted as

    ms = a + b * c_in * c_out + c * c_out        (depthwise: ms = a + c * channels)

by non-negative least squares (every subset of terms, the best fit with no negative coefficient), so
a prediction never falls as channels grow and a fixed overhead stays in every option's price.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

# At most this many shapes are timed per layer signature (what bounds calibration's cost).
POINTS = 5


@dataclass(frozen=True)
class AffineFit:
    """``ms = overhead + per_mac * c_in * c_out + per_channel * c_out`` (all >= 0)."""

    overhead: float
    per_mac: float
    per_channel: float

    def __call__(self, c_in: int, c_out: int) -> float:
        return self.overhead + self.per_mac * c_in * c_out + self.per_channel * c_out


def grid(count: int, fraction: float, round_to: int, lowest: int) -> int:
    """``fraction`` of ``count`` on the planner's channel options, at least ``lowest``, at most ``count``.

    A multiple of ``round_to``, or below one block the power of two under it, as the planner's options are
    (:func:`~lightning_prune.core.latency_budget.plan.option_counts`). Rounding up to a full block instead
    sampled a 16-channel layer on a 16-grid only at 16: its fit had no slope in its width, and the table
    priced cutting the zoo ResNet's 16-channel residual width to 4 at nothing where it measured 19 % of the
    whole model.

    Example::

        >>> [grid(16, f, 16, 4) for f in (1.0, 0.75, 0.5, 0.25)], [grid(64, f, 16, 4) for f in (0.75, 0.25)]
        ([16, 8, 8, 4], [48, 16])
    """
    wanted = count * fraction
    below_block = 1 << max(0, int(wanted).bit_length() - 1)
    rounded = round_to * round(wanted / round_to) if wanted >= round_to else below_block
    return min(count, max(min(lowest, count), rounded))


def sample_shapes(c_in: int, c_out: int, depthwise: bool, round_to: int, lowest: int) -> list[tuple[int, int]]:
    """The (c_in, c_out) shapes timed for a layer whose widest shape is ``(c_in, c_out)``.

    Example::

        >>> sample_shapes(64, 32, False, round_to=8, lowest=8)
        [(64, 32), (64, 24), (64, 16), (64, 8), (32, 32)]
        >>> sample_shapes(32, 32, True, round_to=8, lowest=8)
        [(32, 32), (24, 24), (16, 16), (8, 8)]
    """
    outs = [grid(c_out, f, round_to, lowest) for f in (1.0, 0.75, 0.5, 0.25)]
    if depthwise:
        shapes = [(c, c) for c in outs]
    else:
        shapes = [(c_in, c) for c in outs] + [(grid(c_in, 0.5, round_to, lowest), c_out)]
    return list(dict.fromkeys(shapes))[:POINTS]


def fit_affine(shapes: Sequence[tuple[int, int]], ms: Sequence[float], depthwise: bool) -> AffineFit:
    """Non-negative least-squares fit of :class:`AffineFit` to timed ``shapes`` (one point: all overhead).

    Example::

        >>> fit = fit_affine([(8, 8), (8, 4), (4, 8)], [1.0 + 0.01 * 64, 1.0 + 0.01 * 32, 1.0 + 0.01 * 32], False)
        >>> round(fit(8, 8), 6), round(fit.overhead, 6)
        (1.64, 1.0)
    """
    if len(shapes) == 1:
        return AffineFit(float(ms[0]), 0.0, 0.0)
    rows = [[1.0, 0.0 if depthwise else float(i * o), float(o)] for i, o in shapes]
    x = torch.tensor(rows, dtype=torch.float64)
    y = torch.tensor(list(ms), dtype=torch.float64)
    best: tuple[float, list[float]] | None = None
    for size in range(1, 4):
        for terms in itertools.combinations(range(3), size):
            solution = torch.linalg.lstsq(x[:, terms], y.unsqueeze(1)).solution.squeeze(1)
            if bool((solution < 0).any()):
                continue
            residual = float(((x[:, terms] @ solution - y) ** 2).sum())
            coef = [0.0, 0.0, 0.0]
            for term, value in zip(terms, solution.tolist()):
                coef[term] = value
            if best is None or residual < best[0] - 1e-15:
                best = (residual, coef)
    if best is None:  # every term negative alone: the flattest honest answer is the mean
        return AffineFit(float(y.mean()), 0.0, 0.0)
    return AffineFit(*best[1])
