"""bench latency: the ratio bisection on synthetic latency functions, and a quick run's paired JSON."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from lightning_prune.bench.__main__ import dispatch
from lightning_prune.bench._common import pooled_resnet
from lightning_prune.bench._compose import compose_benchmark
from lightning_prune.bench.latency.matching import bisect_ratio
from lightning_prune.bench.latency_budget.compare import ours_pruner


def affine(ours_ms: float, fixed_ms: float = 0.2) -> callable:
    """A baseline whose latency falls with (1 - ratio)^2 (channels in and out) above a fixed cost, over ours'."""
    return lambda ratio: (fixed_ms + (1.0 - ratio) ** 2) / ours_ms


@pytest.mark.parametrize("ours_ms", [0.3, 0.5, 0.8, 1.1])
def test_a_smooth_latency_is_matched_within_tolerance(ours_ms: float) -> None:
    match = bisect_ratio(affine(ours_ms), tolerance=0.03)
    assert match.matched
    assert abs(match.relative - 1.0) <= 0.03
    exact = 1.0 - math.sqrt(ours_ms - 0.2)  # where the baseline's latency equals ours
    assert match.ratio == pytest.approx(exact, abs=0.03)
    assert len(match.probes) <= 10


def test_a_stepwise_latency_returns_the_closest_probe_unmatched() -> None:
    """Channels come in groups: latency jumps 20 % between steps, so nothing lies within 3 % of ours."""
    steps = lambda ratio: 1.1 if ratio < 0.5 else 0.9  # noqa: E731
    match = bisect_ratio(steps, tolerance=0.03)
    assert not match.matched
    assert match.relative in (0.9, 1.1)
    assert len(match.probes) == 10


def test_unmatched_the_baseline_keeps_more_latency_than_ours_not_less() -> None:
    """Between a probe 20 % slower and one 10 % faster, the slower one: a faster baseline would lose on speed."""
    match = bisect_ratio(lambda ratio: 1.2 if ratio < 0.5 else 0.9, tolerance=0.03)
    assert not match.matched
    assert match.relative == 1.2
    assert bisect_ratio(lambda ratio: 0.9 - 0.1 * ratio, tolerance=0.03).relative == pytest.approx(0.9, abs=0.01)


def test_a_baseline_slower_than_ours_even_at_the_highest_ratio_stops_at_once() -> None:
    match = bisect_ratio(lambda ratio: 1.5, high=0.9)
    assert not match.matched
    assert match.probes == [{"ratio": 0.9, "relative": 1.5}]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"low": 0.5, "high": 0.5}, "need 0 <= low < high < 1"),
        ({"high": 1.0}, "need 0 <= low < high < 1"),
        ({"tolerance": 0.0}, "tolerance must be in \\(0, 1\\)"),
        ({"max_probes": 0}, "max_probes must be an integer >= 1"),
    ],
)
def test_bad_search_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bisect_ratio(lambda ratio: 1.0, **kwargs)


@pytest.mark.slow
def test_a_quick_run_pairs_ours_with_every_baseline_per_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the latency table and ours' exports go under ./bench_out
    threads = torch.get_num_threads()
    try:
        assert dispatch(["latency", "scale=quick", f"out={tmp_path / 'x.json'}"]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads((tmp_path / "x.json").read_text())
    (row,) = result["paired"]
    assert {"seed", "ours_acc", "uniform_acc", "ours_ms", "uniform_ms", "budget_ms", "ours_within_budget"} <= set(row)
    run = result["per_seed"][0]
    for name in ("uniform", "global_magnitude", "global_taylor"):
        arm = run["arms"][name]
        assert arm["architecture_of_probe"], name  # the trained arm is the probe the bisection timed
        assert 1 <= len(arm["probes"]) <= 4
        assert row[f"{name}_matched"] == (abs(row[f"{name}_ms"] / row["ours_ms"] - 1) <= 0.1)
        assert result["summary"][name]["ours_minus_pt"] == [100 * (row["ours_acc"] - row[f"{name}_acc"])]
        assert arm["params"] < run["arms"]["dense"]["params"]
        assert result["speedup_over_mac_cut"][name] > 0
    assert row["ours_within_budget"] == (row["ours_ms"] <= row["budget_ms"] * 1.05)
    assert result["provenance"]["complete"] is True


def test_bad_baselines_are_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"baselines must be a non-empty list from .*got \['random'\]"):
        dispatch(["latency", "scale=quick", "baselines=[random]", f"out={tmp_path / 'x.json'}"])
    assert not (tmp_path / "x.json").exists()


def test_a_baseline_is_never_cut_past_the_ratio_where_torch_pruning_stops_cutting() -> None:
    """Widths 16/32/64, channels in fours: 0.75 leaves the 16-wide convs 4 channels; beyond, they stay whole."""
    from lightning_prune.bench.latency.baselines import highest_ratio, prune_once
    from lightning_prune.models import Classifier, ResNet

    model = Classifier(ResNet((1, 12, 12), 10), 10, (1, 12, 12))
    assert highest_ratio(model, 4) == 0.75
    batch = (torch.randn(8, 1, 12, 12), torch.randint(0, 10, (8,)))
    for kind in ("uniform", "global_magnitude", "global_taylor"):
        pruned = copy.deepcopy(model)
        prune_once(pruned, kind, 0.75, 4, batch)
        widths = [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
        assert min(widths) >= 4, kind
        assert sum(widths) < sum(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)), kind


def test_ours_takes_its_own_channel_grid_when_the_config_gives_one() -> None:
    """``pruning.round_to`` is ours' grid alone (null: the callback's default, the CPU's kernel block)."""
    cfg = compose_benchmark("latency", ["+pruning.round_to=null"])
    assert cfg.round_to == 4
    assert ours_pruner(cfg, "cpu", 1).round_to is None
    cfg = compose_benchmark("latency", ["+pruning.round_to=16"])
    assert ours_pruner(cfg, "cpu", 1).round_to == 16


def test_a_pooled_resnet_sees_the_pooled_image() -> None:
    net = pooled_resnet((1, 28, 28), 10, [1, 1], [8, 16], pool=2)
    assert isinstance(net[0], torch.nn.AvgPool2d)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert not isinstance(pooled_resnet((1, 28, 28), 10, [1], [8]), torch.nn.Sequential)
