"""Block-wise structured pruning: one block per step, its inner filters removed physically (ICE-Pruning's pruner)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
from torch import nn

from lightning_prune.callbacks._carry import carried_optimizer
from lightning_prune.callbacks._stepwise import StepwisePruning
from lightning_prune.callbacks._trainer import check_spawn_reload, example_input, resize_on_load
from lightning_prune.callbacks.protocol import PruningState
from lightning_prune.core.masks import check_finite
from lightning_prune.core.odf2nna.tracing import trace_graph
from lightning_prune.core.selection import DEFAULT_TYPES
from lightning_prune.core.structured import (
    group_scores,
    inner_groups,
    lowest_channels,
    remove_out_channels,
)
from lightning_prune.core.structured_transformers import (
    head_group_scores,
    remove_head_groups,
    remove_units,
    sync_config,
    unit_scores,
)
from lightning_prune.core.transformer_layout import attention_layouts, mlp_layouts
from lightning_prune.core.validate import check_fraction

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BLOCK_TYPES = ("BasicBlock", "EncoderBlock", "TransformerEncoderLayer", "BertLayer", "ViTLayer", "LlamaDecoderLayer")


class BlockPruning(StepwisePruning):
    """Prune the model's blocks one per step, in network order, removing a fraction of each block's inner filters.

    ICE-Pruning's setting (Hu, Henderson, Cano, arXiv 2505.07411, Sec. IV): at each step the next block
    (a module whose class is in ``block_types``) loses ``step_ratio`` of the channels of each of its inner
    coupled groups (a conv's output channels with everything sharing them: its BatchNorm, a depthwise conv
    after a 1x1 expand, a squeeze-excitation gate), those with the lowest L1 magnitude over the whole group,
    removed physically through torch-pruning's dependency graph (the block's output width, and so the
    residual path, is untouched). The paper ranks by filter L1 norms alone; behind a BatchNorm those
    ranked channels worse than chance from scratch (see :func:`~lightning_prune.core.structured.group_scores`).
    The optimizer is rebuilt after each shrink with the surviving entries' state (momentum, Adam moments)
    and the schedulers where they were, as if nothing had been removed. A transformer block (one holding
    an attention or an MLP that :mod:`~lightning_prune.core.structured_transformers` recognises) loses
    instead ``step_ratio`` of its attention heads (whole key/value groups under grouped-query attention,
    at least one kept) and of its MLP hidden units (ConvNeXt's channels-last Linear MLP included), the
    lowest L1 norms; heads of ``nn.MultiheadAttention`` stay (its projections are the residual width),
    only its block's MLP units go. A step runs at the start of an epoch, after ``warmup_epochs`` dense
    epochs and then every ``finetune_epochs`` epochs; after the last block's fine-tune, training goes on
    to ``max_epochs`` (or stops there with ``stop_when_done=True``, as the ICE recipe does). ICE's
    :class:`~lightning_prune.AccuracyGate`, :class:`~lightning_prune.LayerFreezing` and
    :class:`~lightning_prune.PruningAwareLR` act around these steps.

    Requires from your LightningModule: for conv blocks, an ``example_input_array`` or an ``(x, y)``
    validation batch (to trace the graph; transformer blocks need none), and a ``configure_optimizers``
    over all parameters (it is called again after each shrink). Under ``ddp_spawn``, call
    :func:`~lightning_prune.resize_on_load` on the model before ``fit``.

    Args:
        step_ratio: fraction of each block's inner filters removed at its step, in (0, 1) (the paper's r).
        block_types: class names of the blocks pruned, one per step (default: ResNet's ``BasicBlock``, our
            ViT's ``EncoderBlock``, ``nn.TransformerEncoderLayer``, ``BertLayer``, ``ViTLayer``,
            ``LlamaDecoderLayer``).
        finetune_epochs: epochs of training after each step (0: all blocks at once, no fine-tune).
        warmup_epochs: dense epochs before the first step. With 0 the first step runs before any training:
            fine from trained weights (loaded or passed in memory), otherwise a warning names the fix.
        target_sparsity: stop early once this fraction of the selected weights is removed, in (0, 1);
            ``None`` prunes every block.
        include_types, include_names, exclude_names, prune_head, include_biases: the weights whose removed
            fraction is the reported sparsity (see :func:`~lightning_prune.core.selection.select_parameters`).
        stop_when_done: stop training once the last fine-tune is over. Default ``False``: training goes on
            to ``max_epochs`` with the masks held, as Lightning's ``ModelPruning`` and gradual magnitude
            pruning do, so a run from scratch gets every epoch it asked for; the recipes (paper pipelines that
            start from a trained model) set it ``True``.
        log_layers: also log per-layer sparsity as ``prune_layer/<parameter name>``.
        on_nonfinite: ``"raise"`` (default) stops with an error when weights or logged metrics are NaN/inf at
            a step; ``"skip"`` records the skip and retries after the next fine-tune.
        monitor: metric recorded as the accuracy before each step in the history. It only feeds the history,
            so one it cannot find once validation has run is a warning (naming the logged metrics and the
            fix, e.g. ``monitor="val_acc"``), not an error.
        export_dir: where ``pruned_model.pt`` and ``summary.json`` go (default: the Trainer's root dir).

    Raises:
        ValueError: for arguments out of range (numbers given as strings included), an ``export_dir`` that
            cannot be a directory; at fit start for ``block_types`` matching no module or a block holding
            nothing a step can remove (no head, no MLP unit, no conv channel inside it), a selection matching
            nothing, a Trainer whose ``max_epochs``/``max_steps`` cannot fit one step per block or whose
            training data yields no batch, a second pruning callback, or a model other than the one pruned.
        FloatingPointError: when the weights are not finite after a step or at fit end (nothing is exported).
        RuntimeError: at fit end, when the weights' sparsity is not the reported one (nothing is exported).

    Example::

        >>> import lightning.pytorch as pl
        >>> from lightning_prune import BlockPruning
        >>> from lightning_prune.data import DigitsDataModule
        >>> from lightning_prune.models import Classifier, ResNet
        >>> pruning = BlockPruning(step_ratio=0.5, warmup_epochs=1, export_dir=None)
        >>> model = Classifier(ResNet((1, 8, 8), 10, blocks=(1, 1), widths=(8, 8)), 10, (1, 8, 8))
        >>> trainer = pl.Trainer(max_epochs=3, callbacks=[pruning], logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False, default_root_dir="/tmp/lp-doc")
        >>> trainer.fit(model, datamodule=DigitsDataModule(batch_size=128))
        >>> [record["block"] for record in pruning.pruning_state.history], model.net.stages[0][0].conv1.out_channels
        (['net.stages.0.0', 'net.stages.1.0'], 4)
    """

    summary_section = "block_pruning"

    def __init__(
        self,
        step_ratio: float = 0.2,
        block_types: Sequence[str] = BLOCK_TYPES,
        finetune_epochs: int = 1,
        warmup_epochs: int = 0,
        target_sparsity: float | None = None,
        include_types: Sequence[str] = DEFAULT_TYPES,
        include_names: str | None = None,
        exclude_names: Sequence[str] = (),
        prune_head: bool = False,
        include_biases: bool = False,
        stop_when_done: bool = False,
        log_layers: bool = True,
        on_nonfinite: str = "raise",
        monitor: str = "val/acc",
        export_dir: str | None = None,
    ) -> None:
        self.step_ratio, self.block_types, self.target_sparsity = step_ratio, block_types, target_sparsity
        self.finetune_epochs, self.warmup_epochs = finetune_epochs, warmup_epochs
        self.include_types, self.include_names, self.exclude_names = include_types, include_names, exclude_names
        self.prune_head, self.include_biases = prune_head, include_biases
        self.stop_when_done, self.log_layers, self.on_nonfinite = stop_when_done, log_layers, on_nonfinite
        self.monitor, self.export_dir = monitor, export_dir
        self._validate_shared()
        check_fraction("step_ratio", step_ratio)
        if isinstance(block_types, str) or not block_types:
            raise ValueError(f"block_types must be a non-empty list of class names, got {block_types!r}")
        self.include_types, self.exclude_names, self.block_types = (
            list(include_types),
            list(exclude_names),
            list(block_types),
        )
        self.pruning_state = PruningState(target_sparsity=target_sparsity)
        self._names: list[str] = []
        self._original_numel: dict[str, int] = {}
        self._blocks: list[str] = []
        self._restored = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        keep = self._select(trainer, pl_module)
        self._blocks = [name for name, m in pl_module.named_modules() if type(m).__name__ in self.block_types]
        if not self._blocks:
            raise ValueError(
                f"block_types={self.block_types} matched no module of {type(pl_module).__name__}: pass the class "
                "names of your model's residual or transformer blocks, e.g. block_types=['MyBlock']"
            )
        _check_prunable(trainer, pl_module, self._blocks)
        check_spawn_reload(trainer, pl_module, "BlockPruning")
        resize_on_load(pl_module)
        if not keep:
            self.pruning_state.num_steps = len(self._blocks)
        self._check_budget(trainer)

    # ---------------------------------------------------------------- a step

    def _plan(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        block = self._blocks[self.pruning_state.step]
        heads = attention_layouts(pl_module, block)
        units = mlp_layouts(pl_module.get_submodule(block), f"{block}.")
        if heads or units:
            return {"block": block, **self._transformer_plan(heads, units)}
        graph = trace_graph(pl_module, example_input(trainer, pl_module))
        scores = {name: group_scores(pl_module, graph, name) for name in inner_groups(pl_module, graph, block)}
        check_finite(scores, "channel group L1 magnitudes")
        return {"block": block, "channels": {name: lowest_channels(s, self.step_ratio) for name, s in scores.items()}}

    def _transformer_plan(self, heads: dict[str, Any], units: dict[str, Any]) -> dict[str, Any]:
        """The lowest-L1 head groups and MLP units of a transformer block (no graph trace: the layout is known)."""
        head_scores = {name: head_group_scores(layout) for name, layout in heads.items()}
        unit_score = {name: unit_scores(layout) for name, layout in units.items()}
        check_finite({**head_scores, **unit_score}, "head and unit L1 norms")
        return {
            "heads": {name: lowest_channels(s, self.step_ratio) for name, s in head_scores.items()},
            "units": {name: lowest_channels(s, self.step_ratio) for name, s in unit_score.items()},
        }

    def _apply(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, plan: dict[str, Any], record: dict[str, Any]
    ) -> None:
        """Shrink the block, then rebuild the optimizer with the surviving entries' state and the schedule's place.

        A fresh optimizer from ``configure_optimizers`` would restart its scheduler: a cosine over ``max_epochs``
        rebuilt at epoch 2 of 4 runs the last epochs at the full rate again, and a from-scratch ResNet-18 ended
        19-56 pt below plain training that way (its momentum lost too), 2 pt with both kept.
        """
        example = example_input(trainer, pl_module) if "channels" in plan else None
        with carried_optimizer(trainer, pl_module, functools.partial(_shrink, plan=plan), example, carry=True):
            record.update(_shrink(pl_module, example, plan))
        record["block"] = plan["block"]

    def _current_sparsity(self, pl_module: pl.LightningModule) -> float:
        present = sum(pl_module.get_parameter(name).numel() for name in self._names)
        return 1.0 - present / sum(self._original_numel.values())

    def _layer_sparsity(self, pl_module: pl.LightningModule) -> dict[str, float]:
        return {n: 1.0 - pl_module.get_parameter(n).numel() / self._original_numel[n] for n in self._names}


def _shrink(model: nn.Module, example: Any, plan: dict[str, Any]) -> dict[str, Any]:
    """Remove what ``plan`` names from ``model`` (the module, or a copy of it to trace where entries go).

    Returns the heads and units removed per layer, for the step's record.
    """
    if "channels" in plan:
        remove_out_channels(model, example, plan["channels"])
        return {}
    record: dict[str, Any] = {}
    layouts = attention_layouts(model, plan["block"])
    for name, groups in plan["heads"].items():
        per_group = layouts[name].num_heads // layouts[name].num_kv_heads
        remove_head_groups(layouts[name], groups)
        record.setdefault("heads_removed", {})[name] = len(groups) * per_group
    mlps = mlp_layouts(model.get_submodule(plan["block"]), f"{plan['block']}.")
    for name, idxs in plan["units"].items():
        remove_units(mlps[name], idxs)
        record.setdefault("units_removed", {})[name] = len(idxs)
    sync_config(model)
    return record


def _check_prunable(trainer: pl.Trainer, pl_module: pl.LightningModule, blocks: Sequence[str]) -> None:
    """Refuse at fit start a block that holds nothing a step could remove, so no run "succeeds" removing nothing.

    A block with no attention or MLP it recognises needs an inner conv group: a conv whose output channels
    reach nothing outside the block. A conv on the residual width (ConvNeXt's depthwise 7x7 without its
    MLP, a block that is one conv) has none.

    Raises:
        ValueError: naming the blocks without a removable head, MLP unit or inner conv channel, and why.
    """
    convs_only = [
        name
        for name in blocks
        if not attention_layouts(pl_module, name) and not mlp_layouts(pl_module.get_submodule(name))
    ]
    empty = [name for name in convs_only if not _has(pl_module.get_submodule(name), _CONVS)]
    traced = [name for name in convs_only if name not in empty]
    if traced:
        graph = trace_graph(pl_module, example_input(trainer, pl_module))
        empty += [name for name in traced if not inner_groups(pl_module, graph, name)]
    if empty:
        raise ValueError(
            f"BlockPruning: block(s) {empty[:3]} hold nothing it can remove: no attention whose heads can go "
            "(Hugging Face q/k/v/o or query/key/value, timm qkv), no MLP it recognises (Linear -> activation -> "
            "Linear, gate/up -> down, fc1 -> fc2, intermediate -> output) and no conv whose output channels stay "
            "inside the block (a conv on the residual width cannot shrink without the rest of the network); name "
            "other blocks in block_types"
        )


def _has(module: nn.Module, types: tuple[type, ...]) -> bool:
    return any(isinstance(m, types) for m in module.modules())
