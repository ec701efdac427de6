"""Keep a Hugging Face model's config true to its rebuilt MLPs, so it still describes the model it came with.

A transformer MLP (``Linear -> activation -> Linear`` that writes back to the residual width, or a gated
``gate_proj``/``up_proj -> down_proj``) has ``config.intermediate_size`` hidden units; ODF2NNA keeps a
different number in each layer. After the rebuild every config found on the model's modules (``module.config``
with an integer ``intermediate_size`` and ``hidden_size``) gets: ``intermediate_size`` = the common width, or
the largest when the layers differ, and then ``intermediate_sizes``, one width per MLP in forward order (a
model built from the config is at least as wide, and loading the pruned weights narrows each layer; see
:func:`lightning_prune.load_pruned`). Duck-typed: no import of ``transformers``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from lightning_prune.core.odf2nna.graph import HiddenLayer


def sync_configs(model: nn.Module, layers: Sequence[HiddenLayer]) -> dict[str, dict[str, Any]]:
    """Update every Hugging Face config on ``model`` to its MLPs' widths now; returns what was set, by module.

    A config shared by nested modules (``BertForSequenceClassification`` and its ``bert``) is updated once,
    under the outermost module's name (``""`` for ``model`` itself).
    """
    updated: dict[str, dict[str, Any]] = {}
    seen: set[int] = set()
    for prefix, module in model.named_modules():
        config = getattr(module, "config", None)
        if config is None or id(config) in seen or not _describes_mlps(config):
            continue
        seen.add(id(config))
        widths = _mlp_widths(model, module, prefix, layers, config.hidden_size)
        if widths:
            updated[prefix] = _set_widths(config, widths)
    return updated


def _describes_mlps(config: Any) -> bool:
    return isinstance(getattr(config, "intermediate_size", None), int) and isinstance(
        getattr(config, "hidden_size", None), int
    )


def _mlp_widths(
    model: nn.Module, module: nn.Module, prefix: str, layers: Sequence[HiddenLayer], hidden: int
) -> list[int]:
    """Widths of the hidden layers inside ``module`` that read and write the residual width (its MLPs)."""
    inside = f"{prefix}." if prefix else ""
    widths = []
    for layer in layers:
        if not layer.name.startswith(inside):
            continue
        producer, consumer = model.get_submodule(layer.name), model.get_submodule(layer.consumer)
        if producer.in_features == hidden and consumer.out_features == hidden:
            widths.append(producer.out_features)
    return widths


def _set_widths(config: Any, widths: list[int]) -> dict[str, Any]:
    config.intermediate_size = max(widths)
    if len(set(widths)) == 1:
        if hasattr(config, "intermediate_sizes"):
            del config.intermediate_sizes
        return {"intermediate_size": config.intermediate_size}
    config.intermediate_sizes = list(widths)
    return {"intermediate_size": config.intermediate_size, "intermediate_sizes": list(widths)}
