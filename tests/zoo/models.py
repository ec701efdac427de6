"""The zoo: small models of every kind users bring, each in its user-written LightningModule and its loaders.

Every model is built from code or a config (no download, no pretrained weights) and trained from scratch on the
bundled digits (:mod:`tests.zoo.data`), small enough that a short fit takes seconds on one CPU core. Models from
``torchvision``, ``timm`` and ``transformers`` (the ``zoo`` extra, installed by ``[test]`` and so in CI) are
imported inside their builders; the tests guard them with ``pytest.importorskip``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import lightning.pytorch as pl
from torch import nn
from torch.utils.data import DataLoader

from lightning_prune.models import MLP, DepthwiseCNN, ResNet, ViT
from tests.zoo.data import VOCAB, image_loaders, text_loaders
from tests.zoo.modules import HFCausalLM, HFClassifier, ImageClassifier, WarmupImageClassifier

SEQ_LEN = 17  # [CLS] + 16 pooled pixels


@dataclass(frozen=True)
class ZooModel:
    """A zoo entry: how to build its module and loaders, the block class a user names for block-wise pruning."""

    name: str
    title: str  # how the README's matrix names it (tv: torchvision; MHA: nn.MultiheadAttention)
    build: Callable[[], pl.LightningModule]
    loaders: Callable[[], tuple[DataLoader, DataLoader]]
    block_types: tuple[str, ...]  # BlockPruning(block_types=...): the model's residual block class (none: default)
    needs: str | None = None  # the optional package it comes from (importorskip'd)
    slow: bool = False  # its cells go under -m slow
    train_batches: int | None = None  # the Trainer's limit_train_batches (None: the whole epoch, 20 batches)


def depthwise() -> pl.LightningModule:
    return ImageClassifier(DepthwiseCNN((1, 8, 8), 10, widths=(16, 32), depth=1, expansion=2))


def resnet() -> pl.LightningModule:
    return ImageClassifier(ResNet((1, 8, 8), 10, blocks=(1, 1), widths=(16, 32)))


def mlp() -> pl.LightningModule:
    return ImageClassifier(MLP((1, 8, 8), 10, hidden=(128, 64)), lr=0.1)


def vit() -> pl.LightningModule:
    return WarmupImageClassifier(ViT((1, 8, 8), 10, patch_size=4, dim=32, depth=2, heads=4, mlp_dim=64), lr=0.01)


def tv_resnet18() -> pl.LightningModule:
    from torchvision.models import resnet18

    return ImageClassifier(resnet18(weights=None, num_classes=10), lr=0.02)


def tv_mobilenet_v3() -> pl.LightningModule:
    from torchvision.models import mobilenet_v3_small

    # torchvision's BatchNorm momentum (0.01) needs hundreds of steps before eval-mode statistics settle; a short
    # from-scratch run takes PyTorch's default 0.1. Half width at 3x8x8: its many small ops are slow on CPU.
    norm = functools.partial(nn.BatchNorm2d, eps=0.001, momentum=0.1)
    net = mobilenet_v3_small(weights=None, num_classes=10, width_mult=0.5, norm_layer=norm)
    return ImageClassifier(net, lr=0.1)


def tv_convnext() -> pl.LightningModule:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    blocks = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)]
    return WarmupImageClassifier(ConvNeXt(blocks, stochastic_depth_prob=0.0, num_classes=10))


def timm_vit() -> pl.LightningModule:
    import timm

    net = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=16,
        patch_size=8,
        in_chans=3,
        depth=2,
        embed_dim=32,
        num_heads=2,
        num_classes=10,
    )
    return WarmupImageClassifier(net)


def hf_bert() -> pl.LightningModule:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=SEQ_LEN,
        num_labels=10,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.2,  # HF's 0.02 suits width 768; at width 32 it learns 3x slower from scratch
    )
    return HFClassifier(BertForSequenceClassification(config), lr=0.01)


def hf_vit() -> pl.LightningModule:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=16,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=10,
    )
    return HFClassifier(ViTForImageClassification(config), lr=0.01)


def hf_llama() -> pl.LightningModule:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention: two query heads per key/value head
        max_position_embeddings=SEQ_LEN,
    )
    return HFCausalLM(LlamaForCausalLM(config), lr=0.01)


def _images(size: int = 8, channels: int = 1, hf: bool = False) -> Callable[[], tuple[DataLoader, DataLoader]]:
    return lambda: image_loaders(size, channels, hf)


def _text(causal: bool = False) -> Callable[[], tuple[DataLoader, DataLoader]]:
    return lambda: text_loaders(causal)


ZOO = {
    m.name: m
    for m in [
        ZooModel("depthwise_cnn", "depthwise CNN", depthwise, _images(), ("DepthwiseSeparableBlock",)),
        ZooModel("resnet", "ResNet", resnet, _images(), ("BasicBlock",)),
        ZooModel("mlp", "MLP", mlp, _images(), ()),
        ZooModel("vit", "ViT (MHA)", vit, _images(), ("EncoderBlock",)),
        ZooModel("hf_bert", "HF BERT", hf_bert, _text(), ("BertLayer",), "transformers"),
        ZooModel("hf_vit", "HF ViT", hf_vit, _images(16, 3, hf=True), ("ViTLayer",), "transformers"),
        ZooModel(
            "hf_llama_gqa",
            "HF Llama GQA",
            hf_llama,
            _text(causal=True),
            ("LlamaDecoderLayer",),
            "transformers",
            slow=True,
        ),
        ZooModel(
            "tv_resnet18",
            "tv ResNet-18",
            tv_resnet18,
            _images(16, 3),
            ("BasicBlock",),
            "torchvision",
            slow=True,
            train_batches=12,
        ),
        ZooModel(
            "tv_mobilenet_v3",
            "tv MobileNetV3",
            tv_mobilenet_v3,
            _images(8, 3),
            ("InvertedResidual",),
            "torchvision",
            slow=True,
        ),
        ZooModel("tv_convnext", "tv ConvNeXt", tv_convnext, _images(16, 3), ("CNBlock",), "torchvision"),
        ZooModel("timm_vit", "timm ViT", timm_vit, _images(16, 3), ("Block",), "timm"),
    ]
}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
