"""The catalogue of bad inputs (issue 8): each fails before expensive work, naming the field, the value and
what is allowed. Constructor arguments fail at construction; Trainer/model/data mismatches fail in ``fit``
before the first optimizer step; config and checkpoint mistakes fail before anything is built."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import NamedTuple

import lightning.pytorch as pl
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from torch import nn

from lightning_prune import (
    AccuracyGate,
    AnytimeProgressivePruning,
    DenseUnitPruning,
    IterativePruning,
    LatencyBudgetPruning,
    LayerFreezing,
    PruningAwareLR,
)
from lightning_prune.data import DigitsDataModule, MegabatchDataModule, MNISTDataModule, NpzDataModule
from lightning_prune.models import MLP, Classifier, SmallCNN
from lightning_prune.run import check_resume_checkpoint, register_recipes
from tests.helpers import REPO, cnn_classifier
from tests.test_run import run_app

CONSTRUCTION = {
    "sparsity above 1": (
        lambda: IterativePruning(target_sparsity=1.2),
        r"target_sparsity must be in \(0, 1\), got 1.2",
    ),
    "sparsity of 1": (lambda: IterativePruning(target_sparsity=1.0), r"target_sparsity must be in \(0, 1\), got 1.0"),
    "negative fine-tune epochs": (
        lambda: IterativePruning(target_sparsity=0.5, finetune_epochs=-1),
        "finetune_epochs must be an integer >= 0, got -1",
    ),
    "zero steps": (
        lambda: IterativePruning(target_sparsity=0.5, schedule="cubic", num_steps=0),
        "num_steps must be an integer >= 1 for schedule='cubic', got 0",
    ),
    "unknown module type": (
        lambda: IterativePruning(target_sparsity=0.5, include_types=["Conv9d"]),
        r"include_types has unknown module type\(s\) \['Conv9d'\]; allowed: \[",
    ),
    "invalid regex": (
        lambda: IterativePruning(target_sparsity=0.5, include_names="conv("),
        r"include_names: 'conv\(' is not a valid regular expression",
    ),
    "unknown importance": (
        lambda: IterativePruning(target_sparsity=0.5, importance="taylor"),
        r"importance must be one of \['magnitude', 'lamp'\], got 'taylor'",
    ),
    "epsilon above 1": (lambda: DenseUnitPruning(epsilon=1.5), r"epsilon must be a number in \[0, 1\) .*got 1.5"),
    "negative epsilon": (lambda: DenseUnitPruning(epsilon=-0.1), r"epsilon must be a number in \[0, 1\) .*got -0.1"),
    "carry_optimizer_state not a bool": (
        lambda: DenseUnitPruning(carry_optimizer_state="no"),
        "carry_optimizer_state must be true or false, got 'no'",
    ),
    "dense reference quantile 0": (
        lambda: DenseUnitPruning(reference_quantile=0),
        r"reference_quantile must be a number in \(0, 1\] .*got 0",
    ),
    "zero latency budget": (lambda: LatencyBudgetPruning(budget_fraction=0.0), "budget_fraction"),
    "negative latency budget": (
        lambda: LatencyBudgetPruning(budget_fraction=None, latency_budget_ms=-5.0),
        "latency_budget_ms",
    ),
    "budget fraction above dense": (lambda: LatencyBudgetPruning(budget_fraction=1.5), "budget_fraction"),
    "negative gate threshold": (
        lambda: AccuracyGate(threshold=-1.0),
        r"threshold must be a number of accuracy points >= 0, got -1.0",
    ),
    "gate evaluating zero batches": (
        lambda: AccuracyGate(val_batches=0),
        r"val_batches must be an integer >= 1 or None \(all batches\), got 0",
    ),
    "gate finetune_last as text": (
        lambda: AccuracyGate(finetune_last="yes"),
        r"finetune_last must be true or false, got 'yes'",
    ),
    "gate metric that cannot be imported": (
        lambda: AccuracyGate(metric_fn="no_such_module.f1"),
        r"metric_fn='no_such_module.f1' cannot be imported .*give the dotted import path of a callable",
    ),
    "freezing fraction above 1": (
        lambda: LayerFreezing(fraction=1.5),
        r"fraction must be a number in \[0, 1\] \(share of convs frozen\), got 1.5",
    ),
    "negative freezing fraction": (
        lambda: LayerFreezing(fraction=-0.1),
        r"fraction must be a number in \[0, 1\] \(share of convs frozen\), got -0.1",
    ),
    "LR step at half the network": (lambda: PruningAwareLR(p=0.5), r"p must be in \[0, 0.5\) .*got 0.5"),
    "negative LR step": (lambda: PruningAwareLR(p=-0.1), r"p must be in \[0, 0.5\) .*got -0.1"),
    "LR drop as large as the rate": (
        lambda: PruningAwareLR(base_lr=0.01, delta=0.01),
        r"delta must be in \[0, base_lr=0.01\) so the rate stays positive, got 0.01",
    ),
    "zero base LR": (lambda: PruningAwareLR(base_lr=0.0), "base_lr must be > 0 and finite, got 0.0"),
    "infinite base LR": (lambda: PruningAwareLR(base_lr=float("inf")), "base_lr must be > 0 and finite, got inf"),
    "zero LR steepness": (lambda: PruningAwareLR(beta=0), r"beta must be > 0 \(steepness of the step\), got 0"),
    "APP sparsity of 1": (
        lambda: AnytimeProgressivePruning(target_sparsity=1.0),
        r"target_sparsity must be in \[0, 1\) \(0 trains dense\), got 1.0",
    ),
    "negative APP sparsity": (
        lambda: AnytimeProgressivePruning(target_sparsity=-0.2),
        r"target_sparsity must be in \[0, 1\) \(0 trains dense\), got -0.2",
    ),
    "unknown APP schedule": (
        lambda: AnytimeProgressivePruning(schedule="exponential"),
        r"schedule must be one of \['app', 'linear', 'cubic', 'oneshot'\], got 'exponential'",
    ),
    "unknown replay mode": (
        lambda: AnytimeProgressivePruning(replay="buffer"),
        r"replay must be one of \['full', 'partial', 'none'\], got 'buffer'",
    ),
    "replay fraction of 1": (
        lambda: AnytimeProgressivePruning(replay="partial", replay_fraction=1.0),
        r"replay_fraction must be in \(0, 1\) .*got 1.0",
    ),
    "SNIP fraction as text": (
        lambda: AnytimeProgressivePruning(snip_fraction="0.2"),
        r"snip_fraction must be in \(0, 1\] \(share of one megabatch\), got '0.2'",
    ),
    "zero megabatches": (
        lambda: MegabatchDataModule(DigitsDataModule(), num_megabatches=0),
        "num_megabatches must be an integer >= 1, got 0",
    ),
    "megabatch batch size as text": (
        lambda: MegabatchDataModule(DigitsDataModule(), batch_size="64"),
        r"batch_size must be >= 1, got '64' \(an integer, or None for the wrapped module's\)",
    ),
}


@pytest.mark.parametrize("case", list(CONSTRUCTION))
def test_bad_argument_fails_at_construction(case):
    factory, message = CONSTRUCTION[case]
    with pytest.raises(ValueError, match=message):
        factory()


class DictBatches(pl.LightningDataModule):
    """Batches as dicts, not (x, y)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = DigitsDataModule(batch_size=64)
        self.inner.setup()

    def _loader(self, dataset):
        pairs = [{"image": x, "label": y} for x, y in dataset]
        return torch.utils.data.DataLoader(pairs, batch_size=64)

    def train_dataloader(self):
        return self._loader(self.inner.train_set)

    def val_dataloader(self):
        return self._loader(self.inner.val_set)


class TrainOnly(pl.LightningDataModule):
    """Training data and nothing to validate on."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = DigitsDataModule(batch_size=64)
        self.inner.setup()

    def train_dataloader(self):
        return self.inner.train_dataloader()


class EmptyValidation(TrainOnly):
    """A validation loader that yields nothing."""

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.Subset(self.inner.val_set, []), batch_size=64)


class DictClassifier(Classifier):
    """A module that trains on dict batches (so only the gate's default metric can object to them)."""

    def training_step(self, batch, batch_idx):
        return super().training_step((batch["image"], batch["label"]), batch_idx)

    def validation_step(self, batch, batch_idx):
        return super().validation_step((batch["image"], batch["label"]), batch_idx)


def _head_only_model() -> Classifier:
    return Classifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), 10, (1, 8, 8))


def _mlp() -> Classifier:
    return Classifier(MLP((1, 8, 8), 10, hidden=(64, 64)), 10, (1, 8, 8))


def _dict_model() -> DictClassifier:
    return DictClassifier(SmallCNN((1, 8, 8), 10, widths=(8, 8)), 10, (1, 8, 8))


def _pruner() -> IterativePruning:
    return IterativePruning(target_sparsity=0.5, step_ratio=0.5, export_dir=None)


def _megabatches(num: int) -> MegabatchDataModule:
    return MegabatchDataModule(DigitsDataModule(batch_size=64), num_megabatches=num)


class FitCase(NamedTuple):
    """A mistake that only shows once the Trainer, the model and the data meet."""

    callbacks: Callable[[], list[pl.Callback]]
    model: Callable[[], pl.LightningModule]
    message: str
    data: Callable[[], pl.LightningDataModule] | None = None  # None: the digits fixture
    max_epochs: int = 3


FIT = {
    "regex matching nothing": FitCase(
        lambda: [IterativePruning(target_sparsity=0.5, include_names="nomatch")],
        cnn_classifier,
        r"the parameter selection matched nothing in Classifier \(include_types=.*include_names='nomatch'",
    ),
    "model with no prunable layer": FitCase(
        lambda: [IterativePruning(target_sparsity=0.5)],
        _head_only_model,
        r"matched nothing in Classifier .*prune_head=False",
    ),
    "too few epochs for the schedule": FitCase(
        lambda: [IterativePruning(target_sparsity=0.9, step_ratio=0.5, warmup_epochs=2)],
        cnn_classifier,
        r"needs Trainer\(max_epochs >= 6\).*got max_epochs=3",
    ),
    "latency budget above dense": FitCase(
        lambda: [
            LatencyBudgetPruning(
                budget_fraction=None, latency_budget_ms=1e6, num_steps=1, warmup_epochs=0, repeats=5, rounds=1
            )
        ],
        _mlp,
        r"latency_budget_ms=1e\+06 is not below the dense model's measured latency",
    ),
    "unreachable latency budget": FitCase(
        lambda: [
            LatencyBudgetPruning(
                budget_fraction=None, latency_budget_ms=1e-6, num_steps=1, warmup_epochs=0, repeats=5, rounds=1
            )
        ],
        _mlp,
        r"the latency budget 1e-06 ms is unreachable: the smallest network allowed",
    ),
    "gate without validation data": FitCase(
        lambda: [_pruner(), AccuracyGate()],
        cnn_classifier,
        r"AccuracyGate measures accuracy after every pruning step and needs validation data: define val_dataloader",
        TrainOnly,
    ),
    "gate with an empty validation set": FitCase(
        lambda: [_pruner(), AccuracyGate()],
        cnn_classifier,
        "AccuracyGate: the validation data yields no batches",
        EmptyValidation,
    ),
    "gate on batches that are not (x, y)": FitCase(
        # The pruner warms up for an epoch first: the gate must object before that training, not after it.
        lambda: [IterativePruning(target_sparsity=0.5, step_ratio=0.5, warmup_epochs=1), AccuracyGate()],
        _dict_model,
        r"AccuracyGate with metric_fn=None needs \(x, y\) validation batches .*the first validation batch is a dict "
        r"with keys \['image', 'label'\]\. For other batches give metric_fn=",
        DictBatches,
    ),
    **{
        f"{name} without a pruner": FitCase(
            lambda make=make: [make()],
            cnn_classifier,
            rf"{name} works around a pruning callback and needs exactly one in Trainer\(callbacks=\.\.\.\), "
            r"e\.g\. IterativePruning; found none",
        )
        for name, make in [
            ("AccuracyGate", AccuracyGate),
            ("LayerFreezing", LayerFreezing),
            ("PruningAwareLR", PruningAwareLR),
        ]
    },
    "freezing a model without convs": FitCase(
        lambda: [_pruner(), LayerFreezing()],
        _mlp,
        r"the parameter selection matched nothing in Classifier \(include_types=\['Conv1d', 'Conv2d', 'Conv3d'\]",
    ),
    "more megabatches than training samples": FitCase(
        lambda: [AnytimeProgressivePruning(num_megabatches=5000, epochs_per_megabatch=1)],
        cnn_classifier,
        r"num_megabatches=5000 exceeds the \d+ training samples; it must be at most the number of training samples",
        lambda: _megabatches(5000),
        max_epochs=5000,
    ),
    "APP without megabatch data": FitCase(
        lambda: [AnytimeProgressivePruning(num_megabatches=3, epochs_per_megabatch=1)],
        cnn_classifier,
        r"needs trainer\.fit\(model, datamodule=MegabatchDataModule\(\.\.\.\)\) .*got datamodule=DigitsDataModule",
    ),
    "ICE gate beside the dense rebuild": FitCase(
        lambda: [DenseUnitPruning(epsilon=0.05, wide_epochs=1), AccuracyGate()],
        _mlp,
        r"AccuracyGate cannot work with DenseUnitPruning: that pruner has no pruning steps with fine-tunes",
    ),
    "ICE callback before APP": FitCase(
        lambda: [AccuracyGate(), AnytimeProgressivePruning(num_megabatches=3, epochs_per_megabatch=1)],
        cnn_classifier,
        r"AccuracyGate cannot work with AnytimeProgressivePruning: that pruner has no pruning steps with fine-tunes",
        lambda: _megabatches(3),
    ),
    "APP with an ICE callback": FitCase(
        lambda: [AnytimeProgressivePruning(num_megabatches=3, epochs_per_megabatch=1), AccuracyGate()],
        cnn_classifier,
        r"AnytimeProgressivePruning does not work with Trainer\(callbacks=\[\.\.\., AccuracyGate\]\)",
        lambda: _megabatches(3),
    ),
}


@pytest.mark.parametrize("case", list(FIT))
def test_bad_input_fails_before_training(case, digits, trainer_kwargs):
    callbacks, make_model, message, make_data, max_epochs = FIT[case]
    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=callbacks(), **trainer_kwargs)
    with pytest.raises(ValueError, match=message):
        trainer.fit(make_model(), datamodule=make_data() if make_data else digits)
    assert trainer.global_step == 0


def _compose(*overrides: str):
    register_recipes()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="run", overrides=["paths.output_dir=/tmp/unused", *overrides])


def test_unknown_recipe_lists_the_recipes():
    with pytest.raises(MissingConfigException, match=r"Could not find 'recipe/nope'[\s\S]*iterative"):
        _compose("recipe=nope")


def test_bad_value_in_a_recipe_names_the_config_key():
    cfg = _compose("recipe=iterative", "callbacks.iterative.step_ratio=1.5")
    with pytest.raises(Exception, match=r"step_ratio must be in \(0, 1\)[\s\S]*full_key: callbacks.iterative"):
        instantiate(cfg.callbacks.iterative)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"ckpt_path='.*missing.ckpt' does not exist"),
        (b"PK\x03\x04 truncated", "is not a readable checkpoint"),
        ("tensor", "is not a Lightning checkpoint"),
    ],
    ids=["missing", "corrupt", "not a checkpoint"],
)
def test_bad_resume_checkpoint(tmp_path, content, message):
    path = tmp_path / "missing.ckpt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "tensor":
        torch.save(torch.zeros(3), path)
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        check_resume_checkpoint(str(path))


@pytest.mark.parametrize(
    ("factory", "error", "message"),
    [
        (lambda tmp: MNISTDataModule(str(tmp / "nowhere")), FileNotFoundError, r"MNIST data_dir '.*nowhere' lacks"),
        (lambda tmp: NpzDataModule(str(tmp / "x.npz")), FileNotFoundError, r"path '.*x.npz' does not exist"),
    ],
    ids=["mnist dir", "npz path"],
)
def test_missing_data_names_the_path(tmp_path, factory, error, message):
    with pytest.raises(error, match=message):
        factory(tmp_path).setup()


def test_a_failed_run_leaves_earlier_outputs_untouched(tmp_path):
    good = run_app("recipe=iterative", "debug=fast", f"hydra.run.dir={tmp_path}")
    assert good.returncode == 0, good.stderr[-2000:]
    before = {p: p.read_bytes() for p in (tmp_path / "summary.json", tmp_path / "pruned_model.pt")}
    bad = run_app(
        "recipe=iterative", "debug=fast", "callbacks.iterative.include_names=nomatch", f"hydra.run.dir={tmp_path}"
    )
    assert bad.returncode != 0
    assert re.search("the parameter selection matched nothing", bad.stderr)
    assert {p: p.read_bytes() for p in before} == before
    assert json.loads((tmp_path / "summary.json").read_text())["iterative"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
