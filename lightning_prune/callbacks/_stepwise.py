"""The prune -> fine-tune loop of step-wise pruners and their end-of-run contract (one thin private base)."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning.pytorch as pl

from lightning_prune.callbacks import _contract as contract
from lightning_prune.callbacks._contract import refuse_nonfinite
from lightning_prune.callbacks._trainer import broadcast, final_metrics, info, output_dir
from lightning_prune.callbacks.protocol import PruningCallback, PruningListener, PruningState, pruning_listeners
from lightning_prune.core.export import export_pruned, parameter_counts, write_summary
from lightning_prune.core.selection import select_parameters, validate_selector
from lightning_prune.core.validate import check_choice, check_fraction, check_int, check_output_dir

log = logging.getLogger(__name__)
NONFINITE = ("raise", "skip")


class StepwisePruning(PruningCallback):
    """Runs pruning steps at epoch starts with fine-tunes between them; subclasses say what a step does.

    A step is due at the start of an epoch: first after ``warmup_epochs`` dense epochs, then every
    ``finetune_epochs`` epochs. Steps run at epoch *start* because ``ModelCheckpoint`` saves at the end
    of validation, before ``on_train_epoch_end``: a step taken at epoch end would be missing from that
    epoch's checkpoint, while one taken at epoch start is simply redone by a resumed run. After each
    step every :class:`PruningListener` may skip the fine-tune (the next step then runs at once); the
    run is done when the last step's fine-tune ends; training stops then if ``stop_when_done``, else it goes
    on to ``max_epochs`` with masks held. A second ``fit`` on the same model continues: masks, steps,
    architecture kept, a cut fine-tune goes on, a done schedule trains on with masks held (a warm-up
    restarts). Before a step it warns of an untrained start and an unlogged ``monitor`` (``check_step_start``).

    Subclasses call :meth:`_begin_fit` and :meth:`_check_budget` in ``setup``, set ``pruning_state``,
    ``finetune_epochs``, ``warmup_epochs``, ``stop_when_done``, implement :meth:`_prune_step` and
    :meth:`_log_state`, or take the weight-selecting pruner's parts below (plan on rank 0, apply, log,
    verify, export, checkpoint) and implement ``_plan(trainer, pl_module) -> plan`` (rank 0: what the step
    removes; ``FloatingPointError`` on non-finite scores), ``_apply(trainer, pl_module, plan, record)``
    (every rank: carry it out, adding to the history ``record``), ``_current_sparsity(pl_module)``,
    ``_layer_sparsity(pl_module)`` and :meth:`_summary_fields` (as IterativePruning and BlockPruning do).
    """

    finetune_epochs: int
    warmup_epochs: int
    stop_when_done: bool
    _listeners: list[PruningListener] = []
    _epoch_started: float = 0.0
    _next_epoch: int | None = None  # the Trainer epoch at which the state goes on: a later fit rebases on it
    _validated = _monitor_warned = False  # validation has run (its metrics are logged); the monitor warning given

    def _begin_fit(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        """First in ``setup``: one pruner per Trainer, the listeners; whether this fit continues an earlier one."""
        contract.refuse_other_pruners(trainer, self)
        if self.pruning_state.step == 0:
            self._fitted_module = None  # nothing pruned yet: the instance may start afresh on any model
        continuing = contract.check_refit(self, pl_module)
        if continuing and self._next_epoch is not None:  # its epochs restart: rebase the step epochs
            contract.count_epochs_on(self.pruning_state, self._next_epoch, trainer)
        self._next_epoch = trainer.current_epoch
        self._collect_listeners(trainer)
        return continuing

    def _check_budget(self, trainer: pl.Trainer) -> None:
        """In ``setup``: refuse a Trainer that cannot run what is left of the schedule (or yields no batches)."""
        state, finetune = self.pruning_state, self.finetune_epochs
        steps_left = state.num_steps - state.step
        needed, what = 0, "its schedule finished in an earlier fit"
        if state.phase != "done" and state.step == 0:  # the warm-up restarts with each fit until the first step
            needed = self.warmup_epochs + max(1, steps_left * finetune)
            what = f"warmup_epochs={self.warmup_epochs} + {steps_left} steps x finetune_epochs={finetune}"
        elif state.phase != "done":
            rest = max(0, state.last_step_epoch + finetune - trainer.current_epoch)
            needed = max(1, rest + steps_left * finetune)
            what = f"{rest} fine-tune epochs left + {steps_left} more steps x finetune_epochs={finetune}"
        contract.check_training_budget(trainer, type(self).__name__, needed, what)

    def _ready(self) -> bool:
        """Whether steps may run at all (e.g. a dense reference has been measured)."""
        return True

    def _more_steps(self) -> bool:
        """Steps are left: fewer than planned, and the target sparsity (if any) not reached."""
        state = self.pruning_state
        target_reached = state.target_sparsity is not None and state.sparsity >= state.target_sparsity - 1e-6
        return state.step < state.num_steps and not target_reached

    def _collect_listeners(self, trainer: pl.Trainer) -> None:
        self._listeners = pruning_listeners(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._next_epoch = trainer.current_epoch  # a checkpoint restored in this fit set the epochs
        if self._step_due(trainer.current_epoch) and self._listeners_ready(trainer, pl_module):
            contract.check_step_start(trainer, self)
            self._run_steps(trainer, pl_module)
        self._epoch_started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validated = self._validated or not trainer.sanity_checking  # its metrics are logged from now on

    def _listeners_ready(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        """Before the first step: every listener agrees (asked each epoch, so none is skipped by ``all``'s shortcut)."""
        if self.pruning_state.step > 0:
            return True
        answers = [listener.ready_to_prune(trainer, pl_module, self.pruning_state) for listener in self._listeners]
        return all(answers)

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
            refuse_nonfinite(pl_module, type(self).__name__, f"after step {state.step}")
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
        self._next_epoch = trainer.current_epoch + 1
        self._log_state(pl_module)
        epochs_into_finetune = trainer.current_epoch - state.last_step_epoch + 1
        if state.phase == "finetune" and epochs_into_finetune == self.finetune_epochs:
            for listener in self._listeners:
                listener.on_finetune_end(trainer, pl_module, state)
            if not self._more_steps():
                self._finish(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Resumed from a checkpoint taken once the schedule was done: the uninterrupted run stopped there.
        if trainer.ckpt_path is not None and self.pruning_state.phase == "done":
            trainer.should_stop = trainer.should_stop or self.stop_when_done

    def _finish(self, trainer: pl.Trainer) -> None:
        self.pruning_state.phase = "done"
        trainer.should_stop = trainer.should_stop or self.stop_when_done

    # -------------------------------------------- pruners of selected weights: the arguments their constructors store
    target_sparsity: float | None
    include_types: list[str]
    include_names: str | None
    exclude_names: list[str]
    prune_head: bool
    include_biases: bool
    log_layers: bool
    on_nonfinite: str
    monitor: str
    export_dir: str | None
    summary_section: str
    _names: list[str]
    _original_numel: dict[str, int]
    _restored: bool  # a state was loaded

    @property
    def state_key(self) -> str:
        return self._generate_state_key(target_sparsity=self.target_sparsity, include_names=self.include_names)

    def _validate_shared(self) -> None:
        """The checks of the arguments every weight-selecting pruner has; ``export_dir`` stored expanded."""
        check_choice("on_nonfinite", self.on_nonfinite, NONFINITE)
        validate_selector(self.include_types, self.include_names, self.exclude_names)
        if self.target_sparsity is not None:
            check_fraction("target_sparsity", self.target_sparsity)
        check_int("finetune_epochs", self.finetune_epochs, low=0)
        check_int("warmup_epochs", self.warmup_epochs, low=0)
        for flag in ("prune_head", "include_biases", "stop_when_done", "log_layers"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be true or false, got {getattr(self, flag)!r}")
        self.export_dir = check_output_dir("export_dir", self.export_dir)

    def _select(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        """In ``setup``: :meth:`_begin_fit`, the selected weights; whether the state is kept (else it starts afresh)."""
        keep = self._begin_fit(trainer, pl_module) or self._restored
        self._names = select_parameters(
            pl_module, self.include_types, self.include_names, self.exclude_names, self.prune_head, self.include_biases
        )
        if not keep:
            self.pruning_state = PruningState(target_sparsity=self.target_sparsity)
        if not keep or not self._original_numel:
            self._original_numel = {name: pl_module.get_parameter(name).numel() for name in self._names}
        return keep

    def _prune_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        """Apply one step (rank 0 plans it); return False to postpone it (the loop retries after the next fine-tune)."""
        state = self.pruning_state
        record: dict[str, Any] = {"step": state.step + 1, "epoch": trainer.current_epoch}
        if self.monitor in trainer.callback_metrics:
            record[f"{self.monitor}_before"] = float(trainer.callback_metrics[self.monitor])
        with state.timed("prune"):
            started = time.perf_counter()
            plan = broadcast(trainer, self._checked_plan(trainer, pl_module) if trainer.is_global_zero else None)
            if "nonfinite" in plan:
                return self._on_nonfinite(trainer, plan["nonfinite"], record)
            self._apply(trainer, pl_module, plan, record)
            state.step += 1
            state.last_step_epoch = trainer.current_epoch
            state.sparsity = self._current_sparsity(pl_module)
            record.update(sparsity=state.sparsity, prune_s=time.perf_counter() - started)
        state.history.append(record)
        info(log, f"pruning step {state.step}/{state.num_steps}: sparsity {state.sparsity:.3f}")
        return True

    def _checked_plan(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """:meth:`_plan`, or why the step must not run (a NaN score would prune arbitrary weights)."""
        bad_metrics = [k for k, v in trainer.callback_metrics.items() if not math.isfinite(float(v))]
        try:
            if bad_metrics:
                raise FloatingPointError(f"non-finite metrics {sorted(bad_metrics)}")
            return self._plan(trainer, pl_module)
        except FloatingPointError as err:
            return {"nonfinite": str(err)}

    def _on_nonfinite(self, trainer: pl.Trainer, reason: str, record: dict[str, Any]) -> bool:
        if self.on_nonfinite == "raise":
            raise FloatingPointError(
                f"{type(self).__name__} step {record['step']} at epoch {trainer.current_epoch}: {reason}; "
                "pruning stopped (set on_nonfinite='skip' to skip such steps and retry later)"
            )
        state = self.pruning_state
        state.last_step_epoch = trainer.current_epoch
        state.history.append(
            {**record, "step": state.step, "sparsity": state.sparsity, "finetune": "none", "skipped": reason}
        )
        info(log, f"pruning step skipped: {reason}")
        return False

    def _log_state(self, pl_module: pl.LightningModule) -> None:
        state = self.pruning_state
        logged = {"prune/sparsity": state.sparsity, "prune/step": float(state.step)}
        if state.target_sparsity is not None:
            logged["prune/target_sparsity"] = state.target_sparsity
        if self.log_layers:
            logged.update({f"prune_layer/{name}": value for name, value in self._layer_sparsity(pl_module).items()})
        pl_module.log_dict(logged, on_step=False, on_epoch=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.fast_dev_run:
            checked = self._verify_end(trainer, pl_module)
            if trainer.is_global_zero:
                self._export(trainer, pl_module, checked)

    def _verify_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """On every rank, before any export: finite weights, reported sparsity == measured (zero or removed)."""
        name, state = type(self).__name__, self.pruning_state
        refuse_nonfinite(pl_module, name, "at fit end")
        steps = f"{state.step} of {state.num_steps} steps taken"
        goal = f"target_sparsity={state.target_sparsity}" if state.target_sparsity else f"all {state.num_steps} steps"
        target = f"{goal} ({steps})" if state.step < state.num_steps else f"the fine-tune after the last step ({steps})"
        measured = {"sparsity": contract.measured_sparsity(pl_module, self._names, self._original_numel)}
        reported = {"sparsity": state.sparsity}
        return contract.verify_report(trainer, name, reported, measured, state.phase == "done", target)

    def _export(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checked: dict[str, Any]) -> None:
        """``pruned_model.pt`` and this pruner's section of ``summary.json``, with the measured sparsity."""
        state, directory = self.pruning_state, output_dir(trainer, self.export_dir)
        model_path = export_pruned(pl_module, directory / "pruned_model.pt")
        sparsity = checked["measured"]["sparsity"]
        summary = {
            "target_sparsity": state.target_sparsity,
            "sparsity": sparsity,
            **checked,
            "steps": state.step,
            "finetunes_run": sum(r.get("finetune") == "ran" for r in state.history),
            "finetunes_skipped": sum(r.get("finetune") == "skipped" for r in state.history),
            "layer_sparsity": self._layer_sparsity(pl_module),
            **self._summary_fields(pl_module),
            **parameter_counts(pl_module),
            "time_s": state.time_s,
            "history": state.history,
            "metrics": final_metrics(trainer, "prune_layer/"),
            "exported_model": str(model_path),
        }
        write_summary(directory / "summary.json", self.summary_section, summary)
        info(log, f"pruned to sparsity {sparsity:.3f} in {state.step} steps; exported {model_path}")

    def _summary_fields(self, pl_module: pl.LightningModule) -> dict[str, Any]:
        """What this pruner adds to its ``summary.json`` section."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"pruning_state": self.pruning_state.to_dict(), "original_numel": dict(self._original_numel)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pruning_state = PruningState.from_dict(state_dict.get("pruning_state", {}))
        self._original_numel = state_dict.get("original_numel", self._original_numel)
        self._restored = True
