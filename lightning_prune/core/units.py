"""Hidden units of feed-forward ``nn.Linear`` stacks: find them, score them, rebuild smaller layers.

ODF2NNA (Balderas et al., *Neural Networks* 2024) keeps the hidden units whose output varies over the
training data and rebuilds a narrower dense net with the survivors' trained weights. This module is
its framework-free engine:

- :func:`find_hidden_layers` walks torch-pruning's traced graph and returns, in forward order, every
  ``Linear`` whose outputs reach exactly one next ``Linear`` through a *plain chain*: element-wise
  activations, BatchNorm1d, LayerNorm, PReLU (dropout is not traced in eval mode). Branches, residual
  adds, concatenations and reshapes are refused with the layer and the reason.
- :func:`collect_unit_moments` streams the training data once and keeps per-unit count, mean, M2,
  min and max of what the next layer *receives* (the unit after its norm and activation), so any
  statistic in :data:`UNIT_STATISTICS` can be computed without holding the activations; on request
  also the units' covariance, for the least-squares replacement below.
- :func:`keep_units` applies the rule ``statistic >= epsilon * max over the layer`` (or a high quantile
  of the layer's scores instead of the max, so a few runaway units cannot set every other unit's bar).
- :func:`replacement` describes what the removed units are replaced with, as an affine function of the
  kept ones: their mean (``"mean"``), or their least-squares reconstruction from the kept units over the
  training data (``"least_squares"``, the "reweighting" of Mariet & Sra, *Diversity Networks*, ICLR 2016).
  Removed units of a trained layer are rarely constant; their correlated part survives in the kept units.
- :func:`rebuild_layers` adds each replacement to the next layer's weights and bias, then removes the
  units physically through :func:`~lightning_prune.core.structured.remove_out_channels` (torch-pruning
  slices the Linear, its norms and the next Linear's inputs consistently).

The statistic is the one open choice: the paper scores "the variability of the output of the unit's
subnet" and the exact formula is not in the sources we could read. The default is the standard
deviation of the post-activation output, relative to the layer's largest (scale-free, so one epsilon
fits every layer); ``variance`` and ``range`` are there to compare.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch_pruning as tp
from torch import Tensor, nn

from lightning_prune.core.structured import dependency_graph, remove_out_channels

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
    example_inputs = _two_samples(example_inputs)
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


def _two_samples(example_inputs: Tensor) -> Tensor:
    """At least two samples: with one, autograd records a Linear on a non-leaf input as mm + reshape."""
    if example_inputs.shape[0] >= 2:
        return example_inputs
    return example_inputs.expand(2, *example_inputs.shape[1:]).contiguous()


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
        _eval_forward(model, [example_inputs])
    finally:
        for handle in handles:
            handle.remove()
    shared = sorted({name for name in calls if calls.count(name) > 1})
    if shared:
        raise ValueError(f"nn.Linear layers {shared} run more than once per forward (shared weights): not a stack")
    return {name: index for index, name in enumerate(calls)}


# ---------------------------------------------------------------- statistics


@dataclass
class UnitMoments:
    """Streaming per-unit moments (float64): count, mean, M2 (sum of squared deviations), min, max.

    ``comoment`` (``units x units`` sums of products of deviations, M2 on its diagonal) is kept only when
    asked for: it costs ``units**2`` floats per layer. Batches and ranks merge with Chan et al.'s parallel
    formula, so the result does not depend on how the data was split.
    """

    count: Tensor
    mean: Tensor
    m2: Tensor
    minimum: Tensor
    maximum: Tensor
    comoment: Tensor | None = None

    @classmethod
    def of(cls, values: Tensor, covariance: bool = False) -> UnitMoments:
        """Moments of ``values`` of shape ``(samples, units)``."""
        values = values.detach().double()
        mean = values.mean(0)
        deviations = values - mean
        return cls(
            torch.full_like(mean, values.shape[0]),
            mean,
            (deviations**2).sum(0),
            values.amin(0),
            values.amax(0),
            deviations.T @ deviations if covariance else None,
        )

    def merge(self, other: UnitMoments) -> UnitMoments:
        count = self.count + other.count
        delta = other.mean - self.mean
        weight = self.count * other.count / count
        comoment = None
        if self.comoment is not None and other.comoment is not None:
            comoment = self.comoment + other.comoment + torch.outer(delta, delta) * weight[0]
        return UnitMoments(
            count,
            self.mean + delta * other.count / count,
            self.m2 + other.m2 + delta**2 * weight,
            torch.minimum(self.minimum, other.minimum),
            torch.maximum(self.maximum, other.maximum),
            comoment,
        )

    @property
    def covariance(self) -> Tensor:
        """Population covariance of the units (needs ``comoment``)."""
        if self.comoment is None:
            raise ValueError("these moments were collected without covariance=True")
        return self.comoment / self.count[0]

    def to_tensor(self) -> Tensor:
        """``(5, units)``: what ranks exchange (``comoment`` travels on its own)."""
        return torch.stack([self.count, self.mean, self.m2, self.minimum, self.maximum])

    @classmethod
    def from_tensor(cls, stacked: Tensor, comoment: Tensor | None = None) -> UnitMoments:
        return cls(*stacked.double().unbind(0), None if comoment is None else comoment.double())

    def cpu(self) -> UnitMoments:
        return UnitMoments.from_tensor(self.to_tensor().cpu(), None if self.comoment is None else self.comoment.cpu())


def unit_std(moments: UnitMoments) -> Tensor:
    """Population standard deviation of each unit's output (the default score)."""
    return (moments.m2 / moments.count).clamp_min(0).sqrt()


def unit_variance(moments: UnitMoments) -> Tensor:
    return moments.m2 / moments.count


def unit_range(moments: UnitMoments) -> Tensor:
    """Max minus min: sensitive to a single outlier, but zero exactly for constant units too."""
    return moments.maximum - moments.minimum


UNIT_STATISTICS: dict[str, Callable[[UnitMoments], Tensor]] = {
    "std": unit_std,
    "variance": unit_variance,
    "range": unit_range,
}


def collect_unit_moments(
    model: nn.Module, layers: Sequence[HiddenLayer], inputs: Iterable[Tensor], covariance: bool = False
) -> dict[str, UnitMoments]:
    """Moments of every hidden unit over ``inputs``, read at the consumer's input, model in eval mode.

    Reading what the next Linear receives makes the score the unit's output after its norm and
    activation, whether those are modules or functional calls in ``forward``. ``covariance`` also
    keeps the units' comoment matrix (what a least-squares :func:`replacement` needs).
    """
    moments: dict[str, UnitMoments] = {}

    def hook_for(layer: HiddenLayer) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            batch = UnitMoments.of(args[0].reshape(-1, args[0].shape[-1]), covariance)
            moments[layer.name] = moments[layer.name].merge(batch) if layer.name in moments else batch

        return hook

    handles = [model.get_submodule(layer.consumer).register_forward_pre_hook(hook_for(layer)) for layer in layers]
    try:
        _eval_forward(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return moments


def _eval_forward(model: nn.Module, inputs: Iterable[Tensor]) -> None:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in inputs:
                model(batch)
    finally:
        model.train(was_training)


# ---------------------------------------------------------------- decide and rebuild


def keep_units(scores: Tensor, epsilon: float, min_units: int = 1, reference_quantile: float = 1.0) -> list[int]:
    """Indices of the useful units: ``score >= epsilon * reference``, and never a constant unit when epsilon > 0.

    The reference is the ``reference_quantile`` of the layer's scores: 1.0 is the largest (methods.md's
    rule); 0.99 ignores the top 1 %, because a long-trained layer can grow a handful of units whose
    output varies ten times more than the rest, and against their max every other unit looks constant.
    At least ``min_units`` are kept (the highest-scoring ones), so no layer becomes empty.

    Example::

        >>> keep_units(torch.tensor([0.0, 1.0, 0.05, 0.5]), epsilon=0.1)
        [1, 3]
        >>> keep_units(torch.tensor([0.0, 0.0, 0.0]), epsilon=0.1)
        [0]
        >>> keep_units(torch.tensor([1.0, 1.0, 1.0, 10.0]), epsilon=0.5, reference_quantile=0.5)
        [0, 1, 2, 3]
    """
    if not 0 <= epsilon < 1:
        raise ValueError(f"epsilon must be in [0, 1), got {epsilon}")
    if not 0 < reference_quantile <= 1:
        raise ValueError(f"reference_quantile must be in (0, 1], got {reference_quantile}")
    useful = scores >= epsilon * torch.quantile(scores, reference_quantile)  # quantile 1.0 is the max
    if epsilon > 0:
        useful &= scores > 0
    kept = useful.nonzero().flatten().tolist()
    if len(kept) < min_units:
        kept = sorted(torch.argsort(scores, descending=True, stable=True)[:min_units].tolist())
    return kept


REPLACEMENTS = ("least_squares", "mean")

# Ridge on the kept units' covariance, relative to their mean variance: kept units of a wide layer are
# often nearly collinear, and an unregularised solve turns that into huge opposite-signed weights.
_RIDGE = 1e-3


@dataclass
class Replacement:
    """What stands in for a layer's removed units: ``removed ≈ weight @ kept + bias`` (float64)."""

    weight: Tensor  # (removed, kept)
    bias: Tensor  # (removed,)


def replacement(moments: UnitMoments, kept: Sequence[int], method: str = "least_squares") -> Replacement:
    """The removed units' outputs as an affine function of the kept units' outputs, over the training data.

    ``"mean"``: each removed unit becomes its mean (exact for a constant unit, a dead ReLU).
    ``"least_squares"``: the best affine reconstruction from the kept units (ridge-regularised regression
    on the collected covariance); its constant part is still the mean for constant units, and a removed
    unit that duplicates a kept one moves its outgoing weights onto it. Needs ``covariance=True`` moments.

    Example::

        >>> values = torch.tensor([[0.0, 0.0, 3.0], [1.0, 2.0, 3.0], [2.0, 4.0, 3.0]])  # unit 1 = 2 * unit 0
        >>> swap = replacement(UnitMoments.of(values, covariance=True), kept=[0])
        >>> swap.weight.squeeze().round(decimals=2).tolist(), swap.bias.round(decimals=2).tolist()
        ([2.0, 0.0], [0.0, 3.0])
    """
    if method not in REPLACEMENTS:
        raise ValueError(f"replacement method must be one of {list(REPLACEMENTS)}, got {method!r}")
    kept_index = torch.as_tensor(sorted(set(kept)), dtype=torch.long)
    removed_mask = torch.ones_like(moments.mean, dtype=torch.bool)
    removed_mask[kept_index] = False
    removed_index = removed_mask.nonzero().flatten()
    if method == "mean" or not len(removed_index):  # nothing to reconstruct: no solve
        return Replacement(moments.mean.new_zeros(len(removed_index), len(kept_index)), moments.mean[removed_index])
    covariance = moments.covariance
    kept_covariance = covariance[kept_index][:, kept_index]
    ridge = _RIDGE * kept_covariance.diagonal().mean() + torch.finfo(torch.float64).tiny
    kept_covariance = kept_covariance + ridge * torch.eye(len(kept_index), dtype=torch.float64)
    weight = torch.linalg.solve(kept_covariance, covariance[kept_index][:, removed_index]).T
    return Replacement(weight, moments.mean[removed_index] - weight @ moments.mean[kept_index])


def apply_replacement(model: nn.Module, layer: HiddenLayer, kept: Sequence[int], swap: Replacement) -> None:
    """Route the removed units' outgoing weights through their replacement, before they are cut.

    ``swap`` must come from :func:`replacement` with the same ``kept`` units (both sort them).

    The consumer computes ``W_kept @ kept + W_removed @ removed + b``; with ``removed ≈ A @ kept + c``
    that is ``(W_kept + W_removed @ A) @ kept + (b + W_removed @ c)``. A consumer without a bias has
    nowhere to put ``c``: only the weights change.
    """
    consumer = model.get_submodule(layer.consumer)
    width = consumer.weight.shape[1]
    kept_index = torch.as_tensor(sorted(set(kept)), device=consumer.weight.device)
    removed = sorted(set(range(width)) - set(kept))
    if not removed:
        return
    removed_index = torch.as_tensor(removed, device=consumer.weight.device)
    with torch.no_grad():
        outgoing = consumer.weight[:, removed_index].double()
        rerouted = consumer.weight[:, kept_index].double() + outgoing @ swap.weight.to(outgoing.device)
        consumer.weight[:, kept_index] = rerouted.to(consumer.weight.dtype)
        if consumer.bias is not None:
            consumer.bias.add_((outgoing @ swap.bias.to(outgoing.device)).to(consumer.bias.dtype))


def rebuild_layers(
    model: nn.Module,
    example_inputs: Tensor,
    layers: Sequence[HiddenLayer],
    kept: Mapping[str, Sequence[int]],
    replacements: Mapping[str, Replacement] | None = None,
) -> None:
    """Shrink every layer to its ``kept`` units, in place, trained weights transferred.

    ``replacements`` (per layer, from :func:`replacement`) are applied to the consumers first; pass
    ``None`` to drop removed units without compensation.

    Raises:
        ValueError: when a kept index is out of range, or the shrunk model no longer runs the example.
    """
    keeps, removals = {}, {}
    for layer in layers:  # every layer checked before any weight changes
        width = model.get_submodule(layer.name).out_features
        keeps[layer.name] = set(kept.get(layer.name, range(width)))
        if not keeps[layer.name] or not keeps[layer.name] <= set(range(width)):
            raise ValueError(f"kept units of {layer.name!r} must be a non-empty subset of range({width})")
        removals[layer.name] = sorted(set(range(width)) - keeps[layer.name])
    if replacements is not None:
        for layer in layers:
            apply_replacement(model, layer, sorted(keeps[layer.name]), replacements[layer.name])
    example_inputs = _two_samples(example_inputs)
    remove_out_channels(model, example_inputs, removals)
    try:
        _eval_forward(model, [example_inputs])
    except RuntimeError as error:
        raise ValueError(
            f"the rebuilt model no longer runs its example input ({error}); is it a plain stack?"
        ) from error


def layer_widths(model: nn.Module, layers: Sequence[HiddenLayer]) -> dict[str, int]:
    """Output width of every hidden layer."""
    return {layer.name: model.get_submodule(layer.name).out_features for layer in layers}
