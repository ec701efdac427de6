"""ICE's three callbacks and the latency benchmark on two CPU processes (gloo): one decision, every rank."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy

from lightning_prune import AccuracyGate, IterativePruning, LatencyBenchmark, LayerFreezing, PruningAwareLR
from tests.helpers import cnn_classifier


class RankDump(pl.Callback):
    """Each rank writes what its callbacks decided; ddp_spawn gives the parent no access to the workers'."""

    def __init__(self, directory: Path, pruner: IterativePruning, freezing: LayerFreezing) -> None:
        self.directory, self.pruner, self.freezing = directory, pruner, freezing

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        history = self.pruner.pruning_state.history
        record = {
            "decisions": repr([(r.get("finetune"), r.get("drop_pt"), r.get("lr")) for r in history]),
            "frozen": repr(sorted(self.freezing.frozen)),
            "steps": len(history),
            "masks": self.pruner.state_dict()["masks"],
            "weights": {k: v.cpu() for k, v in pl_module.state_dict().items()},
        }
        torch.save(record, self.directory / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_ice_and_latency_benchmark_decide_once_under_ddp(digits, trainer_kwargs: dict, tmp_path: Path) -> None:
    pl.seed_everything(0, verbose=False)
    pruner = IterativePruning(target_sparsity=0.9, step_ratio=0.5, warmup_epochs=1, export_dir=str(tmp_path))
    freezing = LayerFreezing(fraction=0.5, max_move=None)
    callbacks = [
        pruner,
        AccuracyGate(threshold=5.0, val_batches=3, export_dir=str(tmp_path)),  # 3 batches: unequal rank shares
        freezing,
        PruningAwareLR(base_lr=0.02, delta=0.01),
        LatencyBenchmark(batch_sizes=[16], repeats=5, rounds=1, threads=1, export_dir=str(tmp_path)),
        RankDump(tmp_path, pruner, freezing),
    ]
    kwargs = {
        **trainer_kwargs,
        "devices": 2,
        "strategy": DDPStrategy(start_method="spawn", find_unused_parameters=True),
    }
    trainer = pl.Trainer(max_epochs=7, callbacks=callbacks, **kwargs)
    trainer.fit(cnn_classifier(), datamodule=digits)

    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert rank0["decisions"] == rank1["decisions"]
    assert "ran" in rank0["decisions"]
    assert rank0["frozen"] == rank1["frozen"] != "[]"
    torch.testing.assert_close(rank0["masks"], rank1["masks"])
    torch.testing.assert_close(rank0["weights"], rank1["weights"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["ice_gate"]["decisions"]) == rank0["steps"] > 0
    whens = [r["when"] for r in json.loads((tmp_path / "latency.json").read_text())["records"]]
    assert whens[0] == "fit_start"
    assert whens[-1] == "fit_end"
    assert "prune_step" in whens
