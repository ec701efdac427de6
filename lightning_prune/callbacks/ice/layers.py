"""The layers ICE's freezing acts on: which are candidates, which BatchNorm follows each, and freezing them.

:mod:`~lightning_prune.callbacks.ice.freezing` decides *which* layers stay frozen (the probe and its scores);
this module holds what that decision is applied to, kept apart so the callback reads as the paper's mechanism:
the candidate layer types of a model, the BatchNorm that reads each frozen conv's output (from torch-pruning's
traced graph), and the exact, reversible change of ``requires_grad`` and train/eval mode that freezing makes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
from torch import nn

from lightning_prune.callbacks._trainer import example_input
from lightning_prune.core.odf2nna.tracing import trace_graph
from lightning_prune.core.transformer_layout import attention_layouts, fixed_width_attentions

CONV_TYPES = ("Conv1d", "Conv2d", "Conv3d")
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def candidate_types(model: nn.Module) -> tuple[str, ...]:
    """Convs, as in the paper; a transformer's Linears too (its blocks are made of them); an MLP's Linears."""
    if fixed_width_attentions(model) or attention_layouts(model):
        return (*CONV_TYPES, "Linear")
    return CONV_TYPES if any(isinstance(module, _CONVS) for module in model.modules()) else ("Linear",)


def norms_after(trainer: pl.Trainer, pl_module: pl.LightningModule, frozen: Sequence[str]) -> dict[str, str]:
    """The BatchNorm after each frozen conv; none is looked for after a Linear, so no graph is traced for it.

    Tracing a Hugging Face decoder is what torch-pruning cannot do in reasonable time.
    """
    convs = [name for name in frozen if isinstance(pl_module.get_submodule(name), _CONVS)]
    if not convs:
        return {}
    return _following_norms(pl_module, trace_graph(pl_module, example_input(trainer, pl_module)), convs)


def _following_norms(model: nn.Module, graph: Any, convs: Sequence[str]) -> dict[str, str]:
    """For each conv, the BatchNorm that directly reads its output (from torch-pruning's traced graph)."""
    names = {module: name for name, module in model.named_modules()}
    norms = {}
    for conv in convs:
        for node in graph.module2node[model.get_submodule(conv)].outputs:
            if isinstance(node.module, _NORMS) and node.module in names:
                norms[conv] = names[node.module]
    return norms


def freeze_layers(
    pl_module: pl.LightningModule, layers: Sequence[str], norm_of: dict[str, str]
) -> tuple[list[str], list[str]]:
    """``requires_grad=False`` (and no stale gradient) on ``layers`` and their norms; norms in eval mode.

    Returns ``(parameters frozen, norms put in eval)``: only what this call changed, so :func:`release_layers`
    undoes exactly that (parameters the user froze stay frozen, norms already in eval stay so).
    """
    frozen_params: list[str] = []
    eval_norms: list[str] = []
    for layer in layers:
        for module_name in (layer, norm_of.get(layer)):
            if module_name is None:
                continue
            module = pl_module.get_submodule(module_name)
            for param_name, param in module.named_parameters(recurse=False):
                if param.requires_grad:
                    param.requires_grad_(False)
                    param.grad = None
                    frozen_params.append(f"{module_name}.{param_name}")
            if isinstance(module, _NORMS) and module.training:
                module.eval()
                eval_norms.append(module_name)
    return frozen_params, eval_norms


def release_layers(pl_module: pl.LightningModule, frozen_params: Sequence[str], eval_norms: Sequence[str]) -> None:
    """Undo what :func:`freeze_layers` changed: those parameters trainable, those norms back to the module's mode."""
    for name in frozen_params:
        pl_module.get_parameter(name).requires_grad_(True)
    for name in eval_norms:
        pl_module.get_submodule(name).train(pl_module.training)
