"""A structurally pruned Hugging Face model exported and rebuilt from its record alone: no pickle, same logits."""

import json

import torch

from lightning_prune.core.deploy import load_safetensors, save_safetensors
from lightning_prune.core.export import export_pruned, load_model
from lightning_prune.core.structured import count_parameters
from lightning_prune.core.structured_transformers import (
    head_group_scores,
    remove_head_groups,
    remove_units,
    sync_config,
    unit_scores,
)
from lightning_prune.core.transformer_layout import attention_layouts, mlp_layouts
from tests.hf_models import digit_tokens, tiny_bert, tiny_llama

IDS, LABELS = digit_tokens(8)


def prune(model, groups_per_layer, unit_ratio):
    """Remove the lowest-scoring head groups (a count per layer) and ``unit_ratio`` of each MLP's units."""
    for count, layout in zip(groups_per_layer, attention_layouts(model).values(), strict=True):
        remove_head_groups(layout, torch.argsort(head_group_scores(layout))[:count].tolist())
    for layout in mlp_layouts(model).values():
        remove_units(layout, torch.argsort(unit_scores(layout))[: int(unit_ratio * layout.units)].tolist())
    sync_config(model)
    return model


def test_bert_with_heads_differing_per_layer_reloads_from_its_record(tmp_path):
    torch.manual_seed(0)
    model = tiny_bert().eval()
    dense = count_parameters(model)
    prune(model, [1, 2], 0.5)
    path = export_pruned(model, tmp_path / "pruned_model.pt")
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["model"]["class_path"] == "transformers.models.bert.modeling_bert.BertForSequenceClassification"
    assert record["model"]["config"]["intermediate_size"] == 32
    torch.manual_seed(1)  # the fresh model's own initial weights differ: only the load makes them equal
    reloaded = load_model(path)
    heads = [layout.num_heads for layout in attention_layouts(reloaded).values()]
    assert heads == [3, 2]
    assert count_parameters(reloaded) == count_parameters(model) < dense
    layer = reloaded.bert.encoder.layer[1].attention.self
    assert (layer.num_attention_heads, layer.attention_head_size, layer.all_head_size) == (2, 8, 16)
    torch.testing.assert_close(reloaded(input_ids=IDS).logits, model(input_ids=IDS).logits)
    optimizer = torch.optim.SGD(reloaded.parameters(), lr=0.1)
    reloaded.train()
    loss = reloaded(input_ids=IDS, labels=LABELS).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)


def test_llama_gqa_reloads_from_safetensors_and_generates_the_same_tokens(tmp_path):
    torch.manual_seed(0)
    model = tiny_llama(heads=4, kv_heads=2).eval()
    prune(model, [1, 1], 0.5)
    path = save_safetensors(model, tmp_path / "llama.safetensors")
    record = json.loads((tmp_path / "llama.safetensors.json").read_text())
    config = record["model"]["config"]
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == (2, 1, 8)
    assert config["intermediate_size"] == 24
    torch.manual_seed(1)
    reloaded = load_safetensors(path)
    attn = reloaded.model.layers[0].self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.num_key_value_groups) == (16, 8, 2)
    torch.testing.assert_close(reloaded(input_ids=IDS).logits, model(input_ids=IDS).logits)
    prompt = IDS[:2, :8]
    expected = model.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0)
    torch.testing.assert_close(reloaded.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0), expected)
