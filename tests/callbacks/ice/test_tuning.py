"""ICE-Pruning's recipe and two-stage tuning: configs compose, the objective is sound, a real sweep runs."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate

from lightning_prune import AccuracyGate, BlockPruning, LayerFreezing, PruningAwareLR
from lightning_prune.callbacks.ice.stage2 import stage2_argv
from lightning_prune.callbacks.ice.tuning import STAGE1_SPACE, best_overrides, bounded_time_objective
from lightning_prune.run import metric_to_optimize, register_recipes, train
from tests.helpers import REPO

TINY = [
    "model.net.blocks=[1,1]",
    "model.net.widths=[8,8]",
    "trainer.max_epochs=3",
    "callbacks.block_pruning.warmup_epochs=1",
    "data.batch_size=8",  # enough steps on 20 % of digits that the warm-up lifts A0 off chance level (the gate refuses)
]


def composed(overrides: list[str], hydra_node: bool = True):
    register_recipes()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("run", overrides=overrides, return_hydra_config=hydra_node)


def test_stage1_yaml_searches_the_documented_space() -> None:
    params = composed(["recipe=ice_pruning", "hparams_search=ice_stage1_optuna"]).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    assert {o.key_or_group: list(o.value().list) for o in parsed} == STAGE1_SPACE


@pytest.mark.parametrize(
    ("removed", "kept"),
    [
        ([], (AccuracyGate, LayerFreezing, PruningAwareLR)),
        (["~callbacks.ice_freezing", "~callbacks.ice_lr"], (AccuracyGate,)),
        (["~callbacks.ice_gate", "~callbacks.ice_lr"], (LayerFreezing,)),
        (["~callbacks.ice_gate", "~callbacks.ice_freezing"], (PruningAwareLR,)),
    ],
)
def test_ice_recipe_and_each_part_alone(removed: list[str], kept: tuple) -> None:
    cfg = composed(["recipe=ice_pruning", *removed])
    callbacks = [instantiate(node) for name, node in cfg.callbacks.items() if name != "model_checkpoint"]
    pruner = next(cb for cb in callbacks if isinstance(cb, BlockPruning))
    assert pruner.step_ratio == 0.6
    assert pruner.target_sparsity is None  # every block pruned once
    assert sum(cfg.model.net.blocks) == 12
    ice = [type(cb) for cb in callbacks if isinstance(cb, (AccuracyGate, LayerFreezing, PruningAwareLR))]
    assert tuple(ice) == kept
    assert all(cb.finetune_last for cb in callbacks if isinstance(cb, AccuracyGate))  # the run ends fine-tuned


def test_bounded_time_objective_bounds_accuracy_and_minimises_time() -> None:
    fast_ok = {"run/fit_s": 10.0, "ice/acc_reference": 0.95, "ice/acc_final": 0.945}
    slow_ok = {**fast_ok, "run/fit_s": 20.0}
    fast_bad = {**fast_ok, "run/fit_s": 1.0, "ice/acc_final": 0.90}
    assert bounded_time_objective(fast_ok) < bounded_time_objective(slow_ok)  # the paper's objective says the opposite
    assert bounded_time_objective(fast_bad) > bounded_time_objective(slow_ok)  # 4 pt over the bound
    assert bounded_time_objective(fast_bad, max_drop_pt=5.0) == 1.0
    # Against the traditional pipeline's accuracy on the same subset instead of A0: 0.5 pt below it, within 1 pt.
    assert bounded_time_objective(fast_bad, reference_acc=0.905) == 1.0
    assert bounded_time_objective(fast_bad, reference_acc=0.93) == pytest.approx(1.0 + 2000.0)
    with pytest.raises(KeyError, match="ice/acc_final"):
        bounded_time_objective({"run/fit_s": 1.0, "ice/acc_reference": 0.9})


def test_best_overrides(tmp_path: Path) -> None:
    results = {"name": "optuna", "best_params": {"callbacks.ice_gate.threshold": 2.0, "callbacks.ice_lr.beta": 40}}
    (tmp_path / "optimization_results.yaml").write_text(yaml.safe_dump(results))
    expected = ["callbacks.ice_gate.threshold=2.0", "callbacks.ice_lr.beta=40"]
    assert best_overrides(tmp_path) == best_overrides(tmp_path / "optimization_results.yaml") == expected
    assert stage2_argv(str(tmp_path), ["seed=1"])[-3:] == [*expected, "seed=1"]
    with pytest.raises(FileNotFoundError, match="no stage-1 results"):
        best_overrides(tmp_path / "missing")
    (tmp_path / "bad.yaml").write_text("name: optuna\n")
    with pytest.raises(ValueError, match="best_params"):
        best_overrides(tmp_path / "bad.yaml")


def test_stage1_trial_returns_the_objective(tmp_path: Path) -> None:
    """One stage-1 trial in-process: the app returns the bounded-time objective to the sweeper."""
    overrides = ["recipe=ice_pruning", "hparams_search=ice_stage1_optuna", *TINY, f"paths.output_dir={tmp_path}"]
    cfg = composed([*overrides, "logger=none", "trainer.enable_progress_bar=false"], hydra_node=False)
    metrics = train(cfg)
    value = metric_to_optimize(metrics, cfg.optimized_metric)
    assert cfg.optimized_metric == "objective"
    assert value == bounded_time_objective(metrics, max_drop_pt=1.0, penalty_s_per_pt=1000.0)
    assert value >= metrics["run/fit_s"] > 0
    assert cfg.data.train_fraction == 0.2

    cfg = composed([*overrides, "logger=none", "objective.reference_acc=0.0"], hydra_node=False)
    assert instantiate(cfg.objective)(metrics) == metrics["run/fit_s"]  # nothing is below a reference of 0


def documented_reference_command() -> list[str]:
    """The overrides of the reference run spelled out in the stage-1 config's comments."""
    text = (REPO / "conf" / "hparams_search" / "ice_stage1_optuna.yaml").read_text()
    lines = [line.lstrip("# ").rstrip("\\ ") for line in text.splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(lines) if line.startswith("python -m lightning_prune.run recipe=ice"))
    end = next(i for i in range(start, len(lines)) if "optimized_metric=" in lines[i])
    argv = shlex.split(" ".join(lines[start : end + 1]))
    assert argv[:3] == ["python", "-m", "lightning_prune.run"]
    return argv[3:]


def test_documented_stage1_reference_run(tmp_path: Path) -> None:
    """The command that measures objective.reference_acc runs and returns the final accuracy."""
    overrides = [*documented_reference_command(), *TINY, f"paths.output_dir={tmp_path}", "logger=none"]
    cfg = composed([*overrides, "trainer.enable_progress_bar=false"], hydra_node=False)
    metrics = train(cfg)
    assert metric_to_optimize(metrics, cfg.optimized_metric) == metrics["ice/acc_final"]
    assert 0.0 < metrics["ice/acc_final"] <= 1.0
    assert "test/acc" not in metrics  # test=false: the reference uses the gate's validation batches only


@pytest.mark.slow
def test_stage1_sweep_then_stage2(tmp_path: Path) -> None:
    """The two documented commands, for real: a 2-trial Optuna sweep, then stage 2 from its results."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    quiet = ["trainer.enable_progress_bar=false", "logger=none"]
    stage1 = [
        sys.executable,
        "-m",
        "lightning_prune.run",
        "-m",
        "recipe=ice_pruning",
        "hparams_search=ice_stage1_optuna",
    ]
    sweep = tmp_path / "stage1"
    subprocess.run(
        [
            *stage1,
            "hydra.sweeper.n_trials=2",
            *TINY,
            *quiet,
            f"hydra.sweep.dir={sweep}",
            f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db",  # a fresh study, not the repository's
        ],
        cwd=REPO,
        env=env,
        check=True,
    )
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == set(STAGE1_SPACE)
    trials = [yaml.safe_load((sweep / str(i) / "summary.json").read_text())["run"]["metrics"] for i in (0, 1)]
    assert min(t["objective"] for t in trials) == pytest.approx(results["best_value"])
    assert all(t["objective"] >= t["run/fit_s"] for t in trials)

    run_dir = tmp_path / "stage2"
    stage2 = [
        sys.executable,
        "-m",
        "lightning_prune.callbacks.ice.stage2",
        str(sweep),
        *TINY,
        *quiet,
        f"hydra.run.dir={run_dir}",
    ]
    subprocess.run(stage2, cwd=REPO, env=env, check=True)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["callbacks"]["ice_gate"]["threshold"] == results["best_params"]["callbacks.ice_gate.threshold"]
    assert config["callbacks"]["ice_lr"]["beta"] == results["best_params"]["callbacks.ice_lr.beta"]
    assert config["data"]["train_fraction"] == 1.0  # stage 2 runs on the full data
