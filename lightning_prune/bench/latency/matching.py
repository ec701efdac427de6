"""Bisect a baseline's pruning ratio until it runs as fast as ours: comparing arms at equal *measured* latency.

A baseline pruned at a fixed ratio lands anywhere between 0.7x and 1.1x our latency, and an accuracy gap
between models of different speed says nothing about the method. So each baseline's ratio is searched:
``relative(ratio)`` prunes a copy of the dense model at ``ratio`` and times it side by side with ours (their
latency ratio, > 1 when the baseline is slower), and the ratio is bisected until the baseline is within
``tolerance`` of ours. Latency falls with the ratio only in steps (channels come in ``round_to`` groups, and
timing is noisy), so the search may end without a match; then the closest probe no faster than ours is returned,
marked unmatched: a baseline given more latency than ours, never less, so a gap in ours' favour is not the speed's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Match:
    """The chosen ratio, its latency relative to ours, whether that is within tolerance, and every probe."""

    ratio: float
    relative: float
    matched: bool
    probes: list[dict[str, float]] = field(default_factory=list)


def bisect_ratio(
    relative: Callable[[float], float],
    low: float = 0.0,
    high: float = 0.95,
    tolerance: float = 0.03,
    max_probes: int = 10,
) -> Match:
    """The pruning ratio in ``[low, high]`` at which ``relative(ratio)`` (baseline / ours latency) is 1 ± tolerance.

    ``relative`` must fall as the ratio rises (more pruning, faster). ``high`` is probed first: a baseline
    still slower than ours there cannot be matched (returned unmatched, after one probe).

    Raises:
        ValueError: for bounds outside ``0 <= low < high < 1``, a tolerance outside (0, 1) or ``max_probes < 1``.
    """
    if not 0.0 <= low < high < 1.0:
        raise ValueError(f"need 0 <= low < high < 1, got low={low!r}, high={high!r}")
    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance!r}")
    if not isinstance(max_probes, int) or max_probes < 1:
        raise ValueError(f"max_probes must be an integer >= 1, got {max_probes!r}")
    probes: list[dict[str, float]] = []

    def probe(ratio: float) -> float:
        value = relative(ratio)
        probes.append({"ratio": ratio, "relative": value})
        return value

    if probe(high) > 1.0 + tolerance:  # even the most pruned baseline is slower than ours
        return _closest(probes, tolerance)
    while len(probes) < max_probes:
        middle = (low + high) / 2
        value = probe(middle)
        if abs(value - 1.0) <= tolerance:
            break
        low, high = (middle, high) if value > 1.0 else (low, middle)
    return _closest(probes, tolerance)


def _closest(probes: list[dict[str, float]], tolerance: float) -> Match:
    """The probe nearest ours' latency, among those not faster than ours by more than ``tolerance`` if any.

    On this CPU a uniform cut's latency moves in steps of up to 30 % (a 16-channel stage kept at 12 or 8), and the
    nearest probe was often the faster one: an accuracy gap against a faster model says nothing about the method.
    """
    slower = [p for p in probes if p["relative"] >= 1.0 - tolerance] or probes
    best = min(slower, key=lambda p: (abs(p["relative"] - 1.0), p["ratio"]))
    return Match(best["ratio"], best["relative"], abs(best["relative"] - 1.0) <= tolerance, probes)
