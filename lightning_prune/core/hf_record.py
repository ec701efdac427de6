"""The record that rebuilds a Hugging Face model without pickle: its class path and its (pruned) config as JSON.

A ``transformers`` model is built from a config object, not from named arguments, so the export records
``{"_target_": "lightning_prune.core.hf_record.from_config", "class_path": ..., "config": config.to_dict()}``
taken *after* pruning: uniform head counts and MLP widths are in the config (see
:func:`~lightning_prune.core.structured_transformers.sync_config`), per-layer ones in the architecture
spec, and loading resizes the fresh model's layers to the saved tensors before loading them.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from torch import nn

BUILDER = f"{__name__}.from_config"


def is_pretrained(obj: Any) -> bool:
    """A ``transformers.PreTrainedModel`` (checked by class name along the MRO: transformers stays optional)."""
    return isinstance(obj, nn.Module) and any(
        cls.__name__ == "PreTrainedModel" and cls.__module__.startswith("transformers.") for cls in type(obj).__mro__
    )


def pretrained_record(model: nn.Module) -> dict[str, Any]:
    """``{"_target_": BUILDER, "class_path": ..., "config": ...}`` for :func:`from_config`, JSON-ready."""
    cls = type(model)
    return {
        "_target_": BUILDER,
        "class_path": f"{cls.__module__}.{cls.__qualname__}",
        "config": json.loads(model.config.to_json_string(use_diff=False)),
    }


def from_config(class_path: str, config: dict[str, Any]) -> nn.Module:
    """Build ``class_path`` (a ``transformers`` model class) from the config dict, with fresh weights.

    Raises:
        ValueError: when ``class_path`` is not a ``transformers`` model class.
    """
    module_name, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), name)
    if not is_pretrained_class(cls):
        raise ValueError(f"class_path={class_path!r} is not a transformers PreTrainedModel class")
    return cls(cls.config_class.from_dict(dict(config)))


def is_pretrained_class(cls: Any) -> bool:
    return isinstance(cls, type) and any(
        c.__name__ == "PreTrainedModel" and c.__module__.startswith("transformers.") for c in cls.__mro__
    )
