"""APP vs dense vs one-shot SNIP on the same megabatches: ``python -m lightning_prune.bench app --out app.json``.

Three arms, one process, the same seeded megabatches and the same initial weights: (a) dense training
through the megabatch protocol, (b) Anytime Progressive Pruning to the target (density 0.8^e over the
megabatches), (c) the paper's anytime OSP: SNIP to the final density at the first megabatch, masks
fixed after. All three are :class:`AnytimeProgressivePruning` runs that differ only in
``target_sparsity`` / ``schedule``, so protocol, replay and evaluation are identical. The paper's claim
(Misra et al., arXiv 2204.01640): APP at about 1/3 of the weights matches or beats dense accuracy
with a smaller generalisation gap, and beats one-shot.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import lightning.pytorch as pl
from rich.console import Console

from lightning_prune import AnytimeProgressivePruning
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
from lightning_prune.core.schedules import APP_TARGET_SPARSITY
from lightning_prune.data import MegabatchDataModule, MNISTDataModule
from lightning_prune.data.arrays import ArrayDataModule
from lightning_prune.models import Classifier, SmallCNN

ARMS: dict[str, dict[str, Any]] = {
    "dense": {"target_sparsity": 0.0},
    "app": {"schedule": "app"},
    "oneshot": {"schedule": "oneshot"},
}
RECORD_KEYS = ("step", "sparsity", "train_samples", "train_acc", "val_acc", "test_acc", "gen_gap", "errors", "cer")


class MegabatchStepLR(pl.Callback):
    """The paper's learning rate: back to ``lr`` at every megabatch, x ``gamma`` at 40 % and 80 % of its epochs.

    (Its code: MultiStepLR with milestones 20 and 40 of 50 epochs, restarted per megabatch.) Without a
    decay, the weights a megabatch ends with are noisy, and that noise swamps the differences between
    arms.
    """

    def __init__(self, lr: float, epochs_per_megabatch: int, gamma: float = 0.1) -> None:
        self.lr, self.epochs, self.gamma = lr, epochs_per_megabatch, gamma

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        position = (trainer.current_epoch % self.epochs) / self.epochs
        lr = self.lr * self.gamma ** sum(position >= milestone for milestone in (0.4, 0.8))
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr


def run_arm(name: str, base: ArrayDataModule, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one arm from the seed's initial weights; its final and per-megabatch anytime numbers."""
    pl.seed_everything(seed, workers=True, verbose=False)
    megabatches, epochs = args.megabatches, args.epochs
    net = SmallCNN(base.input_shape, base.num_classes, widths=args.widths)
    model = Classifier(net, base.num_classes, base.input_shape, lr=args.lr, optimizer=args.optimizer)
    data = MegabatchDataModule(base, num_megabatches=megabatches, seed=seed)
    with tempfile.TemporaryDirectory() as root:
        options = {"target_sparsity": args.target_sparsity, **ARMS[name]}
        pruner = AnytimeProgressivePruning(
            num_megabatches=megabatches, epochs_per_megabatch=epochs, export_dir=root, **options
        )
        cpu_started = time.process_time()
        with Stopwatch() as watch:
            callbacks = [pruner, MegabatchStepLR(args.lr, epochs)] if args.lr_decay else [pruner]
            trainer(megabatches * epochs, callbacks, root=root).fit(model, datamodule=data)
        cpu_s = time.process_time() - cpu_started  # less sensitive than wall time to other jobs on the machine
    history = pruner.pruning_state.history
    last = history[-1]
    return {
        "test_acc": last["test_acc"],
        "val_acc": last["val_acc"],
        "train_acc": last["train_acc"],
        "gen_gap": last["gen_gap"],
        "mean_gen_gap": statistics.fmean(r["gen_gap"] for r in history),
        "cer": last["cer"],
        "sparsity": last["sparsity"],
        "kept_params": sum(int((p != 0).sum()) for p in model.parameters()),
        "params": sum(p.numel() for p in model.parameters()),
        "per_megabatch": [{key: record[key] for key in RECORD_KEYS} for record in history],
        "wall_s": watch.seconds,
        "cpu_s": cpu_s,
    }


def mean_over_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Scalars averaged over seeds (per-seed results kept under ``per_seed``); per-megabatch of the first seed."""
    scalars = [key for key, value in runs[0].items() if isinstance(value, (int, float))]
    summary = {key: statistics.fmean(run[key] for run in runs) for key in scalars}
    return {**summary, "per_megabatch": runs[0]["per_megabatch"], "per_seed": runs}


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options, with the defaults of a full or a ``--quick`` run filled in."""
    p = parser("app", __doc__.splitlines()[0])
    p.add_argument("--megabatches", type=int, default=None, help="number of megabatches (default 8; quick 3)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per megabatch (default 3; quick 1)")
    p.add_argument("--seeds", type=int, default=None, help="run seeds seed..seed+N-1 (default 2; quick 1)")
    p.add_argument("--train-fraction", type=float, default=None, help="share of MNIST's training split (0.1)")
    p.add_argument("--target-sparsity", type=float, default=APP_TARGET_SPARSITY, help="default 1 - 0.8^4.5")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw"], help="sgd: momentum 0.9")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument(
        "--lr-decay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="restart the lr at every megabatch and decay it x0.1 at 40%% and 80%% of its epochs (the paper's)",
    )
    p.add_argument("--widths", type=int, nargs="+", default=None, help="SmallCNN widths (default 16 32 32 64)")
    args = p.parse_args(argv)
    args.megabatches = args.megabatches or (3 if args.quick else 8)
    args.epochs = args.epochs or (1 if args.quick else 3)
    args.seeds = args.seeds or (1 if args.quick else 2)
    args.widths = tuple(args.widths or ((8, 16) if args.quick else (16, 32, 32, 64)))
    return args


def load_data(args: argparse.Namespace) -> tuple[ArrayDataModule, str, float]:
    """MNIST (a seeded, stratified part of its training split; validation and test whole), else digits."""
    base, dataset = default_data(args.data_dir, args.seed, batch_size=64, digits=args.quick)
    fraction = args.train_fraction or (0.1 if dataset == "mnist" else 1.0)
    if dataset == "mnist" and fraction < 1:
        base = MNISTDataModule(str(base.data_dir), batch_size=64, seed=args.seed, train_fraction=fraction)
        base.setup()
    return base, dataset, fraction


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    quiet()
    base, dataset, fraction = load_data(args)
    seeds = list(range(args.seed, args.seed + args.seeds))
    console, runs = Console(stderr=True), {name: [] for name in ARMS}
    for seed in seeds:
        for name in ARMS:
            run = run_arm(name, base, seed, args)
            runs[name].append(run)
            console.print(
                f"{name} seed {seed}: test_acc {run['test_acc']:.4f}, gap {run['gen_gap']:.4f}, "
                f"cer {run['cer']}, {run['wall_s']:.0f} s"
            )
    results = {name: mean_over_seeds(arm_runs) for name, arm_runs in runs.items()}
    setup = {
        "train_samples": len(base.train_set),
        "train_fraction": fraction,
        "val_samples": len(base.val_set),
        "test_samples": len(base.test_set),
        "num_megabatches": args.megabatches,
        "epochs_per_megabatch": args.epochs,
        "replay": "full",
        "target_sparsity": args.target_sparsity,
        "model": f"SmallCNN{args.widths}",
        "optimizer": f"{args.optimizer} lr={args.lr}"
        + (" restarted per megabatch, x0.1 at 40%/80%" if args.lr_decay else ""),
        "seeds": seeds,
        "quick": args.quick,
    }
    write_json(args.out, {"dataset": dataset, **results, "setup": setup, "environment": environment()})
    columns = ["arm", "test_acc", "gen_gap", "mean_gap", "cer", "kept_params", "wall_s"]
    rows = [
        [
            name,
            r["test_acc"],
            r["gen_gap"],
            r["mean_gen_gap"],
            f"{r['cer']:.1f}",
            f"{r['kept_params']:.0f}",
            f"{r['wall_s']:.0f}",
        ]
        for name, r in results.items()
    ]
    title = f"APP on {dataset}: {args.megabatches} megabatches x {args.epochs} epochs, {len(seeds)} seed(s)"
    print_table(title, columns, rows)
    return 0
