"""Exported pruned models, the record that rebuilds them, and run summaries: nothing pickled.

A pruned model is saved as ``{"architecture": spec, "state_dict": tensors}`` (``torch.load(...,
weights_only=True)`` reads it) and, beside it, a JSON *model record* (``pruned_model.json``) naming how to
rebuild the model: its class import path and constructor arguments, nested for modules passed as
arguments (``{"_target_": "lightning_prune.models.Classifier", "num_classes": 10, "net": {"_target_":
...}}``), taken from a LightningModule's saved hyper-parameters (or written by the app from its Hydra
config). :func:`load_model` rebuilds the model from the record; :func:`load_pruned` loads the weights into
a model you built yourself. The summary is one JSON file that each callback adds its section to.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_prune.core.hf_record import is_pretrained, pretrained_record
from lightning_prune.core.structured import architecture_spec, count_parameters, resize_like

RECORD_FORMAT = "lightning_prune.model_record/1"
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


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


def build_from_record(spec: Any) -> Any:
    """Instantiate ``{"_target_": "pkg.Class", **kwargs}`` (nested dicts and lists too); other values as they are."""
    if isinstance(spec, list):
        return [build_from_record(item) for item in spec]
    if not isinstance(spec, dict):
        return spec
    kwargs = {key: build_from_record(value) for key, value in spec.items() if key != "_target_"}
    if "_target_" not in spec:
        return kwargs
    module_name, _, name = str(spec["_target_"]).rpartition(".")
    return getattr(importlib.import_module(module_name), name)(**kwargs)


def model_record(model: nn.Module) -> dict[str, Any]:
    """``{"model": {"_target_": ..., **kwargs}}`` from saved hyper-parameters, or ``{"model": None, "reason": why}``.

    A constructor argument comes from ``model.hparams`` (LightningModule's ``save_hyperparameters``); one
    left out of them (``ignore=["net"]``) is rebuilt from the attribute of the same name when that is a
    module with saved hyper-parameters itself; arguments with defaults may be absent.
    """
    try:
        return {"model": _constructor(model, type(model).__name__)}
    except _NotRebuildableError as err:
        return {"model": None, "reason": str(err)}


class _NotRebuildableError(Exception):
    pass


def _constructor(obj: nn.Module, where: str) -> dict[str, Any]:
    if is_pretrained(obj):  # a transformers model: its (pruned) config rebuilds it
        return pretrained_record(obj)
    return _arguments(obj, where)


def _arguments(obj: nn.Module, where: str) -> dict[str, Any]:
    cls = type(obj)
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise _NotRebuildableError(f"{where} is {cls.__qualname__} from {cls.__module__}: not importable by name")
    signature = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if any(p.kind is p.VAR_POSITIONAL for p in signature):
        raise _NotRebuildableError(
            f"{where} is a {cls.__qualname__}, built from positional *args that no record holds (wrap it in a "
            "module whose constructor takes named arguments)"
        )
    parameters = signature
    hparams = getattr(obj, "hparams", None)
    if not isinstance(hparams, Mapping):
        if parameters:
            raise _NotRebuildableError(
                f"{where} is a {cls.__qualname__}, a plain nn.Module: nothing records its constructor arguments "
                f"(a LightningModule records its own with self.save_hyperparameters())"
            )
        hparams = {}
    spec: dict[str, Any] = {"_target_": f"{cls.__module__}.{cls.__qualname__}"}
    for param in parameters:
        if param.kind is param.VAR_KEYWORD:
            spec.update({k: _json_value(v, f"{where}.{k}") for k, v in hparams.items() if k not in spec})
        elif param.name in hparams:
            spec[param.name] = _json_value(hparams[param.name], f"{where}.{param.name}")
        elif isinstance(getattr(obj, param.name, None), nn.Module):
            spec[param.name] = _constructor(getattr(obj, param.name), f"{where}.{param.name}")
        elif param.default is param.empty:
            raise _NotRebuildableError(
                f"{where} needs the argument {param.name!r}, which its saved hyper-parameters lack "
                f"(self.save_hyperparameters() in {cls.__qualname__}.__init__ records it)"
            )
    return spec


def _json_value(value: Any, where: str) -> Any:
    if isinstance(value, nn.Module):
        return _constructor(value, where)
    plain = to_jsonable(value)
    try:
        json.dumps(plain)
    except TypeError:
        raise _NotRebuildableError(f"{where} = {value!r} is not JSON data (a {type(value).__name__})") from None
    return plain


def write_model_record(
    weights: str | os.PathLike, record: Mapping[str, Any], source: str, size: Mapping[str, Any] | None = None
) -> Path:
    """Write the record of the export ``weights`` beside it (``.json``); ``source`` says where the model came from.

    ``record`` is what :func:`model_record` returns (``model``, and ``reason`` when ``model`` is None).
    """
    weights = Path(weights)
    payload = {
        "format": RECORD_FORMAT,
        "weights": weights.name,
        "source": source,
        **record,
        "load": "lightning_prune.load_model(path)"
        if record.get("model")
        else "lightning_prune.load_pruned(model, path)",
    }
    if size is not None:
        payload["size"] = dict(size)
    path = weights.with_suffix(".json")
    path.write_text(json.dumps(to_jsonable(payload), indent=2))
    return path


def model_size(model: nn.Module, example: Any = None) -> dict[str, int | None]:
    """Parameters, nonzero parameters and, with an ``example`` input, MACs per example.

    MACs are the multiply-accumulates of the Conv and Linear layers for one example (forward hooks; other
    layers are not counted); zeros still count, as dense kernels multiply them: only layers that pruning
    physically shrank lower the figure. ``None`` when no example is given or the forward pass fails on it.
    """
    return {**parameter_counts(model), "macs": count_macs(model, example)}


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters and nonzero parameters: the model's size as every summary reports it."""
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    return {"params": count_parameters(model), "params_nonzero": nonzero}


def count_macs(model: nn.Module, example: Any) -> int | None:
    """Conv and Linear multiply-accumulates of one forward pass on ``example``, per example (see :func:`model_size`)."""
    if example is None:
        return None
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    example = _to_device(example, device)
    first = _first_tensor(example)
    batch = first.shape[0] if first is not None and first.dim() > 0 else 1
    total = [0]

    def count(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        if isinstance(module, _CONV):
            channels = module.out_channels if module.transposed else module.in_channels
            source = inputs[0] if module.transposed else output
            total[0] += source.numel() * channels * math.prod(module.kernel_size) // module.groups
        elif isinstance(output, Tensor):
            total[0] += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (*_CONV, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if isinstance(example, Mapping):
                model(**example)
            elif isinstance(example, (tuple, list)):
                model(*example)
            else:
                model(example)
    except (RuntimeError, TypeError, ValueError):
        return None
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return total[0] // max(batch, 1)


def _to_device(example: Any, device: torch.device) -> Any:
    if isinstance(example, Tensor):
        return example.to(device)
    if isinstance(example, Mapping):
        return {k: _to_device(v, device) for k, v in example.items()}
    if isinstance(example, (tuple, list)):
        return type(example)(_to_device(v, device) for v in example)
    return example


def _first_tensor(example: Any) -> Tensor | None:
    if isinstance(example, Tensor):
        return example
    values = example.values() if isinstance(example, Mapping) else example if isinstance(example, (tuple, list)) else []
    return next((t for t in (_first_tensor(v) for v in values) if t is not None), None)


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
