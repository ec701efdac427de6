"""Every method's example LightningCLI config (examples/cli/) fits for real; bad class paths and values fail first."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from lightning_prune import DenseUnitPruning, LatencyBudgetPruning
from lightning_prune.cli import main
from tests.helpers import REPO

pytest.importorskip("jsonargparse", reason="LightningCLI needs the cli extra: pip install -e '.[cli]'")
pytestmark = [
    # main(args) is called from pytest, whose own argv LightningCLI notices; and Lightning's cli.py still uses
    # jsonargparse calls that jsonargparse >= 4.49 deprecates (nothing of ours).
    pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:lightning.pytorch.cli"),
]

EXAMPLES = REPO / "examples" / "cli"
QUIET = {"enable_progress_bar": False, "logger": False, "enable_checkpointing": False, "limit_val_batches": 2}
SMALL_CNN = {"widths": [8, 8, 16, 16]}
SMALL_RESNET = {"blocks": [1, 1], "widths": [8, 8]}


def callback(cli: Any, cls: type) -> Any:
    return next(cb for cb in cli.trainer.callbacks if isinstance(cb, cls))


def sparsity_metric(cli: Any) -> float:
    return float(cli.trainer.callback_metrics["prune/sparsity"])


def check_iterative(cli: Any, root: Path) -> None:
    assert sparsity_metric(cli) == pytest.approx(0.5, abs=1e-3)


def check_ice(cli: Any, root: Path) -> None:
    net = cli.model.net
    inner = [block.conv1.out_channels for stage in net.stages for block in stage]
    assert inner == [3, 3]  # 5 (60 %) of each block's 8 inner filters removed, physically
    assert "ice/acc_final" in cli.trainer.callback_metrics


def check_anytime_progressive(cli: Any, root: Path) -> None:
    assert sparsity_metric(cli) == pytest.approx(0.6336, abs=1e-3)
    assert cli.datamodule.megabatch == 1  # the callback moved the data along to the last megabatch


def check_instant_soup(cli: Any, root: Path) -> None:
    assert sparsity_metric(cli) == pytest.approx(0.5, abs=1e-3)
    assert float(cli.trainer.callback_metrics["soup/ingredient_steps"]) > 0


def check_odf2nna(cli: Any, root: Path) -> None:
    pruner = callback(cli, DenseUnitPruning)
    assert pruner.widths_before == {"net.layers.1": 32, "net.layers.3": 32}
    assert sum(pruner.widths_after.values()) < 64


def check_latency_budget(cli: Any, root: Path) -> None:
    pruner = callback(cli, LatencyBudgetPruning)
    assert pruner.pruning_state.history[0]["removed"] > 0
    record = json.loads((root / "latency.json").read_text())  # LatencyBenchmark: dense (fit start) vs pruned (end)
    when = [r["when"] for r in record["records"]]
    assert (when[0], when[-1]) == ("fit_start", "fit_end")
    assert record["speedup"]["1"] > 0


# method -> (edits merged into the example config, check after the fit). Only budgets shrink: the classes,
# the wiring between them and every other value are the documented example's.
CASES: dict[str, tuple[dict[str, Any], Callable[[Any, Path], None]]] = {
    "iterative": (
        {
            "trainer": {"max_epochs": 2, "limit_train_batches": 2},
            "callbacks": [{"target_sparsity": 0.5, "step_ratio": 0.5, "warmup_epochs": 1}],
            "net": SMALL_CNN,
        },
        check_iterative,
    ),
    "ice": (
        {
            # the gate refuses a reference accuracy at chance level: a few dense epochs first
            "trainer": {"max_epochs": 5, "limit_train_batches": None},
            "callbacks": [{"warmup_epochs": 2}, {"val_batches": 1}, {}, {}],
            "net": SMALL_RESNET,
        },
        check_ice,
    ),
    "anytime_progressive": (
        {
            "trainer": {"max_epochs": 2, "limit_train_batches": 2},
            "callbacks": [{"num_megabatches": 2, "epochs_per_megabatch": 1}],
            "data": {"num_megabatches": 2},
            "net": SMALL_CNN,
        },
        check_anytime_progressive,
    ),
    "instant_soup": (
        {
            "trainer": {"max_epochs": 2, "limit_train_batches": 4},
            "callbacks": [
                {
                    "target_sparsity": 0.5,
                    "step_ratio": 0.5,
                    "num_ingredients": 2,
                    "lookahead_steps": 2,
                    "calibration_steps": 2,
                    "warmup_steps": 0,
                }
            ],
            "net": SMALL_CNN,
        },
        check_instant_soup,
    ),
    "odf2nna": (
        {
            "trainer": {"max_epochs": 3, "limit_train_batches": 4},
            "callbacks": [{"epsilon": 0.3, "wide_epochs": 2, "retrain_epochs": 1, "patience": None}],
            "net": {"hidden": [32, 32]},
        },
        check_odf2nna,
    ),
    "latency_budget": (
        {
            "trainer": {"max_epochs": 2, "limit_train_batches": 2},
            "callbacks": [
                {
                    "num_steps": 1,
                    "warmup_epochs": 0,
                    "finetune_epochs": 1,
                    "budget_fraction": 0.8,
                    "repeats": 5,
                    "rounds": 2,
                    "lut_repeats": 3,
                    "tolerance": 0.15,
                    "batch_size": 64,
                    "max_corrections": 0,
                },
                {"batch_sizes": [1], "warmup": 2, "repeats": 5, "rounds": 2, "every_prune_step": False},
            ],
            "net": {"widths": [32, 32], "blocks": [1, 1]},
        },
        check_latency_budget,
    ),
}


def tiny_config(method: str, root: Path, edits: dict[str, Any]) -> Path:
    """The example config with ``edits`` merged in, every output under ``root``, written beside it."""
    config = yaml.safe_load((EXAMPLES / f"{method}.yaml").read_text())
    trainer = config["trainer"]
    trainer.update({**QUIET, **edits["trainer"], "default_root_dir": str(root)})
    assert len(trainer["callbacks"]) == len(edits["callbacks"])
    for entry, changes in zip(trainer["callbacks"], edits["callbacks"]):
        entry["init_args"].update(changes)
        if "lut_path" in entry["init_args"]:
            entry["init_args"]["lut_path"] = str(root / "latency_lut.json")
    config["model"]["init_args"]["net"]["init_args"].update(edits["net"])
    config["data"]["init_args"].update(edits.get("data", {}))
    path = root / f"{method}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_every_method_has_an_example_config() -> None:
    assert sorted(path.stem for path in EXAMPLES.glob("*.yaml")) == sorted(CASES)


@pytest.mark.parametrize("method", sorted(CASES))
def test_lightning_cli_fit(method: str, tmp_path: Path) -> None:
    """``python -m lightning_prune.cli fit --config examples/cli/<method>.yaml``, in-process with tiny budgets."""
    edits, check = CASES[method]
    previous = torch.get_num_threads()
    try:
        cli = main(["fit", "--config", str(tiny_config(method, tmp_path, edits))])
    finally:
        torch.set_num_threads(previous)  # LatencyBenchmark and the latency pruner time on fixed threads
    assert cli.trainer.state.finished
    assert (tmp_path / "pruned_model.pt").is_file()
    check(cli, tmp_path)


def typo_config(root: Path) -> Path:
    """The iterative example with a misspelled callback argument, as a user would write it."""
    config = yaml.safe_load((EXAMPLES / "iterative.yaml").read_text())
    config["trainer"]["callbacks"][0]["init_args"]["target_sparsty"] = 0.5
    path = root / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


ITERATIVE = "--trainer.callbacks+=lightning_prune.IterativePruning"


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--trainer.callbacks+=lightning_prune.NoSuchPruning"], r"lightning_prune\.NoSuchPruning"),
        ([ITERATIVE, "--trainer.callbacks.target_sparsity=1.5"], r"target_sparsity must be in \(0, 1\), got 1\.5"),
        ([ITERATIVE, "--trainer.callbacks.step_ratio=half"], r"step_ratio"),
        ([ITERATIVE, "--trainer.callbacks.importance=lamb"], r"importance must be one of .*got 'lamb'"),
        (["--model.init_args.net.class_path=lightning_prune.models.NoSuchNet"], r"lightning_prune\.models\.NoSuchNet"),
        (["--data.init_args.batch_size=many"], r"batch_size"),
        ("typo", r"target_sparsty"),
    ],
)
def test_lightning_cli_bad_input_fails_before_training(
    args: list[str] | str, match: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A bad class path, a value a constructor refuses, a wrong type or a misspelled key: refused before training."""
    config, extra = (typo_config(tmp_path), []) if args == "typo" else (EXAMPLES / "iterative.yaml", args)
    # jsonargparse exits (usage on stderr) for what it checks itself; a constructor's refusal comes as its ValueError.
    with pytest.raises((SystemExit, ValueError)) as raised:
        main(["fit", "--config", str(config), f"--trainer.default_root_dir={tmp_path}", *extra])
    message = str(raised.value) if isinstance(raised.value, ValueError) else capsys.readouterr().err
    assert re.search(match, message), message
    assert not list(tmp_path.rglob("*.ckpt"))  # nothing was trained
    assert not (tmp_path / "pruned_model.pt").exists()
