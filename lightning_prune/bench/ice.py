"""ICE-Pruning against traditional iterative pruning: ``python -m lightning_prune.bench ice --out ice.json``.

One process, one pre-trained dense model (trained once, not counted in any arm), one data set and
seed, the same block-wise structured pruning (``step_ratio`` of every block's inner filters, so the
final sparsity is the same in every arm):

- ``baseline``: traditional iterative pruning, a 1-epoch fine-tune after every block, nothing frozen,
  the module's fixed learning rate;
- ``ice``: stage-1 search on 2% of the training data (the paper's proportion): first the
  traditional pipeline on that subset (its final accuracy is the reference of the accuracy bound),
  then Optuna trials over :data:`~lightning_prune.ice_tuning.STAGE1_SPACE`, each a whole ICE run
  on the subset, one per gate threshold (enqueued: the threshold sets the cost, so a few trials
  must span it; the other parameters are random), scored by
  :func:`~lightning_prune.ice_tuning.bounded_time_objective` (at most ``max_drop_pt`` below the
  reference, fastest wins); then the run with the best point and all three parts, the gate
  fine-tuning after the last step (``finetune_last``); its ``wall_s`` includes the whole search,
  as in the paper;
- ``ablations``: each part alone, with stage 1's values for that part (no search time).

The JSON is written once baseline and ICE are measured and again after each ablation; ``complete`` is
true only in the last write, so a run stopped during the ablations keeps its main comparison.

MNIST from ``--data-dir`` (default ``../shared/data/mnist`` when present) with a 50% training subset
(27,500 images; the search on 550 of them) and a 24-block ResNet (widths 16/32/64) over 2x-pooled
14x14 inputs, to fit the CPU budget (50 minutes to 2.5 hours on one core of this shared machine, with the
ablations); else digits. The JSON says
which, and records the workload.
"""

from __future__ import annotations

import copy
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import optuna
import torch
from torch import nn

from lightning_prune.bench._common import (
    Stopwatch,
    default_data,
    environment,
    parser,
    print_table,
    quiet,
    trainer,
    write_json,
)
from lightning_prune.callbacks import AccuracyGate, IterativePruning, LayerFreezing, PruningAwareLR
from lightning_prune.data import MNISTDataModule
from lightning_prune.data.arrays import ArrayDataModule
from lightning_prune.ice_tuning import STAGE1_SPACE, bounded_time_objective
from lightning_prune.models import Classifier, ResNet


@dataclass
class Workload:
    """Sizes of one benchmark run (the default, or ``--quick``)."""

    blocks: tuple[int, ...] = (8, 8, 8)
    widths: tuple[int, ...] = (16, 32, 64)
    pool: int = 2
    train_fraction: float = 0.5
    search_fraction: float = 0.02
    pretrain_epochs: int = 16
    step_ratio: float = 0.6
    finetune_lr: float = 0.01
    val_batches: int = 4
    search_val_batches: int = 4
    trials: int = 3
    max_drop_pt: float = 1.0


QUICK = Workload(
    blocks=(2, 2),
    widths=(8, 16),
    pool=1,
    pretrain_epochs=2,
    search_fraction=0.3,
    trials=3,
    val_batches=2,
    search_val_batches=2,
)
PARTS = {
    "gate": ("callbacks.ice_gate.",),
    "freezing": ("callbacks.ice_freezing.",),
    "lr": ("callbacks.ice_lr.",),
}


def build_model(datamodule: ArrayDataModule, work: Workload, lr: float, scheduler: str = "none") -> Classifier:
    shape = tuple(datamodule.input_shape)
    inner = (shape[0], shape[1] // work.pool, shape[2] // work.pool)
    net = ResNet(inner, datamodule.num_classes, blocks=work.blocks, widths=work.widths)
    if work.pool > 1:
        net = nn.Sequential(nn.AvgPool2d(work.pool), net)
    return Classifier(net, datamodule.num_classes, shape, lr=lr, scheduler=scheduler)


def pretrain(datamodule: ArrayDataModule, work: Workload, seed: int, root: Path) -> dict[str, torch.Tensor]:
    """Dense training shared by every arm (and not timed in any).

    Seeded: torch's own initial seed differs per process, and an unseeded initialisation made two runs
    with the same ``--seed`` start stage 1 and stage 2 from different dense models.
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

    def pick(prefix: str) -> dict[str, Any]:
        return {key.removeprefix(prefix): value for key, value in params.items() if key.startswith(prefix)}

    callbacks: list[pl.Callback] = []
    if "gate" in parts:
        gate = {"finetune_last": True, **pick("callbacks.ice_gate.")}
        callbacks.append(AccuracyGate(val_batches=val_batches, **gate))
    if "freezing" in parts:
        callbacks.append(LayerFreezing(**pick("callbacks.ice_freezing.")))
    if "lr" in parts:
        callbacks.append(PruningAwareLR(**pick("callbacks.ice_lr.")))
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

    The test accuracy is measured for the compared arms; stage-1 trials (``test=False``) are scored on
    the whole validation split instead, after the timed fit.
    """
    pl.seed_everything(seed, verbose=False)
    model = build_model(datamodule, work, lr=work.finetune_lr)
    model.load_state_dict(state)
    pruner = IterativePruning(mode="structured", step_ratio=work.step_ratio, finetune_epochs=1, export_dir=str(root))
    steps = sum(work.blocks)
    fit = trainer(steps + 1, [pruner, *parts], root=root, limit_val_batches=0)
    with Stopwatch() as watch:
        fit.fit(model, datamodule=datamodule)
    pruning = pruner.pruning_state
    ran = sum(r.get("finetune") == "ran" for r in pruning.history)
    result: dict[str, Any] = {
        "wall_s": watch.seconds,
        "sparsity": pruning.sparsity,
        "finetune_epochs": ran,
        "finetunes_skipped": sum(r.get("finetune") == "skipped" for r in pruning.history),
        "steps": pruning.step,
        "time_s": {k: v for k, v in pruning.time_s.items() if k != "dense"},
    }
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
        metrics = {
            "run/fit_s": arm["wall_s"],
            "ice/acc_reference": arm["acc_reference"],
            "ice/acc_final": arm["val_acc"],
        }
        value = bounded_time_objective(metrics, max_drop_pt=work.max_drop_pt, reference_acc=reference["val_acc"])
        drop_pt = 100.0 * (reference["val_acc"] - arm["val_acc"])
        trials.append(
            {
                "params": params,
                "objective": value,
                "drop_vs_reference_pt": drop_pt,
                "val_acc": arm["val_acc"],
                "gate_acc_final": arm["acc_final"],
                "wall_s": arm["wall_s"],
                "finetune_epochs": arm["finetune_epochs"],
            }
        )
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.RandomSampler(seed=seed))
    thresholds = STAGE1_SPACE["callbacks.ice_gate.threshold"]
    for threshold in thresholds[: work.trials]:
        study.enqueue_trial({"callbacks.ice_gate.threshold": threshold})
    study.optimize(objective, n_trials=work.trials)
    return {
        "reference": {
            key: reference[key] for key in ("wall_s", "acc_reference", "acc_final", "val_acc", "finetune_epochs")
        },
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


def load_data(args: Any, work: Workload) -> tuple[ArrayDataModule, str]:
    datamodule, name = default_data(args.data_dir, args.seed, batch_size=128, digits=args.quick)
    if name == "mnist":
        datamodule = MNISTDataModule(
            str(datamodule.data_dir), batch_size=128, seed=args.seed, train_fraction=work.train_fraction
        )
        datamodule.setup()
    return datamodule, name


def check_sizes(work: Workload) -> None:
    """Refuse fractions and trial counts that would fail only after pre-training and the baseline."""
    for flag, value in (("--train-fraction", work.train_fraction), ("--search-fraction", work.search_fraction)):
        if not 0 < value <= 1:
            raise ValueError(f"{flag} must be in (0, 1], got {value}")
    if work.trials < 1:
        raise ValueError(f"--trials must be >= 1, got {work.trials}")


def main(argv: list[str]) -> int:
    p = parser("ice", "ICE-Pruning vs traditional iterative pruning: wall time and accuracy at equal sparsity")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--trials", type=int, default=None, help="stage-1 trials (default 3)")
    p.add_argument("--train-fraction", type=float, default=None, help="MNIST training fraction (default 0.5)")
    p.add_argument("--search-fraction", type=float, default=None, help="stage-1 subset of that (default 0.02)")
    p.add_argument("--skip-ablations", action="store_true", help="baseline and ICE only")
    args = p.parse_args(argv)
    quiet()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = {"trials": args.trials, "train_fraction": args.train_fraction, "search_fraction": args.search_fraction}
    work = replace(QUICK if args.quick else Workload(), **{k: v for k, v in sizes.items() if v is not None})
    check_sizes(work)
    datamodule, dataset = load_data(args, work)
    with tempfile.TemporaryDirectory(prefix="ice-bench-") as tmp:
        root = Path(tmp)
        _progress(
            f"{dataset}: {len(datamodule.train_set)} training samples; pre-training {work.pretrain_epochs} epochs"
        )
        state = pretrain(datamodule, work, args.seed, root)
        _progress("baseline: traditional iterative pruning")
        baseline = run_arm(state, datamodule, work, [], args.seed, root)
        _progress(f"ice stage 1: {work.trials} trials on {work.search_fraction:.0%} of the training data")
        with Stopwatch() as search_watch:
            search = stage1(state, subset(datamodule, work.search_fraction), work, args.seed, root)
        best = search["best_params"]
        _progress(f"ice stage 2 with {best}")
        ice = run_arm(state, datamodule, work, make_parts(best, tuple(PARTS), work.val_batches), args.seed, root)
        ice["run_s"], ice["search_s"] = ice["wall_s"], search_watch.seconds
        ice["wall_s"] = ice["run_s"] + ice["search_s"]
        result = comparison(dataset, baseline, ice, search, work, len(datamodule.train_set), args.seed)
        # Written now and after every ablation: a run stopped during the ablations keeps the comparison.
        write_json(args.out, result)
        for name in () if args.skip_ablations else PARTS:
            _progress(f"ablation: {name} only")
            only = make_parts(best, (name,), work.val_batches)
            result["ablations"][name] = run_arm(state, datamodule, work, only, args.seed, root)
            write_json(args.out, result)
    result["complete"] = True
    _report(result, args.out)
    return 0


def comparison(
    dataset: str,
    baseline: dict[str, Any],
    ice: dict[str, Any],
    search: dict[str, Any],
    work: Workload,
    train_samples: int,
    seed: int,
) -> dict[str, Any]:
    """The JSON record of baseline vs ICE; ``complete`` turns true once the ablations (if any) are in."""
    return {
        "dataset": dataset,
        "baseline": baseline,
        "ice": ice,
        "ablations": {},
        "complete": False,
        "speedup": baseline["wall_s"] / ice["wall_s"],
        "acc_delta_pt": 100.0 * (ice["test_acc"] - baseline["test_acc"]),
        "finetunes_skipped": ice["finetunes_skipped"],
        # Hardware-free and search-free views of the same comparison.
        "finetune_epochs_ratio": baseline["finetune_epochs"] / max(1, ice["finetune_epochs"]),
        "speedup_without_search": baseline["wall_s"] / ice["run_s"],
        "ice_time_split_s": {"search": ice["search_s"], **ice["time_s"]},
        "search": search,
        "workload": {**asdict(work), "train_samples": train_samples, "seed": seed},
        "environment": environment(),
    }


def _progress(message: str) -> None:
    print(f"[bench ice] {message}", file=sys.stderr, flush=True)


def _report(result: dict[str, Any], out: str) -> None:
    rows = [("baseline", result["baseline"]), ("ice", result["ice"])]
    rows += [(f"{name} only", arm) for name, arm in result["ablations"].items()]
    print_table(
        f"ICE-Pruning vs iterative ({result['dataset']}): speedup {result['speedup']:.2f}x, "
        f"acc delta {result['acc_delta_pt']:+.2f} pt",
        ["arm", "wall_s", "test_acc", "sparsity", "finetune_epochs", "skipped"],
        [(n, a["wall_s"], a["test_acc"], a["sparsity"], a["finetune_epochs"], a["finetunes_skipped"]) for n, a in rows],
    )
    write_json(out, result)
