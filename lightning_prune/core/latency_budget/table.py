"""The latency lookup table (LUT): measured milliseconds per layer shape, per device.

HALP and SP-LAMP estimate a network's latency as the sum of its layers' latencies, each looked up by
the layer's shape. A :class:`LayerSpec` is what fixes a layer's cost apart from its channel counts
(kind, kernel, stride, padding, input feature-map size, bias, whether a BatchNorm follows); its
``signature`` string keys the table, with ``"c_in x c_out"`` under it. Entries are timed on the target
device by building the layer afresh at those channel counts and timing it on an input of its real shape.
A calibrated run times only a few shapes per signature and looks every other width up in the signature's
affine fit (:meth:`LatencyTable.fit_layer`, :mod:`~lightning_prune.core.latency_budget.fit`); a signature
without a fit is timed cell by cell on first use. The JSON file keeps
one table per device key (device name, threads, batch size, dtype, memory format): a table is reused
when the key matches and built anew when the device or settings differ, without losing the others.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from lightning_prune.core.devices import device_name
from lightning_prune.core.latency_budget.fit import AffineFit, fit_affine, sample_shapes
from lightning_prune.core.timing import TimingSettings, call_times_ms

log = logging.getLogger(__name__)
FORMAT = 1
# One entry is timed for at most this long (at least 3 calls): a wide layer at a large batch must not make
# calibration's cost grow with lut_repeats.
ENTRY_CAP_S = 0.4
_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_NORMS = {0: nn.BatchNorm1d, 1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


@dataclass(frozen=True)
class LayerSpec:
    """Everything but the channel counts that decides a conv or linear layer's latency.

    Attributes:
        kind: ``"conv"`` or ``"linear"``.
        spatial: the input's trailing sizes (conv: the feature map; linear: extra dims such as tokens).
        kernel_size, stride, padding, dilation: conv geometry (empty for linear).
        depthwise: a conv with ``groups == in_channels == out_channels`` (its c_in follows its c_out).
        bias: whether the layer has a bias.
        norm: whether a BatchNorm directly follows (timed together: it runs once per output channel).
        groups: a grouped conv's ``groups`` other than depthwise (ResNeXt, RegNet); the planner keeps the
            channel groups such a conv touches whole, so it is only ever timed at its own shape.
    """

    kind: str
    spatial: tuple[int, ...]
    kernel_size: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    depthwise: bool = False
    bias: bool = False
    norm: bool = False
    groups: int = 1

    @property
    def signature(self) -> str:
        dims = "x".join(map(str, self.spatial)) or "-"
        if self.kind == "linear":
            return f"linear(bias={int(self.bias)},norm={int(self.norm)})@{dims}"
        geometry = ",".join(
            f"{k}={'x'.join(map(str, v))}"
            for k, v in (("k", self.kernel_size), ("s", self.stride), ("p", self.padding), ("d", self.dilation))
        )
        flags = f"dw={int(self.depthwise)},bias={int(self.bias)},norm={int(self.norm)}"
        flags += f",g={self.groups}" if self.groups > 1 else ""
        return f"conv{len(self.spatial)}d({geometry},{flags})@{dims}"

    def build(self, c_in: int, c_out: int) -> nn.Module:
        """A fresh layer (plus its norm) with these channel counts."""
        if self.kind == "linear":
            layer: nn.Module = nn.Linear(c_in, c_out, bias=self.bias)
        else:
            channels_in = c_out if self.depthwise else c_in
            layer = _CONVS[len(self.spatial)](
                channels_in,
                c_out,
                self.kernel_size,
                stride=self.stride,
                padding=self.padding,
                dilation=self.dilation,
                groups=c_out if self.depthwise else self.groups,
                bias=self.bias,
            )
        if not self.norm:
            return layer
        return nn.Sequential(layer, _NORMS[len(self.spatial) if self.kind == "conv" else 0](c_out))

    def example(self, batch_size: int, c_in: int) -> Tensor:
        if self.kind == "linear":
            return torch.randn(batch_size, *self.spatial, c_in)
        return torch.randn(batch_size, c_in, *self.spatial)


def layer_spec(module: nn.Module, input_shape: tuple[int, ...], norm: bool) -> LayerSpec:
    """The :class:`LayerSpec` of a real ``Conv{1,2,3}d``/``Linear`` seen with input of ``input_shape``.

    A grouped conv other than depthwise keeps its ``groups`` (see :attr:`LayerSpec.groups`).
    """
    bias = getattr(module, "bias", None) is not None
    if isinstance(module, nn.Linear):
        return LayerSpec("linear", tuple(input_shape[1:-1]), bias=bias, norm=norm)
    depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
    padding = module.padding if isinstance(module.padding, tuple) else (module.padding,) * len(module.kernel_size)
    return LayerSpec(
        "conv",
        tuple(input_shape[2:]),
        tuple(module.kernel_size),
        tuple(module.stride),
        tuple(padding),
        tuple(module.dilation),
        depthwise,
        bias,
        norm,
        1 if depthwise else module.groups,
    )


def device_key(device: torch.device, settings: TimingSettings, batch_size: int) -> str:
    """What a table's numbers depend on besides the layer: device model, threads, batch, dtype, layout."""
    threads = settings.threads or torch.get_num_threads()
    parts = [device_name(device), f"batch={batch_size}", f"dtype={settings.amp_dtype or 'float32'}"]
    if device.type == "cpu":
        parts.append(f"threads={threads}")
    if settings.channels_last:
        parts.append("channels_last")
    return "|".join(parts)


LayerTimer = Callable[[nn.Module, Tensor], float]


class LatencyTable:
    """Milliseconds of each (layer signature, c_in, c_out), timed on first use, saved as JSON.

    Args:
        device: where entries are timed.
        settings: timing settings (repeats, threads, dtype, layout); part of the table's key.
        batch_size: batch of the timed inputs.
        path: JSON file to load from and save to (``None``: in memory only).
        timer: ``(layer, input) -> ms``; default: the median of :func:`call_times_ms` with ``settings``.
    """

    def __init__(
        self,
        device: torch.device,
        settings: TimingSettings,
        batch_size: int,
        path: str | os.PathLike | None = None,
        timer: LayerTimer | None = None,
    ) -> None:
        self.device, self.settings, self.batch_size = device, settings, batch_size
        self.path = Path(path) if path is not None else None
        self.key = device_key(device, settings, batch_size)
        self.timer = timer or self._time_layer
        self.entries: dict[str, dict[str, float]] = {}
        self.fits: dict[str, AffineFit] = {}  # signature -> fitted model; looked up instead of exact cells
        self.timed, self.timing_s = 0, 0.0
        self.on_timed: Callable[[], object] | None = None  # e.g. a progress bar's advance
        self._sampled: dict[str, list[tuple[int, int]]] = {}
        self.loaded = self._load()

    def _load(self) -> int:
        """Entries for this key from the file; a file made on another device leaves this table empty."""
        if self.path is None or not self.path.exists():
            return 0
        tables = json.loads(self.path.read_text()).get("tables", {})
        self.entries = {sig: dict(values) for sig, values in tables.get(self.key, {}).get("entries", {}).items()}
        count = sum(len(v) for v in self.entries.values())
        if not count and tables:
            log.info("latency table %s has no entries for %r (has %s): building it", self.path, self.key, list(tables))
        return count

    def __call__(self, spec: LayerSpec, c_in: int, c_out: int) -> float:
        """The layer's latency in ms at these channel counts: its fit if it has one, else the exact cell.

        An exact cell the table lacks is timed now.
        """
        fit = self.fits.get(spec.signature)
        return fit(c_in, c_out) if fit is not None else self.cell(spec, c_in, c_out)

    def cell(self, spec: LayerSpec, c_in: int, c_out: int) -> float:
        """The timed entry at exactly these channel counts (timed now if missing)."""
        column = self.entries.setdefault(spec.signature, {})
        cell = f"{c_in}x{c_out}"
        if cell not in column:
            layer = spec.build(c_in, c_out)
            started = time.perf_counter()
            column[cell] = float(self.timer(layer, spec.example(self.batch_size, c_in)))
            self.timing_s += time.perf_counter() - started
            self.timed += 1
            if self.on_timed is not None:
                self.on_timed()
        return column[cell]

    def fit_layer(self, spec: LayerSpec, c_in: int, c_out: int, round_to: int, lowest: int) -> AffineFit:
        """Fit ``spec``'s latency from at most :data:`~lightning_prune.core.latency_budget.fit.POINTS` cells.

        The cells are :func:`sample_shapes` of its widest shape ``(c_in, c_out)`` (those already in the
        table are not timed again); later lookups of the signature use the fit. A signature met again at
        another widest shape is refitted on the union of its sampled cells.
        """
        grouped = spec.groups > 1  # its groups are kept whole: only its own shape is ever asked for
        shapes = [(c_in, c_out)] if grouped else sample_shapes(c_in, c_out, spec.depthwise, round_to, lowest)
        known = self._sampled.setdefault(spec.signature, [])
        shapes = list(dict.fromkeys(known + shapes))
        ms = [self.cell(spec, i, o) for i, o in shapes]
        self._sampled[spec.signature] = shapes
        self.fits[spec.signature] = fit_affine(shapes, ms, spec.depthwise)
        return self.fits[spec.signature]

    def _time_layer(self, layer: nn.Module, inputs: Tensor) -> float:
        """Median of ``settings.repeats`` calls, fewer (at least 3) when they would exceed :data:`ENTRY_CAP_S`."""
        layer = layer.to(self.device)
        times, _, _ = call_times_ms(layer, inputs, replace(self.settings, repeats=3), self.device)
        more = min(self.settings.repeats, int(ENTRY_CAP_S * 1e3 / max(statistics.median(times), 1e-6))) - 3
        if more >= 3:
            times += call_times_ms(layer, inputs, replace(self.settings, repeats=more, warmup=0), self.device)[0]
        return statistics.median(times)

    def save(self) -> Path | None:
        """Merge this table into the JSON file (other devices' tables are kept); atomic replace."""
        if self.path is None:
            return None
        payload = json.loads(self.path.read_text()) if self.path.exists() else {"format": FORMAT, "tables": {}}
        payload.setdefault("tables", {})[self.key] = {
            "device": device_name(self.device),
            "torch": torch.__version__,
            "batch_size": self.batch_size,
            "settings": asdict(self.settings),
            "entries": self.entries,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
        tmp.replace(self.path)
        return self.path

    def __len__(self) -> int:
        return sum(len(v) for v in self.entries.values())
