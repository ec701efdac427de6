"""The arms of the ICE benchmark: one pre-trained model, pruned block by block with or without ICE's parts."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import optuna
import torch

from lightning_prune.bench._common import Stopwatch, pooled_resnet, trainer
from lightning_prune.callbacks import AccuracyGate, BlockPruning, Distillation, LayerFreezing, PruningAwareLR
from lightning_prune.callbacks.ice.tuning import STAGE1_SPACE, bounded_time_objective
from lightning_prune.data.arrays import ArrayDataModule
from lightning_prune.models import Classifier

# ICE's parts by name, each with the prefix of its stage-1 parameters.
PARTS = {"gate": "callbacks.ice_gate.", "freezing": "callbacks.ice_freezing.", "lr": "callbacks.ice_lr."}


@dataclass(frozen=True)
class Workload:
    """Sizes of one benchmark run: ``workload`` of ``conf/bench/ice/main.yaml`` (every field commented there)."""

    blocks: tuple[int, ...]
    widths: tuple[int, ...]
    pool: int
    train_fraction: float
    search_fraction: float
    pretrain_epochs: int
    step_ratio: float
    finetune_lr: float
    val_batches: int
    search_val_batches: int
    trials: int
    max_drop_pt: float
    distill: bool = False


def build_model(datamodule: ArrayDataModule, work: Workload, lr: float, scheduler: str = "none") -> Classifier:
    shape, classes = tuple(datamodule.input_shape), datamodule.num_classes
    net = pooled_resnet(shape, classes, work.blocks, work.widths, work.pool)
    return Classifier(net, classes, shape, lr=lr, scheduler=scheduler)


def pretrain(datamodule: ArrayDataModule, work: Workload, seed: int, root: Path) -> dict[str, torch.Tensor]:
    """Dense training shared by every arm (and not timed in any).

    Seeded: torch's own initial seed differs per process, and an unseeded initialisation made two runs
    with the same ``seed`` start stage 1 and stage 2 from different dense models.
    """
    pl.seed_everything(seed, verbose=False)
    model = build_model(datamodule, work, lr=0.05, scheduler="cosine")
    trainer(work.pretrain_epochs, root=root, limit_val_batches=0).fit(model, datamodule=datamodule)
    return copy.deepcopy(model.state_dict())


class MeasuringGate(AccuracyGate):
    """Measures what the gate measures (A0, each step, the end) but never skips: the traditional pipeline."""

    def skip_finetune(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: Any) -> bool:
        return False


def make_parts(params: dict[str, Any], parts: tuple[str, ...], val_batches: int) -> list[pl.Callback]:
    """The ICE callbacks named in ``parts``, configured from stage-1 style ``params``."""

    def pick(part: str) -> dict[str, Any]:
        prefix = PARTS[part]
        return {key.removeprefix(prefix): value for key, value in params.items() if key.startswith(prefix)}

    callbacks: list[pl.Callback] = []
    if "gate" in parts:
        paper = {"finetune_last": True, "require_settled": False}  # as the recipe sets them
        callbacks.append(AccuracyGate(val_batches=val_batches, **{**paper, **pick("gate")}))
    if "freezing" in parts:
        callbacks.append(LayerFreezing(**{"max_move": None, **pick("freezing")}))
    if "lr" in parts:
        callbacks.append(PruningAwareLR(**pick("lr")))
    return callbacks


def run_arm(
    state: dict[str, torch.Tensor],
    datamodule: ArrayDataModule,
    work: Workload,
    parts: list[pl.Callback],
    seed: int,
    root: Path,
    test: bool = True,
) -> dict[str, Any]:
    """Prune the pre-trained model block by block with ``parts`` around the pruner; time the fit.

    With ``work.distill`` every fine-tune also distils the unpruned model (:class:`Distillation`, T=2), in the
    baseline as in ICE, as the paper's code does.

    The test accuracy is measured for the compared arms; stage-1 trials (``test=False``) are scored on
    the whole validation split instead, after the timed fit.
    """
    pl.seed_everything(seed, verbose=False)
    model = build_model(datamodule, work, lr=work.finetune_lr)
    model.load_state_dict(state)
    pruner = BlockPruning(step_ratio=work.step_ratio, finetune_epochs=1, stop_when_done=True, export_dir=str(root))
    teacher = [Distillation()] if work.distill else []  # the paper's fine-tune loss, in every arm alike
    fit = trainer(sum(work.blocks) + 1, [pruner, *parts, *teacher], root=root, limit_val_batches=0)
    with Stopwatch() as watch:
        fit.fit(model, datamodule=datamodule)
    pruning = pruner.pruning_state
    result: dict[str, Any] = {
        "wall_s": watch.seconds,
        "sparsity": pruning.sparsity,
        "finetune_epochs": sum(r.get("finetune") == "ran" for r in pruning.history),
        "finetunes_skipped": sum(r.get("finetune") == "skipped" for r in pruning.history),
        "steps": pruning.step,
        "time_s": {k: v for k, v in pruning.time_s.items() if k != "dense"},
    }
    if "distill/kd" in fit.callback_metrics:  # the KD term of the last fine-tune batch: distillation ran
        result["distill_kd"] = float(fit.callback_metrics["distill/kd"])
    gate = next((cb for cb in parts if isinstance(cb, AccuracyGate)), None)
    if gate is not None:
        result.update(acc_reference=gate.reference_acc, acc_final=gate.final_acc)
    if test:
        fit.test(model, datamodule=datamodule, verbose=False)
        result["test_acc"] = float(fit.callback_metrics["test/acc"])
    else:
        scorer = trainer(1, root=root)  # the fit's own Trainer validates nothing (limit_val_batches=0)
        scorer.validate(model, datamodule=datamodule, verbose=False)
        result["val_acc"] = float(scorer.callback_metrics["val/acc"])
    return result


def stage1(
    state: dict[str, torch.Tensor], datamodule: ArrayDataModule, work: Workload, seed: int, root: Path
) -> dict[str, Any]:
    """The traditional pipeline on the subset (the bound's reference), then Optuna over the stage-1 space.

    Runs are compared by their accuracy on the whole validation split: on the gate's few batches (512
    images) the standard error of a difference is about 1 pt, as large as the bound it must enforce.
    """
    measure_only = MeasuringGate(threshold=0.0, val_batches=work.search_val_batches)
    reference = run_arm(state, datamodule, work, [measure_only], seed, root, test=False)
    trials: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        params = {key: trial.suggest_categorical(key, choices) for key, choices in STAGE1_SPACE.items()}
        parts = make_parts(params, tuple(PARTS), work.search_val_batches)
        arm = run_arm(state, datamodule, work, parts, seed, root, test=False)
        metrics = {"run/fit_s": arm["wall_s"], "ice/acc_reference": arm["acc_reference"]}
        metrics["ice/acc_final"] = arm["val_acc"]
        value = bounded_time_objective(metrics, max_drop_pt=work.max_drop_pt, reference_acc=reference["val_acc"])
        trials.append(
            {
                "params": params,
                "objective": value,
                "drop_vs_reference_pt": 100.0 * (reference["val_acc"] - arm["val_acc"]),
                "val_acc": arm["val_acc"],
                "gate_acc_final": arm["acc_final"],
                "wall_s": arm["wall_s"],
                "finetune_epochs": arm["finetune_epochs"],
            }
        )
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.RandomSampler(seed=seed))
    for threshold in STAGE1_SPACE["callbacks.ice_gate.threshold"][: work.trials]:
        study.enqueue_trial({"callbacks.ice_gate.threshold": threshold})
    study.optimize(objective, n_trials=work.trials)
    keys = ("wall_s", "acc_reference", "acc_final", "val_acc", "finetune_epochs")
    return {
        "reference": {key: reference[key] for key in keys},
        "best_params": dict(study.best_params),
        "best_objective": study.best_value,
        "trials": trials,
    }


def subset(datamodule: ArrayDataModule, fraction: float) -> ArrayDataModule:
    """The same data set with only ``fraction`` of its training split (validation and test unchanged)."""
    small = copy.copy(datamodule)
    small.train_fraction = datamodule.train_fraction * fraction
    small.train_set = None
    small.setup()
    return small
