"""When the rebuild happens (wide_epochs, a plateau of the monitor) and from which weights (restore_best)."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch

from lightning_prune import DenseUnitPruning
from lightning_prune.data import TabularDataModule
from tests.callbacks.odf2nna.helpers import OutputCapture, breast_cancer, mlp_classifier


@pytest.fixture(scope="module")
def cancer() -> TabularDataModule:
    return breast_cancer()


def test_dense_unit_pruning_rebuilds_on_plateau(cancer, trainer_kwargs) -> None:
    # min_delta so large that nothing counts as an improvement after the first validation: a known plateau.
    pruning = DenseUnitPruning(epsilon=0.3, wide_epochs=None, patience=2, min_delta=1e9)
    trainer = pl.Trainer(max_epochs=5, callbacks=[pruning], **trainer_kwargs)
    trainer.fit(mlp_classifier(cancer), datamodule=cancer)
    assert pruning.pruning_state.history[0]["epoch"] == 3


class ScriptedMetric(pl.Callback):
    """Logs ``values[epoch]`` as ``fake`` and keeps a copy of the weights each validation saw."""

    def __init__(self, values: list[float]) -> None:
        self.values, self.weights = values, {}

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log("fake", self.values[trainer.current_epoch])
        self.weights[trainer.current_epoch] = {k: v.clone() for k, v in pl_module.state_dict().items()}


@pytest.mark.parametrize("restore_best", [True, False])
def test_rebuild_starts_from_the_best_weights(cancer, trainer_kwargs, restore_best: bool) -> None:
    """Best ``fake`` at epoch 1, none better after: the rebuild (epsilon 0, nothing removed) starts from epoch 1's
    weights with ``restore_best``, from the last epoch's without."""
    scripted = ScriptedMetric([1.0, 0.5, 2.0, 3.0, 4.0])
    pruning = DenseUnitPruning(
        epsilon=0.0, wide_epochs=None, patience=2, monitor="fake", restore_best=restore_best, compensation="none"
    )
    start = OutputCapture(4, cancer.train_set.tensors[0])
    trainer = pl.Trainer(max_epochs=5, callbacks=[scripted, pruning, start], **trainer_kwargs)
    model = mlp_classifier(cancer)
    trainer.fit(model, datamodule=cancer)
    record = pruning.pruning_state.history[0]
    assert record["epoch"] == 4
    source = scripted.weights[1 if restore_best else 3]
    reference = mlp_classifier(cancer).eval()
    reference.load_state_dict(source)
    with torch.no_grad():
        torch.testing.assert_close(start.outputs, reference(cancer.train_set.tensors[0]), rtol=0, atol=0)
    assert (record.get("restored_epoch"), record.get("fake_restored")) == ((1, 0.5) if restore_best else (None, None))


def test_restore_best_without_the_monitor_warns_and_prunes_the_last_weights(cancer, trainer_kwargs) -> None:
    pruning = DenseUnitPruning(epsilon=0.3, wide_epochs=2, monitor="val/nothing")
    trainer = pl.Trainer(max_epochs=3, callbacks=[pruning], **trainer_kwargs)
    with pytest.warns(UserWarning, match="'val/nothing' was never logged before the rebuild; pruning the last weights"):
        trainer.fit(mlp_classifier(cancer), datamodule=cancer)
    assert pruning.rebuilt
    assert "restored_epoch" not in pruning.pruning_state.history[0]


def test_dense_unit_pruning_needs_the_monitor(cancer, trainer_kwargs) -> None:
    pruning = DenseUnitPruning(wide_epochs=None, patience=1, monitor="val/nothing")
    with pytest.raises(ValueError, match="monitor='val/nothing'"):
        pl.Trainer(max_epochs=3, callbacks=[pruning], **trainer_kwargs).fit(mlp_classifier(cancer), datamodule=cancer)


def test_dense_unit_pruning_checks_epoch_budget(cancer, trainer_kwargs) -> None:
    message = r"needs 4 training epochs \(wide_epochs=3 \+ at least 1 retraining epoch\).*max_epochs=3"
    with pytest.raises(ValueError, match=message):
        pl.Trainer(max_epochs=3, callbacks=[DenseUnitPruning(wide_epochs=3)], **trainer_kwargs).fit(
            mlp_classifier(cancer), datamodule=cancer
        )


@pytest.mark.parametrize(("values", "warns"), [([2.0, 4.5, 4.5], True), ([2.0, 1.9, 1.9], False)])
def test_a_rebuild_on_a_net_that_has_not_settled_warns(cancer, trainer_kwargs, values, warns: bool) -> None:
    """wide_epochs=2 while ``fake`` went from 2.0 to 4.5 (125 % from its best): the scores are noise, and it says so."""
    pruning = DenseUnitPruning(epsilon=0.3, wide_epochs=2, monitor="fake")
    trainer = pl.Trainer(max_epochs=3, callbacks=[ScriptedMetric(values), pruning], **trainer_kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(mlp_classifier(cancer), datamodule=cancer)
    unsettled = [str(w.message) for w in caught if "has not settled" in str(w.message)]
    if warns:
        assert len(unsettled) == 1
        assert "fake was 4.5 at the last validation, 125% away from its best 2 (epoch 0)" in unsettled[0]
        assert "restoring epoch 0's weights" in unsettled[0]
        assert "patience=N" in unsettled[0]
    else:
        assert unsettled == []
    assert pruning.rebuilt
