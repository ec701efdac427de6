"""The network as the latency planner sees it: channel groups and timed layers, with SP-LAMP scores.

torch-pruning's dependency graph splits the model into *channel groups* (channels that must go
together: a conv's filters, its BatchNorm, the next layer's inputs, every layer tied by a residual add)
and *timed layers* (every conv and linear, each reading its input channels from one group and writing
its output channels to another). A layer's latency is looked up in the :class:`LatencyTable` at its
(c_in, c_out); :mod:`lightning_prune.core.latency_budget.plan` decides how many channels each group keeps.

Attention is not traced (torch-pruning cannot remove single q/k/v channels without breaking the
``num_heads x head_dim`` reshape, and never finishes tracing a Llama's rotary path): an attention whose
layout is known (:mod:`lightning_prune.core.transformer_layout`: Hugging Face, timm) becomes a *head group*
named after its module, one unit per key/value group, whose q/k/v rows and output columns move a whole head
at a time. On the zoo's tiny BERT the heads hold most of what pruning can save (heads 4 -> 1 measured 0.65 of
dense, MLP units 64 -> 4 0.89). ``nn.MultiheadAttention`` ties its width to the residual's: it is kept whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import Tensor, nn

from lightning_prune.core import model_io
from lightning_prune.core.latency_budget.table import LayerSpec, layer_spec
from lightning_prune.core.odf2nna.tracing import trace_graph
from lightning_prune.core.scores import sp_lamp
from lightning_prune.core.selection import head_module_name
from lightning_prune.core.transformer_layout import AttentionLayout, attention_layouts

_TIMED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class TimedLayer:
    """A conv/linear layer of the network and the channel groups its input and output belong to."""

    name: str
    spec: LayerSpec
    c_in: int
    c_out: int
    in_group: str | None = None
    out_group: str | None = None
    in_per_channel: int = 1
    out_per_channel: int = 1  # a head group's unit is a whole head: head_dim rows per kept unit (x3 fused)


@dataclass
class Network:
    """Timed layers and prunable channel groups (root module name -> current channel count)."""

    layers: list[TimedLayer]
    groups: dict[str, int]
    scores: dict[str, Tensor] = field(default_factory=dict)
    attention: list[str] = field(default_factory=list)  # attention modules whose channels are kept whole
    heads: list[str] = field(default_factory=list)  # groups that are attention modules (units: key/value groups)
    grouped: list[str] = field(default_factory=list)  # grouped convs (not depthwise) whose channels are kept whole

    def widths(self) -> dict[str, int]:
        return dict(self.groups)


def trace_network(model: nn.Module, example: Tensor, exclude_names: Sequence[str] = ()) -> Network:
    """Timed layers, channel groups and SP-LAMP scores of ``model`` (traced on ``example``).

    The output layer (last conv/linear) and layers matching ``exclude_names`` keep their output channels;
    attention with a known layout becomes a head group (:func:`_add_head_groups`), other attention is kept whole.
    """
    graph = trace_graph(model, example)
    names = {module: name for name, module in model.named_modules()}
    head = head_module_name(model)
    ignored = [m for m, n in names.items() if isinstance(m, _TIMED) and (n == head or _matches(n, exclude_names))]
    attention = attention_modules(model)
    grouped = {n: m for m, n in names.items() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d) and _grouped(m)}
    inside = {sub for module in attention.values() for sub in module.modules()} | set(grouped.values())
    # A layer inside attention roots no group (its groups are kept whole below), and torch-pruning never
    # finishes tracing a Llama's q/k/v projections through the rotary embedding and the GQA repeat.
    ignored += [m for m in inside if isinstance(m, _TIMED) and m not in ignored]
    groups, out_group, in_group, scores = {}, {}, {}, {}
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=_TIMED):
        if any(item.dep.target.module in inside for item in group):
            continue  # tied to num_heads x head_dim, or to a conv's groups: the group is kept whole
        root = names[group[0].dep.target.module]
        groups[root] = len(group[0].idxs)
        scores[root] = group_sp_lamp(graph, group)
        for item in group:
            module = item.dep.target.module
            if isinstance(module, _TIMED) and module in names:
                side = out_group if graph.is_out_channel_pruning_fn(item.dep.handler) else in_group
                side[names[module]] = root
    layers = _timed_layers(model, example, graph, names)
    for layer in layers:
        layer.out_group, layer.in_group = out_group.get(layer.name), in_group.get(layer.name)
        if layer.in_group is not None and not layer.spec.depthwise:
            layer.in_per_channel = layer.c_in // groups[layer.in_group]
    layouts = {n: lay for n, lay in attention_layouts(model).items() if not _matches(n, exclude_names)}
    _add_head_groups(layers, groups, scores, layouts, names)
    kept = sorted(a for a in attention if not any(n == a or n.startswith(f"{a}.") for n in layouts))
    return Network(layers, groups, scores, attention=kept, heads=sorted(layouts), grouped=sorted(grouped))


def _add_head_groups(
    layers: list[TimedLayer],
    groups: dict[str, int],
    scores: dict[str, Tensor],
    layouts: Mapping[str, AttentionLayout],
    names: Mapping[nn.Module, str],
) -> None:
    """Make each attention layout a group of its key/value groups: q/k/v write it, the output projection reads it."""
    writes: dict[str, tuple[str, int]] = {}  # projection name -> (group, rows per unit)
    reads: dict[str, tuple[str, int]] = {}
    for name, layout in layouts.items():
        groups[name], scores[name] = layout.num_kv_heads, head_sp_lamp(layout)
        for linear in (layout.q, layout.k, layout.v):
            writes[names[linear]] = (name, linear.out_features // layout.num_kv_heads)
        reads[names[layout.o]] = (name, layout.o.in_features // layout.num_kv_heads)
    for layer in layers:
        if layer.name in writes:
            layer.out_group, layer.out_per_channel = writes[layer.name]
        if layer.name in reads:
            layer.in_group, layer.in_per_channel = reads[layer.name]


def head_sp_lamp(layout: AttentionLayout) -> Tensor:
    """SP-LAMP of each key/value group: every projection's LAMP over its output rows, summed over the group's rows.

    Scored per row like a channel group (:func:`group_sp_lamp`), a head weighs as much as the channels it
    removes, so the knapsack trades a head against MLP units at their width, not as one unit.
    """
    rows = [layout.rows([group])[0] for group in range(layout.num_kv_heads)]  # per group: linear -> its rows
    total = torch.zeros(layout.num_kv_heads, dtype=torch.float64)
    for linear in rows[0]:  # q, k, v (one fused qkv in timm)
        lamp = sp_lamp(linear.weight.detach().float().norm(dim=1)).double().cpu()
        for group, owned in enumerate(rows):
            total[group] += lamp[owned[linear]].sum()
    return total.float()


def _grouped(conv: nn.Module) -> bool:
    """A grouped conv other than depthwise: its channels move only in whole groups (kept whole here)."""
    return conv.groups > 1 and not (conv.groups == conv.in_channels == conv.out_channels)


def attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Outermost attention modules: ``nn.MultiheadAttention`` and any module whose class name says ``Attention``.

    A channel group touching one is not pruned by the planner: removing single channels of q/k/v or the
    embedding width breaks the ``num_heads x head_dim`` reshape (and Hugging Face's config attributes).
    Their latency stays in the whole model's fixed part, which calibration measures
    (:func:`~lightning_prune.core.latency_budget.measure.whole_model_fit`); the MLP units around them are
    pruned as usual.
    """
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        is_attention = isinstance(module, nn.MultiheadAttention) or "attention" in type(module).__name__.lower()
        if is_attention and not any(name.startswith(f"{outer}.") for outer in found):
            found[name] = module
    return found


def group_sp_lamp(graph: tp.DependencyGraph, group: tp.Group) -> Tensor:
    """SP-LAMP of a channel group: each layer's LAMP over its filters' L2 norms, summed over the group.

    Every layer whose output channels the group removes contributes its own SP-LAMP scores (its strongest
    filter scores 1), added at the group's channel index (torch-pruning's ``root_idxs``). A group tied by a
    residual add spans several layers and so weighs as much as they do together, not as one layer.
    """
    total = torch.zeros(len(group[0].idxs), dtype=torch.float64)
    for item in group:
        module = item.dep.target.module
        if not isinstance(module, _TIMED) or not graph.is_out_channel_pruning_fn(item.dep.handler):
            continue
        weight = module.weight.detach()
        weight = weight.transpose(0, 1) if getattr(module, "transposed", False) else weight
        norms = weight[list(item.idxs)].flatten(1).float().norm(dim=1)
        total.index_add_(0, torch.tensor(item.root_idxs), sp_lamp(norms).double().cpu())
    return total.float()


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(re.search(pattern, name) for pattern in patterns)


def _timed_layers(
    model: nn.Module, example: Tensor, graph: tp.DependencyGraph, names: Mapping[nn.Module, str]
) -> list[TimedLayer]:
    """Every conv/linear run by ``model(example)``, in execution order, with its input shape."""
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def record(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        shapes.setdefault(module, tuple(args[0].shape))

    hooks = [module.register_forward_pre_hook(record) for module in names if isinstance(module, _TIMED)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model_io.call(model, example)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    layers = []
    for module, shape in shapes.items():
        node = graph.module2node.get(module)
        norm = node is not None and any(isinstance(out.module, _BATCHNORM) for out in node.outputs)
        norm = norm and (isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) or len(shape) == 2)
        c_in = module.in_features if isinstance(module, nn.Linear) else module.in_channels
        c_out = module.out_features if isinstance(module, nn.Linear) else module.out_channels
        layers.append(TimedLayer(names[module], layer_spec(module, shape, norm), c_in, c_out))
    return layers


def removal_indices(scores: Tensor, keep: int) -> list[int]:
    """Indices of the ``len(scores) - keep`` lowest-scoring channels (the ones to remove)."""
    order = torch.argsort(scores, stable=True)
    return sorted(order[: scores.numel() - keep].tolist())


def weight_count(model: nn.Module) -> int:
    """Weights of every conv and linear layer (what a latency-budget run's sparsity counts)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, _TIMED))
