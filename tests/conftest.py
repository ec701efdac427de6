"""Shared fixtures: real bundled data, Lightning's test-Trainer flags, a fixed seed."""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lightning_prune.bench._common import quiet_trainer_kwargs
from lightning_prune.data import DigitsDataModule

# The test models are tiny: one thread per process is as fast as two on an idle machine and far faster on
# a loaded one (two threads fighting other processes for two cores). Subprocesses (the app, DDP) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


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
    """Quiet CPU Trainer flags (the benchmarks' own); tests add max_epochs and callbacks."""
    return quiet_trainer_kwargs(tmp_path)
