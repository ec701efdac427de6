"""Exported pruned models and run summaries that load without pickled code.

A pruned model is saved as ``{"architecture": spec, "state_dict": tensors}``; both load with
``torch.load(..., weights_only=True)``, and :func:`load_pruned` rebuilds a shrunk model from a fresh
instance of the original class. The summary is one JSON file that each callback adds its section to.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_prune.core.structured import architecture_spec, resize_like


def export_pruned(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the model's weights (pruned weights are already zero: masks are held in place) and spec."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
    torch.save({"architecture": architecture_spec(model), "state_dict": state}, path)
    return path


def load_pruned(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load an export into a fresh ``model`` of the original class, shrinking its layers to match.

    Raises:
        ValueError: when the file's architecture does not match what ``model`` becomes after resizing.
    """
    payload = torch.load(path, map_location="cpu", weights_only=True)
    resize_like(model, payload["state_dict"])
    model.load_state_dict(payload["state_dict"])
    spec = architecture_spec(model)
    if spec != payload["architecture"]:
        differing = sorted(
            k for k in set(spec) | set(payload["architecture"]) if spec.get(k) != payload["architecture"].get(k)
        )
        raise ValueError(
            f"{path}: architecture does not match the model after loading; differing layers: {differing[:10]}"
        )
    return model


def zero_fraction(model: nn.Module, names: list[str]) -> dict[str, float]:
    """Measured fraction of exactly-zero values in each named parameter (what the export really holds)."""
    return {name: float((model.get_parameter(name) == 0).float().mean()) for name in names}


def write_summary(path: str | os.PathLike, section: str, data: Mapping[str, Any]) -> Path:
    """Merge ``data`` under ``section`` into the JSON summary at ``path`` (created if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = json.loads(path.read_text()) if path.exists() else {}
    summary[section] = to_jsonable(data)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=False))
    tmp.replace(path)
    return path


def to_jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
