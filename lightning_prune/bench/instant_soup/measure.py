"""Run the instant_soup benchmark's arms: every seed's pre-training, then each arm at each sparsity."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig

from lightning_prune import InstantSoupPruning, IterativePruning
from lightning_prune.bench._common import Stopwatch, default_data, environment, print_table, quiet, trainer
from lightning_prune.bench.instant_soup.models import describe, network
from lightning_prune.data.arrays import ArrayDataModule
from lightning_prune.models import Classifier

ARMS = ("oneshot", "isp", "isp_n0", "imp")
CLAIMED = ("oneshot", "isp", "imp")  # the arms every claim needs; isp_n0 adds the soup ablation


def run(cfg: DictConfig, record: Callable[..., Any]) -> None:
    """Every seed's pre-training and arms; the means over the seeds so far are recorded after each seed."""
    quiet()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    root = tempfile.mkdtemp(prefix="lp-bench-instant-soup-")  # the arms' exports, not needed here
    runs: list[dict[str, Any]] = []
    for index, seed in enumerate(cfg.seeds):
        runs.append(_one_seed(cfg, seed, root))
        result = _result(cfg, runs)
        record(result, complete=index == len(cfg.seeds) - 1)
    _print(result)


def _result(cfg: DictConfig, runs: list[dict[str, Any]]) -> dict[str, Any]:
    first = runs[0]
    return {
        "setting": cfg.setting,
        **{key: first[key] for key in ("dataset", "train_samples", "model", "steps_per_epoch")},
        "seeds": [run["pretrain"]["seed"] for run in runs],
        "arms": list(cfg.arms),
        "pretrain": [run["pretrain"] for run in runs],
        "results": [
            {"setting": cfg.setting, **_mean_row(sparsity, list(cfg.arms), [run["rows"][i] for run in runs])}
            for i, sparsity in enumerate(cfg.sparsities)
        ],
        "environment": environment(),
    }


def _one_seed(cfg: DictConfig, seed: int, root: str) -> dict[str, Any]:
    """Data split, pre-training and every arm at every sparsity for one seed.

    In a transfer setting the model is pre-trained on ``transfer.pretrain_classes`` and every arm prunes it
    while fine-tuning on ``transfer.task_classes`` (IMP rewinds to the pre-trained weights, as in the paper).
    """
    transfer = cfg.get("transfer")
    pretrain_data, name = _data(cfg, seed, transfer.pretrain_classes if transfer else None)
    datamodule = _data(cfg, seed, transfer.task_classes)[0] if transfer else pretrain_data
    steps_per_epoch = len(datamodule.train_dataloader())
    pretrained, pretrain = _pretrain(pretrain_data, cfg, seed, root)
    rows = []
    for sparsity in cfg.sparsities:
        row = {}
        for arm in cfg.arms:
            callback, epochs = _arm(arm, sparsity, cfg, steps_per_epoch, seed)
            row[arm] = _run(datamodule, cfg, pretrained, callback, epochs, seed, steps_per_epoch, root)
        rows.append(row)
    return {
        "dataset": name,
        "train_samples": len(datamodule.train_set),
        "model": describe(cfg, datamodule.input_shape, datamodule.num_classes),
        "steps_per_epoch": steps_per_epoch,
        "pretrain": {"seed": seed, **pretrain},
        "rows": rows,
    }


def _mean(values: list[Any]) -> Any:
    """The mean; step counts stay integers."""
    mean = sum(values) / len(values)
    return round(mean) if all(isinstance(v, int) for v in values) else mean


def _mean_row(sparsity: float, arms: list[str], per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm: mean test accuracy, wall time and steps over seeds, with the per-seed accuracies kept."""
    row: dict[str, Any] = {"sparsity": sparsity}
    for arm in arms:
        records = [seed_row[arm] for seed_row in per_seed]
        mean = {key: _mean([r[key] for r in records]) for key in records[0] if key != "sparsity"}
        row[arm] = {**mean, "sparsity": records[0]["sparsity"], "test_acc_per_seed": [r["test_acc"] for r in records]}
    if set(CLAIMED) <= set(arms):
        row["claims"] = _claims(row)
    return row


def _data(cfg: DictConfig, seed: int, classes: Any = None) -> tuple[ArrayDataModule, str]:
    """MNIST (a seeded, stratified ``train_fraction`` of its training split) when present, else digits.

    ``classes`` keeps those labels only, renumbered from 0 (one task of a transfer setting).
    """
    classes = list(classes) if classes is not None else None
    digits = cfg.get("digits", False)
    return default_data(cfg.data_dir, seed, cfg.batch_size, digits, cfg.train_fraction, classes)


def _model(datamodule: ArrayDataModule, cfg: DictConfig) -> Classifier:
    net = network(cfg, datamodule.input_shape, datamodule.num_classes)
    return Classifier(net, datamodule.num_classes, datamodule.input_shape, lr=cfg.lr, optimizer=cfg.optimizer)


def _pretrain(datamodule: ArrayDataModule, cfg: DictConfig, seed: int, root: str) -> tuple[dict, dict[str, float]]:
    """The dense "pre-trained" model every arm starts from (its cost is shared, so reported apart)."""
    pl.seed_everything(seed, verbose=False)
    model = _model(datamodule, cfg)
    fit = trainer(cfg.pretrain_epochs, root=root, limit_val_batches=0)
    with Stopwatch() as watch:
        fit.fit(model, datamodule=datamodule)
    test_acc = float(fit.test(model, datamodule=datamodule, verbose=False)[0]["test/acc"])
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state, {"epochs": cfg.pretrain_epochs, "wall_s": watch.seconds, "test_acc": test_acc}


def _arm(arm: str, sparsity: float, cfg: DictConfig, steps_per_epoch: int, seed: int) -> tuple[pl.Callback, int]:
    """The pruning callback of ``arm`` and the epochs its fit runs."""
    budget = cfg.budget_epochs
    if arm == "oneshot":
        return IterativePruning(
            target_sparsity=sparsity, step_ratio=sparsity, finetune_epochs=budget, stop_when_done=True
        ), budget
    if arm == "imp":
        step_ratio = cfg.imp.step_ratio
        imp = IterativePruning(
            target_sparsity=sparsity,
            step_ratio=step_ratio,
            warmup_epochs=budget,
            finetune_epochs=budget,
            rewind_epoch=0,
            stop_when_done=True,
        )
        return imp, budget * (_rounds(sparsity, step_ratio) + 1)
    if arm not in ("isp", "isp_n0"):
        raise ValueError(f"arms must be taken from {list(ARMS)}, got {arm!r}")
    no_soup = arm == "isp_n0"  # the paper's N = 0: untrained ingredients, so the model's own mask alone
    isp = InstantSoupPruning(
        target_sparsity=sparsity,
        step_ratio=cfg.isp.step_ratio,
        num_ingredients=1 if no_soup else cfg.isp.num_ingredients,
        lookahead_steps=0 if no_soup else cfg.isp.lookahead_steps,
        combine=cfg.isp.combine,
        calibration_steps=_calibration_steps(sparsity, cfg, steps_per_epoch),
        seed=seed,
    )
    return isp, budget


def _rounds(sparsity: float, step_ratio: float) -> int:
    return math.ceil(round(math.log(1 - sparsity) / math.log(1 - step_ratio), 9))


def _calibration_steps(sparsity: float, cfg: DictConfig, steps_per_epoch: int) -> int:
    """The paper's t (~10 % of an epoch), shrunk so that all rounds fit in half of the step budget (M <= T/2)."""
    rounds = _rounds(sparsity, cfg.isp.step_ratio)
    half_budget = cfg.budget_epochs * steps_per_epoch // 2
    return max(1, min(math.ceil(0.1 * steps_per_epoch), half_budget // (rounds * (rounds + 1) // 2)))


def _run(
    datamodule: ArrayDataModule,
    cfg: DictConfig,
    pretrained: dict,
    callback: pl.Callback,
    epochs: int,
    seed: int,
    steps_per_epoch: int,
    root: str,
) -> dict[str, Any]:
    pl.seed_everything(seed, verbose=False)
    model = _model(datamodule, cfg)
    model.load_state_dict(pretrained)
    fit = trainer(epochs, [callback], root=root, limit_val_batches=0)
    with Stopwatch() as watch:
        fit.fit(model, datamodule=datamodule)
    test_acc = float(fit.test(model, datamodule=datamodule, verbose=False)[0]["test/acc"])
    state = callback.pruning_state
    record = {"test_acc": test_acc, "wall_s": watch.seconds, "mask_steps": _mask_steps(callback, steps_per_epoch)}
    record.update(sparsity=state.sparsity, epochs=epochs, total_steps=fit.global_step, rounds=state.step)
    if isinstance(callback, InstantSoupPruning):
        record.update(ingredient_steps=callback.ingredient_steps, ingredient_s=callback.ingredient_s)
        record.update(calibration_steps=callback.state_dict()["calibration_steps"])
    return record


def _mask_steps(callback: pl.Callback, steps_per_epoch: int) -> int:
    if isinstance(callback, InstantSoupPruning):
        return callback.mask_steps
    # IterativePruning prunes at epoch start: every epoch before the last step went into finding the mask.
    return callback.pruning_state.last_step_epoch * steps_per_epoch


def _claims(row: dict[str, Any]) -> dict[str, Any]:
    isp, imp, oneshot = row["isp"], row["imp"], row["oneshot"]
    soup = {"soup_minus_n0_pt": 100 * (isp["test_acc"] - row["isp_n0"]["test_acc"])} if "isp_n0" in row else {}
    return {
        **soup,
        "isp_minus_imp_pt": 100 * (isp["test_acc"] - imp["test_acc"]),
        "isp_wall_over_imp": isp["wall_s"] / imp["wall_s"],
        "isp_ge_imp": isp["test_acc"] >= imp["test_acc"],
        "isp_ge_imp_minus_0.5pt": isp["test_acc"] >= imp["test_acc"] - 0.005,
        "isp_wall_le_imp_fifth": isp["wall_s"] <= imp["wall_s"] / 5,
        "isp_gt_oneshot": isp["test_acc"] > oneshot["test_acc"],
    }


def _print(result: dict[str, Any]) -> None:
    rows = [
        [r["sparsity"], arm, r[arm]["test_acc"], f"{r[arm]['wall_s']:.1f}", r[arm]["mask_steps"], r[arm]["total_steps"]]
        for r in result["results"]
        for arm in result["arms"]
    ]
    data = f"{result['dataset']}, {result['train_samples']} training samples"
    title = f"instant_soup benchmark ({result['setting']}: {data})"
    print_table(title, ["sparsity", "arm", "test_acc", "wall_s", "mask_steps", "total_steps"], rows)
