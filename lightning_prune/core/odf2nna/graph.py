"""Find the hidden layers of a model's feed-forward ``nn.Linear`` stacks in torch-pruning's traced graph.

:func:`scan_linears` classifies every ``Linear``: a *hidden layer* when its outputs reach exactly one next
``Linear`` through a plain chain (element-wise activations, BatchNorm1d, LayerNorm, PReLU; dropout is not
traced in eval mode), or through a *gate*, the element-wise product with a sibling Linear's activated
output (Llama's ``down_proj(act(gate_proj(x)) * up_proj(x))``; the two share the hidden units); an *output
layer* when it feeds the model's output; otherwise *skipped*, with the reason: a residual add (a
transformer block's outer width belongs to the residual stream, its MLP's hidden units do not), attention's
reshape into heads, a branch, a concatenation, shared weights, a weight used without calling the module.
:func:`find_hidden_layers` returns the hidden layers and refuses a model that has none, with the reasons.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch_pruning as tp
from torch import nn

from lightning_prune.core.odf2nna.tracing import eval_forward, linear_call_counts, trace_graph, two_samples

__all__ = ["HiddenLayer", "LinearScan", "eval_forward", "find_hidden_layers", "layer_widths", "scan_linears"]

# Node types that map unit j to unit j (torch-pruning slices the ones with parameters along).
_CHAIN_TYPES = (tp.ops.OPTYPE.ELEMENTWISE, tp.ops.OPTYPE.BN, tp.ops.OPTYPE.LN, tp.ops.OPTYPE.PRELU)


@dataclass(frozen=True)
class HiddenLayer:
    """A ``Linear`` whose output units are hidden units of a feed-forward stack.

    Attributes:
        name: the Linear producing the units.
        consumer: the next Linear, whose input features are these units.
        chain: modules in between that are sliced along (norms, PReLU), by name.
        partners: Linears gating the same units (a gated MLP's ``up_proj``), sliced along.
    """

    name: str
    consumer: str
    chain: tuple[str, ...] = ()
    partners: tuple[str, ...] = ()


@dataclass
class LinearScan:
    """What :func:`scan_linears` found: the hidden layers (forward order) and each skipped Linear's reason."""

    layers: list[HiddenLayer]
    skipped: dict[str, str]


def find_hidden_layers(model: nn.Module, example_inputs: Any, include_names: str | None = None) -> list[HiddenLayer]:
    """Every hidden layer of the model's Linear stacks, in forward order (see :func:`scan_linears`).

    Raises:
        ValueError: when no hidden layer is found, naming every considered Linear and why it is not one.
    """
    return scan_linears(model, example_inputs, include_names).layers


def scan_linears(model: nn.Module, example_inputs: Any, include_names: str | None = None) -> LinearScan:
    """Classify every considered ``nn.Linear`` of ``model``: hidden layer, output layer or skipped (with why).

    Args:
        model: any module containing ``nn.Linear`` layers.
        example_inputs: one input (a tensor, tuple or mapping of tensors, as ``example_input_array``).
        include_names: regex on Linear names (``re.search``); only matching layers are considered.

    Raises:
        ValueError: when no considered Linear is a hidden layer, naming them and the reasons.
    """
    example_inputs = two_samples(example_inputs)
    calls = linear_call_counts(model, example_inputs)
    graph = trace_graph(model, example_inputs)
    names = {module: name for name, module in model.named_modules()}
    pattern = re.compile(include_names) if include_names is not None else None
    found: dict[str, HiddenLayer] = {}
    skipped: dict[str, str] = {}
    for name in calls:  # forward order; never-called layers last
        if pattern is not None and not pattern.search(name):
            continue
        module = model.get_submodule(name)
        outcome = _classify(graph.module2node.get(module), names, name, calls)
        if isinstance(outcome, HiddenLayer):
            found.setdefault(outcome.consumer, outcome)  # a gated pair: the first of the two names the layer
        elif outcome is not None:
            skipped[name] = outcome
    layers = list(found.values())
    if not layers:
        _refuse_no_layer(model, include_names, skipped)
    return LinearScan(layers, skipped)


def layer_widths(model: nn.Module, layers: Sequence[HiddenLayer]) -> dict[str, int]:
    """Output width of every hidden layer."""
    return {layer.name: model.get_submodule(layer.name).out_features for layer in layers}


def _classify(node: tp.Node | None, names: Mapping[Any, str], start: str, calls: Mapping[str, int]) -> Any:
    """The hidden layer starting at a Linear's node, ``None`` for an output layer, else the reason it is skipped.

    A reshape on the way is passed (a Linear on ``(batch, tokens, features)`` inputs is traced as view, matmul,
    view) as long as the consumer's input width is the producer's output width, unit for unit.
    """
    if calls[start] == 0 or node is None:
        return "it is not called as a module (its weight is used directly, e.g. nn.MultiheadAttention's out_proj)"
    if calls[start] > 1:
        return f"it runs {calls[start]} times per forward (shared weights)"
    width, chain, partners, reshaped = node.module.out_features, [], [], False
    while True:
        outputs = node.outputs
        if not outputs or (len(outputs) == 1 and outputs[0].type == tp.ops.OPTYPE.OUTPUT):
            return None
        if len(outputs) > 1:
            return f"its output is used by {len(outputs)} operations (a branch)"
        previous, node = node, outputs[0]
        if node.type == tp.ops.OPTYPE.LINEAR:
            return _hidden_layer(node, names, calls, width, HiddenLayer(start, "", tuple(chain), tuple(partners)))
        operands = _traced_operands(node)
        if node.type in (*_CHAIN_TYPES, tp.ops.OPTYPE.RESHAPE) and len(operands) == 1:
            reshaped |= node.type == tp.ops.OPTYPE.RESHAPE
            if node.module in names:
                chain.append(names[node.module])
            continue
        partner = _gate_partner(node, previous, operands, names, calls)
        if partner is None:
            return _reason(node, operands, reshaped)
        partners.append(partner)


def _hidden_layer(
    node: tp.Node, names: Mapping[Any, str], calls: Mapping[str, int], width: int, found: HiddenLayer
) -> Any:
    """``found`` with its consumer when that reads the producer's units one for one, else the reason it does not."""
    consumer = names[node.module]
    if calls.get(consumer, 1) != 1:
        return f"it feeds {consumer!r}, which runs {calls[consumer]} times per forward (shared weights)"
    if node.module.in_features != width:
        return f"its {width} units are reshaped into {node.module.in_features} inputs of {consumer!r}"
    return HiddenLayer(found.name, consumer, found.chain, found.partners)


def _gate_partner(
    node: tp.Node, previous: tp.Node, operands: list[tp.Node], names: Mapping[Any, str], calls: Mapping[str, int]
) -> str | None:
    """The sibling Linear when ``node`` multiplies our units by its (activated) output unit by unit, else None."""
    if not _is_product(node) or len(operands) != 2:
        return None
    other = operands[1] if operands[0] is previous else operands[0]
    while other.type != tp.ops.OPTYPE.LINEAR:  # back through the sibling's activation
        inputs = _traced_operands(other)
        if other.type != tp.ops.OPTYPE.ELEMENTWISE or len(inputs) != 1 or len(other.outputs) != 1:
            return None
        other = inputs[0]
    name = names.get(other.module)
    if name is None or calls.get(name) != 1 or len(other.outputs) != 1:
        return None
    return name


def _is_product(node: tp.Node) -> bool:
    return node.type == tp.ops.OPTYPE.ELEMENTWISE and _grad_name(node).startswith("Mul")


def _grad_name(node: tp.Node) -> str:
    grad_fn = getattr(node, "grad_fn", None)
    return grad_fn.name() if grad_fn is not None and hasattr(grad_fn, "name") else ""


def _reason(node: tp.Node, operands: list[tp.Node], reshaped: bool) -> str:
    """Why a Linear feeding ``node`` is no hidden layer, in the words of what ``node`` is."""
    grad = _grad_name(node)
    if grad.startswith("Add") and len(operands) == 2:
        return "it feeds a residual add: its width is the residual stream's, not hidden units"
    if reshaped or node.type == tp.ops.OPTYPE.RESHAPE:
        return f"its output is reshaped and fed to {node.name} (attention heads), not unit by unit to one Linear"
    if node.type == tp.ops.OPTYPE.CONCAT:
        return "it feeds a concatenation"
    return f"it feeds {node.name}, which takes {len(operands)} traced operand(s)"


def _traced_operands(node: tp.Node) -> list[tp.Node]:
    """Inputs that carry data; leaves without inputs are a module's own weights (a free ``nn.Parameter`` is not)."""
    return [i for i in node.inputs if i.inputs or i.type == tp.ops.OPTYPE.PARAMETER]


def _refuse_no_layer(model: nn.Module, include_names: str | None, skipped: Mapping[str, str]) -> None:
    scope = f" matching include_names={include_names!r}" if include_names is not None else ""
    reasons = "; ".join(f"{name!r}: {why}" for name, why in skipped.items())
    raise ValueError(
        f"{type(model).__name__} has no hidden layer{scope}: no nn.Linear feeds another nn.Linear through "
        "activations/norms only (Linear -> (activation | BatchNorm1d | LayerNorm | PReLU | dropout)* -> Linear, "
        "or a gated MLP)" + (f". Not part of a plain feed-forward stack: {reasons}" if reasons else "")
    )
