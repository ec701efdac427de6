"""The Hydra app end to end, in subprocesses as users run it (one run, sweeps, errors), and its export in-process."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import lightning_prune.run as app
from lightning_prune import load_model
from lightning_prune.models import Classifier
from tests.helpers import REPO


def run_app(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lightning_prune.run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_recipe_runs_end_to_end(tmp_path):
    result = run_app("recipe=iterative", "debug=fast", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["iterative"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert 0 <= summary["run"]["metrics"]["test/acc"] <= 1
    assert "lightning-prune summary" in result.stdout
    assert (tmp_path / "csv" / "metrics.csv").exists()
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    torch.load(tmp_path / "pruned_model.pt", weights_only=True)
    assert isinstance(load_model(tmp_path / "pruned_model.pt"), Classifier)


def test_recipe_export_loads_by_path_with_the_trained_outputs(tmp_path, monkeypatch):
    """``load_model(path)`` alone rebuilds the recipe's model (from the record the app wrote) with its outputs."""
    built, build = {}, app.build

    def keep(cfg):
        built["parts"] = build(cfg)
        return built["parts"]

    monkeypatch.setattr(app, "build", keep)
    overrides = ["recipe=iterative", "debug=fast", f"paths.output_dir={tmp_path}", "model.net.widths=[8,8,16,16]"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        app.train(compose("run", overrides=overrides))
    datamodule, trained, _ = built["parts"]
    record = json.loads((tmp_path / "pruned_model.json").read_text())
    assert (record["source"], record["model"]["net"]["widths"]) == ("hydra config", [8, 8, 16, 16])
    loaded = load_model(tmp_path / "pruned_model.pt")
    x, _ = next(iter(datamodule.val_dataloader()))
    torch.testing.assert_close(loaded(x), trained.eval()(x))
    assert float((loaded.net.features[0].weight == 0).float().mean()) > 0  # the pruned zeros came along


def test_a_bare_run_lists_the_recipes_and_trains_nothing(tmp_path):
    result = run_app(f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    for name, description in app.recipe_descriptions().items():
        assert re.search(rf"^  {name} +{re.escape(description)}$", result.stderr, re.MULTILINE), name
    assert "python -m lightning_prune.run recipe=<name>" in result.stderr
    assert "python -m lightning_prune.run dense=true" in result.stderr
    assert not (tmp_path / "summary.json").exists()
    assert not (tmp_path / "checkpoints").exists()


def test_dense_true_trains_without_pruning(tmp_path):
    result = run_app("dense=true", "debug=fast", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary) == ["run"]  # no pruning callback wrote a section
    assert summary["run"]["size"]["pruned"]["params"] == summary["run"]["size"]["dense"]["params"]
    assert not (tmp_path / "pruned_model.pt").exists()
    both = run_app("dense=true", "recipe=iterative", f"hydra.run.dir={tmp_path / 'both'}")
    assert both.returncode != 0
    assert "dense=true trains without pruning; drop it or recipe=iterative" in both.stderr


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_multirun_gives_one_result_per_job(tmp_path, launcher):
    result = run_app(
        "-m",
        "recipe=iterative",
        "debug=fast",
        "callbacks.iterative.target_sparsity=0.3,0.6",
        f"hydra/launcher={launcher}",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sparsities = sorted(
        json.loads((tmp_path / str(job) / "summary.json").read_text())["iterative"]["sparsity"] for job in (0, 1)
    )
    assert sparsities == pytest.approx([0.3, 0.6], abs=1e-3)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "callbacks.iterative.target_sparsity=1.5",
            r"target_sparsity must be in \(0, 1\), got 1.5'\)\s+full_key: callbacks.iterative",
        ),
        ("optimized_metric=val/f1", "optimized_metric='val/f1' was not produced by this run"),
    ],
)
def test_bad_config_fails_naming_the_field(tmp_path, override, message):
    result = run_app("recipe=iterative", "debug=fast", override, f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert re.search(message, result.stderr), result.stderr[-2000:]


def test_unknown_recipe_lists_the_available_ones(tmp_path):
    result = run_app("recipe=nope", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert "Could not find 'recipe/nope'" in result.stderr
    assert "iterative" in result.stderr


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_sweep(tmp_path):
    result = run_app(
        "-m",
        "recipe=iterative",
        "debug=fast",
        "callbacks.iterative.target_sparsity=0.3,0.6",
        "hydra/launcher=local",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sparsities = sorted(
        json.loads((tmp_path / str(job) / "summary.json").read_text())["iterative"]["sparsity"] for job in (0, 1)
    )
    assert sparsities == pytest.approx([0.3, 0.6], abs=1e-3)
    assert list((tmp_path / ".submitit").glob("*/*_result.pkl"))
