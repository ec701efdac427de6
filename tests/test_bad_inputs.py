"""The catalogue of bad inputs (issue 8): each fails before expensive work, naming the field, the value and
what is allowed. Constructor arguments fail at construction; Trainer/model/data mismatches fail in ``fit``
before the first optimizer step; config and checkpoint mistakes fail before anything is built."""

from __future__ import annotations

import json
import re

import lightning.pytorch as pl
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from torch import nn

from lightning_prune import DenseUnitPruning, InstantSoupPruning, IterativePruning, LatencyBudgetPruning
from lightning_prune.data import DigitsDataModule, MNISTDataModule, NpzDataModule
from lightning_prune.models import MLP, Classifier
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
    "soup with zero ingredients": (
        lambda: InstantSoupPruning(target_sparsity=0.8, num_ingredients=0),
        "num_ingredients",
    ),
    "soup with negative ingredients": (
        lambda: InstantSoupPruning(target_sparsity=0.8, num_ingredients=-3),
        "num_ingredients",
    ),
    "epsilon above 1": (lambda: DenseUnitPruning(epsilon=1.5), r"epsilon must be a number in \[0, 1\) .*got 1.5"),
    "negative epsilon": (lambda: DenseUnitPruning(epsilon=-0.1), r"epsilon must be a number in \[0, 1\) .*got -0.1"),
    "zero latency budget": (lambda: LatencyBudgetPruning(budget_fraction=0.0), "budget_fraction"),
    "negative latency budget": (
        lambda: LatencyBudgetPruning(budget_fraction=None, latency_budget_ms=-5.0),
        "latency_budget_ms",
    ),
    "budget fraction above dense": (lambda: LatencyBudgetPruning(budget_fraction=1.5), "budget_fraction"),
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


def _head_only_model() -> Classifier:
    return Classifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), 10, (1, 8, 8))


def _mlp() -> Classifier:
    return Classifier(MLP((1, 8, 8), 10, hidden=(64, 64)), 10, (1, 8, 8))


FIT = {
    "regex matching nothing": (
        lambda: IterativePruning(target_sparsity=0.5, include_names="nomatch"),
        cnn_classifier,
        r"the parameter selection matched nothing in Classifier \(include_types=.*include_names='nomatch'",
    ),
    "model with no prunable layer": (
        lambda: IterativePruning(target_sparsity=0.5),
        _head_only_model,
        r"matched nothing in Classifier .*prune_head=False",
    ),
    "too few epochs for the schedule": (
        lambda: IterativePruning(target_sparsity=0.9, step_ratio=0.5, warmup_epochs=2),
        cnn_classifier,
        r"needs Trainer\(max_epochs >= 6\).*got max_epochs=3",
    ),
    "latency budget above dense": (
        lambda: LatencyBudgetPruning(
            budget_fraction=None, latency_budget_ms=1e6, num_steps=1, warmup_epochs=0, repeats=5, rounds=1
        ),
        _mlp,
        r"latency_budget_ms=1e\+06 is not below the dense model's measured latency",
    ),
    "unreachable latency budget": (
        lambda: LatencyBudgetPruning(
            budget_fraction=None, latency_budget_ms=1e-6, num_steps=1, warmup_epochs=0, repeats=5, rounds=1
        ),
        _mlp,
        r"the latency budget 1e-06 ms is unreachable: the smallest network allowed",
    ),
}


@pytest.mark.parametrize("case", list(FIT))
def test_bad_input_fails_before_training(case, digits, trainer_kwargs):
    make_callback, make_model, message = FIT[case]
    trainer = pl.Trainer(max_epochs=3, callbacks=[make_callback()], **trainer_kwargs)
    with pytest.raises(ValueError, match=message):
        trainer.fit(make_model(), datamodule=digits)
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
