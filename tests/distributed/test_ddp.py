"""Two CPU processes (gloo): every rank ends with the same decisions, equal to a single-process run."""

import lightning.pytorch as pl
import pytest
import torch

from lightning_prune import BlockPruning, IterativePruning, resize_on_load
from lightning_prune.core.structured import architecture_spec
from tests.helpers import cnn_classifier, resnet_classifier


class RankDump(pl.Callback):
    """Each rank writes what it decided; ddp_spawn gives the parent no access to the workers' callbacks."""

    def __init__(self, directory, pruning):
        self.directory, self.pruning = directory, pruning

    def on_fit_end(self, trainer, pl_module):
        state = self.pruning.state_dict()
        record = {
            "masks": state.get("masks"),
            "sparsity": state["pruning_state"]["sparsity"],
            "architecture": repr(architecture_spec(pl_module)),
            "weights": {k: v.cpu() for k, v in pl_module.state_dict().items()},
        }
        torch.save(record, self.directory / f"rank{trainer.global_rank}.pt")


def _run(tmp_path, digits, trainer_kwargs, make_model, make_pruner, devices, strategy="auto"):
    pruning = make_pruner()
    kwargs = {**trainer_kwargs, "devices": devices, "strategy": strategy}
    trainer = pl.Trainer(
        max_epochs=6, callbacks=[pruning, RankDump(tmp_path, pruning)], limit_train_batches=4, **kwargs
    )
    trainer.fit(resize_on_load(make_model()), datamodule=digits)
    return [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(devices)]


@pytest.mark.parametrize(
    ("make_model", "make_pruner"),
    [
        (cnn_classifier, lambda: IterativePruning(target_sparsity=0.75, step_ratio=0.5, warmup_epochs=1)),
        pytest.param(resnet_classifier, lambda: BlockPruning(step_ratio=0.5, warmup_epochs=1), marks=pytest.mark.slow),
    ],
    ids=["unstructured", "structured"],
)
def test_ddp_ranks_agree_and_match_single_process(tmp_path, digits, trainer_kwargs, make_model, make_pruner):
    (tmp_path / "ddp").mkdir()
    (tmp_path / "single").mkdir()
    rank0, rank1 = _run(
        tmp_path / "ddp", digits, trainer_kwargs, make_model, make_pruner, devices=2, strategy="ddp_spawn"
    )
    torch.testing.assert_close(rank0["masks"], rank1["masks"])
    torch.testing.assert_close(rank0["weights"], rank1["weights"])  # DDP kept them in sync after every shrink
    assert rank0["architecture"] == rank1["architecture"]
    (single,) = _run(tmp_path / "single", digits, trainer_kwargs, make_model, make_pruner, devices=1)
    assert rank0["sparsity"] == pytest.approx(single["sparsity"], abs=1e-6)
    assert rank0["architecture"] == single["architecture"]


@pytest.mark.slow
def test_structured_under_spawn_needs_resize_on_load(digits, trainer_kwargs):
    pruning = BlockPruning(step_ratio=0.5)
    trainer = pl.Trainer(max_epochs=6, callbacks=[pruning], **{**trainer_kwargs, "devices": 2, "strategy": "ddp_spawn"})
    # The worker's ValueError reaches the parent wrapped by torch.multiprocessing.
    with pytest.raises(Exception, match=r"Call `lightning_prune.resize_on_load\(model\)` before `trainer.fit`"):
        trainer.fit(resnet_classifier(), datamodule=digits)
