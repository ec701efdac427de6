"""ICE-Pruning's pruning-aware learning rate: each fine-tune's LR follows how much of the network is left."""

from __future__ import annotations

import logging
import sys
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from torch.optim import Optimizer

from lightning_prune.callbacks._trainer import info, output_dir
from lightning_prune.callbacks.protocol import PruningListener, PruningState, find_pruner
from lightning_prune.core.export import write_summary
from lightning_prune.core.schedules import pruning_aware_lr
from lightning_prune.core.validate import check_output_dir, is_number

log = logging.getLogger(__name__)
# A scheduler whose frequency is this large is never stepped by Lightning: that is how it is paused.
_PAUSED = sys.maxsize
PAPER_DELTA_RATIO = 0.7  # the paper's delta / base_lr: 7e-4 of 1e-3
# Capping your own rate, the default cut once sparser than p: at most 0.7 of your schedule's starting rate (the
# paper's ratio, a 0.3 cap, cost 2 pt on a from-scratch depthwise CNN: docs/ice.md, "Training from scratch").
SCALE_DELTA = 0.3


class PruningAwareLR(Callback, PruningListener):
    """Set every fine-tune's learning rate from the remaining fraction of the weights.

    ICE-Pruning (Hu, Henderson, Cano, arXiv 2505.07411), the pruning-aware LR:
    ``LR(x) = base_lr - delta / (1 + (x / (2(1 - p) - x)) ** beta)`` with ``x`` the pruner's
    ``remaining_fraction`` (:func:`~lightning_prune.core.schedules.pruning_aware_lr`): about
    ``base_lr`` while more than ``1 - p`` of the weights remain, ``base_lr - delta`` below.

    **Two modes.** By default (``base_lr=None``) it *caps your own rate*: the paper's ``LR(x)`` taken with
    your schedule's starting rate as ``base_lr`` (each param group's ``initial_lr``, which torch's schedulers
    set; the group's rate without a scheduler), so during a fine-tune every optimizer step uses
    ``min(your current rate, LR(x) * starting rate)``, ``LR(x)`` of base 1 (``1`` while the network is dense,
    ``1 - delta`` once it is sparser than ``p``). A constant rate is cut as in the paper; a decaying
    schedule (cosine, warm-up then decay) already below the cap is left as it is: a from-scratch run's
    fine-tunes come late in its schedule, and cutting a rate that has already decayed leaves the
    fine-tunes too little to recover the steps (2 to 3 pt on the zoo's depthwise CNN and ConvNeXt). Your
    schedulers keep stepping as if nothing happened (the rate is capped just before ``optimizer.step`` and
    put back just after, through torch's optimizer step hooks), and a learning-rate monitor shows your
    schedule's rate. With a number for
    ``base_lr`` (the paper pipelines, the ICE recipe) it *replaces* the rate: ``LR(x)`` is set at the
    start of each fine-tune on every param group of every optimizer (after a structured step has
    rebuilt them through ``configure_optimizers``); the schedulers ``configure_optimizers`` returns are
    paused while a fine-tune runs, then resume where they stopped, the rates they had set put back.
    Dense warm-up epochs and epochs after the last fine-tune follow your schedulers unchanged.

    Requires from your LightningModule: nothing beyond a ``configure_optimizers``.

    Args:
        base_lr: the rate at the start of pruning, > 0; ``None``: cap your schedule's rate instead.
        delta: how far the rate drops: with ``base_lr``, an absolute rate in [0, base_lr) (default
            ``0.7 * base_lr``, the paper's 7e-4 of 1e-3); without, the fraction of your starting rate taken off
            the cap, in [0, 1) (default ``SCALE_DELTA`` = 0.3).
        p: pruned fraction around which the rate steps down, in [0, 0.5).
        beta: steepness of the step, > 0 (the paper uses 40-60).
        export_dir: where ``summary.json`` goes (default: the Trainer's root dir).

    Raises:
        ValueError: for arguments outside those ranges, and in ``setup`` when there is no pruner.

    Example::

        >>> import lightning.pytorch as pl
        >>> from lightning_prune import IterativePruning, PruningAwareLR
        >>> from lightning_prune.data import DigitsDataModule
        >>> from lightning_prune.models import Classifier, SmallCNN
        >>> pruning = IterativePruning(target_sparsity=0.5, step_ratio=0.3, warmup_epochs=1, export_dir=None)
        >>> lr = PruningAwareLR(base_lr=0.01, delta=0.005, p=0.15, beta=50)
        >>> model = Classifier(SmallCNN((1, 8, 8), 10, widths=(8, 8)), 10, (1, 8, 8))
        >>> trainer = pl.Trainer(max_epochs=3, callbacks=[pruning, lr], logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False, default_root_dir="/tmp/lp-doc")
        >>> trainer.fit(model, datamodule=DigitsDataModule(batch_size=128))
        >>> [round(r["lr"], 4) for r in pruning.pruning_state.history]  # x = 0.7, then 0.5
        [0.005, 0.005]
    """

    def __init__(
        self,
        base_lr: float | None = None,
        delta: float | None = None,
        p: float = 0.15,
        beta: float = 50.0,
        export_dir: str | None = None,
    ) -> None:
        if delta is None:  # the paper's ratio (7e-4 of 1e-3) on its rate; a milder cut of a from-scratch user's own
            delta = PAPER_DELTA_RATIO * base_lr if is_number(base_lr) else SCALE_DELTA
        for name, value in (("base_lr", base_lr), ("delta", delta), ("p", p), ("beta", beta)):
            if not is_number(value) and not (name == "base_lr" and value is None):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if base_lr is not None and not base_lr > 0:
            raise ValueError(f"base_lr must be > 0 (or None to scale your own rate), got {base_lr}")
        if not 0 <= delta < (base_lr or 1.0):
            bound = f"base_lr={base_lr}" if base_lr is not None else "1 (a fraction of your rate: base_lr=None)"
            raise ValueError(f"delta must be in [0, {bound}) so the rate stays positive, got {delta}")
        if not 0 <= p < 0.5:
            raise ValueError(f"p must be in [0, 0.5) (pruned fraction where the rate steps down), got {p}")
        if not beta > 0:
            raise ValueError(f"beta must be > 0 (steepness of the step), got {beta}")
        self.base_lr, self.delta, self.p, self.beta = base_lr, delta, p, beta
        self.export_dir = check_output_dir("export_dir", export_dir)
        self.history: list[dict[str, float]] = []
        self._in_finetune = False
        self._paused: list[tuple[Any, int]] = []
        self._saved_lrs: list[tuple[Optimizer, list[float]]] = []
        self._restored_lrs: list[list[float]] = []
        self._scaling = CappedSteps()

    @property
    def state_key(self) -> str:
        return self._generate_state_key(base_lr=self.base_lr, delta=self.delta, p=self.p, beta=self.beta)

    def lr_at(self, remaining_fraction: float) -> float:
        """The rate for a network with ``remaining_fraction`` of its weights (``base_lr=None``: the cap's factor)."""
        return pruning_aware_lr(remaining_fraction, self.base_lr or 1.0, self.delta, self.p, self.beta)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            find_pruner(trainer, "PruningAwareLR")

    # ---------------------------------------------------------------- pruner events

    def on_prune_step_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: PruningState) -> None:
        self._in_finetune = False  # a new step ends the previous fine-tune

    def on_finetune_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: PruningState) -> None:
        rate = self.lr_at(state.remaining_fraction)
        record = {"step": state.step, "remaining_fraction": state.remaining_fraction}
        if self.base_lr is None:  # cap the user's rate: record the factor and the rate it gives now
            self._scaling.attach(trainer.optimizers, rate)
            record.update(lr_scale=rate, lr=capped(trainer.optimizers[0].param_groups[0], rate))
        else:
            self._take_over(trainer, rate)
            record["lr"] = rate
        self._in_finetune = True
        state.history[-1].update({key: record[key] for key in ("lr", "lr_scale") if key in record})
        self.history.append(record)
        info(log, f"pruning-aware LR: remaining fraction {state.remaining_fraction:.3f} -> lr {record['lr']:.3g}")

    def on_finetune_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: PruningState) -> None:
        # Schedulers resume at the next epoch start: Lightning may still step plateau schedulers after this hook.
        self._in_finetune = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Resumed inside a fine-tune: the optimizer state brought our rate back, not the scheduler pause.
        if (
            self._in_finetune
            and self.history
            and find_pruner(trainer, "PruningAwareLR").pruning_state.phase == "finetune"
        ):
            if self.base_lr is None:
                self._scaling.attach(trainer.optimizers, self.history[-1]["lr_scale"])
            else:
                self._take_over(trainer, self.history[-1]["lr"])

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._in_finetune:
            self._give_back()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._give_back()

    # ---------------------------------------------------------------- taking over from the user's schedulers

    def _take_over(self, trainer: pl.Trainer, lr: float) -> None:
        """Pause every scheduler (remembering its frequency) and set ``lr`` on every param group."""
        for config in trainer.lr_scheduler_configs:
            if config.frequency != _PAUSED:
                self._paused.append((config, config.frequency))
                config.frequency = _PAUSED
        # Keep the rates the user's schedule had set, for the optimizers in use (a structured step rebuilds them).
        saved = {id(opt): lrs for opt, lrs in self._saved_lrs}
        self._saved_lrs = []
        for index, optimizer in enumerate(trainer.optimizers):
            lrs = saved.get(id(optimizer)) or _pop(self._restored_lrs, index)
            self._saved_lrs.append((optimizer, lrs or [group["lr"] for group in optimizer.param_groups]))
            for group in optimizer.param_groups:
                group["lr"] = lr
        self._restored_lrs = []

    def _give_back(self) -> None:
        """Resume the paused schedulers and restore the rates they had set; stop scaling the user's rate."""
        self._scaling.detach()
        for config, frequency in self._paused:
            config.frequency = frequency
        for optimizer, lrs in self._saved_lrs:
            for group, lr in zip(optimizer.param_groups, lrs):
                group["lr"] = lr
        self._paused, self._saved_lrs = [], []

    # ---------------------------------------------------------------- logging, summary, state

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.history:
            pl_module.log("ice/lr", float(self.history[-1]["lr"]), on_step=False, on_epoch=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        write_summary(
            output_dir(trainer, self.export_dir) / "summary.json",
            "ice_lr",
            {
                "mode": "replace" if self.base_lr else "scale",
                **{"base_lr": self.base_lr, "delta": self.delta, "p": self.p, "beta": self.beta},
                "finetunes": self.history,
            },
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [dict(h) for h in self.history],
            "in_finetune": self._in_finetune,
            "saved_lrs": [list(lrs) for _, lrs in self._saved_lrs],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(h) for h in state_dict.get("history", self.history)]
        self._in_finetune = bool(state_dict.get("in_finetune", self._in_finetune))
        self._restored_lrs = [list(lrs) for lrs in state_dict.get("saved_lrs", [])]


def capped(group: dict[str, Any], factor: float) -> float:
    """A param group's rate capped at ``factor`` times its starting rate (its scheduler's ``initial_lr``)."""
    return min(group["lr"], factor * group.get("initial_lr", group["lr"]))


class CappedSteps:
    """Cap every param group's rate at ``factor`` times its starting rate for each ``optimizer.step`` only.

    Torch's step pre/post hooks run right around the update, before Lightning steps the schedulers, so
    a scheduler (chainable or closed-form) only ever sees the rates it set itself.
    """

    def __init__(self) -> None:
        self._handles: list[Any] = []
        self._saved: dict[int, list[Any]] = {}

    def attach(self, optimizers: list[Optimizer], factor: float) -> None:
        self.detach()
        for optimizer in optimizers:
            self._handles.append(optimizer.register_step_pre_hook(lambda opt, *_: self._scale(opt, factor)))
            self._handles.append(optimizer.register_step_post_hook(lambda opt, *_: self._restore(opt)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._saved = [], {}

    def _scale(self, optimizer: Optimizer, factor: float) -> None:
        self._saved[id(optimizer)] = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] = capped(group, factor)

    def _restore(self, optimizer: Optimizer) -> None:
        for group, lr in zip(optimizer.param_groups, self._saved.pop(id(optimizer), [])):
            group["lr"] = lr


def _pop(items: list[list[float]], index: int) -> list[float] | None:
    return items[index] if index < len(items) else None
