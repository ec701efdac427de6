"""Real data for the zoo: sklearn's bundled digits, shaped the way each kind of model eats it.

Images: the 8x8 digits scaled to [0, 1], upsampled (bilinear) and repeated to the channels a model wants;
as ``(x, y)`` tuples for plain nets or ``{"pixel_values", "labels"}`` dicts for Hugging Face. Text: each image,
average-pooled to 4x4, read row by row as 16 pixel-intensity tokens (0..16), after a ``[CLS]`` token for BERT
(``{"input_ids", "attention_mask", "labels"}``, the digit as the label) or alone for the causal LM (``labels``
are the input ids: Hugging Face shifts them to score the next token). The train/val split is the project's
(:class:`~lightning_prune.data.DigitsDataModule`, seeded and stratified).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_prune.data import DigitsDataModule

BATCH_SIZE = 64
POOL = 2  # text: 2x2 average pooling, so a digit reads as 16 tokens (attention over 64 would cost 16x)
INTENSITIES = 17  # pixel tokens 0..16
CLS = INTENSITIES  # BERT's [CLS]: one more token
VOCAB = INTENSITIES + 1


@functools.cache
def digits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_val, y_val)``: 1x8x8 images in [0, 1] and their digits."""
    data = DigitsDataModule(batch_size=BATCH_SIZE)
    data.setup()
    return (*data.train_set.tensors, *data.val_set.tensors)


class DictDataset(Dataset):
    """Equal-length tensors served as one dict per sample (what a Hugging Face ``datasets`` map gives)."""

    def __init__(self, **tensors: Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {key: value[index] for key, value in self.tensors.items()}


class PairDataset(Dataset):
    """``(x, y)`` per sample: a user's own map-style dataset."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.x[index], self.y[index]


def _images(x: Tensor, size: int, channels: int) -> Tensor:
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.repeat(1, channels, 1, 1)


def _loaders(train: Dataset, val: Dataset) -> tuple[DataLoader, DataLoader]:
    return DataLoader(train, batch_size=BATCH_SIZE, shuffle=True), DataLoader(val, batch_size=BATCH_SIZE)


def image_loaders(size: int = 8, channels: int = 1, hf: bool = False) -> tuple[DataLoader, DataLoader]:
    """Train and val loaders of ``channels x size x size`` digits: ``(x, y)``, or HF dicts with ``hf``."""
    x_train, y_train, x_val, y_val = digits()
    x_train, x_val = _images(x_train, size, channels), _images(x_val, size, channels)
    if hf:
        return _loaders(
            DictDataset(pixel_values=x_train, labels=y_train), DictDataset(pixel_values=x_val, labels=y_val)
        )
    return _loaders(PairDataset(x_train, y_train), PairDataset(x_val, y_val))


def _tokens(x: Tensor, cls: bool) -> Tensor:
    ids = (F.avg_pool2d(x, POOL).flatten(1) * 16).round().long()
    return torch.cat([torch.full((len(ids), 1), CLS), ids], dim=1) if cls else ids


def text_loaders(causal: bool = False) -> tuple[DataLoader, DataLoader]:
    """Digits as token sequences: ``[CLS] + 16 pixels`` labelled by digit, or (``causal``) 16 pixels as an LM corpus."""
    x_train, y_train, x_val, y_val = digits()

    def dataset(x: Tensor, y: Tensor) -> DictDataset:
        ids = _tokens(x, cls=not causal)
        return DictDataset(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids.clone() if causal else y)

    return _loaders(dataset(x_train, y_train), dataset(x_val, y_val))
