"""The measurement: LatencyBudgetPruning against a uniform channel cut of the same *measured* latency.

Per seed a ResNet trains dense, then three copies
get the same epochs from the same weights: dense, ours (:class:`LatencyBudgetPruning`) and uniform
(torch-pruning's magnitude pruner, one ratio everywhere, tuned after ours to the least pruning no slower
than ours, measured). The three final models are timed round-robin and tested; with ``onnxruntime`` each is
also exported to ONNX and timed as an ONNX Runtime session in the same alternating rounds, so the dense vs
pruned speed-up is measured in both runtimes side by side. Arms report means.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
import torch_pruning as tp
from omegaconf import DictConfig
from torch import Tensor, nn

from lightning_prune import LatencyBudgetPruning
from lightning_prune.bench._common import default_data, environment, print_table, quiet, trainer
from lightning_prune.bench.latency_budget.tables import ARMS, arm_row, runtime_row
from lightning_prune.callbacks._trainer import rebuild_after_shrink
from lightning_prune.core.devices import device_name
from lightning_prune.core.latency_budget.measure import correlation
from lightning_prune.core.latency_budget.network import trace_network
from lightning_prune.core.latency_budget.plan import predict_ms
from lightning_prune.core.latency_budget.table import LatencyTable
from lightning_prune.core.ort_timing import PARITY_TOLERANCE, OrtModel, check_backends, parity, runtime_info
from lightning_prune.core.selection import head_module_name
from lightning_prune.core.structured import architecture_spec
from lightning_prune.core.timing import (
    Latency,
    TimingSettings,
    batch_of,
    interleaved_latency,
    paired_ratio,
)
from lightning_prune.models import Classifier, ResNet


def run(cfg: DictConfig, record: Callable[..., Any]) -> None:
    """Every seed's comparison; the means over the seeds so far are recorded after each seed."""
    quiet()
    if cfg.onnxruntime:
        check_backends("onnxruntime", "onnxruntime")  # a missing package fails now, not after the first seed
    torch.set_num_threads(cfg.threads)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    runs = []
    for index, seed in enumerate(cfg.seeds):
        runs.append(_one_seed(cfg, seed, device))
        result = _result(cfg, runs, device)
        record(result, complete=index == len(cfg.seeds) - 1)
    _print(result, cfg)


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


def ours_pruner(cfg: DictConfig, device: str, threads: int | None) -> LatencyBudgetPruning:
    """Arm ours: :class:`LatencyBudgetPruning` as the benchmark's config sets it (both latency benchmarks).

    ``pruning.round_to``, when set, is ours' channel grid alone (the baselines keep ``round_to``).
    """
    settings = {"round_to": cfg.round_to, **cfg.pruning}
    return LatencyBudgetPruning(
        budget_fraction=cfg.budget_fraction,
        num_steps=cfg.steps,
        finetune_epochs=cfg.finetune_epochs,
        warmup_epochs=0,
        batch_size=cfg.batch_size,
        device=device,
        threads=threads,
        repeats=cfg.repeats,
        lut_repeats=cfg.lut_repeats,
        lut_path=cfg.lut_path,
        export_dir=cfg.export_dir,
        **settings,
    )


def seed_record(seed: int, dataset: str, pruning: LatencyBudgetPruning) -> dict[str, Any]:
    """What every seed's record starts with: the seed, the data, ours' dense latency and budget."""
    state = pruning.state_dict()
    return {"seed": seed, "dataset": dataset, "dense_ms": state["dense_ms"], "budget_ms": state["budget_ms"]}


def _one_seed(cfg: DictConfig, seed: int, device: str) -> dict[str, Any]:
    """One comparison: pretrain, ours, dense, uniform tuned to ours, final timing and test."""
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    threads = cfg.threads if accelerator == "cpu" else None
    datamodule, dataset = default_data(cfg.data_dir, seed, cfg.train_batch_size, digits=cfg.data_dir is None)
    shape, classes = tuple(datamodule.input_shape), datamodule.num_classes

    def fit(model: Classifier, epochs: int, callbacks: list[pl.Callback]) -> None:
        pl.seed_everything(seed, verbose=False)
        trainer(epochs, callbacks, accelerator=accelerator).fit(model, datamodule=datamodule)

    pl.seed_everything(seed, verbose=False)
    dense = Classifier(ResNet(shape, classes), classes, shape)
    trainer(cfg.pretrain_epochs, accelerator=accelerator).fit(dense, datamodule=datamodule)
    arms = {name: copy.deepcopy(dense) for name in ARMS}
    epochs = cfg.steps * cfg.finetune_epochs + cfg.final_epochs
    pruning = ours_pruner(cfg, device, threads)
    fit(arms["ours"], epochs, [pruning])
    fit(arms["dense"], epochs, [])

    timing = TimingSettings(10, cfg.repeats, threads)
    inputs = batch_of(dense.example_input_array, cfg.batch_size)
    sweep = _sweep_uniform(dense.to(device), arms["ours"].to(device), inputs, timing, cfg)
    fitting = [s for s in sweep if s["relative"] <= 1.0] or [min(sweep, key=lambda s: s["relative"])]
    chosen = min(fitting, key=lambda s: s["ratio"])
    fit(arms["uniform"], epochs, [UniformPruning(chosen["ratio"], cfg.steps, cfg.finetune_epochs, cfg.round_to)])

    timed: dict[str, Any] = {name: arms[name].to(device) for name in ARMS}
    if cfg.onnxruntime:  # ONNX Runtime sessions of the same three models, timed in the same rounds
        timed |= {f"{name}/ort": OrtModel(arms[name], dense.example_input_array, cfg.threads) for name in ARMS}
    final = interleaved_latency(timed, inputs, timing, rounds=cfg.rounds)
    results = {name: describe(arms[name], final[name], datamodule, accelerator) for name in ARMS}
    if cfg.onnxruntime:
        for name in ARMS:
            session = timed[f"{name}/ort"]
            results[name] |= _runtimes(name, final, session, parity(arms[name], session, inputs[:1]))
    table = LatencyTable(
        torch.device(device), TimingSettings(3, cfg.lut_repeats, threads), cfg.batch_size, cfg.lut_path
    )
    tabled = {name: predict_ms(trace_network(arms[name], inputs[:1]), table, {}) for name in ARMS}
    scale = results["dense"]["measured_ms"] / tabled["dense"]
    for name in ("ours", "uniform"):
        results[name]["lut_predicted_ms"] = scale * tabled[name]
    predicted = [scale * predict_ms(trace_network(s["model"], inputs[:1]), table, {}) for s in sweep]
    predicted += [scale * tabled[name] for name in ARMS]
    measured = [s["measured_ms"] for s in sweep] + [results[name]["measured_ms"] for name in ARMS]
    return {
        **seed_record(seed, dataset, pruning),
        **results,
        "uniform_ratio": chosen["ratio"],
        "uniform_matches_its_probe": architecture_spec(arms["uniform"]) == architecture_spec(chosen["model"]),
        "noise_max_spread": max(final[name].spread for name in ARMS),
        "sweep": [{k: v for k, v in s.items() if k != "model"} for s in sweep],
        "lut_points": {"predicted_ms": predicted, "measured_ms": measured},
        "ours_history": pruning.state_dict()["pruning_state"]["history"],
    }


def _sweep_uniform(
    dense: Classifier, ours: Classifier, inputs: Tensor, settings: TimingSettings, cfg: DictConfig
) -> list[dict[str, Any]]:
    """Each ratio's one-shot uniform model timed round-robin with ours; latency as a fraction of ours'."""
    probes = {}
    for ratio in cfg.ratios:
        probe = copy.deepcopy(dense).eval()
        uniform_pruner(probe, probe.example_input_array.to(probe.device), ratio, 1, cfg.round_to).step()
        probes[f"{ratio:.3f}"] = probe
    timed = interleaved_latency({"ours": ours, **probes}, inputs, settings, rounds=max(2, cfg.rounds // 2))
    return [
        {
            "ratio": float(name),
            "model": probes[name],
            "measured_ms": timed[name].quiet_p50_ms,
            "relative": timed[name].quiet_p50_ms / timed["ours"].quiet_p50_ms,
        }
        for name in probes
    ]


def describe(model: Classifier, latency: Any, datamodule: Any, accelerator: str) -> dict[str, Any]:
    """An arm's final figures: its round-robin latency, test accuracy, MACs and parameters."""
    tested = trainer(1, accelerator=accelerator).test(model, datamodule=datamodule, verbose=False)
    example = model.example_input_array.to(next(model.parameters()).device)
    macs, params = tp.utils.count_ops_and_params(model, example)
    return {
        "measured_ms": latency.quiet_p50_ms,
        "p50_ms": latency.p50_ms,
        "p90_ms": latency.p90_ms,
        "spread": latency.spread,
        "test_acc": float(tested[0]["test/acc"]),
        "macs": int(macs),
        "params": int(params),
    }


def _runtimes(name: str, final: dict[str, Latency], session: OrtModel, max_abs_diff: float) -> dict[str, Any]:
    """An arm's ONNX Runtime figures and its paired speed-ups (median per-round ratios, see ``paired_ratio``)."""
    ort = final[f"{name}/ort"]
    figures = {
        "onnx_bytes": session.file_bytes,
        "ort_ms": ort.quiet_p50_ms,
        "ort_p50_ms": ort.p50_ms,
        "ort_p90_ms": ort.p90_ms,
        "ort_spread": ort.spread,
        "ort_max_abs_diff": max_abs_diff,
        "ort_over_eager": 1 / paired_ratio(ort, final[name]),  # how much faster ONNX Runtime runs this model
    }
    if name != "dense":
        figures["speedup_paired"] = 1 / paired_ratio(final[name], final["dense"])
        figures["ort_speedup_paired"] = 1 / paired_ratio(ort, final["dense/ort"])
    return figures


def _mean_arm(runs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """An arm's numbers averaged over seeds, with speed-up and MAC cut against the dense arm's means."""
    keys = [k for k, v in runs[0][name].items() if isinstance(v, (int, float))]
    arm = {k: statistics.fmean(run[name][k] for run in runs) for k in keys}
    arm["test_acc_per_seed"] = [run[name]["test_acc"] for run in runs]
    if name != "dense":
        dense = _mean_arm(runs, "dense")
        arm["speedup"] = dense["measured_ms"] / arm["measured_ms"]
        if "ort_ms" in arm:
            arm["ort_speedup"] = dense["ort_ms"] / arm["ort_ms"]
        arm["mac_reduction"] = dense["macs"] / arm["macs"]
        arm["speedup_over_mac_reduction"] = arm["speedup"] / arm["mac_reduction"]
    return arm


def _result(cfg: DictConfig, runs: list[dict[str, Any]], device: str) -> dict[str, Any]:
    arms = {name: _mean_arm(runs, name) for name in ARMS}
    ours, uniform, dense = arms["ours"], arms["uniform"], arms["dense"]
    # Correlation within each run (one machine state, one calibration), then the median over seeds.
    per_seed_r = [correlation(run["lut_points"]["predicted_ms"], run["lut_points"]["measured_ms"]) for run in runs]
    return {
        "device": device_name(torch.device(device)),
        "dataset": runs[0]["dataset"],
        "dense_ms": statistics.fmean(run["dense_ms"] for run in runs),
        "budget_ms": statistics.fmean(run["budget_ms"] for run in runs),
        "budget_fraction": cfg.budget_fraction,
        "lut_r": statistics.median(per_seed_r),
        "lut_r_per_seed": per_seed_r,
        **arms,
        "uniform": {**uniform, "ratio": [run["uniform_ratio"] for run in runs]},
        "checks": {
            "ours_within_budget_per_seed": [run["ours"]["measured_ms"] <= run["budget_ms"] * 1.05 for run in runs],
            "ours_fraction_of_dense": ours["measured_ms"] / dense["measured_ms"],
            "ours_acc_minus_uniform": ours["test_acc"] - uniform["test_acc"],
            "ours_acc_ge_uniform_seeds": sum(r["ours"]["test_acc"] >= r["uniform"]["test_acc"] for r in runs),
            "uniform_over_ours_latency": uniform["measured_ms"] / ours["measured_ms"],
            "noise_max_spread": max(run["noise_max_spread"] for run in runs),
            "uniform_matches_its_probe": all(run["uniform_matches_its_probe"] for run in runs),
            **_ort_checks(runs),
        },
        "per_seed": runs,
        "environment": environment(),
        **({"onnxruntime": runtime_info()} if cfg.onnxruntime else {}),
    }


def _ort_checks(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """ONNX Runtime's output parity with eager over every arm and seed, and its timing noise."""
    if "ort_ms" not in runs[0]["dense"]:
        return {}
    largest = max(run[name]["ort_max_abs_diff"] for run in runs for name in ARMS)
    return {
        "ort_max_abs_diff": largest,
        "ort_parity_ok": largest <= PARITY_TOLERANCE,
        "ort_noise_max_spread": max(run[name]["ort_spread"] for run in runs for name in ARMS),
    }


def _print(result: dict[str, Any], cfg: DictConfig) -> None:
    print_table(
        f"latency on {result['device']} (batch {cfg.batch_size}, {cfg.threads} thread(s), "
        f"{len(result['per_seed'])} seed(s)); budget {result['budget_ms']:.3f} ms; lut_r {result['lut_r']:.3f}",
        ["arm", "measured ms", "test acc", "MMACs", "params", "speed-up", "MAC cut", "speed-up / MAC cut"],
        [arm_row(name, result[name]) for name in ARMS],
    )
    if "ort_ms" in result["dense"]:
        print_table(
            "dense vs pruned in both runtimes, timed side by side (paired speed-ups: median per-round ratios)",
            ["arm", "eager ms", "ORT ms", "eager speed-up", "ORT speed-up", "(lowest medians)", "", "ORT / eager"],
            [runtime_row(name, result[name], result["dense"]) for name in ARMS],
        )
