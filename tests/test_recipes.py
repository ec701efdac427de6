"""Every recipe composes over conf/ and instantiates (LHT's config tests + torchtune's recipe validation)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from lightning.pytorch import Callback

from lightning_prune.run import RECIPES_DIR, register_recipes
from tests.helpers import REPO

RECIPES = register_recipes()


def compose_recipe(name: str, tmp_path: Path, overrides: tuple[str, ...] = ()):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="run", overrides=[f"recipe={name}", f"paths.output_dir={tmp_path}", *overrides])


def test_recipes_are_registered():
    assert "iterative" in RECIPES
    assert sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")) == RECIPES


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_composes_and_instantiates(name, tmp_path):
    cfg = compose_recipe(name, tmp_path)
    callbacks = [instantiate(node) for node in cfg.callbacks.values() if node and "_target_" in node]
    assert callbacks
    assert all(isinstance(cb, Callback) for cb in callbacks)
    assert cfg.task_name == name
    assert instantiate(cfg.data) is not None


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_opens_with_a_header(name):
    text = (RECIPES_DIR / f"{name}.yaml").read_text()
    header = text.split("\ndefaults:")[0]
    assert "python -m lightning_prune.run" in header
    for word in ("Cost", "Run", "Result"):
        assert word in header, f"recipes/{name}.yaml header lacks '{word}:'"
