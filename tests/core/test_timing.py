import time

import pytest
import torch
from torch import nn

from lightning_prune.core.devices import check_device, resolve_device
from lightning_prune.core.timing import (
    TimingSettings,
    batch_of,
    interleaved_latency,
    measure_latency,
    paired_ratio,
)

QUICK = TimingSettings(warmup=1, repeats=5)
FEW = TimingSettings(warmup=0, repeats=3)


def test_cpu_measurement_records_threads_restores_them_and_the_train_mode():
    model = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.Linear(32, 4)).train()
    threads_before = torch.get_num_threads()
    result = measure_latency(model, torch.randn(8, 16), TimingSettings(warmup=2, repeats=7, threads=1), rounds=2)
    assert model.training
    assert torch.get_num_threads() == threads_before
    assert result.threads == 1
    assert result.timer == "perf_counter"
    assert result.repeats == 14
    assert result.rounds == 2
    assert 0 < result.min_ms <= result.quiet_p50_ms
    assert result.min_ms <= result.p50_ms <= result.p90_ms <= result.p99_ms
    assert result.throughput == pytest.approx(8 / (result.p50_ms / 1e3))
    assert result.peak_memory_mb is None
    assert result.settings["threads"] == 1


def test_timing_runs_in_inference_mode_and_does_not_touch_batchnorm_statistics():
    seen = []
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    model[0].register_forward_hook(lambda m, i, o: seen.append(torch.is_inference_mode_enabled()))
    measure_latency(model, torch.randn(6, 4), QUICK)
    assert all(seen)
    assert len(seen) == 6
    assert model[1].num_batches_tracked == 0


def test_channels_last_and_bfloat16_time_a_copy():
    model = nn.Conv2d(3, 8, 3)
    result = measure_latency(
        model, torch.randn(2, 3, 8, 8), TimingSettings(1, 3, amp_dtype="bfloat16", channels_last=True)
    )
    assert result.settings["channels_last"]
    assert result.settings["amp_dtype"] == "bfloat16"
    assert model.weight.is_contiguous()  # the user's model keeps its layout


def test_interleaved_measures_each_model_every_round():
    calls = {"a": 0, "b": 0}
    models = {name: nn.Linear(4, 4) for name in calls}
    for name, model in models.items():
        model.register_forward_hook(lambda m, i, o, name=name: calls.__setitem__(name, calls[name] + 1))
    results = interleaved_latency(models, torch.randn(3, 4), TimingSettings(warmup=1, repeats=4), rounds=3)
    assert calls == {"a": 15, "b": 15}
    assert all(r.repeats == 12 and r.spread >= 0 for r in results.values())


def test_interleaved_warms_up_fully_once_then_one_call_per_round():
    calls = []
    model = nn.Linear(4, 4)
    model.register_forward_hook(lambda *args: calls.append(1))
    result = interleaved_latency({"m": model}, torch.randn(3, 4), TimingSettings(warmup=5, repeats=3), rounds=4)["m"]
    assert len(calls) == 5 + 3 + 3 * (1 + 3)
    assert len(result.round_medians_ms) == 4
    assert result.quiet_p50_ms == min(result.round_medians_ms)


def test_interleaved_times_another_runtime_in_the_same_rounds():
    order = []

    class Fake:  # the Runtime protocol: ONNX Runtime's OrtModel is one
        runtime = "fake"

        def timer(self, inputs, settings):
            def one_round(warmup):
                order.append(("fake", warmup))
                return [1.0] * settings.repeats, 3

            return one_round

    model = nn.Linear(4, 4)
    model.register_forward_hook(lambda *args: order.append("eager"))
    timed = interleaved_latency({"eager": model, "other": Fake()}, torch.randn(2, 4), TimingSettings(2, 3), rounds=2)
    assert order == ["eager"] * 5 + [("fake", 2)] + ["eager"] * 4 + [("fake", 1)]
    other = timed["other"]
    assert (other.runtime, other.threads, other.repeats, other.p50_ms, other.batch_size) == ("fake", 3, 6, 1.0, 2)
    assert other.timer == "perf_counter"
    assert timed["eager"].runtime == "eager"


def test_paired_ratio_cancels_a_machine_that_slows_down_between_rounds():
    slowdown = {"factor": 1.0}

    class Busy(nn.Module):
        def __init__(self, ms):
            super().__init__()
            self.ms = ms

        def forward(self, x):
            time.sleep(self.ms * slowdown["factor"] / 1e3)
            return x

    class Drifting(dict):  # a machine that gets 1.5x slower after each round of both models
        def items(self):
            yield from super().items()
            slowdown["factor"] *= 1.5

    timed = interleaved_latency(Drifting(small=Busy(2.0), large=Busy(4.0)), torch.zeros(1, 1), FEW, rounds=4)
    assert timed["large"].spread > 1.0  # the absolute figures drifted by more than 2x
    assert paired_ratio(timed["small"], timed["large"]) == pytest.approx(0.5, rel=0.2)


def test_batch_of_repeats_the_first_sample():
    example = torch.arange(6.0).view(2, 3)
    batch = batch_of(example, 4)
    assert batch.shape == (4, 3)
    assert batch.is_contiguous()
    assert (batch == example[0]).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"repeats": 2}, "repeats must be an integer >= 3"),
        ({"warmup": -1}, "warmup must be an integer >= 0"),
        ({"threads": 0}, "threads must be None or an integer >= 1"),
        ({"amp_dtype": "fp8"}, "amp_dtype must be None or one of"),
    ],
)
def test_bad_timing_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TimingSettings(**kwargs)


def test_devices_are_checked():
    check_device("cpu")
    check_device("cuda:1")
    with pytest.raises(ValueError, match="device must be None, 'cpu' or 'cuda"):
        check_device("tpu")
    with pytest.raises(ValueError, match="device must be None, 'cpu' or 'cuda"):
        check_device("mps")
    assert resolve_device(None, nn.Linear(2, 2)).type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            resolve_device("cuda", nn.Linear(2, 2))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_events_peak_memory_and_options():
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1)).cuda()
    inputs = torch.randn(32, 3, 64, 64)
    result = measure_latency(model, inputs, TimingSettings(warmup=5, repeats=20), rounds=2)
    assert result.timer == "cuda_events"
    assert result.peak_memory_mb > 0
    assert result.p50_ms > 0
    fast = measure_latency(model, inputs, TimingSettings(5, 20, amp_dtype="bfloat16", channels_last=True))
    assert fast.p50_ms > 0
    on_cpu = measure_latency(model, inputs, QUICK, device="cpu")
    assert on_cpu.timer == "perf_counter"
    assert next(model.parameters()).is_cuda
