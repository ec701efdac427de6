"""Tiny Hugging Face models built from configs (no download), shared by the structured-transformer tests."""

from __future__ import annotations

import torch
import transformers

VOCAB = 17  # digits pixels are 0..16: each pixel is a token


def tiny_bert(num_labels: int = 10, heads: int = 4, layers: int = 2) -> transformers.BertForSequenceClassification:
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=64,
        max_position_embeddings=72,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return transformers.BertForSequenceClassification(config)


def tiny_llama(heads: int = 4, kv_heads: int = 2, layers: int = 2) -> transformers.LlamaForCausalLM:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=48,
        max_position_embeddings=80,
    )
    return transformers.LlamaForCausalLM(config)


def tiny_hf_vit(num_labels: int = 10) -> transformers.ViTForImageClassification:
    config = transformers.ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=1,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=num_labels,
    )
    return transformers.ViTForImageClassification(config)


def digit_tokens(count: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's bundled digits as token sequences (64 pixels, values 0..16) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = torch.randperm(len(digits.target), generator=torch.Generator().manual_seed(seed))[:count]
    ids = torch.as_tensor(digits.data, dtype=torch.long)[order]
    return ids, torch.as_tensor(digits.target, dtype=torch.long)[order]


def tiny_timm_vit(num_classes: int = 10) -> torch.nn.Module:
    """timm's VisionTransformer (fused ``qkv`` attention, ``fc1``/``fc2`` MLP) on 1x8x8 images."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=8, patch_size=4, in_chans=1, num_classes=num_classes, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2
    )
