"""Shared fixtures: real bundled data, Lightning's test-Trainer flags, a fixed seed."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest

from lightning_prune.data import DigitsDataModule
from lightning_prune.models import Classifier, ResNet, SmallCNN

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"


@pytest.fixture(autouse=True)
def _seed() -> None:
    pl.seed_everything(0, verbose=False)


@pytest.fixture(scope="session")
def digits() -> DigitsDataModule:
    datamodule = DigitsDataModule(batch_size=64)
    datamodule.setup()
    return datamodule


@pytest.fixture
def trainer_kwargs(tmp_path: Path) -> dict:
    """Quiet CPU Trainer flags; tests add max_epochs and callbacks."""
    return {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": str(tmp_path),
    }


def cnn_classifier(widths: tuple[int, ...] = (16, 16, 32, 32), **kwargs: object) -> Classifier:
    return Classifier(SmallCNN((1, 8, 8), 10, widths=widths), 10, (1, 8, 8), **kwargs)


def resnet_classifier(
    blocks: tuple[int, ...] = (2, 2), widths: tuple[int, ...] = (16, 32), **kwargs: object
) -> Classifier:
    return Classifier(ResNet((1, 8, 8), 10, blocks=blocks, widths=widths), 10, (1, 8, 8), **kwargs)
