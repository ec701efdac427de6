"""Sparsity schedules: the sparsity to reach after each pruning step, as plain lists of floats."""

from __future__ import annotations

import math
from collections.abc import Callable


def fixed_ratio(target_sparsity: float, step_ratio: float) -> list[float]:
    """Prune ``step_ratio`` of the *remaining* weights per step until ``target_sparsity`` (last step clipped).

    Example::

        >>> [round(s, 3) for s in fixed_ratio(0.8, 0.5)]
        [0.5, 0.75, 0.8]
    """
    steps, sparsity = [], 0.0
    while sparsity < target_sparsity - 1e-9:
        sparsity = min(target_sparsity, 1.0 - (1.0 - sparsity) * (1.0 - step_ratio))
        steps.append(sparsity)
    return steps


def cubic(target_sparsity: float, num_steps: int, initial_sparsity: float = 0.0) -> list[float]:
    """Zhu & Gupta's gradual schedule: fast at first, slower as the network gets sparse.

    Example::

        >>> [round(s, 3) for s in cubic(0.8, 4)]
        [0.463, 0.7, 0.788, 0.8]
    """
    return [
        target_sparsity + (initial_sparsity - target_sparsity) * (1.0 - step / num_steps) ** 3
        for step in range(1, num_steps + 1)
    ]


def linear(target_sparsity: float, num_steps: int, initial_sparsity: float = 0.0) -> list[float]:
    """Equal sparsity increments."""
    return [
        initial_sparsity + (target_sparsity - initial_sparsity) * step / num_steps for step in range(1, num_steps + 1)
    ]


SCHEDULES = ("fixed", "cubic", "linear")


def sparsity_schedule(
    name: str, target_sparsity: float, step_ratio: float | None, num_steps: int | None
) -> list[float]:
    """The per-step sparsities of schedule ``name`` (``"fixed"`` uses ``step_ratio``, the others ``num_steps``)."""
    if name == "fixed":
        if step_ratio is None:
            raise ValueError("schedule='fixed' needs step_ratio (fraction of remaining weights pruned per step)")
        return fixed_ratio(target_sparsity, step_ratio)
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")
    if num_steps is None:
        raise ValueError(f"schedule={name!r} needs num_steps >= 1")
    return cubic(target_sparsity, num_steps) if name == "cubic" else linear(target_sparsity, num_steps)


def exponential_latency(initial_ms: float, target_ms: float, num_steps: int) -> list[float]:
    """HALP's per-step latency targets: geometric from ``initial_ms`` to ``target_ms`` over ``num_steps``.

    L_t = exp((t/T) ln L_target + (1 - t/T) ln L_0) (NVlabs/HALP ``set_latency_prune_target``): every step
    removes the same *fraction* of the remaining latency, so early steps, on the widest network, are not
    asked to cut more absolute latency than later ones can.

    Example::

        >>> [round(v, 3) for v in exponential_latency(8.0, 2.0, 2)]
        [4.0, 2.0]
    """
    if initial_ms <= 0 or target_ms <= 0 or num_steps < 1:
        raise ValueError(
            f"need initial_ms > 0, target_ms > 0, num_steps >= 1, got {initial_ms}, {target_ms}, {num_steps}"
        )
    return [
        math.exp((t / num_steps) * math.log(target_ms) + (1 - t / num_steps) * math.log(initial_ms))
        for t in range(1, num_steps + 1)
    ]


def pruning_aware_lr(remaining_fraction: float, base_lr: float, delta: float, p: float, beta: float) -> float:
    """ICE-Pruning's learning rate for a fine-tune: ``base - delta / (1 + (x / (2(1-p) - x)) ** beta)``.

    ``x`` is the remaining fraction of the weights. The rate stays near ``base_lr`` while ``x > 1 - p``,
    is ``base_lr - delta / 2`` at ``x = 1 - p`` and falls to ``base_lr - delta`` once the network is
    sparser: a sigmoid step whose steepness is ``beta``. Written as a logistic of ``beta * ln(ratio)``
    so large ``beta`` cannot overflow. Needs ``0 <= p < 0.5`` (so ``2(1-p) > 1 >= x``).

    Example::

        >>> [round(pruning_aware_lr(x, 0.001, 7e-4, 0.15, 50), 6) for x in (1.0, 0.85, 0.5)]
        [0.001, 0.00065, 0.0003]
    """
    ratio = remaining_fraction / (2.0 * (1.0 - p) - remaining_fraction)
    if ratio <= 0:
        return base_lr - delta
    z = beta * math.log(ratio)
    step = math.exp(-z) / (1.0 + math.exp(-z)) if z > 0 else 1.0 / (1.0 + math.exp(z))
    return base_lr - delta * step


APP_BASE = 0.8
APP_TARGET_SPARSITY = 1.0 - APP_BASE**4.5  # the paper's default exponent tau = 4.5: about 0.366 of the weights kept


def app_exponent(target_sparsity: float, base: float = APP_BASE) -> float:
    """The exponent tau with ``base ** tau == 1 - target_sparsity`` (APP's ``--sparsity_level``).

    Example::

        >>> round(app_exponent(APP_TARGET_SPARSITY), 6)
        4.5
    """
    if not 0 < target_sparsity < 1:
        raise ValueError(f"target_sparsity must be in (0, 1), got {target_sparsity}")
    return math.log(1.0 - target_sparsity) / math.log(base)


def app(target_sparsity: float, num_steps: int, base: float = APP_BASE) -> list[float]:
    """Anytime Progressive Pruning's schedule: density ``base ** e_t``, e_t spaced linearly from 1 to tau.

    tau comes from the target (:func:`app_exponent`), so the last step lands on ``target_sparsity``; the
    paper's tau = 4.5 is ``target_sparsity = APP_TARGET_SPARSITY``. The first step keeps ``base`` of the
    weights, so targets below ``1 - base`` are refused; a single step goes straight to the target.

    Example::

        >>> [round(s, 4) for s in app(APP_TARGET_SPARSITY, 3)]
        [0.2, 0.4586, 0.6336]
    """
    tau = app_exponent(target_sparsity, base)
    if tau < 1.0 - 1e-12:
        raise ValueError(
            f"schedule 'app' starts at density {base} (sparsity {1 - base:.2f}); target_sparsity must be >= "
            f"{1 - base:.2f}, got {target_sparsity}"
        )
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if num_steps == 1:
        return [target_sparsity]
    exponents = [1.0 + (tau - 1.0) * step / (num_steps - 1) for step in range(num_steps)]
    return [1.0 - base**e for e in exponents]


def oneshot(target_sparsity: float, num_steps: int) -> list[float]:
    """The final sparsity at every step: APP's "anytime one-shot" baseline (masks fixed after the first step)."""
    return [target_sparsity] * num_steps


MEGABATCH_SCHEDULES: dict[str, Callable[[float, int], list[float]]] = {
    "app": app,
    "linear": linear,
    "cubic": cubic,
    "oneshot": oneshot,
}


def megabatch_sparsities(schedule: str, target_sparsity: float, num_megabatches: int) -> list[float]:
    """AnytimeProgressivePruning's sparsity after each megabatch; a target of 0 trains dense (all zeros).

    Example::

        >>> [round(s, 4) for s in megabatch_sparsities("oneshot", 0.5, 3)], megabatch_sparsities("app", 0.0, 2)
        ([0.5, 0.5, 0.5], [0.0, 0.0])
    """
    if target_sparsity == 0:
        return [0.0] * num_megabatches
    return MEGABATCH_SCHEDULES[schedule](float(target_sparsity), num_megabatches)
