"""How the accuracy gate measures: the metric, its pooling over batches and ranks, and the chance level.

The gate (:mod:`~lightning_prune.callbacks.ice.gate`) decides from accuracies; this module is where they come
from, kept apart so the decision reads on its own: which metric scores a batch (:func:`batch_accuracy` or the
user's ``metric_fn``, resolved by :func:`resolve_metric`), how its sums are pooled exactly over batches and
DDP ranks (:func:`pooled_score`), and the accuracy at which a net counts as untrained (:func:`chance_level`),
which the first-step hold (:mod:`~lightning_prune.callbacks.ice.hold`) waits past and the gate refuses as ``A0``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_prune.callbacks._trainer import eval_mode
from lightning_prune.core import model_io

CHANCE_MARGIN = 0.05  # A0 below 1/classes + this (at most half of 1/classes) is an untrained net's
MetricFn = Callable[[pl.LightningModule, Any], tuple[Any, Any]]


def batch_accuracy(pl_module: pl.LightningModule, batch: Any) -> tuple[Tensor, int]:
    """The default metric: ``(correct, total)`` of a batch, read as every callback reads it (``core/model_io``).

    ``(x, y)`` tuples, Hugging Face dict batches with ``labels``, outputs with ``.logits`` and the module's
    ``split_batch`` hook all work. A custom ``metric_fn`` has the same signature and returns a score summed
    over the batch and the number of samples it covers, so batches and ranks can be pooled exactly.
    """
    return model_io.correct_and_total(pl_module, batch)


def resolve_metric(metric_fn: str | MetricFn | None) -> MetricFn:
    """``metric_fn`` as a callable: the default accuracy, the callable itself, or an imported dotted path.

    Raises:
        ValueError: when a dotted path cannot be imported or does not name a callable.
        TypeError: when ``metric_fn`` is of another type.
    """
    if metric_fn is None:
        return batch_accuracy
    if callable(metric_fn):
        return metric_fn
    if not isinstance(metric_fn, str):
        raise TypeError(f"metric_fn must be None, a callable or a dotted import path, got {type(metric_fn).__name__}")
    module_name, _, attr = metric_fn.rpartition(".")
    try:
        resolved = getattr(importlib.import_module(module_name), attr) if module_name else None
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"metric_fn={metric_fn!r} cannot be imported ({err}); give the dotted import path of a callable "
            "(pl_module, batch) -> (score_sum, count), e.g. 'my_pkg.metrics.f1'"
        ) from None
    if not callable(resolved):
        raise ValueError(f"metric_fn={metric_fn!r} must be the dotted path of a callable, e.g. 'my_pkg.metrics.f1'")
    return resolved


def check_first_batch(
    trainer: pl.Trainer, pl_module: pl.LightningModule, loader_of: Callable[[pl.Trainer], Any], default_metric: bool
) -> None:
    """Fetch the first validation batch (and score it, with the default metric), so bad data fails at fit start.

    Module and data are set up and no optimizer step has run: an unusable batch is caught now, not at the first
    pruning step. ``loader_of(trainer)`` gives the validation loader (built here on first use).

    Raises:
        ValueError: when the data yields no batch, or the default metric cannot score it (naming the batch's
            layout, the reason, and the two ways to make it scorable).
    """
    with torch.random.fork_rng(devices=[]):  # creating an iterator draws a seed: keep the run's stream as it was
        first = next(iter(loader_of(trainer)), None)
    if first is None:
        raise ValueError("AccuracyGate: the validation data yields no batches; it needs at least one to measure on")
    if not default_metric:
        return
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad(), eval_mode(pl_module):
            batch_accuracy(pl_module, trainer.strategy.batch_to_device(first))
    except (ValueError, TypeError, KeyError, RuntimeError) as err:
        raise ValueError(
            f"AccuracyGate with metric_fn=None cannot score the first validation batch "
            f"({model_io.describe(first)}): {err}. Define split_batch(self, batch) -> (inputs, targets) on "
            "your LightningModule, or give metric_fn=<a callable (pl_module, batch) -> (score_sum, count), "
            "or its "
            "dotted import path>"
        ) from None


def pooled_score(
    trainer: pl.Trainer, pl_module: pl.LightningModule, loader: Iterable[Any], metric: MetricFn, val_batches: int | None
) -> float:
    """``metric`` on the first ``val_batches`` batches of ``loader``, every rank scoring its share, summed over ranks.

    The random stream is forked: each new loader iterator draws a seed from it, and that draw shifted every
    later training batch, so a gate that skipped nothing still trained on other data than the pruner alone.

    Raises:
        ValueError: when those batches hold no sample.
    """
    with torch.random.fork_rng(devices=[]), torch.no_grad(), eval_mode(pl_module):
        totals = torch.zeros(2, dtype=torch.float64, device=pl_module.device)
        for index, batch in enumerate(loader):
            if val_batches is not None and index >= val_batches:
                break
            if index % trainer.world_size != trainer.global_rank:
                continue
            score, count = metric(pl_module, trainer.strategy.batch_to_device(batch))
            totals += torch.tensor([float(score), float(count)], dtype=torch.float64, device=totals.device)
        totals = trainer.strategy.reduce(totals, reduce_op="sum")
    if totals[1] <= 0:
        raise ValueError("AccuracyGate: the validation data yielded no samples to measure accuracy on")
    return float(totals[0] / totals[1])


def chance_level(trainer: pl.Trainer, pl_module: pl.LightningModule, loader: Iterable[Any]) -> tuple[int, float]:
    """``(classes, accuracy at or below which the net counts as untrained)`` from the logits' width."""
    with torch.random.fork_rng(devices=[]), torch.no_grad(), eval_mode(pl_module):  # keep the run's RNG stream
        batch = trainer.strategy.batch_to_device(next(iter(loader)))
        inputs, _ = model_io.split_batch(pl_module, batch)
        classes = model_io.forward_logits(pl_module, inputs).shape[-1]
    chance = 1.0 / classes
    return classes, (chance + min(CHANCE_MARGIN, chance / 2) if classes >= 2 else -1.0)


def refuse_chance_level(
    trainer: pl.Trainer, pl_module: pl.LightningModule, loader: Iterable[Any], accuracy: float, pruner: Any
) -> None:
    """An untrained net's A0 makes every drop look small and skips every fine-tune: refuse it, before step 1.

    Raises:
        ValueError: when ``accuracy`` is at chance level, naming it, the class count and how to train first.
    """
    classes, untrained = chance_level(trainer, pl_module, loader)
    chance = 1.0 / classes
    if accuracy < untrained:
        raise ValueError(
            f"AccuracyGate: the reference accuracy A0 = {accuracy:.3f}, measured before the first pruning step, is "
            f"at chance level (1/{classes} classes = {chance:.3f}): the network is untrained, so every step's drop "
            "would look small and every fine-tune would be skipped. Train it first (warmup_epochs=N on "
            f"{type(pruner).__name__}) or start from trained weights (load them before trainer.fit)."
        )
