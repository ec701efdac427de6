"""Exported pruned models: the weights and their layer spec, saved and loaded with nothing pickled.

A pruned model is saved as ``{"architecture": spec, "state_dict": tensors}`` (``torch.load(...,
weights_only=True)`` reads it) and, beside it, a JSON *model record* (``pruned_model.json``, see
:mod:`~lightning_prune.core.model_record`) naming how to rebuild the model. :func:`load_model` rebuilds the
model from the record; :func:`load_pruned` loads the weights into a model you built yourself.

This module is also the one import path for what an export is written with: the record
(:mod:`~lightning_prune.core.model_record`), the size figures (:mod:`~lightning_prune.core.model_size`) and the
run summary (:mod:`~lightning_prune.core.summary`) live in their own modules and are re-exported here, where
callbacks, the app and users have always imported them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_prune.core.model_record import RECORD_FORMAT, build_from_record, model_record, write_model_record
from lightning_prune.core.model_size import count_macs, model_size, parameter_counts, zero_fraction
from lightning_prune.core.structured import architecture_spec, resize_like
from lightning_prune.core.summary import to_jsonable, write_summary

__all__ = [
    "RECORD_FORMAT",
    "build_from_record",
    "count_macs",
    "export_pruned",
    "load_checked",
    "load_model",
    "load_pruned",
    "model_record",
    "model_size",
    "parameter_counts",
    "to_jsonable",
    "write_model_record",
    "write_summary",
    "zero_fraction",
]


def export_pruned(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the model's weights (pruned weights are already zero: masks are held in place) and spec.

    Beside ``path`` goes the model record (``path`` with ``.json``): how :func:`load_model` rebuilds the
    model, or why it cannot (then load the weights with :func:`load_pruned` into a model you build).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
    torch.save({"architecture": architecture_spec(model), "state_dict": state}, path)
    example = getattr(model, "example_input_array", None)
    write_model_record(path, model_record(model), "saved hyper-parameters", model_size(model, example))
    return path


def load_pruned(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load an export into a fresh ``model`` of the original class, shrinking its layers to match.

    Raises:
        ValueError: when the file's architecture does not match what ``model`` becomes after resizing.
    """
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return load_checked(model, payload["state_dict"], payload["architecture"], str(path))


def load_checked(model: nn.Module, state: Mapping[str, Tensor], architecture: Any, where: str) -> nn.Module:
    """Resize ``model``'s layers to ``state``'s shapes, load it strictly and check the layer spec matches.

    Raises:
        ValueError: naming the layers whose widths differ from ``architecture`` after loading.
    """
    head_dims = {k: v["head_dim"] for k, v in (architecture or {}).items() if isinstance(v, dict) and "head_dim" in v}
    resize_like(model, state, head_dims=head_dims)
    model.load_state_dict(state)
    spec = architecture_spec(model)
    if architecture is not None and spec != architecture:
        differing = sorted(k for k in set(spec) | set(architecture) if spec.get(k) != architecture.get(k))
        raise ValueError(f"{where}: architecture does not match the model after loading; differing: {differing[:10]}")
    return model


def load_model(path: str | os.PathLike) -> nn.Module:
    """Rebuild an exported model from its record and load its weights (``weights_only=True``), in eval mode.

    ``path`` is the export (``pruned_model.pt``) or its record (``pruned_model.json``). Layers that pruning
    removed channels from are shrunk to the saved shapes before loading. The record names the classes to
    import and call (no pickle), so load records you trust, as you would run their code.

    Raises:
        FileNotFoundError: when the export or its record is missing.
        ValueError: when the record says the model cannot be rebuilt (and why); build the model yourself
            and call ``load_pruned(model, path)``.

    Example::

        >>> from lightning_prune import load_model
        >>> model = load_model("outputs/iterative/2025-01-01_00-00-00/pruned_model.pt")  # doctest: +SKIP
        >>> logits = model(x)  # doctest: +SKIP
    """
    path = Path(path)
    record_path = path.with_suffix(".json")
    if not record_path.is_file():
        raise FileNotFoundError(
            f"{record_path}: no model record beside the export (exported before records existed, or by other "
            f"code); build the model yourself and call load_pruned(model, {str(path.with_suffix('.pt'))!r})"
        )
    record = json.loads(record_path.read_text())
    weights = record_path.parent / record.get("weights", path.with_suffix(".pt").name)
    if not record.get("model"):
        raise ValueError(
            f"{record_path}: cannot rebuild the model: {record.get('reason') or 'no model in the record'}. "
            f"Build the model yourself and call load_pruned(model, {str(weights)!r})"
        )
    model = build_from_record(record["model"])
    return load_pruned(model, weights).eval()
