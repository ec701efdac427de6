"""Which parameters a pruning method may touch, from selectors a YAML file can express."""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn

MODULE_TYPES: dict[str, type[nn.Module]] = {
    "Linear": nn.Linear,
    "Conv1d": nn.Conv1d,
    "Conv2d": nn.Conv2d,
    "Conv3d": nn.Conv3d,
    "ConvTranspose2d": nn.ConvTranspose2d,
    "Embedding": nn.Embedding,
    "BatchNorm1d": nn.BatchNorm1d,
    "BatchNorm2d": nn.BatchNorm2d,
    "LayerNorm": nn.LayerNorm,
}
DEFAULT_TYPES = ("Linear", "Conv1d", "Conv2d", "Conv3d")
_HEAD_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def validate_selector(
    include_types: Sequence[str] = DEFAULT_TYPES,
    include_names: str | None = None,
    exclude_names: Sequence[str] = (),
) -> None:
    """Reject selector values that can never be right, before any model is seen.

    Raises:
        ValueError: naming the offending argument, its value and what is allowed.
    """
    if isinstance(include_types, str) or not include_types:
        raise ValueError(f"include_types must be a non-empty list of module type names, got {include_types!r}")
    unknown = [name for name in include_types if name not in MODULE_TYPES]
    if unknown:
        raise ValueError(f"include_types has unknown module type(s) {unknown}; allowed: {sorted(MODULE_TYPES)}")
    if isinstance(exclude_names, str):
        raise ValueError(f"exclude_names must be a list of regular expressions, got the string {exclude_names!r}")
    for field, pattern in [("include_names", include_names), *(("exclude_names", p) for p in exclude_names)]:
        if pattern is None:
            continue
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"{field}: {pattern!r} is not a valid regular expression ({err})") from None


def head_module_name(model: nn.Module) -> str | None:
    """The classifier head: the last Linear/Conv registered in the model, which safe defaults leave dense."""
    heads = [name for name, module in model.named_modules() if isinstance(module, _HEAD_TYPES)]
    return heads[-1] if heads else None


def select_parameters(
    model: nn.Module,
    include_types: Sequence[str] = DEFAULT_TYPES,
    include_names: str | None = None,
    exclude_names: Sequence[str] = (),
    prune_head: bool = False,
    include_biases: bool = False,
) -> list[str]:
    """Resolve the selectors to the fully qualified names of the parameters to prune, in model order.

    Norm layers and embeddings are only selected when their type is listed; biases only with
    ``include_biases``; the classifier head only with ``prune_head``, because pruning it costs accuracy
    out of proportion to the weights it saves.

    Raises:
        ValueError: when the selectors are malformed or match no parameter of ``model``.
    """
    validate_selector(include_types, include_names, exclude_names)
    types = tuple(MODULE_TYPES[name] for name in include_types)
    head = None if prune_head else head_module_name(model)
    selected = []
    for module_name, module in model.named_modules():
        if not isinstance(module, types) or module_name == head:
            continue
        if include_names is not None and not re.search(include_names, module_name):
            continue
        if any(re.search(pattern, module_name) for pattern in exclude_names):
            continue
        for param_name, param in module.named_parameters(recurse=False):
            if param_name == "weight" or (include_biases and param_name == "bias" and param is not None):
                selected.append(f"{module_name}.{param_name}" if module_name else param_name)
    if not selected:
        candidates = [
            name for name, module in model.named_modules() if isinstance(module, tuple(MODULE_TYPES.values()))
        ]
        raise ValueError(
            f"the parameter selection matched nothing in {type(model).__name__} "
            f"(include_types={list(include_types)}, include_names={include_names!r}, "
            f"exclude_names={list(exclude_names)}, prune_head={prune_head}); "
            f"modules that could be selected: {candidates or 'none'}"
        )
    return selected
