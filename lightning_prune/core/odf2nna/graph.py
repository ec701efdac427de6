"""Find the hidden layers of a model's feed-forward ``nn.Linear`` stacks in torch-pruning's traced graph.

:func:`find_hidden_layers` returns, in forward order, every ``Linear`` whose outputs reach exactly one
next ``Linear`` through a *plain chain*: element-wise activations, BatchNorm1d, LayerNorm, PReLU (dropout
is not traced in eval mode). Branches, residual adds, concatenations, reshapes and shared layers are
refused with the layer and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch_pruning as tp
from torch import Tensor, nn

from lightning_prune.core.structured import dependency_graph

# Node types that map unit j to unit j (torch-pruning slices the ones with parameters along).
_CHAIN_TYPES = (tp.ops.OPTYPE.ELEMENTWISE, tp.ops.OPTYPE.BN, tp.ops.OPTYPE.LN, tp.ops.OPTYPE.PRELU)


@dataclass(frozen=True)
class HiddenLayer:
    """A ``Linear`` whose output units are hidden units of a feed-forward stack.

    Attributes:
        name: the Linear producing the units.
        consumer: the next Linear, whose input features are these units.
        chain: modules in between that are sliced along (norms, PReLU), by name.
    """

    name: str
    consumer: str
    chain: tuple[str, ...] = ()


def find_hidden_layers(model: nn.Module, example_inputs: Tensor, include_names: str | None = None) -> list[HiddenLayer]:
    """Every hidden layer of the model's Linear stacks, in forward order.

    Args:
        model: any module containing ``nn.Linear`` layers.
        example_inputs: one input batch, to trace the graph.
        include_names: regex on Linear names (``re.search``); only matching layers are considered.

    Raises:
        ValueError: when a considered Linear feeds something other than a plain chain to one Linear or
            to the model's output (naming the layer and what it feeds), or when no hidden layer is found.
    """
    example_inputs = two_samples(example_inputs)
    order = _forward_order(model, example_inputs)
    graph = dependency_graph(model, example_inputs)
    names = {module: name for name, module in model.named_modules()}
    pattern = re.compile(include_names) if include_names is not None else None
    layers = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or (pattern is not None and not pattern.search(name)):
            continue
        layer = _follow_chain(graph.module2node[module], names, name)
        if layer is not None:
            layers.append(layer)
    if not layers:
        scope = f" matching include_names={include_names!r}" if include_names is not None else ""
        raise ValueError(
            f"{type(model).__name__} has no hidden layer{scope}: no nn.Linear feeds another nn.Linear "
            "through activations/norms only"
        )
    return sorted(layers, key=lambda layer: order[layer.name])


def layer_widths(model: nn.Module, layers: Sequence[HiddenLayer]) -> dict[str, int]:
    """Output width of every hidden layer."""
    return {layer.name: model.get_submodule(layer.name).out_features for layer in layers}


def two_samples(example_inputs: Tensor) -> Tensor:
    """At least two samples: with one, autograd records a Linear on a non-leaf input as mm + reshape."""
    if example_inputs.shape[0] >= 2:
        return example_inputs
    return example_inputs.expand(2, *example_inputs.shape[1:]).contiguous()


def eval_forward(model: nn.Module, inputs: Iterable[Tensor]) -> None:
    """Run every batch of ``inputs`` through ``model`` in eval mode without gradients (hooks read them)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in inputs:
                model(batch)
    finally:
        model.train(was_training)


def _follow_chain(node: tp.Node, names: Mapping[nn.Module, str], start: str) -> HiddenLayer | None:
    """The hidden layer starting at a Linear's node, ``None`` if it is an output layer; else refuse."""
    chain: list[str] = []
    while True:
        outputs = node.outputs
        if not outputs or (len(outputs) == 1 and outputs[0].type == tp.ops.OPTYPE.OUTPUT):
            return None
        if len(outputs) > 1:
            _refuse(start, f"its output is used by {len(outputs)} operations (a branch)")
        node = outputs[0]
        if node.type == tp.ops.OPTYPE.LINEAR:
            return HiddenLayer(start, names[node.module], tuple(chain))
        operands = _traced_operands(node)
        if node.type not in _CHAIN_TYPES or len(operands) != 1:
            _refuse(start, f"it feeds {node.name}, which takes {len(operands)} traced operand(s)")
        if node.module in names:
            chain.append(names[node.module])


def _traced_operands(node: tp.Node) -> list[tp.Node]:
    """Inputs that carry data; leaves without inputs are a module's own weights (a free ``nn.Parameter`` is not)."""
    return [i for i in node.inputs if i.inputs or i.type == tp.ops.OPTYPE.PARAMETER]


def _refuse(layer: str, reason: str) -> NoReturn:
    raise ValueError(
        f"nn.Linear {layer!r} is not part of a plain feed-forward stack: {reason}. Only Linear -> "
        "(activation | BatchNorm1d | LayerNorm | PReLU | dropout)* -> Linear is supported; restrict the layers "
        "with include_names"
    )


def _forward_order(model: nn.Module, example_inputs: Tensor) -> dict[str, int]:
    """Order in which the Linear layers run; a Linear that runs twice (shared weights) is refused."""
    calls: list[str] = []
    handles = [
        module.register_forward_hook(lambda *_, name=name: calls.append(name))
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
    ]
    try:
        eval_forward(model, [example_inputs])
    finally:
        for handle in handles:
            handle.remove()
    shared = sorted({name for name in calls if calls.count(name) > 1})
    if shared:
        raise ValueError(f"nn.Linear layers {shared} run more than once per forward (shared weights): not a stack")
    return {name: index for index, name in enumerate(calls)}
