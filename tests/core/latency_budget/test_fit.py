"""The latency model: per-layer affine fits from a bounded number of timed shapes, and the whole-model fit."""

import pytest
import torch
from torch import nn

import lightning_prune.core.latency_budget.planner as planner_module
from lightning_prune.core.latency_budget.fit import POINTS, AffineFit, fit_affine, sample_shapes
from lightning_prune.core.latency_budget.measure import whole_model_fit
from lightning_prune.core.latency_budget.plan import option_counts
from lightning_prune.core.latency_budget.table import LatencyTable, layer_spec
from lightning_prune.core.timing import TimingSettings

CONV = layer_spec(nn.Conv2d(64, 128, 3, padding=1, bias=False), (1, 64, 8, 8), norm=True)


@pytest.mark.parametrize(
    ("c_in", "c_out", "depthwise"),
    [(64, 128, False), (512, 512, False), (96, 96, True), (3, 8, False), (16, 16, False), (1, 16, False)],
)
def test_sampled_shapes_are_few_on_the_planners_options_and_within_the_layer(c_in, c_out, depthwise):
    shapes = sample_shapes(c_in, c_out, depthwise, round_to=16, lowest=4)
    assert 1 <= len(shapes) <= POINTS
    assert (c_in, c_out) in shapes
    for i, o in shapes:
        assert 1 <= i <= c_in
        assert 1 <= o <= c_out
        assert o in option_counts(c_out, round_to=16, min_channels=4)  # a width the planner may choose
        assert not depthwise or i == o


def test_an_affine_latency_is_recovered_and_a_noisy_one_never_gets_a_negative_term():
    truth = AffineFit(0.5, 1e-4, 2e-3)
    shapes = sample_shapes(64, 128, False, round_to=16, lowest=4)
    fit = fit_affine(shapes, [truth(i, o) for i, o in shapes], depthwise=False)
    assert fit(48, 80) == pytest.approx(truth(48, 80))
    assert fit.overhead == pytest.approx(0.5)
    # a shared machine's noise can make a narrower layer look slower: the fit stays non-negative (monotone)
    noisy = fit_affine([(64, 128), (64, 64), (64, 32)], [1.0, 1.2, 0.9], depthwise=False)
    assert min(noisy.overhead, noisy.per_mac, noisy.per_channel) >= 0
    assert noisy(64, 32) <= noisy(64, 64) <= noisy(64, 128)


def test_after_a_fit_the_table_answers_any_width_without_timing(tmp_path):
    timed = []

    def timer(layer, inputs):
        first = layer[0]
        timed.append(tuple(first.weight.shape[:2]))
        return 0.2 + first.weight.shape[0] * first.weight.shape[1] / 1e4

    table = LatencyTable(torch.device("cpu"), TimingSettings(1, 3, threads=1), 8, tmp_path / "lut.json", timer)
    table.fit_layer(CONV, 64, 128, round_to=16, lowest=4)
    assert len(timed) == table.timed <= POINTS
    assert table(CONV, 40, 72) == pytest.approx(0.2 + 40 * 72 / 1e4)
    assert len(timed) <= POINTS  # nothing more was timed
    assert table.timing_s >= 0


def test_the_whole_model_fit_goes_through_both_networks_whatever_its_intercept_or_falls_back_to_proportional():
    overhead, scale = whole_model_fit(dense_ms=10.0, dense_table=8.0, small_ms=7.0, small_table=2.0)
    assert overhead + scale * 8.0 == pytest.approx(10.0)
    assert overhead + scale * 2.0 == pytest.approx(7.0)
    # layers timed alone priced with more fixed cost than the network has: the intercept goes negative
    overhead, scale = whole_model_fit(dense_ms=0.72, dense_table=0.81, small_ms=0.40, small_table=0.69)
    assert overhead < 0
    assert overhead + scale * 0.69 == pytest.approx(0.40)
    assert overhead + scale * 0.81 == pytest.approx(0.72)
    # the smallest network measured slower than the dense one (load): no slope to fit
    assert whole_model_fit(10.0, 8.0, 11.0, 2.0) == (0.0, 10.0 / 8.0)


@pytest.mark.parametrize(("capability", "expected"), [("AVX512", 16), ("AVX2", 8), ("DEFAULT", 4)])
def test_round_to_defaults_to_the_cpu_vector_width(monkeypatch, capability, expected):
    monkeypatch.setattr(planner_module.torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert planner_module.simd_channels(torch.device("cpu")) == expected
    assert planner_module.simd_channels(torch.device("cuda", 0)) == 8


def test_a_layer_no_wider_than_one_block_is_sampled_below_it():
    """On a 16-grid a 16-channel layer may be cut to 8 or 4: sampled only at 16, its fit had no slope in its
    width and the table priced the zoo ResNet's 16-channel residual width cut to 4 at nothing."""
    assert [o for _, o in sample_shapes(16, 16, False, round_to=16, lowest=4)] == [16, 8, 4, 16]
    assert sample_shapes(16, 16, True, round_to=16, lowest=4) == [(16, 16), (8, 8), (4, 4)]
