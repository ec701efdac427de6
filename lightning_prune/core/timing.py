"""Honest inference-latency measurement on CPU and CUDA.

Timing is easy to get wrong: without warm-up the first calls pay for allocation and kernel selection,
without synchronisation a GPU timer measures the launch and not the work, a mean hides the outliers a
shared machine produces, and a thread count nobody wrote down makes CPU numbers incomparable. Here
every call runs under ``torch.inference_mode`` after ``warmup`` untimed calls; CPU calls are timed with
``time.perf_counter`` at a fixed, recorded thread count, CUDA calls with CUDA events bracketing each
call and one synchronisation at the end; the result keeps the median and the 90th/99th percentiles.
:func:`interleaved_latency` compares several models round-robin, so a burst of load on a shared
machine hits every model alike instead of biasing whichever was timed during it; a model in another
runtime (a :class:`Runtime`, such as :class:`~lightning_prune.core.ort_timing.OrtModel`) takes its turn
in the same rounds.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from lightning_prune.core import model_io
from lightning_prune.core.devices import device_name, resolve_device

AMP_DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class TimingSettings:
    """How to time: plain values, so they go into configs, JSON records and table keys.

    Attributes:
        warmup: untimed calls before timing (allocator, cuDNN/oneDNN algorithm choice, compile).
        repeats: timed calls; percentiles need enough of them (p99 of 50 calls is the maximum).
        threads: CPU only: torch intra-op threads while timing; ``None`` keeps the current count.
        amp_dtype: ``"bfloat16"`` or ``"float16"`` to time under autocast; ``None`` for float32.
        channels_last: time a copy of the model and input in channels-last memory format.
        compile: time ``torch.compile`` of a copy of the model (compilation happens during warm-up).
    """

    warmup: int = 10
    repeats: int = 50
    threads: int | None = None
    amp_dtype: str | None = None
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be an integer >= 0, got {self.warmup!r}")
        if not isinstance(self.repeats, int) or self.repeats < 3:
            raise ValueError(f"repeats must be an integer >= 3 (percentiles need several calls), got {self.repeats!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be None or an integer >= 1, got {self.threads!r}")
        if self.amp_dtype is not None and self.amp_dtype not in AMP_DTYPES:
            raise ValueError(f"amp_dtype must be None or one of {sorted(AMP_DTYPES)}, got {self.amp_dtype!r}")


@dataclass
class Latency:
    """One latency measurement of one model at one batch size (milliseconds per call).

    ``p50_ms``/``p90_ms``/``p99_ms`` pool every timed call; ``quiet_p50_ms`` is the lowest median of the
    ``rounds`` rounds (equal to ``p50_ms`` for one round), ``round_medians_ms`` all of them in order, and
    ``spread`` their relative range; ``throughput`` is samples per second at the median;
    ``peak_memory_mb`` is CUDA only; ``runtime`` is ``"eager"`` (PyTorch) or a :class:`Runtime`'s name.
    """

    device: str
    batch_size: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    throughput: float
    timer: str
    threads: int
    repeats: int
    peak_memory_mb: float | None = None
    quiet_p50_ms: float = 0.0
    spread: float = 0.0
    rounds: int = 1
    round_medians_ms: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    runtime: str = "eager"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def _cpu_threads(threads: int | None) -> Iterator[int]:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


class Runtime(Protocol):
    """A model in another runtime that :func:`interleaved_latency` times in turn with eager modules."""

    runtime: str

    def timer(self, inputs: Tensor, settings: TimingSettings) -> Callable[[int], tuple[list[float], int]]:
        """A function of the warm-up count that times ``settings.repeats`` calls: (ms per call, threads)."""
        ...


def time_calls(run: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Per-call milliseconds: CUDA events around each call (one sync at the end), else perf_counter."""
    for _ in range(warmup):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
        for start, end in events:
            start.record()
            run()
            end.record()
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) for start, end in events]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1e3)
    return times


def _prepared(
    model: nn.Module, inputs: Tensor, device: torch.device, settings: TimingSettings
) -> tuple[nn.Module, Tensor]:
    """The model and input to time: the model itself when possible, a copy when timing must change it."""
    on_device = next(iter(model.parameters()), torch.empty(0)).device == device
    if on_device and not (settings.channels_last or settings.compile):
        return model, model_io.to_device(inputs, device)
    timed = copy.deepcopy(model).to(device)
    if settings.channels_last and isinstance(inputs, Tensor) and inputs.dim() == 4:
        timed = timed.to(memory_format=torch.channels_last)
        inputs = inputs.to(memory_format=torch.channels_last)
    if settings.compile:
        timed = torch.compile(timed)
    return timed, model_io.to_device(inputs, device)


def _autocast(device: torch.device, settings: TimingSettings) -> contextlib.AbstractContextManager:
    if settings.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[settings.amp_dtype])


def call_times_ms(
    model: nn.Module, inputs: Tensor, settings: TimingSettings, device: torch.device
) -> tuple[list[float], int, float | None]:
    """Time ``settings.repeats`` forward calls; returns (ms per call, threads used, peak MiB on CUDA)."""
    timed, inputs = _prepared(model, inputs, device, settings)
    return _timed_forward(model, timed, inputs, settings, device)


def _timed_forward(
    model: nn.Module,
    timed: nn.Module,
    inputs: Tensor,
    settings: TimingSettings,
    device: torch.device,
    warmup: int | None = None,
) -> tuple[list[float], int, float | None]:
    was_training = model.training
    timed.eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warmup = settings.warmup if warmup is None else warmup
    try:
        with _cpu_threads(settings.threads) as threads, torch.inference_mode(), _autocast(device, settings):
            times = time_calls(lambda: model_io.call(timed, inputs), device, warmup, settings.repeats)
    finally:
        model.train(was_training)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return times, threads, peak


def summarize(
    times_ms: list[float], batch_size: int, device: torch.device, threads: int, settings: TimingSettings, **extra: Any
) -> Latency:
    """Percentiles and throughput of a list of per-call times."""
    ordered = sorted(times_ms)

    def percentile(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    median = statistics.median(ordered)
    return Latency(
        device=device_name(device),
        batch_size=batch_size,
        p50_ms=median,
        p90_ms=percentile(0.90),
        p99_ms=percentile(0.99),
        mean_ms=statistics.fmean(ordered),
        min_ms=ordered[0],
        throughput=batch_size / (median / 1e3) if median > 0 else float("inf"),
        timer="cuda_events" if device.type == "cuda" else "perf_counter",
        threads=threads,
        repeats=len(ordered),
        settings=asdict(settings),
        **extra,
    )


def measure_latency(
    model: nn.Module,
    inputs: Tensor,
    settings: TimingSettings | None = None,
    device: str | torch.device | None = None,
    rounds: int = 1,
) -> Latency:
    """Latency of ``model(inputs)`` on ``device`` (default: the model's), restoring its train/eval mode.

    With ``rounds > 1`` the calls are taken in that many rounds; percentiles pool all calls, and
    ``quiet_p50_ms`` is the lowest per-round median (see :func:`interleaved_latency`).

    Example::

        >>> from torch import nn
        >>> result = measure_latency(nn.Linear(8, 4), torch.zeros(16, 8), TimingSettings(warmup=2, repeats=5))
        >>> result.batch_size, result.timer, result.repeats, result.p50_ms > 0
        (16, 'perf_counter', 5, True)
    """
    return interleaved_latency({"model": model}, inputs, settings, rounds, device)["model"]


def interleaved_latency(
    models: Mapping[str, nn.Module | Runtime],
    inputs: Tensor,
    settings: TimingSettings | None = None,
    rounds: int = 5,
    device: str | torch.device | None = None,
) -> dict[str, Latency]:
    """Time several models round-robin (``rounds`` x ``settings.repeats`` calls each) and pool the calls.

    Load on a shared machine comes in bursts that only ever add time. Interleaving spreads a burst over
    all models, so their ratio stays honest; ``quiet_p50_ms``, the lowest per-round median, is the
    estimate least disturbed by other processes; ``spread``, (max - min) / median of the per-round
    medians, is the noise to report next to the numbers. Each model is warmed up with
    ``settings.warmup`` calls before its first round and one call before each later round (the other
    models ran in between), so short rounds stay cheap: :func:`paired_ratio` wants many of them. A
    :class:`Runtime` in ``models`` (an ONNX Runtime session) is timed on the CPU in the same rounds.
    """
    settings = settings or TimingSettings()
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    timers = {name: _timer(model, inputs, settings, device) for name, model in models.items()}
    pooled: dict[str, list[float]] = {name: [] for name in models}
    medians: dict[str, list[float]] = {name: [] for name in models}
    threads: dict[str, int] = {}
    peaks: dict[str, float | None] = {}
    for round_index in range(rounds):
        warmup = settings.warmup if round_index == 0 else min(1, settings.warmup)
        for name, _ in models.items():
            times, threads[name], peaks[name] = timers[name][1](warmup)
            pooled[name] += times
            medians[name].append(statistics.median(times))
    results = {}
    for name, (where, _, runtime) in timers.items():
        middle = statistics.median(medians[name])
        results[name] = summarize(
            pooled[name],
            model_io.batch_size_of(inputs),
            where,
            threads[name],
            settings,
            peak_memory_mb=peaks[name],
            quiet_p50_ms=min(medians[name]),
            round_medians_ms=medians[name],
            spread=(max(medians[name]) - min(medians[name])) / middle if middle > 0 else 0.0,
            rounds=rounds,
            runtime=runtime,
        )
    return results


def _timer(
    model: nn.Module | Runtime, inputs: Tensor, settings: TimingSettings, device: str | torch.device | None
) -> tuple[torch.device, Callable[[int], tuple[list[float], int, float | None]], str]:
    """(device, one round as a function of the warm-up count, runtime) for a module or a :class:`Runtime`."""
    if not isinstance(model, nn.Module):
        timer = model.timer(inputs, settings)
        return torch.device("cpu"), lambda warmup: (*timer(warmup), None), model.runtime
    resolved = resolve_device(device, model)
    timed, timed_inputs = _prepared(model, inputs, resolved, settings)
    return resolved, partial(_timed_forward, model, timed, timed_inputs, settings, resolved), "eager"


def paired_ratio(model: Latency, reference: Latency) -> float:
    """``model``'s latency over ``reference``'s, from one :func:`interleaved_latency` call.

    The median of the per-round ratios: on a machine whose speed drifts (a shared host, frequency
    changes) both models' rounds in one pass see the same speed, so each ratio cancels it, where the
    ratio of two separately chosen round medians would not.

    Example::

        >>> fast = Latency("cpu", 1, 1, 1, 1, 1, 1, 1, "perf_counter", 1, 3, round_medians_ms=[1.0, 2.0, 1.0])
        >>> slow = Latency("cpu", 1, 1, 1, 1, 1, 1, 1, "perf_counter", 1, 3, round_medians_ms=[2.0, 4.0, 3.0])
        >>> paired_ratio(fast, slow)
        0.5
    """
    pairs = list(zip(model.round_medians_ms, reference.round_medians_ms, strict=True))
    if not pairs:
        raise ValueError("paired_ratio needs per-round medians from one interleaved_latency call")
    return statistics.median(mine / theirs for mine, theirs in pairs)


def batch_of(example: Any, batch_size: int) -> Any:
    """A contiguous batch of ``batch_size`` copies of the first sample of ``example`` (or of each tensor in it).

    A tuple or mapping of tensors (Hugging Face's ``input_ids``, ``attention_mask``) is passed to the model
    as Lightning passes ``example_input_array`` (:func:`lightning_prune.core.model_io.call`).
    """
    if not isinstance(example, Tensor):
        return model_io.repeat_samples(model_io.first_samples(example), batch_size)
    sample = example[:1]
    return sample.expand(batch_size, *sample.shape[1:]).contiguous()
