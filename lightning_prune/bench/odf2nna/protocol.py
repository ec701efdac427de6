"""The protocol: a shared wide phase per seed, a grid of rebuilt arms, the setting chosen on validation, baselines.

Per data set and seed (split and initialisation) the wide net trains until its validation loss has not
improved for ``patience`` epochs; that point is shared as a checkpoint (the wide net's best-validation
weights, or its last with ``restore_best: false``) and every arm trains ``retrain_epochs`` more from it.
The reported rebuilt arm's ``(epsilon, retrain_lr_scale)`` is chosen once per data set on the seeds'
*validation* metrics (:func:`choose_setting`, with a margin of ``margin`` standard errors); the test split
plays no part. The ``faithful`` arm is the paper's procedure beside it: plain transfer (``compensation="none"``)
and the layer's largest score as the reference (``reference_quantile=1.0``), its own grid
(``epsilons`` x ``faithful_retrain_lr_scales``) chosen by the same rule, from the same checkpoint.
"""

from __future__ import annotations

import math
import statistics
import tempfile
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn

from lightning_prune.bench._common import trainer
from lightning_prune.bench.odf2nna.arms import HIDDEN, AfterPrune, BestValidation, build_module, fit_arm, measure
from lightning_prune.callbacks import DenseUnitPruning, IterativePruning
from lightning_prune.data import TabularDataModule


def run_dataset(name: str, cfg: Any) -> list[dict[str, Any]]:
    """Every seed's five arms; the setting is chosen once per data set, on validation metrics pooled over seeds.

    The setting is ``(epsilon, retrain_lr_scale)``.
    """
    with tempfile.TemporaryDirectory() as root:
        seeds = [_wide_and_grid(name, cfg.seed + offset, f"{root}/{offset}", cfg) for offset in range(cfg.seeds)]
        rule = {"tolerance": cfg.tolerance, "margin": cfg.margin, "target_reduction": cfg.target_reduction}
        setting = choose_setting(val_deltas(seeds, "grid"), reductions=reductions(seeds, "grid"), **rule)
        faithful = choose_setting(
            val_deltas(seeds, "faithful_grid"), reductions=reductions(seeds, "faithful_grid"), **rule
        )
        for result in seeds:
            _pruned_baselines(result, setting, cfg)
            result["faithful"] = {**result["faithful_grid"][faithful], "epsilon": faithful[0]}
            result["faithful"]["retrain_lr_scale"] = faithful[1]
    return seeds


def reductions(seeds: list[dict[str, Any]], grid: str) -> dict[tuple[float, float], float]:
    """Per grid setting, the seed-mean fraction of the wide net's parameters removed."""
    return {
        key: statistics.mean(1 - s[grid][key]["params"] / s["wide"]["params"] for s in seeds) for key in seeds[0][grid]
    }


def val_deltas(seeds: list[dict[str, Any]], grid: str) -> dict[tuple[float, float], list[float]]:
    """Per grid setting, each seed's validation metric minus its wide net's (what the choice is made on)."""
    return {key: [s[grid][key]["val_metric"] - s["wide"]["val_metric"] for s in seeds] for key in seeds[0][grid]}


def _wide_and_grid(name: str, seed: int, root: str, cfg: Any) -> dict[str, Any]:
    """The wide arm and one rebuilt arm per candidate setting, all resuming the shared wide checkpoint."""
    datamodule = TabularDataModule(name, batch_size=cfg.batch_size, seed=seed)
    datamodule.setup()
    wide_best = BestValidation()
    ckpt, wide_epochs = _train_wide(datamodule, seed, wide_best, root, cfg)
    total = wide_epochs + cfg.retrain_epochs
    wide = fit_arm(datamodule, build_module(datamodule, HIDDEN, cfg.lr), total, [], wide_best, ckpt)
    result: dict[str, Any] = {"seed": seed, "datamodule": datamodule, "ckpt": ckpt, "wide_epochs": wide_epochs}
    result["wide"] = measure(wide, datamodule, cfg)
    result["grid"] = {
        (epsilon, scale): _rebuilt_arm(datamodule, wide_epochs, (epsilon, scale), ckpt, cfg)
        for epsilon in cfg.epsilons
        for scale in cfg.retrain_lr_scales
    }
    result["faithful_grid"] = {
        (epsilon, scale): _rebuilt_arm(datamodule, wide_epochs, (epsilon, scale), ckpt, cfg, faithful=True)
        for epsilon in cfg.epsilons
        for scale in cfg.faithful_retrain_lr_scales
    }
    return result


def _rebuilt_arm(
    datamodule: TabularDataModule,
    wide_epochs: int,
    setting: tuple[float, float],
    ckpt: str,
    cfg: Any,
    faithful: bool = False,
) -> dict:
    """ODF2NNA from the shared checkpoint with ``setting = (epsilon, retrain_lr_scale)``.

    ``epsilon=0`` keeps every unit: the control, with the same rebuild, retraining and selection window
    as a pruned arm and nothing removed. ``faithful``: the paper's plain transfer and layer-max reference
    instead of ``cfg``'s ``compensation`` and ``reference_quantile``.
    """
    epsilon, scale = setting
    pruning = DenseUnitPruning(
        epsilon=epsilon,
        wide_epochs=wide_epochs,
        retrain_epochs=cfg.retrain_epochs,
        retrain_lr_scale=scale,
        reference_quantile=1.0 if faithful else cfg.reference_quantile,
        carry_optimizer_state=not cfg.fresh_optimizer,
        compensation="none" if faithful else cfg.compensation,
        restore_best=False,  # the shared checkpoint holds the weights restore_best would go back to (or not)
    )
    module = build_module(datamodule, HIDDEN, cfg.lr)
    total = wide_epochs + cfg.retrain_epochs
    best = BestValidation(from_epoch=wide_epochs)
    after = AfterPrune(datamodule, wide_epochs, best)
    arm = fit_arm(datamodule, module, total, [pruning, after], best, ckpt)
    return {**measure(arm, datamodule, cfg, after, best), "widths": list(pruning.widths_after.values())}


def _pruned_baselines(result: dict[str, Any], setting: tuple[float, float], cfg: Any) -> None:
    """The chosen rebuilt arm and its control, then magnitude pruning to its count and its widths from scratch.

    The control is epsilon 0 with the chosen retraining.
    """
    datamodule, seed, wide_epochs = result.pop("datamodule"), result["seed"], result["wide_epochs"]
    total = wide_epochs + cfg.retrain_epochs
    epsilon, scale = setting
    result["rebuilt"] = {**result["grid"][setting], "epsilon": epsilon, "retrain_lr_scale": scale}
    result["control"] = _rebuilt_arm(datamodule, wide_epochs, (0.0, scale), result["ckpt"], cfg)
    magnitude = _magnitude_callback(datamodule, wide_epochs, result["wide"]["params"], result["rebuilt"]["params"], cfg)
    module = build_module(datamodule, HIDDEN, cfg.lr)
    best = BestValidation(from_epoch=wide_epochs)
    after = AfterPrune(datamodule, wide_epochs, best)
    arm = fit_arm(datamodule, module, total, [magnitude, after], best, result.pop("ckpt"))
    result["magnitude"] = measure(arm, datamodule, cfg, after, best)
    pl.seed_everything(seed, verbose=False)
    scratch = build_module(datamodule, result["rebuilt"]["widths"], cfg.lr)
    result["scratch"] = measure(fit_arm(datamodule, scratch, total, [], BestValidation()), datamodule, cfg)


def _train_wide(datamodule: TabularDataModule, seed: int, best: BestValidation, root: str, cfg: Any) -> tuple[str, int]:
    """The shared wide phase, until the validation loss stops improving for ``patience`` epochs.

    Returns the checkpoint every other arm resumes from and the number of epochs trained: the pruned
    arms rebuild or prune at the start of the next epoch, where ``DenseUnitPruning(patience=...)`` would.
    """
    pl.seed_everything(seed, verbose=False)
    module = build_module(datamodule, HIDDEN, cfg.lr)
    checkpoint = ModelCheckpoint(dirpath=root, save_top_k=0, save_last=True)
    plateau = EarlyStopping(monitor="val/loss", patience=cfg.patience)
    fit = trainer(cfg.max_wide_epochs, [best, plateau, checkpoint], root=root, enable_checkpointing=True)
    fit.fit(module, datamodule=datamodule)
    # The last checkpoint resumes at the epoch after the last one trained: its "epoch" is the count trained.
    state = torch.load(checkpoint.last_model_path, weights_only=True)
    if cfg.restore_best:
        state["state_dict"] = best.state
    path = f"{root}/wide_end.ckpt"
    torch.save(state, path)
    return path, state["epoch"]


def choose_setting(
    deltas: dict[tuple[float, float], list[float]],
    tolerance: float,
    margin: float = 0.0,
    reductions: dict[tuple[float, float], float] | None = None,
    target_reduction: float | None = None,
) -> tuple[float, float]:
    """The ``(epsilon, retrain_lr_scale)`` to report, from *validation* metrics (and parameter counts) only.

    ``deltas`` holds, per setting, each seed's validation metric minus its wide net's. A setting is within
    when its seed mean, less ``margin`` standard errors of that mean, is at least ``-tolerance``: with a small
    validation split a mean that merely touches the tolerance is as likely below it on the test split, and
    the margin asks for room in proportion to how much the seeds disagree. The largest epsilon with a setting
    within, and of its settings the best mean (ties: the first listed); when none is within, the best setting
    of the smallest epsilon. With ``target_reduction`` (and ``reductions``, each setting's seed-mean fraction
    of parameters removed) the *smallest* epsilon within that removes at least that fraction is taken instead
    when there is one: no more pruning than the size goal asks for, the rest kept as accuracy margin. The test
    split plays no part: the paper's "well-chosen epsilon", on validation.
    """
    mean = {key: statistics.mean(values) for key, values in deltas.items()}
    eligible = [key for key, values in deltas.items() if mean[key] - margin * standard_error(values) >= -tolerance]
    enough = [key for key in eligible if reductions and target_reduction is not None]
    enough = [key for key in enough if reductions[key] >= target_reduction]  # type: ignore[index]
    if enough:
        epsilon = min(key[0] for key in enough)
    else:
        epsilon = max(key[0] for key in eligible) if eligible else min(key[0] for key in deltas)
    candidates = [key for key in (eligible or deltas) if key[0] == epsilon]
    return max(candidates, key=lambda key: (mean[key], -list(deltas).index(key)))


def standard_error(values: list[float]) -> float:
    """Standard error of the mean (sample standard deviation over sqrt n); 0 for a single seed."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def grid_name(setting: tuple[float, float]) -> str:
    """A JSON key for ``(epsilon, retrain_lr_scale)``."""
    return f"epsilon={setting[0]},retrain_lr_scale={setting[1]}"


def _magnitude_callback(
    datamodule: TabularDataModule, wide_epochs: int, wide: int, target: int, cfg: Any
) -> IterativePruning:
    """One global magnitude step over every Linear weight (head included) down to ``target`` nonzeros."""
    net = build_module(datamodule, HIDDEN, cfg.lr).net
    weights = sum(m.weight.numel() for m in net.modules() if isinstance(m, nn.Linear))
    sparsity = min(0.999, (wide - target) / weights)
    return IterativePruning(
        target_sparsity=sparsity,
        step_ratio=sparsity,
        warmup_epochs=wide_epochs,
        finetune_epochs=cfg.retrain_epochs,
        prune_head=True,
        stop_when_done=True,
    )
