"""Anytime Progressive Pruning on two CPU processes (gloo): the ranks agree and match a single process."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lightning_prune import AnytimeProgressivePruning
from lightning_prune.data import DigitsDataModule, MegabatchDataModule
from tests.helpers import cnn_classifier

MEGABATCHES = 3


class RankDump(pl.Callback):
    """Each rank writes what it holds at fit end; ddp_spawn gives the parent no access to the workers' callbacks."""

    def __init__(self, directory: Path, pruner: AnytimeProgressivePruning) -> None:
        self.directory, self.pruner = directory, pruner

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = self.pruner.state_dict()
        history = state["pruning_state"]["history"]
        record = {
            "masks": state["masks"],
            "sparsity": state["pruning_state"]["sparsity"],
            "step": state["pruning_state"]["step"],
            "megabatch_sparsity": torch.tensor([r["sparsity"] for r in history], dtype=torch.float64),
            "val_acc": torch.tensor([r["val_acc"] for r in history], dtype=torch.float64),
            "weights": {k: v.cpu() for k, v in pl_module.state_dict().items()},
        }
        torch.save(record, self.directory / f"rank{trainer.global_rank}.pt")


def _run(directory: Path, trainer_kwargs: dict, devices: int, strategy: str = "auto") -> list[dict]:
    directory.mkdir()
    pl.seed_everything(0, verbose=False)
    pruner = AnytimeProgressivePruning(
        target_sparsity=0.8, num_megabatches=MEGABATCHES, epochs_per_megabatch=1, export_dir=str(directory)
    )
    data = MegabatchDataModule(DigitsDataModule(batch_size=64), num_megabatches=MEGABATCHES)
    kwargs = {**trainer_kwargs, "devices": devices, "strategy": strategy}
    trainer = pl.Trainer(max_epochs=MEGABATCHES, callbacks=[pruner, RankDump(directory, pruner)], **kwargs)
    trainer.fit(cnn_classifier(widths=(8, 8)), datamodule=data)
    return [torch.load(directory / f"rank{rank}.pt", weights_only=True) for rank in range(devices)]


@pytest.mark.slow  # ~17 s on 2 loaded cores: spawning two workers, then the single-process run
def test_anytime_progressive_ddp_ranks_agree_and_match_single_process(tmp_path: Path, trainer_kwargs: dict) -> None:
    rank0, rank1 = _run(tmp_path / "ddp", trainer_kwargs, devices=2, strategy="ddp_spawn")
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())["anytime_progressive"]
    assert summary["finished"] is True  # rank 0 wrote what every rank verified against the weights
    assert summary["sparsity"] == summary["measured"]["sparsity"] == pytest.approx(rank0["sparsity"], abs=1e-3)
    assert rank0["step"] == rank1["step"] == MEGABATCHES
    torch.testing.assert_close(rank0["masks"], rank1["masks"], rtol=0, atol=0)
    torch.testing.assert_close(rank0["weights"], rank1["weights"])  # masks held, DDP kept the weights in sync
    torch.testing.assert_close(rank0["val_acc"], rank1["val_acc"], rtol=0, atol=0)  # rank 0 evaluated, broadcast
    for name, mask in rank0["masks"].items():
        assert not rank0["weights"][name][~mask].any(), name  # the masks are the ones the model holds
    (single,) = _run(tmp_path / "single", trainer_kwargs, devices=1)
    assert rank0["sparsity"] == pytest.approx(single["sparsity"], abs=1e-6)
    torch.testing.assert_close(rank0["megabatch_sparsity"], single["megabatch_sparsity"], rtol=0, atol=1e-6)
    assert rank0["sparsity"] == pytest.approx(0.8, abs=1e-3)
