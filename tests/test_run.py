"""The Hydra app end to end, in subprocesses as users run it (one run, sweeps, errors)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
