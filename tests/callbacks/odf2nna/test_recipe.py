"""The ODF2NNA recipe composes, instantiates and runs in-process (tiny budget), for both task types."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from lightning_prune import DenseUnitPruning
from lightning_prune.run import train
from tests.helpers import REPO


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("run", overrides=["recipe=odf2nna", *overrides])


def test_odf2nna_recipe_composes() -> None:
    cfg = _compose([])
    assert cfg.data.name == "breast_cancer"
    assert list(cfg.model.net.hidden) == [256, 256, 256]
    callback = instantiate(cfg.callbacks.odf2nna)
    assert isinstance(callback, DenseUnitPruning)
    assert cfg.trainer.max_epochs == callback.wide_epochs + callback.retrain_epochs
    assert callback.patience == 3
    assert callback.reference_quantile == 0.99


@pytest.mark.parametrize(
    ("overrides", "metric"),
    [([], "test/acc"), (["data=diabetes", "model=mlp_wide_regressor", "optimized_metric=test/r2"], "test/r2")],
    ids=["classification", "regression"],
)
def test_odf2nna_recipe_runs(tmp_path, overrides: list[str], metric: str) -> None:
    cfg = _compose(
        [
            *overrides,
            f"paths.output_dir={tmp_path}",
            "logger=none",
            "trainer.max_epochs=3",
            "trainer.enable_progress_bar=false",
            "callbacks.odf2nna.wide_epochs=2",
            "callbacks.odf2nna.retrain_epochs=1",
        ]
    )
    metrics = train(cfg)
    assert metric in metrics
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["odf2nna"]["params_after"] < summary["odf2nna"]["params_before"]
