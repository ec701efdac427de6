"""The optimizer carried over the rebuild: kept entries' Adam state, step counts and the schedule's position."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lightning_prune import DenseUnitPruning
from lightning_prune.data import TabularDataModule
from tests.callbacks.odf2nna.helpers import adam_run, breast_cancer


@pytest.fixture(scope="module")
def cancer() -> TabularDataModule:
    return breast_cancer()


def test_rebuild_keeping_every_unit_continues_training_exactly(cancer, trainer_kwargs) -> None:
    """Carried Adam moments, step counts and cosine position: a rebuild that removes nothing changes nothing."""
    plain = adam_run(cancer, trainer_kwargs, [])
    carried = adam_run(cancer, trainer_kwargs, [DenseUnitPruning(epsilon=0.0, wide_epochs=1)])
    fresh = adam_run(
        cancer, trainer_kwargs, [DenseUnitPruning(epsilon=0.0, wide_epochs=1, carry_optimizer_state=False)]
    )
    torch.testing.assert_close(carried, plain, rtol=0, atol=0)
    assert not torch.equal(fresh["net.layers.1.weight"], plain["net.layers.1.weight"])


class OptimizerCapture(pl.Callback):
    """The first optimizer's state by parameter name, at the start of ``epoch`` (before or after a rebuild,
    depending on where it sits in the callback list)."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.state, self.weights = epoch, {}, {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            optimizer = trainer.optimizers[0]
            for name, param in pl_module.named_parameters():
                self.state[name] = {k: v.clone() for k, v in optimizer.state[param].items()}
                self.weights[name] = param.detach().clone()
            self.lr = optimizer.param_groups[0]["lr"]


def test_rebuild_carries_the_kept_units_optimizer_state(cancer, trainer_kwargs) -> None:
    before, after = OptimizerCapture(epoch=2), OptimizerCapture(epoch=2)
    pruning = DenseUnitPruning(epsilon=0.5, wide_epochs=2, compensation="none")  # next layers' columns unchanged
    adam_run(cancer, trainer_kwargs, [before, pruning, after])
    first, second = "net.layers.1.weight", "net.layers.3.weight"
    # Which units survived, found from the transferred weights themselves (rows are copied unchanged).
    rows1 = [int((before.weights[first] == row).all(dim=1).nonzero()) for row in after.weights[first]]
    rows2 = [int((before.weights[second][:, rows1] == row).all(dim=1).nonzero()) for row in after.weights[second]]
    assert len(rows1) < 64
    assert len(rows2) < 64
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(after.state[first][key], before.state[first][key][rows1], rtol=0, atol=0)
        expected = before.state[second][key][rows2][:, rows1]
        torch.testing.assert_close(after.state[second][key], expected, rtol=0, atol=0)
        torch.testing.assert_close(after.state["net.layers.1.bias"][key], before.state["net.layers.1.bias"][key][rows1])
    assert after.state[first]["step"] == before.state[first]["step"] > 0
    assert after.lr == before.lr < 1e-2  # the cosine schedule's position, not a restart


def test_origins_probe_runs_and_copies_no_hook(trainer_kwargs) -> None:
    """The probe that traces the shrink leaves hooks behind: they hold callbacks (a teacher model, saved
    weights) that copying cost a 48-block ResNet half of each pruning step, and they must not see a copy's outputs."""
    from lightning_prune.callbacks._carry import entry_origins
    from lightning_prune.models import MLP, Classifier

    model = Classifier(MLP((4,), 3, hidden=(5,)), 3, (1, 4))
    model.trainer = pl.Trainer(**trainer_kwargs)
    calls = []
    hook = model.net.layers[1].register_forward_hook(lambda module, args, out: calls.append(out.dtype))

    def keep_rows(probe, example) -> None:  # the shrink: keep units 1 and 3 of the hidden layer
        first, second = probe.net.layers[1], probe.net.layers[3]
        first.weight = torch.nn.Parameter(first.weight[[1, 3]])
        first.bias = torch.nn.Parameter(first.bias[[1, 3]])
        second.weight = torch.nn.Parameter(second.weight[:, [1, 3]])
        probe(example)

    origins = entry_origins(model, keep_rows, torch.zeros(1, 4))
    assert origins["net.layers.1.weight"].tolist() == [4, 5, 6, 7, 12, 13, 14, 15]
    assert origins["net.layers.3.weight"].tolist() == [1, 3, 6, 8, 11, 13]
    assert calls == []  # the probe ran the forward without the user's hook
    model(torch.zeros(1, 4))
    assert calls == [torch.float32]  # and the model kept it
    hook.remove()
