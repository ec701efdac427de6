"""The prune -> fine-tune loop shared by step-wise pruners (a thin private base, as STYLE allows one)."""

from __future__ import annotations

import time

import lightning.pytorch as pl

from lightning_prune.callbacks.protocol import PruningCallback, PruningListener, pruning_listeners


class StepwisePruning(PruningCallback):
    """Runs pruning steps at epoch starts with fine-tunes between them; subclasses say what a step does.

    A step is due at the start of an epoch: first after ``warmup_epochs`` dense epochs, then every
    ``finetune_epochs`` epochs. Steps run at epoch *start* because ``ModelCheckpoint`` saves at the end
    of validation, before ``on_train_epoch_end``: a step taken at epoch end would be missing from that
    epoch's checkpoint, while one taken at epoch start is simply redone by a resumed run. After each
    step every :class:`PruningListener` may skip the fine-tune (the next step then runs at once); the
    run is done when the last step's fine-tune ends, and training stops if ``stop_when_done``.

    Subclasses set ``pruning_state``, ``finetune_epochs``, ``warmup_epochs``, ``stop_when_done`` and
    implement :meth:`_prune_step` and :meth:`_log_state`.
    """

    finetune_epochs: int
    warmup_epochs: int
    stop_when_done: bool
    _listeners: list[PruningListener] = []
    _epoch_started: float = 0.0

    def _prune_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        """Apply one step; return False to postpone it (the loop retries after the next fine-tune)."""
        raise NotImplementedError

    def _log_state(self, pl_module: pl.LightningModule) -> None:
        raise NotImplementedError

    def _ready(self) -> bool:
        """Whether steps may run at all (e.g. a dense reference has been measured)."""
        return True

    def _more_steps(self) -> bool:
        return self.pruning_state.step < self.pruning_state.num_steps

    def _collect_listeners(self, trainer: pl.Trainer) -> None:
        self._listeners = pruning_listeners(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._step_due(trainer.current_epoch):
            self._run_steps(trainer, pl_module)
        self._epoch_started = time.perf_counter()

    def _step_due(self, epoch: int) -> bool:
        state = self.pruning_state
        if state.phase == "done" or not self._ready() or not self._more_steps():
            return False
        if state.step == 0:
            return epoch >= self.warmup_epochs
        return epoch - state.last_step_epoch >= self.finetune_epochs

    def _run_steps(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Prune; while listeners skip the fine-tune (or there is none), prune again."""
        state = self.pruning_state
        while self._more_steps():
            for listener in self._listeners:
                listener.on_prune_step_start(trainer, pl_module, state)
            if not self._prune_step(trainer, pl_module):
                return
            for listener in self._listeners:
                listener.on_prune_step_end(trainer, pl_module, state)
            if self.finetune_epochs == 0:
                state.history[-1]["finetune"] = "none"
                continue
            skips = [listener.skip_finetune(trainer, pl_module, state) for listener in self._listeners]
            state.history[-1]["finetune"] = "skipped" if any(skips) else "ran"
            if not any(skips):
                state.phase = "finetune"
                for listener in self._listeners:
                    listener.on_finetune_start(trainer, pl_module, state)
                return
        self._finish(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = self.pruning_state
        phase = "finetune" if state.phase in ("finetune", "done") and state.step > 0 else "dense"
        state.time_s[phase] += time.perf_counter() - self._epoch_started
        self._log_state(pl_module)
        epochs_into_finetune = trainer.current_epoch - state.last_step_epoch + 1
        if state.phase == "finetune" and epochs_into_finetune == self.finetune_epochs:
            for listener in self._listeners:
                listener.on_finetune_end(trainer, pl_module, state)
            if not self._more_steps():
                self._finish(trainer)

    def _finish(self, trainer: pl.Trainer) -> None:
        self.pruning_state.phase = "done"
        if self.stop_when_done:
            trainer.should_stop = True
