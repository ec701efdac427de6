"""One matrix cell: a zoo model trained from scratch in a plain Trainer with one callback configuration.

Each column is a callback set up the way a user would after reading its docstring: the target they want and the
epochs their Trainer has, the defaults for the rest, plus cheap settings where a default only buys precision
(latency timing repeats, soup ingredients) so a cell stays within seconds. The same ``Trainer`` flags serve the
plain-training baseline of the model (:func:`fit`, no callback), against which a cell's accuracy is judged.

A cell's figures are measured here, on the weights and on the validation data, not taken from the callback's own
report: ``sparsity`` is the share of zero weights among the Linear/conv weights of the model as built (those removed
physically count as zero), ``params_removed`` the share of all parameters gone, ``acc`` the validation accuracy
(next-token accuracy for the causal LM) computed by :func:`evaluate`.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_prune import (
    AccuracyGate,
    AnytimeProgressivePruning,
    BlockPruning,
    DenseUnitPruning,
    InstantSoupPruning,
    IterativePruning,
    LatencyBenchmark,
    LatencyBudgetPruning,
    LayerFreezing,
    PruningAwareLR,
)
from lightning_prune.bench._common import quiet_trainer_kwargs
from lightning_prune.core.selection import select_parameters
from tests.zoo.models import ZooModel, count_parameters

MAX_EPOCHS = 4  # every column's schedule fits: warm-up 2 + 2 steps x 1 epoch, or 2 megabatches x 2 epochs
CELL_LIMIT_S = 30  # CPU seconds: a cell using more is stopped and fails (a calibration that never ends, a hang)
TARGET = 0.5  # the sparsity asked of the unstructured pruners
ACC = "val_acc"  # the zoo modules log val_acc / val_loss: callbacks with a `monitor` are told so, as a user would
LATENCY_TIMING = {"threads": 1, "repeats": 5, "rounds": 2, "lut_repeats": 3, "tolerance": 0.15}


@dataclass(frozen=True)
class Column:
    """A callback configuration: its callbacks for a model, and what "it works" means for it."""

    name: str
    title: str
    make: Callable[[ZooModel, str], list[pl.Callback]]
    target: str  # what it must reach: "sparsity", "shrink", "budget" or "measured"


def iterative(zoo: ZooModel, out: str) -> list[pl.Callback]:
    return [IterativePruning(target_sparsity=TARGET, step_ratio=0.3, warmup_epochs=2, monitor=ACC, export_dir=out)]


def block(zoo: ZooModel, out: str) -> list[pl.Callback]:
    # Every block at once after two dense epochs (a ResNet-18 has 8 blocks: a step each would outrun the Trainer);
    # the model's own block class, or the default for a model that has none.
    blocks = {"block_types": zoo.block_types} if zoo.block_types else {}
    return [BlockPruning(step_ratio=0.5, warmup_epochs=2, finetune_epochs=0, monitor=ACC, export_dir=out, **blocks)]


def ice(zoo: ZooModel, out: str) -> list[pl.Callback]:
    helpers = [AccuracyGate(export_dir=out), LayerFreezing(export_dir=out), PruningAwareLR(export_dir=out)]
    return [*iterative(zoo, out), *helpers]  # the README's ICE line: the helpers at their defaults


def app(zoo: ZooModel, out: str) -> list[pl.Callback]:
    return [
        AnytimeProgressivePruning(target_sparsity=TARGET, num_megabatches=2, epochs_per_megabatch=2, export_dir=out)
    ]


def soup(zoo: ZooModel, out: str) -> list[pl.Callback]:
    # two ingredients of 5 steps per round (defaults: 5 of 30), enough to denoise a mask on data this small
    soup = InstantSoupPruning(target_sparsity=TARGET, step_ratio=0.3, num_ingredients=2, lookahead_steps=5, monitor=ACC,
                              export_dir=out)  # fmt: skip
    return [soup]


def dense_unit(zoo: ZooModel, out: str) -> list[pl.Callback]:
    return [DenseUnitPruning(wide_epochs=2, monitor="val_loss", export_dir=out)]


def latency_budget(zoo: ZooModel, out: str) -> list[pl.Callback]:
    return [LatencyBudgetPruning(budget_fraction=0.8, num_steps=2, monitor=ACC, export_dir=out, **LATENCY_TIMING)]


def latency_benchmark(zoo: ZooModel, out: str) -> list[pl.Callback]:
    return [LatencyBenchmark(batch_sizes=[1, 64], warmup=2, repeats=5, rounds=1, threads=1, export_dir=out)]


COLUMNS = {
    c.name: c
    for c in [
        Column("iterative", "IterativePruning", iterative, "sparsity"),
        Column("block", "BlockPruning", block, "shrink"),
        Column("ice", "ICE trio", ice, "sparsity"),
        Column("app", "APP", app, "sparsity"),
        Column("soup", "InstantSoup", soup, "sparsity"),
        Column("dense_unit", "DenseUnitPruning", dense_unit, "shrink"),
        Column("latency_budget", "LatencyBudgetPruning", latency_budget, "budget"),
        Column("latency_benchmark", "LatencyBenchmark", latency_benchmark, "measured"),
    ]
}


# ---------------------------------------------------------------- running


class CellTimeoutError(Exception):
    """A cell used more than :data:`CELL_LIMIT_S` of CPU time."""


@contextmanager
def cpu_time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`CellTimeoutError` once this process has used ``seconds`` of CPU time (SIGPROF) inside the block.

    CPU time, not wall time: a loaded machine slows a cell down without bringing it nearer the limit. A no-op where
    there is no ``setitimer`` (Windows).
    """
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise CellTimeoutError(f"the cell used more than its {seconds:g} s of CPU time")

    previous = signal.signal(signal.SIGPROF, expire)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def trainer(zoo: ZooModel, root: Path, callbacks: list[pl.Callback]) -> pl.Trainer:
    """The model's Trainer: the same for its baseline and every cell, only the callbacks differ."""
    kwargs = quiet_trainer_kwargs(root)
    return pl.Trainer(max_epochs=MAX_EPOCHS, limit_train_batches=zoo.train_batches, callbacks=callbacks, **kwargs)


class Cell:
    """One fit of a freshly built model (seed 0): ``trainer.fit(model, train_loader, val_loader)``, as users call it.

    The Trainer exists before ``fit`` runs, so a refusal can be checked to come before any optimizer step.
    """

    def __init__(self, zoo: ZooModel, root: Path, callbacks: list[pl.Callback]) -> None:
        pl.seed_everything(0, verbose=False)
        self.zoo, self.callbacks = zoo, callbacks
        self.module = zoo.build()
        self.train_loader, self.val_loader = zoo.loaders()
        self.params_before = count_parameters(self.module)
        pruner = callbacks[0] if callbacks else None
        self.selected = selected_weights(self.module, pruner) if hasattr(pruner, "include_biases") else {}
        self.trainer = trainer(zoo, root, callbacks)
        self.seconds = 0.0

    def fit(self) -> Cell:
        started = time.perf_counter()
        try:
            with cpu_time_limit(CELL_LIMIT_S):
                self.trainer.fit(self.module, self.train_loader, self.val_loader)
        finally:
            self.seconds = time.perf_counter() - started
        return self


def fit(zoo: ZooModel, root: Path, callbacks: list[pl.Callback]) -> Cell:
    return Cell(zoo, root, callbacks).fit()


# ---------------------------------------------------------------- measuring


@torch.no_grad()
def evaluate(module: nn.Module, loader: DataLoader) -> float:
    """Validation accuracy in eval mode: top-1 of the logits, or next-token accuracy for a causal LM's batches."""
    was_training = module.training
    module.eval()
    correct = total = 0
    for batch in loader:
        if isinstance(batch, Mapping):
            labels = batch["labels"]
            logits = module(**batch).logits
            if logits.dim() == 3:  # a causal LM: position t predicts token t + 1
                logits, labels = logits[:, :-1], labels[:, 1:]
        else:
            x, labels = batch
            logits = module(x)
        correct += int((logits.argmax(dim=-1) == labels).sum())
        total += labels.numel()
    module.train(was_training)
    return correct / total


def zero_share(module: nn.Module, selected: dict[str, int]) -> float:
    """Zero share of the ``selected`` weights (name -> size as built); what is gone or shrunk counts as zero."""
    params = dict(module.named_parameters())
    zeros = 0
    for name, numel in selected.items():
        weight = params.get(name)
        zeros += numel - (weight.numel() if weight is not None else 0)
        zeros += int((weight == 0).sum()) if weight is not None else 0
    return zeros / sum(selected.values())


def selected_weights(module: nn.Module, pruner: Any) -> dict[str, int]:
    """The weights an unstructured pruner's selectors pick in the model as built (its sparsity is a share of these)."""
    args = (pruner.include_types, pruner.include_names, pruner.exclude_names, pruner.prune_head, pruner.include_biases)
    try:
        names = select_parameters(module, *args)
    except ValueError:  # selects nothing: the pruner refuses that itself, at fit start
        return {}
    return {name: module.get_parameter(name).numel() for name in names}


def summary(out: Path) -> dict[str, Any]:
    path = out / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def measure(column: Column, done: Cell, callbacks: list[pl.Callback], out: Path) -> dict[str, Any]:
    """What the cell reached, measured on the trained model (and, for latency, read from its final check)."""
    figures: dict[str, Any] = {
        "acc": round(evaluate(done.module, done.val_loader), 4),
        "params_removed": round(1.0 - count_parameters(done.module) / done.params_before, 4),
        "fit_s": round(done.seconds, 1),
    }
    if column.target == "sparsity":
        figures["sparsity"] = round(zero_share(done.module, done.selected), 4)
        figures["target"] = round(float(_target_sparsity(callbacks[0])), 4)
    if column.target == "budget":
        final = summary(out).get("latency_budget", {})  # its final side-by-side check against the budget
        figures["latency_vs_dense"] = round(final.get("ratio_to_dense", float("nan")), 3)
        figures["met_budget"] = bool(final.get("met_budget", False))
    if column.target == "measured":
        figures["measurements"] = [record["when"] for record in callbacks[0].records]
    return figures


def _target_sparsity(pruner: Any) -> float:
    """What the schedule ends at: APP's last megabatch, the others' target."""
    return pruner.sparsities[-1] if hasattr(pruner, "sparsities") else pruner.target_sparsity
