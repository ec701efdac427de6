"""LatencyBudgetPruning under two CPU processes: rank 0 decides (timing, table, knapsack), all ranks agree."""

import json

import lightning.pytorch as pl
import pytest
import torch

import lightning_prune
from lightning_prune import LatencyBudgetPruning
from lightning_prune.core.structured import architecture_spec
from tests.helpers import resnet_classifier


class RankDump(pl.Callback):
    def __init__(self, directory, pruning):
        self.directory, self.pruning = directory, pruning

    def on_fit_end(self, trainer, pl_module):
        state = self.pruning.state_dict()
        record = {
            "history": repr(
                [(r["removed"], r["predicted_ms"], r["measured_ms"]) for r in state["pruning_state"]["history"]]
            ),
            "budget_ms": state["budget_ms"],
            "architecture": repr(architecture_spec(pl_module)),
            "weights": {k: v.cpu() for k, v in pl_module.state_dict().items()},
        }
        torch.save(record, self.directory / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(lightning_prune, "resize_on_load"), reason="needs the spawn-safe resize_on_load")
def test_ddp_ranks_apply_rank0_plan(tmp_path, digits, trainer_kwargs):
    pruning = LatencyBudgetPruning(
        budget_fraction=0.75, num_steps=2, warmup_epochs=1, threads=1, batch_size=128, repeats=10, lut_repeats=5
    )
    kwargs = {**trainer_kwargs, "devices": 2, "strategy": "ddp_spawn"}
    trainer = pl.Trainer(
        max_epochs=4, callbacks=[pruning, RankDump(tmp_path, pruning)], limit_train_batches=4, **kwargs
    )
    model = lightning_prune.resize_on_load(resnet_classifier())
    trainer.fit(model, datamodule=digits)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert rank0["history"] == rank1["history"]
    assert rank0["budget_ms"] == rank1["budget_ms"]
    assert rank0["architecture"] == rank1["architecture"]
    torch.testing.assert_close(rank0["weights"], rank1["weights"])
    assert repr(architecture_spec(model)) == rank0["architecture"]  # the parent got the shrunk model back
    summary = json.loads((tmp_path / "summary.json").read_text())["latency_budget"]
    assert summary["finished"] is True  # checked on every rank before rank 0 exported
    assert summary["measured"]["params"] == summary["params"] == sum(p.numel() for p in model.parameters())
