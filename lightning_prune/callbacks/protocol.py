"""How cooperating callbacks talk to a pruner without touching its internals.

ICE-Pruning's gate, layer freezing and pruning-aware LR all act *around* pruning steps and
fine-tunes. Rather than each one re-deriving when those happen, a pruner (:class:`PruningCallback`)
owns a :class:`PruningState` and calls every :class:`PruningListener` in ``trainer.callbacks`` at
five moments; listeners find the pruner with :func:`find_pruner` (as ``trainer.checkpoint_callback``
finds ``ModelCheckpoint``) and fail in ``setup`` when there is none.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

PHASES = ("dense", "finetune", "done")
TIMED = ("dense", "prune", "evaluate", "finetune")


@dataclass
class PruningState:
    """Progress of a pruning run: plain values only, so it checkpoints with ``weights_only=True``.

    Attributes:
        step: pruning steps applied so far.
        num_steps: pruning steps planned.
        sparsity: fraction of the selected weights that are zero or physically removed.
        target_sparsity: the sparsity the run ends at (``None`` when a structured run prunes every block).
        phase: ``"dense"`` before the first step, ``"finetune"`` between steps, ``"done"`` at the end.
        last_step_epoch: epoch at whose start the latest step ran (-1 before any).
        history: one record per step (sparsity, fine-tune ran/skipped, and what listeners add).
        time_s: wall seconds spent per phase: dense training, pruning, evaluating, fine-tuning.
    """

    step: int = 0
    num_steps: int = 0
    sparsity: float = 0.0
    target_sparsity: float | None = None
    phase: str = "dense"
    last_step_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)
    time_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMED, 0.0))

    @property
    def remaining_fraction(self) -> float:
        """Fraction of the selected weights still present (the ``x`` of ICE's LR schedule)."""
        return 1.0 - self.sparsity

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the wall time of the block to ``time_s[phase]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.time_s[phase] = self.time_s.get(phase, 0.0) + time.perf_counter() - start

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruningState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class PruningListener:
    """Mix-in for callbacks that act around a pruner's steps; every method is optional.

    Before the first step is due the pruner asks :meth:`ready_to_prune` at each epoch start (all must say
    ``True``; e.g. the accuracy gate holds a from-scratch run until accuracy levels off). Then it calls, in
    order: :meth:`on_prune_step_start` before each step (the model is still
    unpruned for that step), :meth:`on_prune_step_end` once the step is applied, :meth:`skip_finetune`
    (any ``True`` skips the fine-tune and moves on to the next step at once), then
    :meth:`on_finetune_start` / :meth:`on_finetune_end` around the fine-tune epochs that run. All ranks
    call these at the same points with identical state.
    """

    # False for a listener that only observes (LatencyBenchmark also measures at fit start and end), so a pruner
    # without steps to report has nothing to refuse it for.
    acts_on_steps: bool = True

    def ready_to_prune(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: PruningState) -> bool:
        """Return ``False`` to hold the first pruning step (asked at each epoch start it is due)."""
        return True

    def on_prune_step_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: PruningState) -> None:
        """Called before a pruning step."""

    def on_prune_step_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: PruningState) -> None:
        """Called once a pruning step is applied (``state.history[-1]`` describes it)."""

    def skip_finetune(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: PruningState) -> bool:
        """Return ``True`` to skip the fine-tune after the step just applied."""
        return False

    def on_finetune_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: PruningState) -> None:
        """Called at the start of the first epoch of a fine-tune."""

    def on_finetune_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: PruningState) -> None:
        """Called at the end of the last epoch of a fine-tune."""


class PruningCallback(Callback):
    """Base class of callbacks that own a pruning run and expose its :class:`PruningState`."""

    pruning_state: PruningState
    # Whether this pruner calls the PruningListener hooks; a listener beside one that does not would do nothing.
    notifies_listeners: bool = True

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Refuse a checkpoint whose pruning state belongs to another pruner or configuration.

        Lightning would only warn and start this pruner afresh on an already pruned model. A checkpoint
        with no pruning state at all (a dense run continued with pruning) is fine.

        Raises:
            ValueError: naming the checkpoint, this callback's state key and the pruning states it holds.
        """
        states = [str(key) for key in checkpoint.get("callbacks") or {}]
        pruners = {cls.__name__ for cls in _subclasses(PruningCallback)}
        pruning_states = [key for key in states if key.split("{")[0] in pruners]
        if pruning_states and self.state_key not in states:
            raise ValueError(
                f"checkpoint {trainer.ckpt_path} holds no state for {self.state_key}; its pruning state is "
                f"{pruning_states}. It was written by a different pruning configuration: resume with the same "
                "callback arguments, or load only the weights into your model to start a new pruning run."
            )


def _subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


def pruning_listeners(trainer: pl.Trainer) -> list[PruningListener]:
    """The Trainer's callbacks that listen to a pruner, in the order the user gave them."""
    return [cb for cb in trainer.callbacks if isinstance(cb, PruningListener)]


def find_pruner(trainer: pl.Trainer, requester: str) -> PruningCallback:
    """The one pruner among ``trainer.callbacks``.

    Raises:
        ValueError: naming ``requester`` when there is no pruner, more than one, or one that never calls
            its listeners.
    """
    pruners = [cb for cb in trainer.callbacks if isinstance(cb, PruningCallback)]
    if len(pruners) != 1:
        found = [type(cb).__name__ for cb in pruners] or "none"
        raise ValueError(
            f"{requester} works around a pruning callback and needs exactly one in Trainer(callbacks=...), "
            f"e.g. IterativePruning; found {found}"
        )
    if not pruners[0].notifies_listeners:
        raise ValueError(
            f"{requester} cannot work with {type(pruners[0]).__name__}: that pruner has no pruning steps with "
            "fine-tunes to gate, freeze or set a rate for; use a step-wise pruner such as IterativePruning"
        )
    return pruners[0]
