"""ODF2NNA on the bundled tabular sets: wide net vs rebuilt net vs magnitude pruning vs scratch.

``python -m lightning_prune.bench dense --out dense.json``. Per data set and seed, four arms start from
the same seed (same split, same initialisation) and train the same number of epochs:

- ``wide``: the 3x256 ReLU MLP, ``wide_epochs + retrain_epochs`` epochs.
- ``rebuilt``: :class:`~lightning_prune.DenseUnitPruning` scores the units after ``wide_epochs``, rebuilds a
  narrower MLP with the trained weights and retrains it ``retrain_epochs`` epochs.
- ``magnitude``: one-shot global magnitude pruning (:class:`~lightning_prune.IterativePruning`) at the
  same epoch to the rebuilt arm's parameter count, then the same fine-tune; same shape, so no faster.
- ``scratch``: the rebuilt widths, freshly initialised, trained as long as the whole pipeline.

Each arm is evaluated on the test split with the weights of its best validation loss (after the prune
for the pruned arms). ``test_metric`` is accuracy (classification) or R² (diabetes); latency is the
median of many timed CPU forwards of the bare net after a warm-up, at ``torch.set_num_threads(threads)``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from lightning_prune.bench._common import environment, parser, print_table, quiet, trainer, write_json
from lightning_prune.callbacks import DenseUnitPruning, IterativePruning
from lightning_prune.core.structured import count_parameters
from lightning_prune.data import TabularDataModule
from lightning_prune.models import MLP, Classifier, Regressor

DATASETS = {"breast_cancer": "acc", "wine": "acc", "digits": "acc", "diabetes": "r2"}
ARMS = ("wide", "rebuilt", "magnitude", "scratch")
HIDDEN = (256, 256, 256)


class BestWeights(pl.Callback):
    """Keep the weights of the lowest ``monitor`` from ``from_epoch`` on, and load them when the fit ends."""

    def __init__(self, monitor: str = "val/loss", from_epoch: int = 0) -> None:
        self.monitor, self.from_epoch = monitor, from_epoch
        self.best: float | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch < self.from_epoch:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if self.best is None or value < self.best:
            self.best = value
            self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.state is not None:
            pl_module.load_state_dict(self.state)


def latency_ms(net: nn.Module, input_shape: Sequence[int], batch: int, repeats: int, warmup: int) -> float:
    """Median wall time of one forward of ``batch`` inputs, in milliseconds."""
    net = net.eval()
    x = torch.randn(batch, *input_shape)
    times = []
    with torch.inference_mode():
        for index in range(warmup + repeats):
            started = time.perf_counter()
            net(x)
            if index >= warmup:
                times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def build_module(datamodule: TabularDataModule, hidden: Sequence[int], lr: float) -> pl.LightningModule:
    net = MLP(datamodule.input_shape, datamodule.num_classes, hidden=hidden)
    if DATASETS[datamodule.name] == "r2":
        return Regressor(net, datamodule.input_shape, lr=lr, optimizer="adamw", weight_decay=1e-2)
    return Classifier(net, datamodule.num_classes, datamodule.input_shape, lr=lr, optimizer="adamw", weight_decay=1e-2)


def fit_arm(
    datamodule: TabularDataModule,
    seed: int,
    hidden: Sequence[int],
    epochs: int,
    callbacks: Sequence[pl.Callback],
    select_from: int,
    args: Any,
) -> tuple[pl.LightningModule, float]:
    """Train one arm from ``seed`` and return it (best validation weights) with its test metric."""
    pl.seed_everything(seed, verbose=False)
    module = build_module(datamodule, hidden, args.lr)
    best = BestWeights(from_epoch=select_from)
    with tempfile.TemporaryDirectory() as root:
        fit = trainer(epochs, [*callbacks, best], root=root)
        fit.fit(module, datamodule=datamodule)
        fit.test(module, datamodule=datamodule, verbose=False)
        metric = float(fit.callback_metrics[f"test/{DATASETS[datamodule.name]}"])
    return module, metric


def measure(module: pl.LightningModule, datamodule: TabularDataModule, metric: float, args: Any) -> dict[str, Any]:
    net = module.net
    return {
        "params": count_parameters(net),
        "params_nonzero": sum(int((p != 0).sum()) for p in net.parameters()),
        "test_metric": metric,
        "latency_ms_b1": latency_ms(net, datamodule.input_shape, 1, args.repeats, args.warmup),
        "latency_ms_b256": latency_ms(net, datamodule.input_shape, 256, max(20, args.repeats // 5), args.warmup),
    }


def run_seed(name: str, seed: int, args: Any) -> dict[str, dict[str, Any]]:
    """The four arms on one split/initialisation."""
    datamodule = TabularDataModule(name, batch_size=args.batch_size, seed=seed)
    datamodule.setup()
    wide_epochs, total = args.wide_epochs, args.wide_epochs + args.retrain_epochs
    results = {}
    module, metric = fit_arm(datamodule, seed, HIDDEN, total, [], 0, args)
    results["wide"] = measure(module, datamodule, metric, args)
    pruning = DenseUnitPruning(epsilon=args.epsilon, wide_epochs=wide_epochs, retrain_epochs=args.retrain_epochs)
    module, metric = fit_arm(datamodule, seed, HIDDEN, total, [pruning], wide_epochs, args)
    results["rebuilt"] = measure(module, datamodule, metric, args)
    results["rebuilt"]["widths"] = list(pruning.widths_after.values())
    magnitude = _magnitude_callback(datamodule, results["wide"]["params"], results["rebuilt"]["params"], args)
    module, metric = fit_arm(datamodule, seed, HIDDEN, total, [magnitude], wide_epochs, args)
    results["magnitude"] = measure(module, datamodule, metric, args)
    module, metric = fit_arm(datamodule, seed, results["rebuilt"]["widths"], total, [], 0, args)
    results["scratch"] = measure(module, datamodule, metric, args)
    return results


def _magnitude_callback(datamodule: TabularDataModule, wide: int, target: int, args: Any) -> IterativePruning:
    """One global magnitude step over every Linear weight (head included) down to ``target`` nonzeros."""
    weights = sum(
        m.weight.numel() for m in build_module(datamodule, HIDDEN, args.lr).modules() if isinstance(m, nn.Linear)
    )
    sparsity = min(0.99, (wide - target) / weights)
    return IterativePruning(
        target_sparsity=sparsity,
        step_ratio=sparsity,
        warmup_epochs=args.wide_epochs,
        finetune_epochs=args.retrain_epochs,
        prune_head=True,
    )


def summarise(per_seed: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Mean parameters and metric, median latency over seeds; the per-seed metrics kept alongside."""
    result: dict[str, Any] = {}
    for arm in ARMS:
        runs = [seed_result[arm] for seed_result in per_seed]
        metrics = [run["test_metric"] for run in runs]
        result[arm] = {
            "params": statistics.mean(run["params_nonzero"] for run in runs),
            "test_metric": statistics.mean(metrics),
            "test_metric_std": statistics.pstdev(metrics),
            "test_metric_seeds": metrics,
            "latency_ms_b1": statistics.median(run["latency_ms_b1"] for run in runs),
            "latency_ms_b256": statistics.median(run["latency_ms_b256"] for run in runs),
        }
    result["rebuilt"]["widths_seeds"] = [seed_result["rebuilt"]["widths"] for seed_result in per_seed]
    wide, rebuilt = result["wide"], result["rebuilt"]
    result["ratios"] = {
        "param_reduction": 1 - rebuilt["params"] / wide["params"],
        "metric_delta": rebuilt["test_metric"] - wide["test_metric"],
        "speedup_b1": wide["latency_ms_b1"] / rebuilt["latency_ms_b1"],
        "speedup_b256": wide["latency_ms_b256"] / rebuilt["latency_ms_b256"],
        "magnitude_speedup_b256": wide["latency_ms_b256"] / result["magnitude"]["latency_ms_b256"],
        "transfer_gain": rebuilt["test_metric"] - result["scratch"]["test_metric"],
    }
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("dense", "ODF2NNA: wide vs rebuilt vs magnitude vs scratch on the bundled tabular sets")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--seeds", type=int, default=5, help="seeds seed, seed+1, ...: split and initialisation")
    p.add_argument("--epsilon", type=float, default=0.5)
    p.add_argument("--wide-epochs", type=int, default=20)
    p.add_argument("--retrain-epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for training and timing")
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.wide_epochs, args.retrain_epochs, args.repeats, args.warmup = 1, 2, 1, 20, 5
    quiet()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    datasets = {}
    for name in args.datasets:
        per_seed = [run_seed(name, args.seed + offset, args) for offset in range(args.seeds)]
        datasets[name] = summarise(per_seed)
    result = {
        "datasets": datasets,
        "protocol": {k: v for k, v in vars(args).items() if k not in ("out", "data_dir")},
        "metric": {name: DATASETS[name] for name in args.datasets},
        "hidden": list(HIDDEN),
        "wall_s": time.perf_counter() - started,
        "environment": {**environment(), "torch_threads": torch.get_num_threads()},
    }
    write_json(args.out, result)
    rows = [
        [name, arm, round(d[arm]["params"]), d[arm]["test_metric"], d[arm]["latency_ms_b1"], d[arm]["latency_ms_b256"]]
        for name, d in datasets.items()
        for arm in ARMS
    ]
    print_table("ODF2NNA (dense unit pruning)", ["dataset", "arm", "params", "test metric", "ms b1", "ms b256"], rows)
    return 0
