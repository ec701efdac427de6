"""A model's size as every summary reports it: parameters, nonzero parameters, MACs per example, zeros per tensor.

Measured on the model as it is (pruned weights zero, structured shrinks physical), so the figures are what the
export holds; apart from :mod:`~lightning_prune.core.export` because the callbacks, the app and the reports read
them without exporting anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lightning_prune.core.structured import count_parameters

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


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
