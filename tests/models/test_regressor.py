from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lightning_prune.data import TabularDataModule
from lightning_prune.models import MLP, Regressor


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "lbfgs"}, "optimizer must be one of"),
        ({"scheduler": "step"}, "scheduler must be one of"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"num_classes": 3}, "num_classes must be 1"),
    ],
)
def test_regressor_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Regressor(MLP((10,), 1, hidden=(8,)), (10,), **kwargs)


def test_regressor_standardises_targets_on_the_train_split(trainer_kwargs) -> None:
    datamodule = TabularDataModule("diabetes", batch_size=64)
    datamodule.setup()
    module = Regressor(MLP(datamodule.input_shape, 1, hidden=(32,)), datamodule.input_shape, lr=1e-2)
    trainer = pl.Trainer(max_epochs=5, **trainer_kwargs)
    trainer.fit(module, datamodule=datamodule)
    targets = datamodule.train_set.tensors[1].double()
    assert float(module.target_mean) == pytest.approx(float(targets.mean()), rel=1e-5)
    assert float(module.target_std) == pytest.approx(float(targets.std(unbiased=False)), rel=1e-5)
    assert trainer.callback_metrics["val/r2"] > 0.2  # raw targets (mean ~150) would not get here in 5 epochs
    x, y = datamodule.val_set.tensors
    assert module.eval()(x).shape == y.shape
    state = module.state_dict()
    fresh = Regressor(MLP(datamodule.input_shape, 1, hidden=(32,)), datamodule.input_shape)
    fresh.load_state_dict(state)
    assert bool(fresh.targets_fitted)
    torch.testing.assert_close(fresh.eval()(x), module(x))
