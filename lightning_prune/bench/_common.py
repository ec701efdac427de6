"""What every benchmark shares: the default data set, quiet Trainers, timing, the environment and a console table."""

from __future__ import annotations

import logging
import os
import platform
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from lightning_prune.data import DigitsDataModule, MNISTDataModule
from lightning_prune.data.arrays import ArrayDataModule
from lightning_prune.data.mnist import FILES
from lightning_prune.models import ResNet

DEFAULT_MNIST = Path("../shared/data/mnist")


def default_data(
    data_dir: str | None,
    seed: int,
    batch_size: int = 128,
    digits: bool = False,
    train_fraction: float = 1.0,
    classes: list[int] | None = None,
) -> tuple[ArrayDataModule, str]:
    """MNIST from ``data_dir`` (or ../shared/data/mnist when present), else digits; returns (module, name).

    ``train_fraction`` applies to MNIST only (digits is small already); ``classes`` to both.

    Raises:
        FileNotFoundError: when ``data_dir`` is given but holds no MNIST files.
    """
    directory = Path(data_dir) if data_dir else DEFAULT_MNIST
    has_mnist = any((directory / f"{stem}{ext}").exists() for stem in FILES.values() for ext in (".gz", ""))
    if data_dir and not has_mnist:
        raise FileNotFoundError(f"--data-dir {data_dir!r} holds no MNIST IDX files ({list(FILES.values())})")
    if has_mnist and not digits:
        datamodule: ArrayDataModule = MNISTDataModule(
            str(directory), batch_size=batch_size, seed=seed, train_fraction=train_fraction, classes=classes
        )
        name = "mnist"
    else:
        datamodule, name = DigitsDataModule(batch_size=batch_size, seed=seed, classes=classes), "digits"
    datamodule.setup()
    return datamodule, name


def pooled_resnet(
    shape: Sequence[int], classes: int, blocks: Sequence[int], widths: Sequence[int], pool: int = 1
) -> nn.Module:
    """A ResNet behind an average pool of ``pool`` (MNIST 28x28 -> 14x14 at 2).

    Pooled, a net twice as wide costs what the unpooled one does, with channel steps half as large relative to
    its widths: finer latency steps, and the benchmarks fit the CPU budget.
    """
    inner = (shape[0], shape[1] // pool, shape[2] // pool)
    net = ResNet(inner, classes, blocks=tuple(blocks), widths=tuple(widths))
    return nn.Sequential(nn.AvgPool2d(pool), net) if pool > 1 else net


def quiet() -> None:
    """Benchmarks print their own table; Lightning's per-fit chatter would bury it."""
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_prune"):
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_trainer_kwargs(root: str | os.PathLike) -> dict[str, Any]:
    """Flags of a quiet single-CPU Trainer rooted at ``root``: no logger, checkpoints, bars or sanity check.

    The one definition: benchmarks build their Trainers from it and the tests' ``trainer_kwargs`` fixture returns it.
    """
    return {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": str(root),
    }


def trainer(
    max_epochs: int, callbacks: Sequence[pl.Callback] = (), root: str | os.PathLike = "bench_out", **kwargs: Any
) -> pl.Trainer:
    """A quiet CPU Trainer (:func:`quiet_trainer_kwargs`); ``kwargs`` override any flag (e.g. the accelerator)."""
    return pl.Trainer(max_epochs=max_epochs, callbacks=list(callbacks), **{**quiet_trainer_kwargs(root), **kwargs})


class Stopwatch:
    """``with Stopwatch() as sw: ...; sw.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


def environment() -> dict[str, Any]:
    """Where the numbers were measured."""
    return {
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    Console().print(table)
