"""Small builders shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

from lightning_prune.models import Classifier, ResNet, SmallCNN

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"


def cnn_classifier(widths: tuple[int, ...] = (16, 16, 32, 32), **kwargs: object) -> Classifier:
    return Classifier(SmallCNN((1, 8, 8), 10, widths=widths), 10, (1, 8, 8), **kwargs)


def resnet_classifier(
    blocks: tuple[int, ...] = (2, 2), widths: tuple[int, ...] = (16, 32), **kwargs: object
) -> Classifier:
    return Classifier(ResNet((1, 8, 8), 10, blocks=blocks, widths=widths), 10, (1, 8, 8), **kwargs)
