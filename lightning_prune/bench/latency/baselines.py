"""The comparison arms of the latency benchmark: torch-pruning's own pruners, each matched to ours' latency.

- ``uniform``: magnitude (L2) importance, the same channel ratio in every group (the original baseline);
- ``global_magnitude``: magnitude importance ranked across all groups (a non-uniform cut, the same ratio of
  all channels overall, no group cut past :func:`highest_ratio`);
- ``global_taylor``: first-order Taylor importance (|weight x gradient|, the gradient of the cross-entropy on one
  fixed training batch), ranked across all groups.

Every arm prunes once, at the start of its training, at the ratio :func:`matching.bisect_ratio` found for it
(probes are one-shot cuts of the same dense weights with the same batch, so the trained arm has exactly the
architecture of its chosen probe), then trains as many epochs as ours. The classifier head is never pruned.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import Tensor, nn

from lightning_prune.callbacks._trainer import rebuild_after_shrink
from lightning_prune.core.selection import head_module_name

BASELINES = ("uniform", "global_magnitude", "global_taylor")


def highest_ratio(model: nn.Module, round_to: int) -> float:
    """The largest per-group ratio that leaves the narrowest conv ``round_to`` channels.

    Beyond it torch-pruning does not cut that group at all (rounding would empty it), so latency *rises* with the
    ratio there (measured: a ResNet of widths 16/32/64 at 0.8 keeps its 16-channel convs whole).
    """
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    return 1.0 - round_to / min(widths) if widths else 1.0


def make_pruner(model: nn.Module, kind: str, ratio: float, round_to: int, example: Tensor) -> tp.pruner.MetaPruner:
    """torch-pruning's pruner for arm ``kind`` at ``ratio``, the head untouched.

    No group is cut past :func:`highest_ratio`, so a global ranking cannot empty a layer either.
    """
    if kind not in BASELINES:
        raise ValueError(f"baseline must be one of {list(BASELINES)}, got {kind!r}")
    importance = tp.importance.TaylorImportance() if kind == "global_taylor" else tp.importance.MagnitudeImportance(p=2)
    return tp.pruner.MetaPruner(
        model,
        example,
        importance=importance,
        global_pruning=kind != "uniform",
        pruning_ratio=ratio,
        max_pruning_ratio=highest_ratio(model, round_to),
        ignored_layers=[model.get_submodule(head_module_name(model))],
        round_to=round_to,
    )


def prune_once(model: nn.Module, kind: str, ratio: float, round_to: int, batch: tuple[Tensor, Tensor]) -> None:
    """Cut ``model`` in place at ``ratio`` with arm ``kind``'s importance; Taylor's gradient comes from ``batch``."""
    was_training = model.training
    model.eval()  # BatchNorm statistics stay as trained; the gradient is that of the deployed function
    try:
        device = next(model.parameters()).device
        x, y = (t.to(device) for t in batch)
        pruner = make_pruner(model, kind, ratio, round_to, x[:1])
        if kind == "global_taylor":
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
        pruner.step()
        model.zero_grad(set_to_none=True)
    finally:
        model.train(was_training)


def probe(dense: nn.Module, kind: str, round_to: int, batch: tuple[Tensor, Tensor]) -> Callable[[float], nn.Module]:
    """``ratio -> a pruned copy of dense`` for arm ``kind``: what the bisection times against ours."""

    def pruned(ratio: float) -> nn.Module:
        model = copy.deepcopy(dense)
        prune_once(model, kind, ratio, round_to, batch)
        return model.eval()

    return pruned


class OneShotPruning(pl.Callback):
    """A baseline arm: one cut at the first epoch's start (the matched ratio), the optimizer rebuilt after it."""

    def __init__(self, kind: str, ratio: float, round_to: int, batch: tuple[Tensor, Tensor]) -> None:
        self.kind, self.ratio, self.round_to, self.batch = kind, ratio, round_to, batch
        self.done = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.done:
            with torch.enable_grad():
                prune_once(pl_module, self.kind, self.ratio, self.round_to, self.batch)
            rebuild_after_shrink(trainer)
            self.done = True
