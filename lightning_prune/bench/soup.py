"""Instant Soup Pruning vs IMP with rewinding (lottery ticket) vs one-shot magnitude pruning, in one run.

Every arm starts from the same dense pre-trained MLP (784-300-100-10 on MNIST, trained 3 epochs on a
seeded 40 % of MNIST's training split, i.e. 22,000 images, tested on the full 10,000; 64-300-100-10 on
digits when MNIST is absent) and ends at the same sparsity, with the same optimizer (SGD, momentum 0.9,
constant LR 0.05) and data; everything is repeated for 3 seeds (data split, init, ingredients) and averaged:

- ``oneshot``: global magnitude pruning to the target at once, then ``budget`` epochs of training;
- ``isp``: :class:`~lightning_prune.InstantSoupPruning` within the same ``budget`` epochs (mask phase
  at most half of it), N ingredients of C look-ahead steps per round;
- ``isp_n0``: the same rounds without denoising (``lookahead_steps=0``: the paper's N = 0 ablation);
- ``imp``: lottery-ticket IMP with rewinding to the pre-trained weights (``IterativePruning(rewind_epoch=0)``):
  ``budget`` epochs, prune ``imp_step_ratio`` of the remaining weights, rewind, repeat; the final ticket
  trains ``budget`` epochs too.

``wall_s`` is the whole fit of an arm (mask finding and final training; the shared pre-training and the
test pass are excluded), ``mask_steps`` the optimizer steps spent before the final mask existed
(ingredient steps included). The claims checked (paper, Tables 2-5): ISP accuracy >= IMP - 0.5 pt at
<= 1/5 of IMP's wall time, ISP above one-shot, and ISP with N=0 <= ISP with N=5.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch

from lightning_prune import InstantSoupPruning, IterativePruning
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
from lightning_prune.data import MNISTDataModule
from lightning_prune.data.arrays import ArrayDataModule
from lightning_prune.models import MLP, Classifier

FULL = {
    "train_fraction": 0.4,
    "pretrain_epochs": 3,
    "budget_epochs": 8,
    "isp_step_ratio": 0.3,
    "num_ingredients": 5,
    "lookahead_steps": 20,
    "imp_step_ratio": 0.2,
    "lr": 0.05,
    "hidden": (300, 100),
}
QUICK = {**FULL, "train_fraction": 0.05, "pretrain_epochs": 1, "budget_epochs": 1, "num_ingredients": 2}
QUICK.update(lookahead_steps=3, imp_step_ratio=0.5, isp_step_ratio=0.5)
ARMS = ("oneshot", "isp", "isp_n0", "imp")


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("soup", __doc__.splitlines()[0])
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.8, 0.9])
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="repeat everything per seed (default: 3 from --seed; 1 --quick)",
    )
    p.add_argument("--budget-epochs", type=int, default=None, help="epochs of one training pass (T)")
    p.add_argument("--lookahead-steps", type=int, default=None, help="ISP's C")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 avoids contention on a busy box)")
    args = p.parse_args(argv)
    quiet()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = dict(QUICK if args.quick else FULL)
    for key in ("budget_epochs", "lookahead_steps"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    root = tempfile.mkdtemp(prefix="lp-bench-soup-")  # exports of the arms' callbacks, not needed here
    seeds = args.seeds or ([args.seed] if args.quick else [args.seed, args.seed + 1, args.seed + 2])
    runs = [_one_seed(args.data_dir, args.sparsities, config, seed, root) for seed in seeds]
    result = {
        **{key: runs[0][key] for key in ("dataset", "train_samples", "model", "steps_per_epoch")},
        "quick": args.quick,
        "seeds": seeds,
        "config": config,
        "pretrain": [run["pretrain"] for run in runs],
        "results": [
            _mean_row(sparsity, [run["rows"][i] for run in runs]) for i, sparsity in enumerate(args.sparsities)
        ],
        "environment": environment(),
    }
    write_json(args.out, result)
    _print(result)
    return 0


def _mean(values: list[Any]) -> Any:
    """The mean; step counts stay integers."""
    mean = sum(values) / len(values)
    return round(mean) if all(isinstance(v, int) for v in values) else mean


def _one_seed(
    data_dir: str | None, sparsities: Sequence[float], config: dict[str, Any], seed: int, root: str
) -> dict[str, Any]:
    """Data split, pre-training and every arm at every sparsity for one seed."""
    datamodule, name = _data(data_dir, seed, config["train_fraction"])
    steps_per_epoch = len(datamodule.train_dataloader())
    pretrained, pretrain = _pretrain(datamodule, config, seed, root)
    rows = []
    for sparsity in sparsities:
        row: dict[str, Any] = {}
        for arm in ARMS:
            callback, epochs = _arm(arm, sparsity, config, steps_per_epoch, seed)
            row[arm] = _run(datamodule, config, pretrained, callback, epochs, seed, steps_per_epoch, root)
        rows.append(row)
    return {
        "dataset": name,
        "train_samples": len(datamodule.train_set),
        "model": f"MLP {datamodule.input_shape} -> {list(config['hidden'])} -> {datamodule.num_classes}",
        "steps_per_epoch": steps_per_epoch,
        "pretrain": {"seed": seed, **pretrain},
        "rows": rows,
    }


def _mean_row(sparsity: float, per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm: mean test accuracy, wall time and steps over seeds, with the per-seed accuracies kept."""
    row: dict[str, Any] = {"sparsity": sparsity}
    for arm in ARMS:
        records = [seed_row[arm] for seed_row in per_seed]
        mean = {key: _mean([r[key] for r in records]) for key in records[0] if key != "sparsity"}
        row[arm] = {**mean, "sparsity": records[0]["sparsity"], "test_acc_per_seed": [r["test_acc"] for r in records]}
    row["claims"] = _claims(row)
    return row


def _data(data_dir: str | None, seed: int, train_fraction: float) -> tuple[ArrayDataModule, str]:
    """MNIST (a seeded, stratified ``train_fraction`` of its training split) when present, else digits."""
    datamodule, name = default_data(data_dir, seed, batch_size=128)
    if name == "mnist":
        datamodule = MNISTDataModule(str(datamodule.data_dir), batch_size=128, seed=seed, train_fraction=train_fraction)
        datamodule.setup()
    return datamodule, name


def _model(datamodule: ArrayDataModule, config: dict[str, Any]) -> Classifier:
    net = MLP(datamodule.input_shape, datamodule.num_classes, hidden=config["hidden"])
    return Classifier(net, datamodule.num_classes, datamodule.input_shape, lr=config["lr"])


def _pretrain(
    datamodule: ArrayDataModule, config: dict[str, Any], seed: int, root: str
) -> tuple[dict, dict[str, float]]:
    """The dense "pre-trained" model every arm starts from (its cost is shared, so reported apart)."""
    pl.seed_everything(seed, verbose=False)
    model = _model(datamodule, config)
    fit = trainer(config["pretrain_epochs"], root=root, limit_val_batches=0)
    with Stopwatch() as watch:
        fit.fit(model, datamodule=datamodule)
    test_acc = float(fit.test(model, datamodule=datamodule, verbose=False)[0]["test/acc"])
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state, {"epochs": config["pretrain_epochs"], "wall_s": watch.seconds, "test_acc": test_acc}


def _arm(arm: str, sparsity: float, config: dict[str, Any], steps_per_epoch: int, seed: int) -> tuple[pl.Callback, int]:
    """The pruning callback of ``arm`` and the epochs its fit runs."""
    budget = config["budget_epochs"]
    if arm == "oneshot":
        return IterativePruning(target_sparsity=sparsity, step_ratio=sparsity, finetune_epochs=budget), budget
    if arm == "imp":
        imp = IterativePruning(
            target_sparsity=sparsity,
            step_ratio=config["imp_step_ratio"],
            warmup_epochs=budget,
            finetune_epochs=budget,
            rewind_epoch=0,
        )
        rounds = _rounds(sparsity, config["imp_step_ratio"])
        return imp, budget * (rounds + 1)
    denoised = arm == "isp"
    isp = InstantSoupPruning(
        target_sparsity=sparsity,
        step_ratio=config["isp_step_ratio"],
        num_ingredients=config["num_ingredients"] if denoised else 1,
        lookahead_steps=config["lookahead_steps"] if denoised else 0,
        calibration_steps=_calibration_steps(sparsity, config, steps_per_epoch),
        seed=seed,
    )
    return isp, budget


def _rounds(sparsity: float, step_ratio: float) -> int:
    return math.ceil(round(math.log(1 - sparsity) / math.log(1 - step_ratio), 9))


def _calibration_steps(sparsity: float, config: dict[str, Any], steps_per_epoch: int) -> int:
    """The paper's t (~10 % of an epoch), shrunk so that all rounds fit in half of the step budget (M <= T/2)."""
    rounds = _rounds(sparsity, config["isp_step_ratio"])
    half_budget = config["budget_epochs"] * steps_per_epoch // 2
    return max(1, min(math.ceil(0.1 * steps_per_epoch), half_budget // (rounds * (rounds + 1) // 2)))


def _run(
    datamodule: ArrayDataModule,
    config: dict[str, Any],
    pretrained: dict,
    callback: pl.Callback,
    epochs: int,
    seed: int,
    steps_per_epoch: int,
    root: str,
) -> dict[str, Any]:
    pl.seed_everything(seed, verbose=False)
    model = _model(datamodule, config)
    model.load_state_dict(pretrained)
    fit = trainer(epochs, [callback], root=root, limit_val_batches=0)
    with Stopwatch() as watch:
        fit.fit(model, datamodule=datamodule)
    test_acc = float(fit.test(model, datamodule=datamodule, verbose=False)[0]["test/acc"])
    state = callback.pruning_state
    mask_steps = _mask_steps(callback, steps_per_epoch)
    record = {"test_acc": test_acc, "wall_s": watch.seconds, "mask_steps": mask_steps}
    record.update(sparsity=state.sparsity, epochs=epochs, total_steps=fit.global_step)
    if isinstance(callback, InstantSoupPruning):
        record.update(ingredient_steps=callback.ingredient_steps, ingredient_s=callback.ingredient_s)
        record.update(rounds=state.step, calibration_steps=callback._calibration)
    else:
        record.update(rounds=state.step)
    return record


def _mask_steps(callback: pl.Callback, steps_per_epoch: int) -> int:
    if isinstance(callback, InstantSoupPruning):
        return callback.mask_steps
    # IterativePruning prunes at epoch start: every epoch before the last step went into finding the mask.
    return callback.pruning_state.last_step_epoch * steps_per_epoch


def _claims(row: dict[str, Any]) -> dict[str, Any]:
    isp, imp, oneshot, n0 = row["isp"], row["imp"], row["oneshot"], row["isp_n0"]
    return {
        "isp_minus_imp_pt": 100 * (isp["test_acc"] - imp["test_acc"]),
        "isp_wall_over_imp": isp["wall_s"] / imp["wall_s"],
        "isp_ge_imp_minus_0.5pt": isp["test_acc"] >= imp["test_acc"] - 0.005,
        "isp_wall_le_imp_fifth": isp["wall_s"] <= imp["wall_s"] / 5,
        "isp_gt_oneshot": isp["test_acc"] > oneshot["test_acc"],
        "isp_n0_le_isp": n0["test_acc"] <= isp["test_acc"],
    }


def _print(result: dict[str, Any]) -> None:
    rows = [
        [r["sparsity"], arm, r[arm]["test_acc"], f"{r[arm]['wall_s']:.1f}", r[arm]["mask_steps"], r[arm]["total_steps"]]
        for r in result["results"]
        for arm in ARMS
    ]
    title = f"soup benchmark ({result['dataset']}, {result['train_samples']} training samples)"
    print_table(title, ["sparsity", "arm", "test_acc", "wall_s", "mask_steps", "total_steps"], rows)
    claims = [[r["sparsity"], claim, value] for r in result["results"] for claim, value in r["claims"].items()]
    print_table("claims", ["sparsity", "claim", "value"], claims)


if __name__ == "__main__":
    raise SystemExit(main())
