"""Which device a latency is measured on, and its name as timing tables key it."""

from __future__ import annotations

import platform
from pathlib import Path

import torch
from torch import nn


def check_device(device: str | None) -> None:
    """Reject a ``device`` string torch cannot parse or cannot time on (availability is checked later).

    Raises:
        ValueError: naming the value and what is allowed.
    """
    if device is None:
        return
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = None
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device must be None, 'cpu' or 'cuda[:N]', got {device!r}")


def resolve_device(device: str | torch.device | None, model: nn.Module) -> torch.device:
    """``device`` if given, else where ``model``'s parameters live.

    Raises:
        ValueError: for device types other than CPU and CUDA, or CUDA where none is available.
    """
    if device is None:
        first = next(iter(model.parameters()), None)
        return first.device if first is not None else torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"latency can be measured on 'cpu' or 'cuda[:N]', got device={str(device)!r}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was asked for but torch sees no CUDA device")
    return resolved


def device_name(device: torch.device) -> str:
    """A human- and key-friendly device name: the GPU model, or the CPU model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"
