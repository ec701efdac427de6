"""Heads and MLP units removed physically from BERT, Llama (GQA), HF ViT and nn.MultiheadAttention models.

Parity tests zero a head's (or unit's) outgoing weights first: removing exactly that head then leaves the
logits unchanged, while removing any other would change them, so the index bookkeeping is checked.
"""

import pytest
import torch

from lightning_prune.core.structured import architecture_spec, count_parameters
from lightning_prune.core.structured_transformers import (
    head_group_scores,
    remove_head_groups,
    remove_units,
    sync_attention,
    sync_config,
    unit_scores,
)
from lightning_prune.core.transformer_layout import attention_layouts, fixed_width_attentions, mlp_layouts
from lightning_prune.models.vit import ViT
from tests.hf_models import digit_tokens, tiny_bert, tiny_hf_vit, tiny_llama

IDS, LABELS = digit_tokens(8)


def silence_group(layout, group):
    """Zero the output-projection columns of a KV group: it then contributes nothing to the logits."""
    width = layout.o.in_features // layout.num_kv_heads
    with torch.no_grad():
        layout.o.weight[:, group * width : (group + 1) * width] = 0


def silence_units(layout, units):
    with torch.no_grad():
        layout.out.weight[:, units] = 0


def train_step(model, **batch):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    first = model(**batch).loss
    first.backward()
    first = first.detach()
    optimizer.step()
    optimizer.zero_grad()
    with torch.no_grad():
        return float(first), float(model(**batch).loss)


def test_bert_heads_and_units_go_with_exact_logits_and_consistent_attributes():
    torch.manual_seed(0)
    model = tiny_bert().eval()
    attn, mlps = attention_layouts(model), mlp_layouts(model)
    assert len(attn) == len(mlps) == 2
    for layout in attn.values():
        silence_group(layout, 1)
    for layout in mlps.values():
        silence_units(layout, list(range(0, 64, 2)))
    before, params = model(input_ids=IDS).logits, count_parameters(model)
    for layout in attn.values():
        remove_head_groups(layout, [1])
    for layout in mlps.values():
        remove_units(layout, list(range(0, 64, 2)))
    written = sync_config(model)
    torch.testing.assert_close(model(input_ids=IDS).logits, before)
    self_attn = model.bert.encoder.layer[0].attention.self
    assert (self_attn.num_attention_heads, self_attn.attention_head_size, self_attn.all_head_size) == (3, 8, 24)
    assert self_attn.query.out_features == self_attn.key.out_features == 24
    assert model.bert.encoder.layer[0].attention.output.dense.in_features == 24
    # BertConfig has no head_dim: 3 heads of 8 cannot be written as num_attention_heads at hidden_size 32
    assert written == {"intermediate_size": 32}
    assert model.config.num_attention_heads == 4
    assert architecture_spec(model)["bert.encoder.layer.1.attention.self"]["num_heads"] == 3
    assert count_parameters(model) < params
    first, second = train_step(model, input_ids=IDS, labels=LABELS)
    assert second < first


def test_llama_gqa_removes_whole_kv_groups_and_generates_with_the_cache():
    torch.manual_seed(0)
    model = tiny_llama(heads=4, kv_heads=2).eval()
    for layout in attention_layouts(model).values():
        silence_group(layout, 0)
    for layout in mlp_layouts(model).values():
        silence_units(layout, [1, 5, 7])
    before = model(input_ids=IDS).logits
    for layout in attention_layouts(model).values():
        remove_head_groups(layout, [0])
    for layout in mlp_layouts(model).values():
        remove_units(layout, [1, 5, 7])
    assert sync_config(model) == {
        "intermediate_size": 45,
        "num_attention_heads": 2,
        "head_dim": 8,
        "num_key_value_heads": 1,
    }
    torch.testing.assert_close(model(input_ids=IDS).logits, before)
    attn = model.model.layers[1].self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features) == (16, 8, 8)
    assert (attn.head_dim, attn.num_key_value_groups, attn.o_proj.in_features) == (8, 2, 16)
    # KV-cache forward: the last token's logits from the cache equal the full forward's
    prefix = model(input_ids=IDS[:2, :-1], use_cache=True)
    cached = model(input_ids=IDS[:2, -1:], cache=prefix.past_key_values).logits[:, -1]
    torch.testing.assert_close(cached, model(input_ids=IDS[:2]).logits[:, -1], atol=1e-5, rtol=1e-4)
    generated = model.generate(IDS[:2, :8], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert generated.shape == (2, 12)
    first, second = train_step(model, input_ids=IDS, labels=IDS)
    assert second < first


def test_head_scores_rank_a_weak_group_lowest():
    torch.manual_seed(0)
    layout = next(iter(attention_layouts(tiny_llama(heads=4, kv_heads=4)).values()))
    with torch.no_grad():
        for linear in (layout.q, layout.k, layout.v):
            linear.weight[8:16] *= 0.01
        layout.o.weight[:, 8:16] *= 0.01
    scores = head_group_scores(layout)
    assert scores.shape == (4,)
    assert int(scores.argmin()) == 1
    units = next(iter(mlp_layouts(tiny_llama()).values()))
    with torch.no_grad():
        units.out.weight[:, 3] = 0
        units.ins[0].weight[3] = 0
    assert int(unit_scores(units).argmin()) == 3


def test_hf_vit_heads_and_units():
    torch.manual_seed(0)
    model = tiny_hf_vit().eval()
    pixels = torch.rand(2, 1, 8, 8)
    for layout in attention_layouts(model).values():
        silence_group(layout, 2)
    before = model(pixel_values=pixels).logits
    for layout in attention_layouts(model).values():
        remove_head_groups(layout, [2])
    for layout in mlp_layouts(model).values():
        remove_units(layout, [0, 1])
    assert sync_config(model) == {"intermediate_size": 62}
    attn = model.vit.layers[0].attention
    assert attn.q_proj.out_features == 24
    assert attn.o_proj.in_features == 24
    assert model(pixel_values=pixels).logits.shape == before.shape
    assert model(pixel_values=pixels).logits.isfinite().all()


def test_multihead_attention_keeps_heads_and_loses_mlp_units():
    torch.manual_seed(0)
    model = ViT((1, 8, 8), 10, dim=16, heads=2, mlp_dim=32).eval()
    # nn.MultiheadAttention projects to the residual width: its heads cannot go without shrinking the residual
    assert attention_layouts(model) == {}
    assert fixed_width_attentions(model) == ["blocks.0.attn", "blocks.1.attn"]
    mlps = mlp_layouts(model)
    assert sorted(mlps) == ["blocks.0.mlp", "blocks.1.mlp"]
    x = torch.rand(2, 1, 8, 8)
    silence_units(mlps["blocks.0.mlp"], [3, 4])
    before = model(x)
    remove_units(mlps["blocks.0.mlp"], [3, 4])
    assert model.blocks[0].mlp[0].out_features == model.blocks[0].mlp[2].in_features == 30
    torch.testing.assert_close(model(x), before)


def test_removals_refuse_to_empty_a_layer_and_sync_refuses_broken_shapes():
    layout = next(iter(attention_layouts(tiny_llama(heads=4, kv_heads=2)).values()))
    with pytest.raises(ValueError, match=r"head groups \[0, 1\] of 2: at least one must stay"):
        remove_head_groups(layout, [0, 1])
    units = next(iter(mlp_layouts(tiny_llama()).values()))
    with pytest.raises(ValueError, match="48 of 48 hidden units"):
        remove_units(units, list(range(48)))
    layout.k.weight = torch.nn.Parameter(layout.k.weight[:12])
    layout.k.out_features = 12
    with pytest.raises(ValueError, match="not whole heads of size 8"):
        sync_attention(layout)


def test_torch_transformer_encoder_layer_loses_mlp_units_and_keeps_its_attention():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True).eval()
    mlps = mlp_layouts(layer)
    assert list(mlps) == [""]
    assert fixed_width_attentions(layer) == ["self_attn"]
    x = torch.rand(2, 5, 16)
    silence_units(mlps[""], [0, 9])
    before = layer(x)
    remove_units(mlps[""], [0, 9])
    assert (layer.linear1.out_features, layer.linear2.in_features) == (30, 30)
    torch.testing.assert_close(layer(x), before)


def test_hf_record_builds_only_transformers_models():
    from lightning_prune.core.hf_record import from_config, is_pretrained, pretrained_record

    model = tiny_llama()
    record = pretrained_record(model)
    rebuilt = from_config(record["class_path"], record["config"])
    assert is_pretrained(rebuilt)
    assert not is_pretrained(torch.nn.Linear(2, 2))
    assert architecture_spec(rebuilt) == architecture_spec(model)
    with pytest.raises(ValueError, match=r"class_path='torch.nn.Linear' is not a transformers PreTrainedModel"):
        from_config("torch.nn.Linear", {})


def test_timm_fused_qkv_heads_go_and_a_fresh_model_reloads_the_shrunk_weights(tmp_path):
    from lightning_prune.core.export import export_pruned, load_pruned
    from tests.hf_models import tiny_timm_vit

    torch.manual_seed(0)
    model = tiny_timm_vit().eval()
    x = torch.rand(2, 1, 8, 8)
    attn = attention_layouts(model)
    assert sorted(attn) == ["blocks.0.attn", "blocks.1.attn"]
    for layout in attn.values():
        silence_group(layout, 3)
    mlps = mlp_layouts(model)
    assert sorted(mlps) == ["blocks.0.mlp", "blocks.1.mlp"]
    before = model(x)
    for layout in attn.values():
        remove_head_groups(layout, [3])
    torch.testing.assert_close(model(x), before)  # the silenced head, and only it, went from the fused rows
    for layout in mlps.values():
        remove_units(layout, list(range(8)))
    block = model.blocks[0]
    assert (block.attn.num_heads, block.attn.attn_dim, block.attn.qkv.out_features) == (3, 24, 72)
    assert block.mlp.fc1.out_features == 56
    silenced_only = model(x)
    path = export_pruned(model, tmp_path / "timm.pt")
    fresh = load_pruned(tiny_timm_vit().eval(), path)  # a plain nn.Module: you build it, the load resizes it
    assert fresh.blocks[1].attn.num_heads == 3
    torch.testing.assert_close(fresh(x), silenced_only)
