"""Every callback in a user's own ``trainer.fit(model, train_loader, val_loader)``: no datamodule needed.

Plain torch DataLoaders over the bundled data, each pruner in its minimal configuration from
``tests/faults/setups.py``; the run completes and reaches what the pruner promises, measured on the weights.
The models carry no ``example_input_array``: callbacks that need an input shape take it from the
validation loader ``fit`` was given (read at ``setup``, before Lightning loads the loaders itself).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
from torch.utils.data import DataLoader

from lightning_prune import AccuracyGate, LatencyBenchmark, LayerFreezing, PruningAwareLR
from lightning_prune.core.structured import count_parameters
from tests.faults.setups import PRUNERS, SETUPS, Setup, digits, measure


def plain_loaders(setup: Setup) -> tuple[DataLoader, DataLoader]:
    data = setup.data() if setup.plain_loaders else digits()  # APP splits the user's loader itself
    return DataLoader(data.train_set, batch_size=64, shuffle=True), DataLoader(data.val_set, batch_size=64)


def fit(setup: Setup, root: Path, trainer_kwargs: dict, callbacks: list) -> pl.LightningModule:
    pl.seed_everything(0, verbose=False)
    model = setup.model()
    model.example_input_array = None
    kwargs = {**trainer_kwargs, "default_root_dir": str(root), "max_epochs": setup.max_epochs, **setup.trainer}
    pl.Trainer(callbacks=callbacks, **kwargs).fit(model, *plain_loaders(setup))
    return model


def expected_sparsity(pruner: Any) -> float:
    """What the pruner's schedule ends at: APP's last megabatch, the others' target."""
    return pruner.sparsities[-1] if hasattr(pruner, "sparsities") else pruner.pruning_state.target_sparsity


@pytest.mark.parametrize("name", PRUNERS)
def test_every_pruner_fits_on_plain_loaders(name: str, trainer_kwargs: dict, tmp_path: Path) -> None:
    setup = SETUPS[name]
    pruner = setup.make(export_dir=str(tmp_path / "export"))
    model = fit(setup, tmp_path, trainer_kwargs, [pruner])
    summary = json.loads((tmp_path / "export" / "summary.json").read_text())
    assert (tmp_path / "export" / "pruned_model.pt").is_file()
    assert setup.section in summary
    measured = measure(setup, pruner, model.state_dict())
    if name == "DenseUnitPruning":
        assert count_parameters(model) < count_parameters(setup.model())  # units removed: the network shrank
    elif setup.structured:  # BlockPruning (a ratio per block), LatencyBudgetPruning (a latency budget)
        assert measured["sparsity"] > 0.1
        assert count_parameters(model) < count_parameters(setup.model())
    else:
        assert measured["sparsity"] == pytest.approx(expected_sparsity(pruner), abs=2e-3)


def test_ice_trio_fits_on_plain_loaders(trainer_kwargs: dict, tmp_path: Path) -> None:
    # the gate refuses a reference accuracy at chance level: two whole dense epochs first
    setup = dataclasses.replace(SETUPS["BlockPruning"], max_epochs=6, trainer={"limit_val_batches": 2})
    pruner = setup.make(export_dir=str(tmp_path), warmup_epochs=2)
    ice = [AccuracyGate(), LayerFreezing(), PruningAwareLR()]
    model = fit(setup, tmp_path, trainer_kwargs, [pruner, *ice])
    assert pruner.pruning_state.step > 0
    assert count_parameters(model) < count_parameters(setup.model())
    assert (tmp_path / "pruned_model.pt").is_file()


def test_latency_benchmark_fits_on_plain_loaders(trainer_kwargs: dict, tmp_path: Path) -> None:
    setup = SETUPS["IterativePruning"]
    bench = LatencyBenchmark(batch_sizes=[1], threads=1, warmup=1, repeats=3, rounds=1, export_dir=str(tmp_path))
    fit(setup, tmp_path, trainer_kwargs, [setup.make(export_dir=str(tmp_path)), bench])
    record = json.loads((tmp_path / "latency.json").read_text())
    assert record
