"""The model record: a JSON file naming how to rebuild an exported model, with nothing pickled.

Beside an export goes ``pruned_model.json``: the model's class import path and constructor arguments, nested for
modules passed as arguments (``{"_target_": "lightning_prune.models.Classifier", "num_classes": 10, "net":
{"_target_": ...}}``), taken from a LightningModule's saved hyper-parameters (or written by the app from its Hydra
config), or the reason the model cannot be rebuilt. Apart from :mod:`~lightning_prune.core.export` (which writes
and loads the weights) because the ONNX/safetensors deployment (:mod:`~lightning_prune.core.deploy`) writes the
same record for its own files.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from lightning_prune.core.hf_record import is_pretrained, pretrained_record
from lightning_prune.core.summary import to_jsonable

RECORD_FORMAT = "lightning_prune.model_record/1"


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
