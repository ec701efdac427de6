"""Latency-budgeted pruning against a uniform channel cut of the same *measured* latency.

``python -m lightning_prune.bench latency --out latency.json``

A small ResNet is trained dense on digits (``--data-dir``: MNIST), then copied into two arms that get
the same fine-tuning epochs from the same weights: **ours** (:class:`LatencyBudgetPruning`: SP-LAMP,
latency table, group knapsack, HALP schedule over ``--steps`` steps) and **uniform** (torch-pruning's
magnitude importance, the same channel ratio in every group, pruned over the same steps). The
uniform ratio is tuned *after* ours has finished: a sweep of ratios is timed interleaved with ours'
final model, and the least-pruned ratio no slower than ours is taken, so the comparison is at equal
measured latency. The dense model keeps training for the same epochs. At the end the three models
are timed round-robin (``--rounds``), at a fixed thread count, and tested; ``measured_ms`` is the
lowest per-round median (what the callback decides on; load only adds time), ``p50_ms`` pools all calls,
``spread`` is the relative range of the round medians (the noise); MACs and parameters come
from torch-pruning's counter. ``lut_r`` correlates the table's prediction with the measurement over
every configuration timed (the sweep and the three final models). The whole comparison runs for each
of ``--seeds`` seeds (data split, initialisation, batches); arms report means, accuracies also per seed.
"""

from __future__ import annotations

import copy
import statistics
from typing import Any

import lightning.pytorch as pl
import torch
import torch_pruning as tp
from torch import Tensor, nn

from lightning_prune import LatencyBudgetPruning
from lightning_prune.bench._common import default_data, environment, parser, print_table, quiet, trainer, write_json
from lightning_prune.callbacks._trainer import rebuild_after_shrink
from lightning_prune.core.latency import TimingSettings, batch_of, device_name, interleaved_latency
from lightning_prune.core.latency_plan import predict_ms, trace_network
from lightning_prune.core.latency_table import LatencyTable
from lightning_prune.core.selection import head_module_name
from lightning_prune.core.structured import architecture_spec
from lightning_prune.models import Classifier, ResNet

ARMS = ("dense", "ours", "uniform")


def uniform_pruner(model: nn.Module, example: Tensor, ratio: float, steps: int, round_to: int) -> tp.pruner.MetaPruner:
    """torch-pruning's magnitude (L2) pruner: the same channel ratio in every group, head untouched."""
    head = model.get_submodule(head_module_name(model))
    was_training = model.training
    model.eval()
    try:
        return tp.pruner.MetaPruner(
            model,
            example,
            importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=ratio,
            iterative_steps=steps,
            ignored_layers=[head],
            round_to=round_to,
        )
    finally:
        model.train(was_training)


class UniformPruning(pl.Callback):
    """The baseline arm: ``steps`` uniform steps at the epochs ours prunes at, optimizer rebuilt after each."""

    def __init__(self, ratio: float, steps: int, finetune_epochs: int, round_to: int) -> None:
        self.ratio, self.steps, self.finetune_epochs, self.round_to = ratio, steps, finetune_epochs, round_to
        self.done, self.pruner = 0, None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.done < self.steps and trainer.current_epoch == self.done * self.finetune_epochs:
            if self.pruner is None:
                example = pl_module.example_input_array.to(pl_module.device)
                self.pruner = uniform_pruner(pl_module, example, self.ratio, self.steps, self.round_to)
            self.pruner.step()
            rebuild_after_shrink(trainer)
            self.done += 1


def fit(model: Classifier, datamodule: Any, epochs: int, callbacks: list, accelerator: str) -> Classifier:
    trainer(epochs, callbacks, accelerator=accelerator).fit(model, datamodule=datamodule)
    return model


def accuracy(model: Classifier, datamodule: Any, accelerator: str) -> float:
    results = trainer(1, accelerator=accelerator).test(model, datamodule=datamodule, verbose=False)
    return float(results[0]["test/acc"])


def sweep_uniform(
    dense: Classifier, ours: Classifier, ratios: list[float], inputs: Tensor, settings: TimingSettings, args: Any
) -> list[dict[str, Any]]:
    """Each ratio's one-shot uniform model timed round-robin with ours; latency as a fraction of ours'."""
    probes = {}
    for ratio in ratios:
        probe = copy.deepcopy(dense).eval()
        uniform_pruner(probe, probe.example_input_array.to(probe.device), ratio, 1, args.round_to).step()
        probes[f"{ratio:.3f}"] = probe
    timed = interleaved_latency({"ours": ours, **probes}, inputs, settings, rounds=max(2, args.rounds // 2))
    return [
        {
            "ratio": float(name),
            "model": probes[name],
            "measured_ms": timed[name].quiet_p50_ms,
            "relative": timed[name].quiet_p50_ms / timed["ours"].quiet_p50_ms,
        }
        for name in probes
    ]


def describe(model: Classifier, latency: Any, accuracy: float) -> dict[str, Any]:
    example = model.example_input_array.to(next(model.parameters()).device)
    macs, params = tp.utils.count_ops_and_params(model, example)
    return {
        "measured_ms": latency.quiet_p50_ms,
        "p50_ms": latency.p50_ms,
        "p90_ms": latency.p90_ms,
        "spread": latency.spread,
        "test_acc": accuracy,
        "macs": int(macs),
        "params": int(params),
    }


def correlation(xs: list[float], ys: list[float]) -> float:
    return float(torch.corrcoef(torch.tensor([xs, ys], dtype=torch.float64))[0, 1])


def settings_for(args: Any) -> dict[str, Any]:
    quick = args.quick
    return {
        "pretrain_epochs": 1 if quick else 10,
        "steps": 2 if quick else args.steps,
        "finetune_epochs": 1 if quick else 2,
        "final_epochs": 1 if quick else 5,
        "ratios": [0.3, 0.5, 0.7] if quick else [round(0.05 * i, 2) for i in range(1, 19)],
        "repeats": 10 if quick else 30,
        "lut_repeats": 5 if quick else 20,
    }


def run_seed(args: Any, config: dict[str, Any], seed: int, device: str) -> dict[str, Any]:
    """One complete comparison (pretrain, ours, dense, uniform tuned to ours, final timing) for one seed."""
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    threads = args.threads if accelerator == "cpu" else None
    datamodule, dataset = default_data(args.data_dir, seed, batch_size=64, digits=args.data_dir is None)
    shape, classes = tuple(datamodule.input_shape), datamodule.num_classes
    pl.seed_everything(seed, verbose=False)
    model = Classifier(ResNet(shape, classes), classes, shape)
    dense = fit(model, datamodule, config["pretrain_epochs"], [], accelerator)
    arms = {name: copy.deepcopy(dense) for name in ARMS}
    epochs = config["steps"] * config["finetune_epochs"] + config["final_epochs"]
    pruning = LatencyBudgetPruning(
        budget_fraction=args.budget_fraction,
        num_steps=config["steps"],
        finetune_epochs=config["finetune_epochs"],
        warmup_epochs=0,
        round_to=args.round_to,
        batch_size=args.batch_size,
        device=device,
        threads=threads,
        repeats=config["repeats"],
        lut_repeats=config["lut_repeats"],
        lut_path=f"bench_out/latency_lut_{args.batch_size}.json",
        export_dir="bench_out/latency",
    )
    pl.seed_everything(seed, verbose=False)
    fit(arms["ours"], datamodule, epochs, [pruning], accelerator)
    pl.seed_everything(seed, verbose=False)
    fit(arms["dense"], datamodule, epochs, [], accelerator)

    timing = TimingSettings(10, config["repeats"], threads)
    inputs = batch_of(dense.example_input_array, args.batch_size)
    sweep = sweep_uniform(dense.to(device), arms["ours"].to(device), config["ratios"], inputs, timing, args)
    fitting = [s for s in sweep if s["relative"] <= 1.0] or [min(sweep, key=lambda s: s["relative"])]
    chosen = min(fitting, key=lambda s: s["ratio"])
    pl.seed_everything(seed, verbose=False)
    baseline = UniformPruning(chosen["ratio"], config["steps"], config["finetune_epochs"], args.round_to)
    fit(arms["uniform"], datamodule, epochs, [baseline], accelerator)

    final = interleaved_latency({name: arms[name].to(device) for name in ARMS}, inputs, timing, rounds=args.rounds)
    results = {name: describe(arms[name], final[name], accuracy(arms[name], datamodule, accelerator)) for name in ARMS}
    table = LatencyTable(
        torch.device(device), TimingSettings(3, config["lut_repeats"], threads), args.batch_size, pruning.lut_path
    )
    tabled = {name: predict_ms(trace_network(arms[name], inputs[:1]), table, {}) for name in ARMS}
    scale = results["dense"]["measured_ms"] / tabled["dense"]
    for name in ("ours", "uniform"):
        results[name]["lut_predicted_ms"] = scale * tabled[name]
    predicted = [scale * predict_ms(trace_network(s["model"], inputs[:1]), table, {}) for s in sweep]
    predicted += [scale * tabled[name] for name in ARMS]
    measured = [s["measured_ms"] for s in sweep] + [results[name]["measured_ms"] for name in ARMS]
    state = pruning.state_dict()
    return {
        "seed": seed,
        "dataset": dataset,
        "dense_ms": state["dense_ms"],
        "budget_ms": state["budget_ms"],
        **results,
        "uniform_ratio": chosen["ratio"],
        "uniform_matches_its_probe": architecture_spec(arms["uniform"]) == architecture_spec(chosen["model"]),
        "noise_max_spread": max(final[name].spread for name in ARMS),
        "sweep": [{k: v for k, v in s.items() if k != "model"} for s in sweep],
        "lut_points": {"predicted_ms": predicted, "measured_ms": measured},
        "ours_history": state["pruning_state"]["history"],
    }


def mean_arm(runs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """An arm's numbers averaged over seeds, with speed-up and MAC cut against the dense arm's means."""
    keys = [k for k, v in runs[0][name].items() if isinstance(v, (int, float))]
    arm = {k: statistics.fmean(run[name][k] for run in runs) for k in keys}
    arm["test_acc_per_seed"] = [run[name]["test_acc"] for run in runs]
    if name != "dense":
        dense = mean_arm(runs, "dense")
        arm["speedup"] = dense["measured_ms"] / arm["measured_ms"]
        arm["mac_reduction"] = dense["macs"] / arm["macs"]
        arm["speedup_over_mac_reduction"] = arm["speedup"] / arm["mac_reduction"]
    return arm


def main(argv: list[str]) -> int:
    p = parser("latency", "Latency-budgeted SP-LAMP + knapsack pruning vs a uniform cut at equal measured latency")
    p.add_argument("--budget-fraction", type=float, default=0.5, help="budget as a fraction of dense latency")
    p.add_argument("--steps", type=int, default=5, help="pruning steps (HALP exponential schedule)")
    p.add_argument("--seeds", type=int, default=3, help="seeds from --seed on; numbers are means (--quick: 1)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size latency is measured at")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for training and timing (fixed)")
    p.add_argument("--rounds", type=int, default=10, help="round-robin rounds of the final measurement")
    p.add_argument("--round-to", type=int, default=4, help="channel step of both arms")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = p.parse_args(argv)
    quiet()
    torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    config = settings_for(args)
    seeds = range(args.seed, args.seed + (1 if args.quick else args.seeds))
    runs = [run_seed(args, config, seed, device) for seed in seeds]
    arms = {name: mean_arm(runs, name) for name in ARMS}
    budget_ms = statistics.fmean(run["budget_ms"] for run in runs)
    # Correlation within each run (one machine state, one calibration), then the median over seeds.
    per_seed_r = [correlation(run["lut_points"]["predicted_ms"], run["lut_points"]["measured_ms"]) for run in runs]
    points = sum(len(run["lut_points"]["measured_ms"]) for run in runs)
    ours, uniform, dense = arms["ours"], arms["uniform"], arms["dense"]
    result = {
        "device": device_name(torch.device(device)),
        "dataset": runs[0]["dataset"],
        "dense_ms": statistics.fmean(run["dense_ms"] for run in runs),
        "budget_ms": budget_ms,
        "budget_fraction": args.budget_fraction,
        "lut_r": statistics.median(per_seed_r),
        "lut_r_per_seed": per_seed_r,
        "dense": dense,
        "ours": ours,
        "uniform": {**uniform, "ratio": [run["uniform_ratio"] for run in runs]},
        "checks": {
            "ours_within_budget_per_seed": [run["ours"]["measured_ms"] <= run["budget_ms"] * 1.05 for run in runs],
            "ours_fraction_of_dense": ours["measured_ms"] / dense["measured_ms"],
            "ours_acc_minus_uniform": ours["test_acc"] - uniform["test_acc"],
            "ours_acc_ge_uniform_seeds": sum(r["ours"]["test_acc"] >= r["uniform"]["test_acc"] for r in runs),
            "uniform_over_ours_latency": uniform["measured_ms"] / ours["measured_ms"],
            "noise_max_spread": max(run["noise_max_spread"] for run in runs),
            "uniform_matches_its_probe": all(run["uniform_matches_its_probe"] for run in runs),
        },
        "per_seed": runs,
        "settings": {**config, **{k: v for k, v in vars(args).items() if k != "out"}, "device": device},
        "environment": environment(),
    }
    write_json(args.out, result)
    print_table(
        f"latency on {result['device']} (batch {args.batch_size}, {args.threads} thread(s), {len(runs)} seed(s)); "
        f"budget {budget_ms:.3f} ms",
        ["arm", "measured ms", "test acc", "MMACs", "params", "speed-up", "MAC cut", "speed-up / MAC cut"],
        [
            [
                name,
                r["measured_ms"],
                r["test_acc"],
                r["macs"] / 1e6,
                int(r["params"]),
                r.get("speedup", 1.0),
                r.get("mac_reduction", 1.0),
                r.get("speedup_over_mac_reduction", 1.0),
            ]
            for name, r in arms.items()
        ],
    )
    print(
        f"lut_r = {result['lut_r']:.3f} (median over seeds of {points // len(runs)} configurations each); largest "
        f"round-to-round spread "
        f"{result['checks']['noise_max_spread']:.2f}; wrote {args.out}"
    )
    return 0
