"""The instant_soup benchmark's networks: LeNet-300-100, and a small BERT reading an image as a token sequence.

The paper's claims are about pre-trained transformers. A BERT built from a config (no download) reads each
image as a sequence of pixel tokens (intensity quantised to ``levels`` values), so the benchmark's transfer
between digit classes becomes a transfer between sequence-classification tasks on the paper's model family.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from lightning_prune.models import MLP


class PixelTokenBert(nn.Module):
    """``BertForSequenceClassification`` over an image's pixels as tokens; returns the logits."""

    def __init__(self, num_pixels: int, num_classes: int, levels: int, hidden: int, layers: int, heads: int) -> None:
        super().__init__()
        from transformers import BertConfig, BertForSequenceClassification  # the zoo extra

        config = BertConfig(
            vocab_size=levels,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            max_position_embeddings=num_pixels,
            num_labels=num_classes,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        self.levels = levels
        self.bert = BertForSequenceClassification(config)

    def forward(self, images: Tensor) -> Tensor:
        tokens = (images.flatten(1).clamp(0, 1) * (self.levels - 1)).round().to(torch.long)
        return self.bert(input_ids=tokens).logits


def network(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The benchmark's ``model``: ``mlp`` (LeNet-300-100 by default) or ``bert`` (``cfg.bert`` sizes it)."""
    if cfg.get("model", "mlp") == "bert":
        num_pixels = int(torch.tensor(input_shape).prod())
        return PixelTokenBert(
            num_pixels, num_classes, cfg.bert.levels, cfg.bert.hidden, cfg.bert.layers, cfg.bert.heads
        )
    return MLP(input_shape, num_classes, hidden=tuple(cfg.hidden))


def describe(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int) -> str:
    if cfg.get("model", "mlp") == "bert":
        b = cfg.bert
        return f"BERT {b.layers} layers x {b.hidden} wide, {b.heads} heads, {b.levels} pixel tokens -> {num_classes}"
    return f"MLP {input_shape} -> {list(cfg.hidden)} -> {num_classes}"
