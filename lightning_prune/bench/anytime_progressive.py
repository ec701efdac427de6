"""APP vs dense vs anytime one-shot SNIP per megabatch: ``python -m lightning_prune.bench anytime_progressive``.

Every setting is in ``conf/bench/anytime_progressive/main.yaml``. Per seed, three arms run in one process
from the same initial weights on the same seeded megabatches: (a) dense training through the megabatch
protocol, (b) Anytime Progressive Pruning to the target (density 0.8^e over the megabatches), (c) the
paper's anytime one-shot SNIP (the final density at the first megabatch, masks fixed after). All three
are :class:`AnytimeProgressivePruning` runs that differ only in ``target_sparsity`` / ``schedule``, so
protocol, replay and evaluation are identical. The paper's claim (Misra et al., arXiv 2204.01640): APP
at about 1/3 of the weights matches or beats dense accuracy with a smaller generalisation gap, and beats
one-shot.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig
from rich.console import Console

from lightning_prune import AnytimeProgressivePruning
from lightning_prune.bench._common import Stopwatch, environment, print_table, quiet, trainer
from lightning_prune.bench._compose import Record
from lightning_prune.bench.docs import load_result
from lightning_prune.core.schedules import app_exponent
from lightning_prune.data import DigitsDataModule, MegabatchDataModule, MNISTDataModule
from lightning_prune.data.arrays import ArrayDataModule
from lightning_prune.models import Classifier, SmallCNN

RESULT = "docs/bench/anytime_progressive/anytime_progressive.json"
FEW_SHOT = "docs/bench/anytime_progressive/few_shot.json"  # regime=few_shot
DATASETS = {"digits": DigitsDataModule, "mnist": MNISTDataModule}
RECORD_KEYS = ("step", "sparsity", "train_samples", "train_acc", "val_acc", "test_acc", "gen_gap", "errors", "cer")


class MegabatchStepLR(pl.Callback):
    """The paper's learning rate: back to ``lr`` at every megabatch, x ``gamma`` at each milestone of its epochs.

    (Its code: MultiStepLR with milestones 20 and 40 of 50 epochs, restarted per megabatch.) Without a
    decay, the weights a megabatch ends with are noisy, and that noise swamps the differences between
    arms. It is the comparison's training protocol, applied to every arm alike (dense included), not
    part of the pruning, so it lives with the benchmark.
    """

    def __init__(
        self, lr: float, epochs_per_megabatch: int, gamma: float = 0.1, milestones: Sequence[float] = (0.4, 0.8)
    ) -> None:
        self.lr, self.epochs, self.gamma, self.milestones = lr, epochs_per_megabatch, gamma, tuple(milestones)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        position = (trainer.current_epoch % self.epochs) / self.epochs
        lr = self.lr * self.gamma ** sum(position >= milestone for milestone in self.milestones)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr


def load_data(cfg: DictConfig) -> ArrayDataModule:
    """The data set the megabatches are cut from (a seeded share of its training split; val and test whole)."""
    if cfg.dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {cfg.dataset!r}")
    kwargs = {"data_dir": str(cfg.data_dir)} if cfg.dataset == "mnist" else {}
    base = DATASETS[cfg.dataset](batch_size=cfg.batch_size, seed=cfg.seed, train_fraction=cfg.train_fraction, **kwargs)
    base.setup()
    return base


def run_arm(name: str, base: ArrayDataModule, seed: int, cfg: DictConfig) -> dict[str, Any]:
    """Train one arm from the seed's initial weights; its final and per-megabatch anytime numbers."""
    pl.seed_everything(seed, workers=True, verbose=False)
    megabatches, epochs = cfg.num_megabatches, cfg.epochs_per_megabatch
    net = SmallCNN(base.input_shape, base.num_classes, widths=tuple(cfg.widths))
    model = Classifier(net, base.num_classes, base.input_shape, lr=cfg.lr, optimizer=cfg.optimizer)
    data = MegabatchDataModule(base, num_megabatches=megabatches, seed=seed)
    with tempfile.TemporaryDirectory() as root:
        protocol = {"holdout_fraction": cfg.holdout_fraction, "restore_best": cfg.restore_best}
        options = {"target_sparsity": cfg.target_sparsity, "replay": cfg.replay, **protocol, **cfg.arms[name]}
        pruner = AnytimeProgressivePruning(
            num_megabatches=megabatches, epochs_per_megabatch=epochs, export_dir=root, **options
        )
        callbacks: list[pl.Callback] = [pruner]
        if cfg.lr_decay:
            callbacks.append(MegabatchStepLR(cfg.lr, epochs, cfg.lr_gamma, cfg.lr_milestones))
        cpu_started = time.process_time()
        with Stopwatch() as watch:
            trainer(megabatches * epochs, callbacks, root=root).fit(model, datamodule=data)
        cpu_s = time.process_time() - cpu_started  # less sensitive than wall time to other jobs on the machine
    history = pruner.pruning_state.history
    last = history[-1]
    return {
        **{key: last[key] for key in ("test_acc", "val_acc", "train_acc", "gen_gap")},
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


def run(cfg: DictConfig, record: Record) -> None:
    """Every arm on every seed; the result is written after each arm and completed at the end."""
    quiet()
    base = load_data(cfg)
    seeds = list(range(cfg.seed, cfg.seed + cfg.num_seeds))
    setup = {
        "train_samples": len(base.train_set),
        "train_fraction": cfg.train_fraction,
        "val_samples": len(base.val_set),
        "test_samples": len(base.test_set),
        "num_megabatches": cfg.num_megabatches,
        "epochs_per_megabatch": cfg.epochs_per_megabatch,
        "replay": cfg.replay,
        "holdout_fraction": cfg.holdout_fraction,
        "restore_best": cfg.restore_best,
        "target_sparsity": cfg.target_sparsity,
        "model": f"SmallCNN{tuple(cfg.widths)}",
        "optimizer": f"{cfg.optimizer} lr={cfg.lr}" + (_decay(cfg) if cfg.lr_decay else ""),
        "seeds": seeds,
    }
    console, runs = Console(stderr=True), {name: [] for name in cfg.arms}
    for seed in seeds:
        for name in cfg.arms:
            arm = run_arm(name, base, seed, cfg)
            runs[name].append(arm)
            console.print(
                f"{name} seed {seed}: test_acc {arm['test_acc']:.4f}, gap {arm['gen_gap']:.4f}, "
                f"cer {arm['cer']}, {arm['wall_s']:.0f} s"
            )
            done = {key: mean_over_seeds(value) for key, value in runs.items() if value}
            head = {"regime": cfg.regime, "dataset": cfg.dataset}
            record({**head, **done, "setup": setup, "environment": environment()}, complete=False)
    results = {name: mean_over_seeds(arm_runs) for name, arm_runs in runs.items()}
    record({"regime": cfg.regime, "dataset": cfg.dataset, **results, "setup": setup, "environment": environment()})
    title = f"APP on {cfg.dataset}: {cfg.num_megabatches} megabatches x {cfg.epochs_per_megabatch} epochs"
    print_table(f"{title}, {len(seeds)} seed(s)", *_arm_rows(results))


def _decay(cfg: DictConfig) -> str:
    """The learning-rate protocol in words, e.g. ``restarted per megabatch, x0.1 at 40%/80%``."""
    milestones = "/".join(f"{milestone:.0%}" for milestone in cfg.lr_milestones)
    return f" restarted per megabatch, x{cfg.lr_gamma:g} at {milestones}"


def _arm_rows(results: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
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
    return columns, rows


# ---------------------------------------------------------------- tables and headline (from the committed JSON)

ARM_LABELS = {"dense": "dense", "app": "**APP** (0.8^e, e 1→{tau:.1f})", "oneshot": "anytime one-shot SNIP"}


def _arms(result: dict[str, Any]) -> list[str]:
    return [name for name in ARM_LABELS if name in result]


def setup_table(path: str = RESULT) -> str:
    """The protocol the committed numbers come from."""
    r = load_result(path)
    s = r["setup"]
    lines = [
        "| data | train / val / test images | megabatches x epochs | replay | target sparsity | model | optimizer "
        "| seeds |",
        "|---|---|---|---|---:|---|---|---|",
        f"| {r['dataset']} ({s['train_fraction']:.0%} of the training split) | {s['train_samples']:,} / "
        f"{s['val_samples']:,} / {s['test_samples']:,} | {s['num_megabatches']} x {s['epochs_per_megabatch']} | "
        f"{_protocol(s)} | {s['target_sparsity']:.4f} | {s['model']} | {s['optimizer']} | "
        f"{', '.join(str(seed) for seed in s['seeds'])} |",
    ]
    return "\n".join(lines)


def _protocol(setup: dict[str, Any]) -> str:
    """Replay, plus the paper's per-megabatch holdout and best reload when the run used them."""
    holdout = setup.get("holdout_fraction", 0.0)
    if not holdout:
        return setup["replay"]
    reload = ", best held-out epoch reloaded" if setup.get("restore_best") else ""
    return f"{setup['replay']}, {holdout:.0%} of each megabatch held out{reload}"


def arms_table(path: str = RESULT) -> str:
    """Final numbers per arm: kept weights, test accuracy per seed and mean, generalisation gap, CER, time."""
    r = load_result(path)
    tau = app_exponent(r["setup"]["target_sparsity"])
    seeds = " / ".join(str(seed) for seed in r["setup"]["seeds"])
    lines = [
        f"| arm | kept params | test acc (seed {seeds}) | mean | gen gap (final) | gen gap (mean over megabatches) "
        "| CER (test errors over all megabatches) | wall s |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name in _arms(r):
        a = r[name]
        per_seed = " / ".join(f"{run['test_acc']:.4f}" for run in a["per_seed"])
        lines.append(
            f"| {ARM_LABELS[name].format(tau=tau)} | {a['kept_params']:,.0f} ({a['kept_params'] / a['params']:.0%}) "
            f"| {per_seed} | {a['test_acc']:.4f} | {a['gen_gap']:.4f} | {a['mean_gen_gap']:.4f} | {a['cer']:.0f} "
            f"| {a['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def per_megabatch_table(path: str = RESULT) -> str:
    """The anytime view (first seed): sparsity, test accuracy and CER of every arm after each megabatch."""
    r = load_result(path)
    arms = _arms(r)
    names = " / ".join(arms)
    seed = r["setup"]["seeds"][0]
    lines = [
        f"| megabatch (seed {seed}) | train images | sparsity ({names}) | test acc ({names}) | CER ({names}) |",
        "|---:|---:|---|---|---|",
    ]
    for t, first in enumerate(r[arms[0]]["per_megabatch"]):
        rows = [r[name]["per_megabatch"][t] for name in arms]
        sparsity = " / ".join(f"{row['sparsity']:.3f}" for row in rows)
        test_acc = " / ".join(f"{row['test_acc']:.4f}" for row in rows)
        cer = " / ".join(str(row["cer"]) for row in rows)
        lines.append(f"| {first['step']} | {first['train_samples']:,} | {sparsity} | {test_acc} | {cer} |")
    return "\n".join(lines)


TABLES = {
    "setup": setup_table,
    "arms": arms_table,
    "per_megabatch": per_megabatch_table,
    "few_shot_setup": partial(setup_table, FEW_SHOT),
    "few_shot_arms": partial(arms_table, FEW_SHOT),
    "few_shot_per_megabatch": partial(per_megabatch_table, FEW_SHOT),
}


def _few_shot_headline() -> str:
    r = load_result(FEW_SHOT)
    app, dense = r["app"], r["dense"]
    return (
        f"Few-shot regime ({r['setup']['train_samples']} images): APP {app['test_acc']:.4f} vs dense "
        f"{dense['test_acc']:.4f} ({100 * (app['test_acc'] - dense['test_acc']):+.2f} pt), gap {app['gen_gap']:.4f} "
        f"vs {dense['gen_gap']:.4f}"
    )


def headline() -> dict[str, str]:
    """The README's results row: APP against dense and one-shot at the same size."""
    r = load_result(RESULT)
    app, dense, oneshot = r["app"], r["dense"], r["oneshot"]
    return {
        "method": "Anytime Progressive Pruning",
        "claim": "at ~1/3 of the weights, matches or beats dense accuracy with a smaller generalisation gap; "
        "beats one-shot",
        "measured": f"test acc {app['test_acc']:.4f} vs dense {dense['test_acc']:.4f} "
        f"({100 * (app['test_acc'] - dense['test_acc']):+.2f} pt) at {app['kept_params'] / app['params']:.0%} of the "
        f"weights; gap {app['gen_gap']:.4f} vs {dense['gen_gap']:.4f}; one-shot {oneshot['test_acc']:.4f}. "
        f"{_few_shot_headline()}",
        "evidence": "[docs/anytime_progressive.md](docs/anytime_progressive.md)",
    }
