"""What holding masks costs per training step: dense vs our masks vs Lightning's ``ModelPruning``.

``python -m lightning_prune.bench iterative`` (settings: ``conf/bench/iterative/main.yaml``).

A fourth arm adds one callback that does nothing, to separate what the mechanism costs from what any
callback costs in Lightning's loop (``masked_over_noop_callback``). Each arm trains the same model, from
the same weights, on the same batches: one epoch to get pruned (ours prunes at the start of epoch 1,
``ModelPruning`` at the end of epoch 0, both to the same global magnitude sparsity over the same
weights), then the timed epoch. Arms run interleaved over several rounds so drift on a shared machine
hits all of them alike; the step time is the median over every timed step of every round (Lightning's
whole training step: forward, backward, optimizer step, and each method's hooks — our post-step
re-masking, ``ModelPruning``'s forward pre-hooks).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelPruning
from omegaconf import DictConfig

from lightning_prune import IterativePruning
from lightning_prune.bench._common import default_data, environment, print_table, quiet, trainer
from lightning_prune.bench._compose import Record
from lightning_prune.bench.docs import load_result
from lightning_prune.core.selection import select_parameters
from lightning_prune.models import MLP, Classifier, SmallCNN

ARMS = ("dense", "noop_callback", "masked", "modelpruning")
RESULTS = "docs/bench/iterative"


class StepTimer(pl.Callback):
    """Wall time of each training step of the last epoch, from batch start to after every batch-end hook."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.times = epoch, []

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.current_epoch == self.epoch:
            self.times.append(time.perf_counter() - self._start)


def arm_callbacks(arm: str, module: Classifier, sparsity: float) -> list[pl.Callback]:
    if arm == "noop_callback":
        # What any one more callback costs per step in Lightning's loop: the floor for a callback-based method.
        return [pl.Callback()]
    if arm == "masked":
        return [
            IterativePruning(
                target_sparsity=sparsity, step_ratio=sparsity, warmup_epochs=1, log_layers=False, stop_when_done=False
            )
        ]
    if arm == "modelpruning":
        names = select_parameters(module)
        targets = [(module.get_submodule(name.rsplit(".", 1)[0]), "weight") for name in names]
        return [
            ModelPruning(
                "l1_unstructured",
                parameters_to_prune=targets,
                amount=lambda epoch: sparsity if epoch == 0 else 0.0,
                use_global_unstructured=True,
                verbose=0,
            )
        ]
    return []


def measure(
    build: Callable[[], Classifier], datamodule: pl.LightningDataModule, steps: int, rounds: int, sparsity: float
) -> dict[str, Any]:
    """Median step time per arm over interleaved rounds, and the sparsity each arm actually held."""
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    held: dict[str, float] = {}
    initial = build().state_dict()
    for _ in range(rounds):
        for arm in ARMS:
            module = build()
            module.load_state_dict(initial)
            timer = StepTimer(epoch=1)
            fit = trainer(
                2, [*arm_callbacks(arm, module, sparsity), timer], limit_train_batches=steps, limit_val_batches=0
            )
            fit.fit(module, datamodule=datamodule)
            times[arm] += timer.times[2:]  # the first steps of an epoch include allocator warm-up
            weights = [module.get_parameter(name) for name in select_parameters(module)]
            held[arm] = float(sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights))
    medians = {arm: statistics.median(values) * 1e3 for arm, values in times.items()}
    return {
        "step_ms": medians,
        "sparsity_held": held,
        "steps_timed": {arm: len(v) for arm, v in times.items()},
        "masked_over_dense": medians["masked"] / medians["dense"],
        "masked_over_modelpruning": medians["masked"] / medians["modelpruning"],
        "masked_over_noop_callback": medians["masked"] / medians["noop_callback"],
    }


def run(cfg: DictConfig, record: Record) -> None:
    """Time every arm on the CNN and the MLP; the JSON's top level is the CNN's figures, ``models`` both."""
    quiet()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    datamodule, dataset = default_data(cfg.data_dir, cfg.seed, batch_size=cfg.batch_size, digits=cfg.digits)
    shape, classes = datamodule.input_shape, datamodule.num_classes
    models = {
        "cnn": lambda: Classifier(SmallCNN(shape, classes), classes, shape),
        "mlp": lambda: Classifier(MLP(shape, classes, hidden=(300, 100)), classes, shape),
    }
    results = {}
    for name, build in models.items():
        pl.seed_everything(cfg.seed, verbose=False)
        results[name] = measure(build, datamodule, cfg.steps, cfg.rounds, cfg.sparsity)
    result = {"dataset": dataset, "sparsity": cfg.sparsity, "torch_threads": torch.get_num_threads(), **results["cnn"]}
    result.update(models=results, environment=environment())
    print_table(
        f"median training-step time (ms), {dataset}, sparsity {cfg.sparsity}",
        ["model", *COLUMNS[1:]],
        [[name, *_row(r)] for name, r in results.items()],
    )
    record(result)


# ---------------------------------------------------------------- tables for docs/iterative.md

COLUMNS = ["run", "dense ms", "no-op callback ms", "ours ms", "`ModelPruning` ms"]
COLUMNS += ["ours / dense", "ours / `ModelPruning`", "ours / no-op"]
# The committed runs: the main one (the default settings), then the same benchmark with fewer rounds or two threads.
RUNS = {"main": "1 thread, 10 rounds (default)", "rounds5": "1 thread, 5 rounds", "threads2": "2 threads, 3 rounds"}


def _row(r: dict[str, Any]) -> list[float]:
    times = [r["step_ms"][arm] for arm in ARMS]
    return [*times, r["masked_over_dense"], r["masked_over_modelpruning"], r["masked_over_noop_callback"]]


def _table(model: str) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---" + "|---:" * (len(COLUMNS) - 1) + "|"]
    for name, label in RUNS.items():
        figures = _row(load_result(f"{RESULTS}/{name}.json")["models"][model])
        cells = [f"{v:.2f}" if i < 4 else f"{v:.3f}" for i, v in enumerate(figures)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _setup() -> str:
    """What the main run measured: data, sparsity, steps, rounds, threads (from its JSON)."""
    main = load_result(f"{RESULTS}/main.json")
    cnn = main["models"]["cnn"]
    return (
        "| data | sparsity held (ours / `ModelPruning`) | timed steps per arm | torch threads |\n|---|---|---:|---:|\n"
        f"| {main['dataset']} | {cnn['sparsity_held']['masked']:.3f} / {cnn['sparsity_held']['modelpruning']:.3f} | "
        f"{cnn['steps_timed']['masked']} | {main['torch_threads']} |"
    )


def claim() -> str:
    """The paper's claim beside our figure: the README's row for this method, as a table."""
    row = headline()
    return f"| paper's claim | measured here |\n|---|---|\n| {row['claim']} | {row['measured']} |"


def headline() -> dict[str, str]:
    """The README's row: the MLP (whose short step shows a per-step cost most) of the main run."""
    mlp = load_result(f"{RESULTS}/main.json")["models"]["mlp"]
    return {
        "method": "iterative magnitude pruning (holding masks)",
        "claim": "no paper claim; our bar: a training step ≤ 1.05x dense and no slower than `ModelPruning`",
        "measured": f"MLP step {mlp['masked_over_dense']:.2f}x dense, {mlp['masked_over_modelpruning']:.2f}x "
        "`ModelPruning`",
        "evidence": "[docs/iterative.md](docs/iterative.md)",
    }


TABLES = {"mlp": lambda: _table("mlp"), "cnn": lambda: _table("cnn"), "setup": _setup, "claim": claim}
