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

from lightning_prune import (
    AnytimeProgressivePruning,
)
from lightning_prune.data import DigitsDataModule, MegabatchDataModule, MNISTDataModule, NpzDataModule
from lightning_prune.run import check_resume_checkpoint, register_recipes
from tests.helpers import REPO, cnn_classifier
from tests.test_run import run_app

CONSTRUCTION = {
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
    "more megabatches than training samples": FitCase(
        lambda: [AnytimeProgressivePruning(num_megabatches=5000, epochs_per_megabatch=1)],
        cnn_classifier,
        r"num_megabatches=5000 exceeds the \d+ training samples; it must be at most the number of training samples",
        lambda: _megabatches(5000),
        max_epochs=5000,
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
