"""ODF2NNA on the bundled tabular sets: wide net vs rebuilt net vs a control, magnitude pruning and scratch.

``python -m lightning_prune.bench dense --out dense.json``. Per data set and seed (split and initialisation),
the wide 3x256 ReLU MLP trains until its validation loss has not improved for ``--patience`` epochs (the
"validation stops improving" trigger); that point is shared as a checkpoint holding the wide net's
best-validation weights (what ``DenseUnitPruning(restore_best=True)`` rebuilds from; ``--no-restore-best``:
the last weights), and every arm trains the same total number of epochs from it:

- ``wide``: the wide net, ``retrain_epochs`` more epochs.
- ``control``: ``DenseUnitPruning(epsilon=0)``: the rebuilt arm's path (rebuild, retraining, test weights
  chosen after the rebuild) with every unit kept, so ``rebuilt - control`` is what removing units costs and
  ``control - wide`` what the path itself costs.
- ``rebuilt``: :class:`~lightning_prune.DenseUnitPruning` scores the units at that point, rebuilds a narrower
  MLP with the trained weights (removed units replaced by least squares, ``--compensation``) and retrains it
  ``retrain_epochs`` epochs; one arm per candidate ``(epsilon, retrain_lr_scale)`` (``--epsilons`` x
  ``--retrain-lr-scales``: "lightly retrain" at the full rate or a tenth), and the reported one has the largest
  epsilon whose *validation* metric (mean over seeds) stays within ``--tolerance`` of the wide net's, with
  that epsilon's best retraining rate on validation (:func:`choose_setting`). The test split plays no part.
- ``magnitude``: one-shot global magnitude pruning (:class:`~lightning_prune.IterativePruning`) at the same
  point to the rebuilt arm's parameter count, then the same fine-tune; same shapes, so no faster.
- ``scratch``: the rebuilt widths, freshly initialised, trained as long as the whole pipeline.

Each arm is evaluated on the test split with the weights of its best validation loss; for the pruned arms
from the prune on, the pruned net *before* fine-tuning included (:class:`AfterPrune`), so fine-tuning is kept
only where it lowers the validation loss. ``test_metric`` is accuracy (classification) or R² (diabetes);
latency is the median of many timed CPU forwards of the bare net after a warm-up, at
``torch.set_num_threads(threads)``.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import Tensor, nn
from torchmetrics.functional import r2_score
from torchmetrics.functional.classification import multiclass_accuracy

from lightning_prune.bench._common import environment, parser, print_table, quiet, trainer, write_json
from lightning_prune.callbacks import DenseUnitPruning, IterativePruning
from lightning_prune.callbacks.dense_rebuild import COMPENSATIONS
from lightning_prune.core.structured import count_parameters
from lightning_prune.core.timing import TimingSettings, measure_latency
from lightning_prune.data import TabularDataModule
from lightning_prune.models import MLP, Classifier, Regressor

DATASETS = {"breast_cancer": "acc", "wine": "acc", "digits": "acc", "diabetes": "r2"}
ARMS = ("wide", "control", "rebuilt", "magnitude", "scratch")
HIDDEN = (256, 256, 256)


class BestWeights(pl.Callback):
    """Keep the weights of the lowest ``monitor`` from ``from_epoch`` on, and load them when the fit ends.

    :class:`AfterPrune` offers it the pruned net before any fine-tuning too (``offer``): the fine-tuning is
    kept only where it lowers the validation loss.
    """

    def __init__(self, monitor: str = "val/loss", from_epoch: int = 0) -> None:
        self.monitor, self.from_epoch = monitor, from_epoch
        self.best: float | None = None
        self.state: dict[str, torch.Tensor] | None = None
        self.chose_before_finetuning = False

    def offer(self, value: float, pl_module: pl.LightningModule, before_finetuning: bool) -> None:
        if self.best is None or value < self.best:
            self.best, self.chose_before_finetuning = value, before_finetuning
            self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch < self.from_epoch:
            return
        self.offer(float(trainer.callback_metrics[self.monitor]), pl_module, before_finetuning=False)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.state is not None:
            pl_module.load_state_dict(self.state)


class AfterPrune(pl.Callback):
    """The pruned net before any fine-tuning: its metrics, and its validation loss offered to ``best``.

    Placed after the pruning callback, it runs at the start of ``epoch`` (the prune or rebuild epoch):
    what the replacement of removed units preserves, and a candidate for the arm's best-validation weights.
    """

    def __init__(self, datamodule: TabularDataModule, epoch: int, best: BestWeights) -> None:
        self.datamodule, self.epoch, self.best = datamodule, epoch, best
        self.metrics: dict[str, float] = {}

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch != self.epoch:
            return
        for split in ("val", "test"):
            self.metrics[split] = split_metric(pl_module, self.datamodule, split)
        self.best.offer(split_loss(pl_module, self.datamodule, "val"), pl_module, before_finetuning=True)


def _outputs(module: pl.LightningModule, datamodule: TabularDataModule, split: str) -> tuple[Tensor, Tensor]:
    """The net's raw outputs (logits, or standardised predictions for a regressor) on a whole split."""
    x, y = getattr(datamodule, f"{split}_set").tensors
    was_training = module.training
    module.eval()
    with torch.no_grad():
        out = module.net(x.to(module.device)).cpu()
    module.train(was_training)
    return out, y


def split_metric(module: pl.LightningModule, datamodule: TabularDataModule, split: str) -> float:
    """Accuracy or R² of ``module`` on a whole split, in eval mode (torchmetrics' functional forms)."""
    out, y = _outputs(module, datamodule, split)
    if DATASETS[datamodule.name] == "r2":
        prediction = out.reshape(-1) * module.target_std.cpu() + module.target_mean.cpu()
        return float(r2_score(prediction, y.reshape(-1).to(prediction.dtype)))
    return float(multiclass_accuracy(out, y, num_classes=out.shape[1], average="micro"))


def split_loss(module: pl.LightningModule, datamodule: TabularDataModule, split: str) -> float:
    """The module's own ``val/loss`` over a whole split (cross-entropy; MSE of standardised targets)."""
    out, y = _outputs(module, datamodule, split)
    if DATASETS[datamodule.name] == "r2":
        target = (y.reshape(-1).to(out.dtype) - module.target_mean.cpu()) / module.target_std.cpu()
        return float(F.mse_loss(out.reshape(-1), target))
    return float(F.cross_entropy(out, y))


def latency_ms(net: nn.Module, input_shape: Sequence[int], batch: int, repeats: int, warmup: int) -> float:
    """Median wall time of one forward of ``batch`` inputs, in milliseconds (the shared timing core)."""
    settings = TimingSettings(warmup=warmup, repeats=repeats)
    return measure_latency(net, torch.randn(batch, *input_shape), settings, "cpu").p50_ms


def build_module(datamodule: TabularDataModule, hidden: Sequence[int], lr: float) -> pl.LightningModule:
    net = MLP(datamodule.input_shape, datamodule.num_classes, hidden=hidden)
    options = {"lr": lr, "optimizer": "adamw", "weight_decay": 1e-2}
    if DATASETS[datamodule.name] == "r2":
        return Regressor(net, datamodule.input_shape, **options)
    return Classifier(net, datamodule.num_classes, datamodule.input_shape, **options)


@dataclass
class Arm:
    """One trained arm: its module (best validation weights) and its validation and test metrics."""

    module: pl.LightningModule
    val_metric: float
    test_metric: float


def fit_arm(
    datamodule: TabularDataModule,
    module: pl.LightningModule,
    epochs: int,
    callbacks: Sequence[pl.Callback],
    best: BestWeights,
    ckpt_path: str | None = None,
) -> Arm:
    """Train (or resume) ``module``, load its best validation weights, then validate and test them."""
    metric = DATASETS[datamodule.name]
    with tempfile.TemporaryDirectory() as root:
        fit = trainer(epochs, [*callbacks, best], root=root)
        fit.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        fit.validate(module, datamodule=datamodule, verbose=False)
        val = float(fit.callback_metrics[f"val/{metric}"])
        fit.test(module, datamodule=datamodule, verbose=False)
        return Arm(module, val, float(fit.callback_metrics[f"test/{metric}"]))


def measure(
    arm: Arm,
    datamodule: TabularDataModule,
    args: Any,
    after: AfterPrune | None = None,
    best: BestWeights | None = None,
) -> dict[str, Any]:
    """Size, metrics and latency of an arm.

    For a pruned arm also its metrics before fine-tuning and whether its best-validation weights were
    those (no fine-tuning epoch lowered the validation loss).
    """
    net = arm.module.net
    pruned = {}
    if after is not None and best is not None:
        pruned = {
            "val_metric_before_retraining": after.metrics["val"],
            "test_metric_before_retraining": after.metrics["test"],
            "kept_before_retraining": best.chose_before_finetuning,
        }
    return {
        **pruned,
        "params": count_parameters(net),
        "params_nonzero": sum(int((p != 0).sum()) for p in net.parameters()),
        "val_metric": arm.val_metric,
        "test_metric": arm.test_metric,
        "latency_ms_b1": latency_ms(net, datamodule.input_shape, 1, args.repeats, args.warmup),
        "latency_ms_b256": latency_ms(net, datamodule.input_shape, 256, max(20, args.repeats // 5), args.warmup),
    }


def run_dataset(name: str, args: Any) -> list[dict[str, Any]]:
    """Every seed's five arms; the setting is chosen once per data set, on validation metrics pooled over seeds.

    The setting is ``(epsilon, retrain_lr_scale)``.
    """
    with tempfile.TemporaryDirectory() as root:
        seeds = [_wide_and_grid(name, args.seed + offset, f"{root}/{offset}", args) for offset in range(args.seeds)]
        grid_val = {key: statistics.mean(s["grid"][key]["val_metric"] for s in seeds) for key in seeds[0]["grid"]}
        wide_val = statistics.mean(s["wide"]["val_metric"] for s in seeds)
        setting = choose_setting(grid_val, wide_val, args.tolerance)
        for result in seeds:
            _pruned_baselines(result, setting, args)
    return seeds


def _wide_and_grid(name: str, seed: int, root: str, args: Any) -> dict[str, Any]:
    """The wide arm and one rebuilt arm per candidate setting, all resuming the shared wide checkpoint."""
    datamodule = TabularDataModule(name, batch_size=args.batch_size, seed=seed)
    datamodule.setup()
    wide_best = BestWeights()
    ckpt, wide_epochs = _train_wide(datamodule, seed, wide_best, root, args)
    total = wide_epochs + args.retrain_epochs
    wide = fit_arm(datamodule, build_module(datamodule, HIDDEN, args.lr), total, [], wide_best, ckpt)
    result: dict[str, Any] = {"seed": seed, "datamodule": datamodule, "ckpt": ckpt, "wide_epochs": wide_epochs}
    result["wide"] = measure(wide, datamodule, args)
    result["grid"] = {
        (epsilon, scale): _rebuilt_arm(datamodule, wide_epochs, (epsilon, scale), ckpt, args)
        for epsilon in args.epsilons
        for scale in args.retrain_lr_scales
    }
    return result


def _rebuilt_arm(
    datamodule: TabularDataModule, wide_epochs: int, setting: tuple[float, float], ckpt: str, args: Any
) -> dict:
    """ODF2NNA from the shared checkpoint with ``setting = (epsilon, retrain_lr_scale)``.

    ``epsilon=0`` keeps every unit: the control, with the same rebuild, retraining and selection window
    as a pruned arm and nothing removed.
    """
    epsilon, scale = setting
    pruning = DenseUnitPruning(
        epsilon=epsilon,
        wide_epochs=wide_epochs,
        retrain_epochs=args.retrain_epochs,
        retrain_lr_scale=scale,
        reference_quantile=args.reference_quantile,
        carry_optimizer_state=not args.fresh_optimizer,
        compensation=args.compensation,
        restore_best=False,  # the shared checkpoint holds the weights restore_best would go back to (or not)
    )
    module = build_module(datamodule, HIDDEN, args.lr)
    total = wide_epochs + args.retrain_epochs
    best = BestWeights(from_epoch=wide_epochs)
    after = AfterPrune(datamodule, wide_epochs, best)
    arm = fit_arm(datamodule, module, total, [pruning, after], best, ckpt)
    return {**measure(arm, datamodule, args, after, best), "widths": list(pruning.widths_after.values())}


def _pruned_baselines(result: dict[str, Any], setting: tuple[float, float], args: Any) -> None:
    """The chosen rebuilt arm and its control, then magnitude pruning to its count and its widths from scratch.

    The control is epsilon 0 with the chosen retraining.
    """
    datamodule, seed, wide_epochs = result.pop("datamodule"), result["seed"], result["wide_epochs"]
    total = wide_epochs + args.retrain_epochs
    epsilon, scale = setting
    result["rebuilt"] = {**result["grid"][setting], "epsilon": epsilon, "retrain_lr_scale": scale}
    result["control"] = _rebuilt_arm(datamodule, wide_epochs, (0.0, scale), result["ckpt"], args)
    magnitude = _magnitude_callback(
        datamodule, wide_epochs, result["wide"]["params"], result["rebuilt"]["params"], args
    )
    module = build_module(datamodule, HIDDEN, args.lr)
    best = BestWeights(from_epoch=wide_epochs)
    after = AfterPrune(datamodule, wide_epochs, best)
    arm = fit_arm(datamodule, module, total, [magnitude, after], best, result.pop("ckpt"))
    result["magnitude"] = measure(arm, datamodule, args, after, best)
    pl.seed_everything(seed, verbose=False)
    scratch = build_module(datamodule, result["rebuilt"]["widths"], args.lr)
    result["scratch"] = measure(fit_arm(datamodule, scratch, total, [], BestWeights()), datamodule, args)


def _train_wide(datamodule: TabularDataModule, seed: int, best: BestWeights, root: str, args: Any) -> tuple[str, int]:
    """The shared wide phase, until the validation loss stops improving for ``patience`` epochs.

    Returns the checkpoint every other arm resumes from and the number of epochs trained: the pruned
    arms rebuild or prune at the start of the next epoch, where ``DenseUnitPruning(patience=...)`` would.
    """
    pl.seed_everything(seed, verbose=False)
    module = build_module(datamodule, HIDDEN, args.lr)
    checkpoint = ModelCheckpoint(dirpath=root, save_top_k=0, save_last=True)
    plateau = EarlyStopping(monitor="val/loss", patience=args.patience)
    fit = trainer(args.max_wide_epochs, [best, plateau, checkpoint], root=root, enable_checkpointing=True)
    fit.fit(module, datamodule=datamodule)
    # The last checkpoint resumes at the epoch after the last one trained: its "epoch" is the count trained.
    state = torch.load(checkpoint.last_model_path, weights_only=True)
    if args.restore_best:
        state["state_dict"] = best.state
    path = f"{root}/wide_end.ckpt"
    torch.save(state, path)
    return path, state["epoch"]


def choose_setting(
    grid_val: dict[tuple[float, float], float], wide_val: float, tolerance: float
) -> tuple[float, float]:
    """The ``(epsilon, retrain_lr_scale)`` to report, from *validation* metrics only.

    The largest epsilon with a setting within ``tolerance`` of the wide net's validation metric, and of its
    settings the best on validation (ties: the first listed); when none is within, the best setting of
    the smallest epsilon. The test split plays no part: the paper's "well-chosen epsilon", on validation.
    """
    eligible = [key for key, val in grid_val.items() if val >= wide_val - tolerance]
    epsilon = max(key[0] for key in eligible) if eligible else min(key[0] for key in grid_val)
    candidates = [key for key in (eligible or grid_val) if key[0] == epsilon]
    return max(candidates, key=lambda key: (grid_val[key], -list(grid_val).index(key)))


def grid_name(setting: tuple[float, float]) -> str:
    """A JSON key for ``(epsilon, retrain_lr_scale)``."""
    return f"epsilon={setting[0]},retrain_lr_scale={setting[1]}"


def _magnitude_callback(
    datamodule: TabularDataModule, wide_epochs: int, wide: int, target: int, args: Any
) -> IterativePruning:
    """One global magnitude step over every Linear weight (head included) down to ``target`` nonzeros."""
    net = build_module(datamodule, HIDDEN, args.lr).net
    weights = sum(m.weight.numel() for m in net.modules() if isinstance(m, nn.Linear))
    sparsity = min(0.999, (wide - target) / weights)
    return IterativePruning(
        target_sparsity=sparsity,
        step_ratio=sparsity,
        warmup_epochs=wide_epochs,
        finetune_epochs=args.retrain_epochs,
        prune_head=True,
    )


def summarise(per_seed: list[dict[str, dict[str, Any]]], tolerance: float) -> dict[str, Any]:
    """Mean parameters and metric, median latency over seeds; the per-seed metrics kept alongside.

    ``rebuilt.epsilon_within_tolerance`` is false when no candidate met the validation tolerance and the
    smallest epsilon was reported as a fallback.
    """
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
    for arm in ("control", "rebuilt", "magnitude"):
        for key in ("val_metric_before_retraining", "test_metric_before_retraining"):
            result[arm][key] = statistics.mean(seed_result[arm][key] for seed_result in per_seed)
        result[arm]["kept_before_retraining_seeds"] = sum(s[arm]["kept_before_retraining"] for s in per_seed)
    result["rebuilt"]["widths_seeds"] = [seed_result["rebuilt"]["widths"] for seed_result in per_seed]
    result["rebuilt"]["epsilon"] = per_seed[0]["rebuilt"]["epsilon"]
    result["wide"]["val_metric"] = statistics.mean(seed_result["wide"]["val_metric"] for seed_result in per_seed)
    result["wide"]["wide_epochs_seeds"] = [seed_result["wide_epochs"] for seed_result in per_seed]
    result["grid"] = {
        grid_name(setting): {
            key: statistics.mean(seed_result["grid"][setting][key] for seed_result in per_seed)
            for key in ("params", "val_metric", "test_metric", "test_metric_before_retraining")
        }
        for setting in per_seed[0]["grid"]
    }
    wide, rebuilt = result["wide"], result["rebuilt"]
    rebuilt["retrain_lr_scale"] = per_seed[0]["rebuilt"]["retrain_lr_scale"]
    chosen_val = result["grid"][grid_name((rebuilt["epsilon"], rebuilt["retrain_lr_scale"]))]["val_metric"]
    rebuilt["epsilon_within_tolerance"] = chosen_val >= wide["val_metric"] - tolerance
    result["ratios"] = {
        "param_reduction": 1 - rebuilt["params"] / wide["params"],
        "metric_delta": rebuilt["test_metric"] - wide["test_metric"],
        "speedup_b1": wide["latency_ms_b1"] / rebuilt["latency_ms_b1"],
        "speedup_b256": wide["latency_ms_b256"] / rebuilt["latency_ms_b256"],
        "magnitude_speedup_b256": wide["latency_ms_b256"] / result["magnitude"]["latency_ms_b256"],
        "transfer_gain": rebuilt["test_metric"] - result["scratch"]["test_metric"],
        "metric_delta_vs_control": rebuilt["test_metric"] - result["control"]["test_metric"],
        "control_delta": result["control"]["test_metric"] - wide["test_metric"],
    }
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("dense", "ODF2NNA: wide vs rebuilt vs magnitude vs scratch on the bundled tabular sets")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--seeds", type=int, default=5, help="seeds seed, seed+1, ...: split and initialisation")
    p.add_argument(
        "--epsilons",
        type=float,
        nargs="+",
        default=[0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
        help="candidates; the largest whose seed-mean validation metric is within --tolerance of the wide net's",
    )
    p.add_argument("--tolerance", type=float, default=0.005, help="allowed validation loss of accuracy or R²")
    p.add_argument("--patience", type=int, default=3, help="wide phase ends when val/loss stalls this many epochs")
    p.add_argument("--max-wide-epochs", type=int, default=50)
    p.add_argument("--retrain-epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--retrain-lr-scales",
        type=float,
        nargs="+",
        default=[1.0, 0.1],
        help="DenseUnitPruning's retrain_lr_scale candidates, chosen with epsilon on validation",
    )
    p.add_argument(
        "--reference-quantile",
        type=float,
        default=0.99,
        help="DenseUnitPruning's reference_quantile, as in recipes/odf2nna.yaml (1.0: the layer's max)",
    )
    p.add_argument(
        "--fresh-optimizer",
        action="store_true",
        help="DenseUnitPruning(carry_optimizer_state=False): restart Adam after the rebuild (the earlier default)",
    )
    p.add_argument(
        "--compensation",
        default="least_squares",
        choices=list(COMPENSATIONS),
        help="DenseUnitPruning's compensation: what replaces the removed units' input to the next layer",
    )
    p.add_argument(
        "--no-restore-best",
        dest="restore_best",
        action="store_false",
        help="pruned arms start from the wide net's last weights, not its best-validation ones (restore_best=False)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for training and timing")
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.max_wide_epochs, args.retrain_epochs, args.repeats, args.warmup = 1, 2, 1, 20, 5
        args.epsilons, args.retrain_lr_scales = args.epsilons[-1:], args.retrain_lr_scales[:1]
    for epsilon, scale in itertools.product(args.epsilons, args.retrain_lr_scales):  # checked before any training
        DenseUnitPruning(epsilon=epsilon, retrain_lr_scale=scale, reference_quantile=args.reference_quantile)
    quiet()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    datasets = {}
    for name in args.datasets:
        datasets[name] = summarise(run_dataset(name, args), args.tolerance)
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
