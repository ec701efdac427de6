"""Physical removal of attention heads and MLP hidden units in transformer blocks, attributes kept consistent.

Why not torch-pruning's dependency graph here: tracing a Hugging Face decoder (rotary embeddings, caches,
masks) did not finish in 5 minutes for a 2-layer Llama, and ``nn.MultiheadAttention`` ties its projection
width to the residual width. Transformer blocks have a known layout instead, so the layers are found by
name (q/k/v/o projections, the MLP's input and output Linears) and sliced with torch-pruning's own
per-layer functions (``tp.prune_linear_out_channels`` / ``prune_linear_in_channels``). Heads are scored
and removed in whole key/value groups (grouped-query attention: a KV head and the query heads that share
it), so ``num_key_value_groups`` stays valid; the residual width never changes.

After a removal :func:`sync_attention` makes the module's attributes agree with its weights
(``num_attention_heads``, ``all_head_size``, ``num_key_value_heads``, ``num_key_value_groups``; the head
size never changes) and :func:`sync_config` writes uniform counts into a Hugging Face ``config``.
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import Tensor, nn

from lightning_prune.core.transformer_layout import (
    HEAD_DIM_ATTRS,
    AttentionLayout,
    MLPLayout,
    attention_layouts,
    mlp_layouts,
)

# ---------------------------------------------------------------- scores


def head_group_scores(layout: AttentionLayout) -> Tensor:
    """L1 norm of each key/value group's weights: its query heads, its key and value heads, their output columns.

    Without grouped-query attention each group is one head (Michel et al. 2019 prune single heads; the
    weight norm is the data-free proxy torch-pruning's ``GroupMagnitudeImportance`` uses).
    """
    scores = []
    with torch.no_grad():
        for group in range(layout.num_kv_heads):
            rows, columns = layout.rows([group])
            score = sum(linear.weight[idx].abs().sum() for linear, idx in rows.items())
            scores.append(score + layout.o.weight[:, columns].abs().sum())
    return torch.stack(scores)


def unit_scores(layout: MLPLayout) -> Tensor:
    """L1 norm of each hidden unit's incoming rows (every input Linear) and outgoing column."""
    with torch.no_grad():
        score = layout.out.weight.abs().sum(0)
        for linear in layout.ins:
            score = score + linear.weight.abs().sum(1)
    return score


# ---------------------------------------------------------------- removal


def remove_head_groups(layout: AttentionLayout, groups: list[int]) -> None:
    """Remove whole key/value groups (each: one KV head and the query heads sharing it), then sync attributes.

    Raises:
        ValueError: when every group would go, or an index is out of range.
    """
    total = layout.num_kv_heads
    if not groups:
        return
    if len(set(groups)) >= total or not all(0 <= g < total for g in groups):
        raise ValueError(f"cannot remove head groups {sorted(groups)} of {total}: at least one must stay")
    rows, columns = layout.rows(sorted(set(groups)))
    for linear, idx in rows.items():
        tp.prune_linear_out_channels(linear, idx)
    tp.prune_linear_in_channels(layout.o, columns)
    sync_attention(layout)


def remove_units(layout: MLPLayout, idxs: list[int]) -> None:
    """Remove MLP hidden units: rows of every input Linear, columns of the output Linear.

    Raises:
        ValueError: when every unit would go.
    """
    if not idxs:
        return
    if len(set(idxs)) >= layout.units:
        raise ValueError(f"cannot remove {len(set(idxs))} of {layout.units} hidden units: at least one must stay")
    for linear in layout.ins:
        tp.prune_linear_out_channels(linear, list(idxs))
    tp.prune_linear_in_channels(layout.out, list(idxs))


def sync_attention(layout: AttentionLayout, head_dim: int | None = None) -> None:
    """Set the head-count attributes the module has from its weights (``head_dim`` too when given).

    Raises:
        ValueError: when the projections are not whole heads, or query heads are not whole KV groups.
    """
    module = layout.module
    if head_dim is not None:
        for attr in HEAD_DIM_ATTRS:
            if hasattr(module, attr):
                setattr(module, attr, int(head_dim))
    dim = layout.head_dim
    heads, kv = layout.num_heads, layout.num_kv_heads
    whole = layout.q.out_features == heads * dim * (3 if layout.fused else 1) and layout.k.out_features % dim == 0
    if not whole or kv == 0 or heads % kv:
        raise ValueError(
            f"{type(module).__name__}: projections q={layout.q.out_features}, k={layout.k.out_features} are not "
            f"whole heads of size {dim} with query heads in whole key/value groups"
        )
    values = {
        "num_attention_heads": heads,
        "num_heads": heads,
        "all_head_size": heads * dim,
        "attn_dim": heads * dim,
        "num_key_value_heads": kv,
        "num_key_value_groups": heads // kv,
    }
    for attr, value in values.items():
        if hasattr(module, attr):
            setattr(module, attr, value)


def sync_config(model: nn.Module) -> dict[str, int]:
    """Write head counts and MLP width into every Hugging Face ``config`` in ``model`` when uniform over layers.

    Counts that differ per layer are left as they were (the export's architecture spec carries them per
    layer). ``num_attention_heads`` is only written where a fresh model would get the same head size: the
    config has ``head_dim`` (Llama), or heads x head size still equals ``hidden_size``. A BERT-style config
    (head size = ``hidden_size / num_attention_heads``) keeps its count after heads go; the architecture
    spec holds the real one and loading sets it on the modules.
    Returns what was written.
    """
    written: dict[str, int] = {}
    configs: dict[int, tuple[str, object]] = {}
    for name, module in model.named_modules():  # outermost first: the whole model a config describes
        if _is_hf_config(module):
            configs.setdefault(id(module.config), (name, module.config))
    for name, config in configs.values():
        root = model.get_submodule(name)
        attn = list(attention_layouts(root).values())
        mlps = list(mlp_layouts(root).values())
        updates = {}
        if mlps and len({m.units for m in mlps}) == 1 and hasattr(config, "intermediate_size"):
            updates["intermediate_size"] = mlps[0].units
        if attn and len({(a.num_heads, a.num_kv_heads, a.head_dim) for a in attn}) == 1:
            heads, kv, dim = attn[0].num_heads, attn[0].num_kv_heads, attn[0].head_dim
            if getattr(config, "head_dim", None) is not None or heads * dim == getattr(config, "hidden_size", -1):
                updates["num_attention_heads"] = heads
                if getattr(config, "head_dim", None) is not None:
                    updates["head_dim"] = dim
            if getattr(config, "num_key_value_heads", None) is not None:
                updates["num_key_value_heads"] = kv
        for key, value in updates.items():
            setattr(config, key, value)
        written.update(updates)
    return written


def sync_all(model: nn.Module, head_dims: dict[str, int] | None = None) -> None:
    """What a model reloaded into resized layers needs: every attention's and config's counts from the weights.

    Head sizes come from ``head_dims`` (by layer name) where given, else from the modules themselves.
    """
    for name, layout in attention_layouts(model).items():
        sync_attention(layout, (head_dims or {}).get(name))
    sync_config(model)


def attention_spec(model: nn.Module) -> dict[str, dict[str, object]]:
    """Per attention layer: its type, heads, KV heads and head size (part of the export's architecture spec)."""
    return {
        name: {
            "type": type(layout.module).__name__,
            "num_heads": layout.num_heads,
            "num_kv_heads": layout.num_kv_heads,
            "head_dim": layout.head_dim,
        }
        for name, layout in attention_layouts(model).items()
    }


def _is_hf_config(module: nn.Module) -> bool:
    config = getattr(module, "config", None)
    return config is not None and hasattr(config, "to_dict") and hasattr(config, "model_type")
