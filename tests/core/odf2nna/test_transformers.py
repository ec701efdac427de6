"""ODF2NNA's engine on transformers: the MLPs are the stacks, attention and residual widths are left alone.

Tiny models from ``tests/callbacks/odf2nna/transformers_zoo.py`` (untrained: only the structure matters here),
fed digits batches as their users feed them (``(x, y)`` tuples, Hugging Face dicts).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from lightning_prune.core import model_io
from lightning_prune.core.export import load_pruned
from lightning_prune.core.odf2nna import (
    collect_unit_moments,
    layer_widths,
    plan_rebuild,
    rebuild_layers,
    replacement,
    scan_linears,
    sync_configs,
)
from lightning_prune.core.structured import count_parameters
from tests.callbacks.odf2nna.transformers_zoo import ZOO, loaders

pytest.importorskip("transformers")

# name -> (hidden layers found, skipped Linear -> a word of its reason), for the zoo's 2-block models
EXPECTED = {
    "vit": (
        {"blocks.0.mlp.0": "blocks.0.mlp.2", "blocks.1.mlp.0": "blocks.1.mlp.2"},
        {"blocks.0.mlp.2": "residual add", "blocks.0.attn.out_proj": "not called as a module"},
    ),
    "bert": (
        {
            "bert.encoder.layer.0.intermediate.dense": "bert.encoder.layer.0.output.dense",
            "bert.encoder.layer.1.intermediate.dense": "bert.encoder.layer.1.output.dense",
            "bert.pooler.dense": "classifier",
        },
        {
            "bert.encoder.layer.0.attention.self.query": "attention heads",
            "bert.encoder.layer.1.attention.output.dense": "residual add",
            "bert.encoder.layer.1.output.dense": "residual add",
        },
    ),
    "hf_vit": (
        {"vit.layers.0.mlp.fc1": "vit.layers.0.mlp.fc2", "vit.layers.1.mlp.fc1": "vit.layers.1.mlp.fc2"},
        {"vit.layers.0.attention.v_proj": "attention heads", "vit.layers.1.mlp.fc2": "residual add"},
    ),
    "llama": (
        {
            "model.layers.0.mlp.gate_proj": "model.layers.0.mlp.down_proj",
            "model.layers.1.mlp.gate_proj": "model.layers.1.mlp.down_proj",
        },
        {"model.layers.0.self_attn.q_proj": "branch", "model.layers.1.mlp.down_proj": "residual add"},
    ),
}


def setup_model(name: str) -> tuple[nn.Module, list]:
    torch.manual_seed(0)
    builder, form, _ = ZOO[name]
    train, _ = loaders(form, batch_size=32)
    inputs = [model_io.split_batch(nn.Identity(), batch)[0] for batch in itertools.islice(train, 4)]
    return builder().eval(), inputs


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_scan_finds_the_mlps_and_names_what_it_skips(name: str) -> None:
    model, inputs = setup_model(name)
    scan = scan_linears(model, model_io.first_samples(inputs[0]))
    layers, skipped = EXPECTED[name]
    assert {layer.name: layer.consumer for layer in scan.layers} == layers
    for layer_name, word in skipped.items():
        assert word in scan.skipped[layer_name], (layer_name, scan.skipped[layer_name])
    assert not set(scan.skipped) & set(layers)
    if name == "llama":  # the gated MLP: up_proj shares gate_proj's units
        assert scan.layers[0].partners == ("model.layers.0.mlp.up_proj",)


def test_only_attention_layers_are_refused_naming_them() -> None:
    model, inputs = setup_model("bert")
    with pytest.raises(
        ValueError, match=r"include_names='attention'.*'bert.encoder.layer.0.attention.self.query': its"
    ):
        scan_linears(model, model_io.first_samples(inputs[0]), include_names="attention")


@pytest.mark.parametrize("name", ["bert", "hf_vit", "llama"])
def test_rebuilt_hf_model_runs_trains_and_reloads_from_its_config(name: str, tmp_path) -> None:
    """Epsilon 0 changes nothing; a real cut shrinks the MLPs (and a gate's sibling), the config follows, and a
    fresh model built from the saved config loads the pruned weights without pickle and gives the same outputs."""
    model, inputs = setup_model(name)
    example = model_io.first_samples(inputs[0])
    scan = scan_linears(model, example)
    moments = collect_unit_moments(model, scan.layers, inputs, covariance=True)
    before = model_io.forward_logits(model, inputs[0])
    keep_all = plan_rebuild(moments, epsilon=0.0)
    rebuild_layers(model, example, scan.layers, keep_all.kept, keep_all.replacements)
    torch.testing.assert_close(model_io.forward_logits(model, inputs[0]), before)

    widths_before = layer_widths(model, scan.layers)
    kept = {layer.name: list(range(0, widths_before[layer.name], 3 + index)) for index, layer in enumerate(scan.layers)}
    swaps = {layer.name: replacement(moments[layer.name], kept[layer.name]) for layer in scan.layers}
    rebuild_layers(model, example, scan.layers, kept, swaps)
    widths = [len(kept[layer.name]) for layer in scan.layers if "pooler" not in layer.name]
    assert sync_configs(model, scan.layers) == {"": {"intermediate_size": max(widths), "intermediate_sizes": widths}}
    for layer in scan.layers:
        assert model.get_submodule(layer.name).out_features == len(kept[layer.name])
        assert model.get_submodule(layer.consumer).in_features == len(kept[layer.name])
        for partner in layer.partners:
            assert model.get_submodule(partner).out_features == len(kept[layer.name])

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = next(iter(loaders(ZOO[name][1], batch_size=8)[0]))
    model(**batch).loss.backward()
    optimizer.step()

    config = type(model.config).from_dict(model.config.to_dict())
    assert config.intermediate_sizes == widths
    reloaded = type(model)(config)
    assert count_parameters(reloaded) > count_parameters(model)  # built at the largest width, narrowed by the load
    path = tmp_path / "pruned.pt"
    torch.save({"architecture": None, "state_dict": model.state_dict()}, path)
    load_pruned(reloaded, path)
    assert count_parameters(reloaded) == count_parameters(model)
    torch.testing.assert_close(
        model_io.forward_logits(reloaded.eval(), inputs[0]), model_io.forward_logits(model.eval(), inputs[0])
    )


def test_a_gpt2_is_refused_naming_it() -> None:
    """GPT-2's MLP is two ``Conv1D`` (not ``nn.Linear``), and torch-pruning 1.6 cannot trace it: a clear refusal."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=20, n_positions=16))
    with pytest.raises(ValueError, match=r"GPT2LMHeadModel (has no hidden layer|cannot be traced on its example)"):
        scan_linears(model, {"input_ids": torch.randint(0, 20, (1, 8))})


def test_an_input_the_forward_does_not_take_is_refused_naming_it() -> None:
    model, _ = setup_model("bert")
    with pytest.raises(ValueError, match=r"BertForSequenceClassification does not run on its example input .*pixels"):
        scan_linears(model, {"pixels": torch.zeros(1, 16)})
