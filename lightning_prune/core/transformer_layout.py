"""Where a transformer block's prunable parts are: attention projections and heads, MLP hidden layers.

Found by name and type, not by tracing, for the layouts real code uses: Hugging Face (Llama-style
``q_proj``/``k_proj``/``v_proj``/``o_proj``, BERT/ViT-style ``query``/``key``/``value`` + ``output.dense``),
timm's fused ``qkv``, and MLPs (gated, ``fc1``/``fc2``, ``intermediate``/``output``,
``nn.TransformerEncoderLayer``, a two-Linear ``nn.Sequential``). :mod:`~lightning_prune.core.structured_transformers`
scores and removes what these layouts name.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from torch import nn

HEAD_DIM_ATTRS = ("head_dim", "attention_head_size")


@dataclass
class AttentionLayout:
    """Where the parts of one attention layer are: the module holding its attributes and its projections."""

    module: nn.Module
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear

    @property
    def head_dim(self) -> int:
        return next(int(getattr(self.module, a)) for a in HEAD_DIM_ATTRS if hasattr(self.module, a))

    @property
    def fused(self) -> bool:
        """One ``qkv`` Linear (timm): its rows are the query, key and value heads one after the other."""
        return self.q is self.k

    @property
    def num_heads(self) -> int:
        return self.q.out_features // (3 if self.fused else 1) // self.head_dim

    @property
    def num_kv_heads(self) -> int:
        return self.num_heads if self.fused else self.k.out_features // self.head_dim

    def rows(self, groups: list[int]) -> tuple[dict[nn.Linear, list[int]], list[int]]:
        """Output rows of each projection, and input columns of the output projection, of these KV groups."""
        dim, rep, width = self.head_dim, self.num_heads // self.num_kv_heads, self.num_heads * self.head_dim
        q_idx = [g * rep * dim + i for g in groups for i in range(rep * dim)]
        kv_idx = [g * dim + i for g in groups for i in range(dim)]
        if self.fused:
            return {self.q: [section * width + i for section in range(3) for i in q_idx]}, q_idx
        return {self.q: q_idx, self.k: kv_idx, self.v: kv_idx}, q_idx


@dataclass
class MLPLayout:
    """A block's MLP: Linears whose outputs are the hidden units (``gate``/``up``), and the one reading them."""

    ins: list[nn.Linear]
    out: nn.Linear

    @property
    def units(self) -> int:
        return self.out.in_features


def _linears(module: nn.Module, *names: str) -> list[nn.Linear] | None:
    found = [getattr(module, name, None) for name in names]
    return found if all(isinstance(m, nn.Linear) for m in found) else None


def attention_layout(model: nn.Module, name: str) -> AttentionLayout | None:
    """The layout of ``name`` if it is an attention whose heads can be removed (Llama- or BERT-style), else None.

    Llama/Mistral/Qwen style: ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` and ``head_dim`` on one module.
    BERT/ViT style: ``query``, ``key``, ``value`` and ``attention_head_size`` on the module, the output
    projection in its parent's ``output.dense``. timm style: one ``qkv`` Linear, ``proj``, ``num_heads``,
    ``head_dim`` and ``attn_dim`` (read by its forward), no ``norm`` or ``gate`` over the heads.
    """
    module = model.get_submodule(name)
    if not any(hasattr(module, a) for a in HEAD_DIM_ATTRS):
        return None
    if (qkvo := _linears(module, "q_proj", "k_proj", "v_proj", "o_proj")) is not None:
        return AttentionLayout(module, *qkvo)
    if (fused := _timm_attention(module)) is not None:
        return AttentionLayout(module, fused[0], fused[0], fused[0], fused[1])
    qkv = _linears(module, "query", "key", "value")
    if qkv is None or not name:
        return None
    output = getattr(model.get_submodule(name.rpartition(".")[0]), "output", None)
    dense = getattr(output, "dense", None)
    return AttentionLayout(module, *qkv, dense) if isinstance(dense, nn.Linear) else None


def _timm_attention(module: nn.Module) -> list[nn.Linear] | None:
    norm = getattr(module, "norm", None)
    plain = (norm is None or isinstance(norm, nn.Identity)) and getattr(module, "gate", None) is None
    return _linears(module, "qkv", "proj") if plain and hasattr(module, "attn_dim") else None


def attention_layouts(model: nn.Module, under: str = "") -> dict[str, AttentionLayout]:
    """Every head-removable attention of ``model`` (only those inside ``under`` when given), by module name."""
    prefix = f"{under}." if under else ""
    found = {}
    for name, _ in model.named_modules():
        if name.startswith(prefix) or name == under:
            layout = attention_layout(model, name)
            if layout is not None:
                found[name] = layout
    return found


def fixed_width_attentions(model: nn.Module, under: str = "") -> list[str]:
    """``nn.MultiheadAttention`` layers: their projection width is the residual width, so no head can go."""
    prefix = f"{under}." if under else ""
    return [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention) and n.startswith(prefix)]


def mlp_layouts(block: nn.Module, prefix: str = "") -> dict[str, MLPLayout]:
    """The MLPs inside ``block`` (by full name, ``prefix`` + name), in the layouts :func:`mlp_layout` knows."""
    found = {}
    for name, module in block.named_modules():
        if (layout := mlp_layout(module)) is not None:
            found[f"{prefix}{name}" if name else prefix.rstrip(".")] = layout
    return found


def mlp_layout(module: nn.Module) -> MLPLayout | None:
    """``module`` as an MLP whose hidden units can go, or None.

    Gated (``gate_proj``/``up_proj`` -> ``down_proj``: Llama), ``fc1`` -> ``fc2`` (ViT, CLIP), BERT-style
    (``intermediate.dense`` -> ``output.dense``), ``nn.TransformerEncoderLayer`` (``linear1`` -> ``linear2``)
    and an ``nn.Sequential`` holding exactly two Linears, with parameter-free layers between them (anything
    before or after: ConvNeXt's block).
    """
    if (gated := _linears(module, "gate_proj", "up_proj", "down_proj")) is not None:
        return MLPLayout(gated[:2], gated[2])
    if isinstance(module, nn.TransformerEncoderLayer):
        return MLPLayout([module.linear1], module.linear2)
    pair = _linears(module, "fc1", "fc2") or _bert_mlp(module)
    if pair is None and isinstance(module, nn.Sequential):
        pair = _two_linear_sequential(module)
    if pair is not None and pair[0].out_features == pair[1].in_features:
        return MLPLayout([pair[0]], pair[1])
    return None


def _bert_mlp(module: nn.Module) -> tuple[nn.Linear, nn.Linear] | None:
    inner = getattr(getattr(module, "intermediate", None), "dense", None)
    outer = getattr(getattr(module, "output", None), "dense", None)
    if isinstance(inner, nn.Linear) and isinstance(outer, nn.Linear) and inner.out_features == outer.in_features:
        return inner, outer
    return None


def _two_linear_sequential(module: nn.Sequential) -> tuple[nn.Linear, nn.Linear] | None:
    """The one Linear -> (parameter-free layers) -> Linear pair of a Sequential, wherever it sits in it.

    ConvNeXt's block is ``dwconv, Permute, LayerNorm, Linear, GELU, Linear, Permute``: its MLP is the
    middle of the Sequential. A norm or a third Linear between two Linears is not a plain MLP.
    """
    weighted = [m for m in module if list(m.parameters())]
    pairs = [(a, b) for a, b in itertools.pairwise(weighted) if isinstance(a, nn.Linear) and isinstance(b, nn.Linear)]
    return pairs[0] if len(pairs) == 1 and sum(isinstance(m, nn.Linear) for m in weighted) == 2 else None
