"""One seed of the matched comparison: dense, ours, each baseline bisected to ours' latency, then timed and tested."""

from __future__ import annotations

import copy
import sys
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from lightning_prune.bench._common import default_data, pooled_resnet, trainer
from lightning_prune.bench.latency.baselines import OneShotPruning, highest_ratio, probe
from lightning_prune.bench.latency.matching import Match, bisect_ratio
from lightning_prune.bench.latency_budget.compare import describe, ours_pruner, seed_record
from lightning_prune.core.latency_budget.measure import correlation
from lightning_prune.core.latency_budget.network import trace_network
from lightning_prune.core.latency_budget.plan import predict_ms
from lightning_prune.core.latency_budget.table import LatencyTable
from lightning_prune.core.timing import TimingSettings, batch_of, interleaved_latency
from lightning_prune.models import Classifier


def one_seed(cfg: DictConfig, seed: int, device: str) -> dict[str, Any]:
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    threads = cfg.threads if accelerator == "cpu" else None
    datamodule, dataset = default_data(
        cfg.data_dir, seed, cfg.train_batch_size, digits=cfg.digits, train_fraction=cfg.train_fraction
    )
    shape, classes = tuple(datamodule.input_shape), datamodule.num_classes

    def fit(model: Classifier, epochs: int, callbacks: list[pl.Callback]) -> None:
        pl.seed_everything(seed, verbose=False)
        trainer(epochs, callbacks, accelerator=accelerator).fit(model, datamodule=datamodule)

    _progress(f"seed {seed}: {dataset}, {len(datamodule.train_set)} training images; dense pre-training")
    pl.seed_everything(seed, verbose=False)
    dense = Classifier(pooled_resnet(shape, classes, cfg.blocks, cfg.widths, cfg.pool), classes, shape)
    trainer(cfg.pretrain_epochs, accelerator=accelerator).fit(dense, datamodule=datamodule)
    epochs = cfg.steps * cfg.finetune_epochs + cfg.final_epochs
    ours = copy.deepcopy(dense)
    pruning = ours_pruner(cfg, device, threads)
    _progress("ours: LatencyBudgetPruning")
    fit(ours, epochs, [pruning])
    inputs = batch_of(dense.example_input_array, cfg.batch_size).to(device)
    timing = TimingSettings(5, cfg.repeats, threads)
    with torch.random.fork_rng(devices=[]):  # the baselines' Taylor batch: one fixed training batch
        batch = next(iter(datamodule.train_dataloader()))
    arms: dict[str, nn.Module] = {"dense": dense, "ours": ours}
    matches = {}
    for name in cfg.baselines:
        match, chosen = match_baseline(cfg, name, dense.to(device), ours.to(device).eval(), batch, inputs, timing)
        _progress(f"{name}: ratio {match.ratio:.3f} runs at {match.relative:.3f}x ours ({len(match.probes)} probes)")
        arms[name] = copy.deepcopy(dense)
        fit(arms[name], epochs, [OneShotPruning(name, match.ratio, cfg.round_to, batch)])
        same = _spec(arms[name]) == _spec(chosen)  # the trained arm is the architecture the bisection timed
        matches[name] = {"ratio": match.ratio, "probe_relative": match.relative, "matched": match.matched,
                         "probes": match.probes, "architecture_of_probe": same}  # fmt: skip
    fit(dense, epochs, [])  # the dense arm trains as long as the others
    _progress("final round-robin timing and test")
    final = interleaved_latency({n: m.to(device).eval() for n, m in arms.items()}, inputs, timing, rounds=cfg.rounds)
    described = {name: describe(model, final[name], datamodule, accelerator) for name, model in arms.items()}
    for name in arms:
        if name != "dense":
            speedup = described["dense"]["measured_ms"] / described[name]["measured_ms"]
            described[name]["speedup_over_mac_cut"] = speedup / (described["dense"]["macs"] / described[name]["macs"])
    for name, match in matches.items():
        described[name] |= match
    return {
        **seed_record(seed, dataset, pruning),
        "budget_tolerance": cfg.pruning.tolerance,
        "tolerance": cfg.match_tolerance,
        "arms": described,
        "noise_max_spread": max(latency.spread for latency in final.values()),
        "lut_r": _table_r(cfg, device, threads, arms, {n: d["measured_ms"] for n, d in described.items()}, inputs),
    }


def match_baseline(
    cfg: DictConfig, name: str, dense: nn.Module, ours: nn.Module, batch: tuple[Tensor, Tensor], inputs: Tensor,
    timing: TimingSettings,
) -> tuple[Match, nn.Module]:  # fmt: skip
    """Bisect baseline ``name``'s ratio against ours' final model; the match and the probe it chose."""
    make, tried = probe(dense, name, cfg.round_to, batch), {}

    def relative(ratio: float) -> float:
        tried[ratio] = make(ratio)
        timed = interleaved_latency({"ours": ours, "probe": tried[ratio]}, inputs, timing, rounds=cfg.match_rounds)
        return timed["probe"].quiet_p50_ms / timed["ours"].quiet_p50_ms

    high = min(cfg.max_ratio, highest_ratio(dense, cfg.round_to))  # past it latency rises again
    match = bisect_ratio(relative, high=high, tolerance=cfg.match_tolerance, max_probes=cfg.max_probes)
    return match, tried[match.ratio]


def _table_r(
    cfg: DictConfig, device: str, threads: int | None, arms: dict[str, nn.Module], measured: dict[str, float],
    inputs: Tensor,
) -> float | None:  # fmt: skip
    """How well ours' latency table predicts the final models' measured latencies (Pearson's r)."""
    table = LatencyTable(torch.device(device), TimingSettings(3, cfg.lut_repeats, threads), cfg.batch_size,
                         cfg.lut_path)  # fmt: skip
    predicted = [predict_ms(trace_network(arms[name], inputs[:1]), table, {}) for name in arms]
    return correlation(predicted, [measured[name] for name in arms])


def _spec(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(p.shape)) for name, p in model.named_parameters()]


def _progress(message: str) -> None:
    print(f"[bench latency] {message}", file=sys.stderr, flush=True)
