"""Tiny transformers trained on sklearn's digits the way users write them, for ODF2NNA on transformer MLPs.

Four models, each in its own LightningModule with its own metric names (``val_loss``, ``val_acc``), AdamW with a
linear warm-up, plain DataLoaders passed straight to ``fit``:

- ``vit``: the project's ViT on ``nn.MultiheadAttention``, ``(x, y)`` batches of 1x8x8 images;
- ``bert``: Hugging Face ``BertForSequenceClassification``, the digit pooled to 4x4 pixels, one token per position
  and value (16 x 17 ids) after a [CLS], dict
  batches ``input_ids``/``attention_mask``/``labels``;
- ``hf_vit``: Hugging Face ``ViTForImageClassification``, dict batches ``pixel_values``/``labels``;
- ``llama``: Hugging Face ``LlamaForCausalLM`` with grouped-query attention and a gated MLP, predicting each next
  pixel token (``input_ids``/``labels``; scored by its validation loss).

Every MLP is generously wide (8x the model width): ODF2NNA starts from an over-sized net.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lightning_prune.models.vit import ViT

WIDTH, MLP_WIDTH = 32, 256  # model width, MLP hidden units
INIT = 0.2  # a wider init than Hugging Face's 0.02: tiny models from scratch train in a few epochs
BOS, CLS = 17, 16 * 17  # Llama's first token after pixel values 0..16; BERT's [CLS] after 16 positions x 17 values


class Digits(Dataset):
    """Digits as the model wants them: ``"image"`` tuples, ``"tokens"`` / ``"pixels"`` / ``"lm"`` dicts."""

    def __init__(self, images: Tensor, labels: Tensor, form: str) -> None:
        self.images, self.labels, self.form = images, labels, form

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Any:
        image, label = self.images[index], self.labels[index]
        if self.form == "image":
            return (image / 16.0).view(1, 8, 8), label
        if self.form == "pixels":
            return {"pixel_values": (image / 16.0).view(1, 8, 8), "labels": label}
        pooled = image.view(4, 2, 4, 2).mean((1, 3)).round().long().flatten()  # 4x4 pixels 0..16: 16 tokens
        if self.form == "lm":
            tokens = torch.cat([torch.tensor([BOS]), pooled])
            return {"input_ids": tokens, "labels": tokens}
        tokens = torch.cat([torch.tensor([CLS]), pooled + 17 * torch.arange(16)])  # a token per (position, value)
        return {"input_ids": tokens, "attention_mask": torch.ones_like(tokens), "labels": label}


def loaders(form: str, batch_size: int = 64) -> tuple[DataLoader, DataLoader]:
    """Training (shuffled) and validation loaders over a fixed stratified 80/20 split of digits."""
    data = load_digits()
    x_train, x_val, y_train, y_val = train_test_split(
        data.data, data.target, test_size=0.2, random_state=0, stratify=data.target
    )
    train = Digits(torch.tensor(x_train, dtype=torch.float32), torch.tensor(y_train), form)
    val = Digits(torch.tensor(x_val, dtype=torch.float32), torch.tensor(y_val), form)
    generator = torch.Generator().manual_seed(0)
    return DataLoader(train, batch_size, shuffle=True, generator=generator), DataLoader(val, batch_size=256)


class UserModule(pl.LightningModule):
    """A user's LightningModule around a network: loss from the output (``.loss`` or cross-entropy), AdamW with a
    linear warm-up, then a cosine decay to the Trainer's last step.

    ``forward`` takes what a batch holds without its labels (``forward(x)`` or ``forward(**inputs)``), which is how
    callbacks that run the model call it.
    """

    def __init__(self, net: nn.Module, lr: float = 2e-3, warmup_steps: int = 20, classify: bool = True) -> None:
        super().__init__()
        self.net, self.lr, self.warmup_steps, self.classify = net, lr, warmup_steps, classify

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.net(*args, **kwargs)

    def _loss(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        if isinstance(batch, dict):
            output = self.net(**batch)
            return output.loss, output.logits.argmax(-1) == batch["labels"] if self.classify else None
        x, y = batch
        logits = self.net(x)
        return F.cross_entropy(logits, y), logits.argmax(-1) == y

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss, _ = self._loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, hits = self._loss(batch)
        self.log("val_loss", loss, prog_bar=True)
        if hits is not None:
            self.log("val_acc", hits.float().mean(), prog_bar=True)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=0.01)
        total = max(self.trainer.estimated_stepping_batches, self.warmup_steps + 1)

        def rate(step: int) -> float:
            if step < self.warmup_steps:
                return (step + 1) / self.warmup_steps
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - self.warmup_steps) / (total - self.warmup_steps))))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def vit() -> nn.Module:
    return ViT((1, 8, 8), 10, patch_size=2, dim=WIDTH, depth=2, heads=2, mlp_dim=MLP_WIDTH)


def bert() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=CLS + 1,
        hidden_size=WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=MLP_WIDTH,
        max_position_embeddings=17,
        num_labels=10,
        hidden_dropout_prob=0.0,
        initializer_range=INIT,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


def hf_vit() -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=8,
        patch_size=2,
        num_channels=1,
        hidden_size=WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=MLP_WIDTH,
        num_labels=10,
        initializer_range=INIT,
    )
    return ViTForImageClassification(config)


def llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=BOS + 1,
        hidden_size=WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=MLP_WIDTH,
        max_position_embeddings=17,
        initializer_range=INIT,
    )
    return LlamaForCausalLM(config)


# name -> (network builder, batch form, classifies?)
ZOO: dict[str, tuple[Callable[[], nn.Module], str, bool]] = {
    "vit": (vit, "image", True),
    "bert": (bert, "tokens", True),
    "hf_vit": (hf_vit, "pixels", True),
    "llama": (llama, "lm", False),
}


def build(name: str, seed: int = 0) -> tuple[UserModule, DataLoader, DataLoader]:
    """The named model in its LightningModule (seeded init) and its loaders."""
    builder, form, classify = ZOO[name]
    pl.seed_everything(seed, verbose=False)
    return UserModule(builder(), classify=classify), *loaders(form)


def mlp_units(net: nn.Module, hidden: int = WIDTH) -> int:
    """Hidden units of the transformer MLPs: Linears reading the model width whose outputs feed back to it."""
    total = 0
    for name, module in net.named_modules():
        if name.endswith(("mlp.0", "intermediate.dense", "mlp.fc1", "mlp.gate_proj")):
            assert isinstance(module, nn.Linear), name
            assert module.in_features == hidden, name
            total += module.out_features
    return total
