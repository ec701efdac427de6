"""DenseUnitPruning (ODF2NNA): arguments, the rebuild in a real fit, export, resume, user modules, DDP.

The optimizer carry is tested in tests/callbacks/odf2nna/test_carry.py, the trigger (plateau, restored best
weights) in tests/callbacks/odf2nna/test_trigger.py, the recipe in tests/callbacks/odf2nna/test_recipe.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from lightning_prune import AccuracyGate, DenseUnitPruning, load_pruned
from lightning_prune.data import TabularDataModule
from lightning_prune.models import MLP, Regressor
from tests.callbacks.odf2nna.helpers import OutputCapture, adam_run, breast_cancer, mlp_classifier
from tests.helpers import REPO, cnn_classifier


@pytest.fixture(scope="module")
def cancer() -> TabularDataModule:
    return breast_cancer()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": -0.1}, r"epsilon must be in \[0, 1\), got -0.1"),
        ({"epsilon": 1.0}, r"epsilon must be in \[0, 1\)"),
        ({"epsilon": 1.5}, "got 1.5"),
        ({"epsilon": float("nan")}, "got nan"),
        ({"epsilon": "0.1"}, "got '0.1'"),
        ({"epsilon": True}, "got True"),
        ({"statistic": "cv"}, r"statistic must be one of \['range', 'std', 'variance'\], got 'cv'"),
        ({"compensation": "median"}, r"compensation must be one of \['least_squares', 'mean', 'none'\], got 'median'"),
        ({"mode": "up"}, r"mode must be one of \['min', 'max'\], got 'up'"),
        ({"wide_epochs": None}, "set wide_epochs, patience or both"),
        ({"wide_epochs": -1}, "wide_epochs must be an integer >= 0 or None, got -1"),
        ({"patience": 0}, "patience must be an integer >= 1"),
        ({"retrain_epochs": 0}, "retrain_epochs must be an integer >= 1"),
        ({"min_units": 0}, "min_units must be an integer >= 1, got 0"),
        ({"min_delta": -1.0}, "min_delta must be a number >= 0"),
        ({"retrain_lr_scale": 0.0}, r"retrain_lr_scale must be in \(0, 1\]"),
        ({"retrain_lr_scale": 2.0}, "got 2.0"),
        ({"reference_quantile": 0}, r"reference_quantile must be in \(0, 1\], got 0"),
        ({"reference_quantile": 1.5}, "got 1.5"),
        ({"include_names": "("}, "include_names: .* is not a valid regular expression"),
        ({"carry_optimizer_state": "no"}, "carry_optimizer_state must be true or false, got 'no'"),
        ({"restore_best": 1}, "restore_best must be true or false, got 1"),
        # numbers as strings (from YAML or a command line), refused naming the argument
        ({"wide_epochs": "3"}, "wide_epochs must be an integer >= 0 or None, got '3'"),
        ({"patience": "2"}, "patience must be an integer >= 1 or None, got '2'"),
        ({"retrain_epochs": "2"}, "retrain_epochs must be an integer >= 1 or None, got '2'"),
        ({"min_units": "1"}, "min_units must be an integer >= 1, got '1'"),
        ({"min_delta": "0.1"}, "min_delta must be a number >= 0, got '0.1'"),
        ({"retrain_lr_scale": "0.5"}, r"retrain_lr_scale must be in \(0, 1\], got '0.5'"),
        ({"reference_quantile": "1"}, r"reference_quantile must be in \(0, 1\], got '1'"),
        ({"export_dir": 3}, "export_dir must be a path"),
    ],
)
def test_dense_unit_pruning_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DenseUnitPruning(**kwargs)


def test_dense_unit_pruning_state_key() -> None:
    key = DenseUnitPruning(epsilon=0.2).state_key
    assert "DenseUnitPruning" in key
    assert "0.2" in key
    assert "std" in key
    assert key != DenseUnitPruning(epsilon=0.3).state_key
    assert key != DenseUnitPruning(epsilon=0.2, reference_quantile=0.99).state_key


def test_dense_unit_pruning_rebuilds_retrains_and_exports(cancer, trainer_kwargs) -> None:
    model = mlp_classifier(cancer)
    pruning = DenseUnitPruning(epsilon=0.3, wide_epochs=3, retrain_epochs=2, retrain_lr_scale=0.5)
    trainer = pl.Trainer(max_epochs=10, callbacks=[pruning], **trainer_kwargs)
    trainer.fit(model, datamodule=cancer)

    assert trainer.current_epoch == 5  # 3 wide epochs, rebuild, 2 retrain epochs, stop
    widths = [model.net.layers[1].out_features, model.net.layers[3].out_features]
    assert pruning.widths_before == {"net.layers.1": 64, "net.layers.3": 64}
    assert list(pruning.widths_after.values()) == widths
    assert max(widths) < 64
    assert pruning.params_after == sum(p.numel() for p in model.parameters()) < pruning.params_before
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.parameters()}
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.5e-2)
    assert trainer.callback_metrics["prune/sparsity"] == pytest.approx(1 - pruning.params_after / pruning.params_before)
    assert trainer.callback_metrics["val/acc"] > 0.9

    summary = json.loads((Path(trainer_kwargs["default_root_dir"]) / "summary.json").read_text())["odf2nna"]
    assert summary["rebuilt"]
    assert summary["rebuild_epoch"] == 3
    assert (summary["params_before"], summary["params_after"]) == (pruning.params_before, pruning.params_after)
    assert summary["widths_after"] == pruning.widths_after
    assert summary["history"][0]["widths"] == pruning.widths_after

    exported = Path(summary["exported_model"])
    torch.load(exported, weights_only=True)
    fresh = load_pruned(mlp_classifier(cancer), exported).eval()
    x = cancer.test_set.tensors[0]
    torch.testing.assert_close(fresh(x), model.eval()(x))


def test_reference_quantile_keeps_a_layer_with_runaway_units(cancer, trainer_kwargs) -> None:
    """Two units of the last hidden layer made to vary 50x more than the rest: against the layer's max
    the others all fall under epsilon and only the two survive; against the 0.95 quantile they stay."""
    widths = {}
    for quantile in (1.0, 0.95):
        torch.manual_seed(0)
        model = mlp_classifier(cancer)
        with torch.no_grad():
            model.net.layers[3].weight[:2] *= 50
        pruning = DenseUnitPruning(epsilon=0.3, wide_epochs=0, retrain_epochs=1, reference_quantile=quantile)
        pl.Trainer(max_epochs=1, callbacks=[pruning], **trainer_kwargs).fit(model, datamodule=cancer)
        widths[quantile] = pruning.widths_after["net.layers.3"]
    assert widths[1.0] == 2
    assert widths[0.95] > 16


def test_dense_unit_pruning_epsilon_zero_keeps_every_unit(cancer, trainer_kwargs) -> None:
    model = mlp_classifier(cancer)
    pruning = DenseUnitPruning(epsilon=0.0, wide_epochs=1)
    pl.Trainer(max_epochs=2, callbacks=[pruning], **trainer_kwargs).fit(model, datamodule=cancer)
    assert pruning.rebuilt
    assert pruning.widths_after == pruning.widths_before
    assert pruning.params_after == pruning.params_before


def test_least_squares_compensation_keeps_the_rebuilt_outputs_closest(cancer, trainer_kwargs) -> None:
    """Same trained net, same kept units: what replaces the removed units decides how far the outputs move."""
    inputs = cancer.train_set.tensors[0]
    moved = {}
    for compensation in ("least_squares", "mean", "none"):
        before, after = OutputCapture(2, inputs), OutputCapture(2, inputs)
        pruning = DenseUnitPruning(epsilon=0.6, wide_epochs=2, compensation=compensation)
        adam_run(cancer, trainer_kwargs, [before, pruning, after])
        moved[compensation] = (after.outputs - before.outputs).abs().mean().item()
        assert pruning.params_after < pruning.params_before / 2
    assert moved["least_squares"] < moved["mean"] / 2
    assert moved["mean"] < moved["none"]


def test_dense_unit_pruning_refuses_model_without_linear_stack(digits, trainer_kwargs) -> None:
    trainer = pl.Trainer(max_epochs=2, callbacks=[DenseUnitPruning(wide_epochs=1)], **trainer_kwargs)
    with pytest.raises(ValueError, match="no hidden layer"):
        trainer.fit(cnn_classifier(widths=(8, 8)), datamodule=digits)


def test_an_ice_gate_refuses_the_dense_rebuild(cancer, trainer_kwargs) -> None:
    """One rebuild and no pruning steps with fine-tunes: nothing for AccuracyGate to gate, said at fit start."""
    trainer = pl.Trainer(
        max_epochs=2, callbacks=[DenseUnitPruning(epsilon=0.05, wide_epochs=1), AccuracyGate()], **trainer_kwargs
    )
    message = r"AccuracyGate cannot work with DenseUnitPruning: that pruner has no pruning steps with fine-tunes"
    with pytest.raises(ValueError, match=message):
        trainer.fit(mlp_classifier(cancer), datamodule=cancer)
    assert trainer.global_step == 0


def _fit(datamodule, tmp_path: Path, name: str, ckpt_path: str | None = None):
    pl.seed_everything(0, verbose=False)
    model = mlp_classifier(datamodule)
    pruning = DenseUnitPruning(epsilon=0.3, wide_epochs=2, retrain_lr_scale=0.5)  # the scaled lr must survive too
    checkpoints = ModelCheckpoint(dirpath=tmp_path / name, save_top_k=-1, every_n_epochs=1)
    trainer = pl.Trainer(
        max_epochs=5,
        callbacks=[pruning, checkpoints],
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path / name),
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return model, pruning, trainer


@pytest.mark.parametrize("resume_epoch", [1, 3], ids=["before-rebuild", "after-rebuild"])
def test_dense_unit_pruning_resume_equals_uninterrupted(cancer, tmp_path, resume_epoch: int) -> None:
    model, pruning, trainer = _fit(cancer, tmp_path, "full")
    checkpoint = next((tmp_path / "full").glob(f"epoch={resume_epoch}-*.ckpt"))
    assert torch.load(checkpoint, weights_only=True)["state_dict"]
    resumed_model, resumed, resumed_trainer = _fit(cancer, tmp_path, "resumed", str(checkpoint))

    assert resumed.widths_after == pruning.widths_after
    assert resumed.pruning_state.history == pruning.pruning_state.history
    for (name, value), (_, resumed_value) in zip(model.state_dict().items(), resumed_model.state_dict().items()):
        torch.testing.assert_close(resumed_value, value, msg=name)
    torch.testing.assert_close(resumed_trainer.callback_metrics["val/loss"], trainer.callback_metrics["val/loss"])


class UserNet(nn.Module):
    """Not one of ours: its own layer names, functional activations, BatchNorm1d in the stack."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.embed = nn.Linear(features, 48)
        self.bn = nn.BatchNorm1d(48)
        self.hidden = nn.Linear(48, 48)
        self.out = nn.Linear(48, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.silu(self.hidden(F.relu(self.bn(self.embed(x))))))


class UserModule(pl.LightningModule):
    """A plain user LightningModule: no example_input_array, its own loss and optimizer."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.model = UserNet(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def test_dense_unit_pruning_on_a_user_module(cancer, trainer_kwargs) -> None:
    module = UserModule(cancer.input_shape[0])
    pruning = DenseUnitPruning(epsilon=0.7, wide_epochs=2, monitor="val_loss")
    pl.Trainer(max_epochs=3, callbacks=[pruning], **trainer_kwargs).fit(module, datamodule=cancer)
    width = module.model.embed.out_features
    assert set(pruning.widths_after) == {"model.embed", "model.hidden"}
    assert sum(pruning.widths_after.values()) < 96  # BatchNorm evens out the first layer's scores; something goes
    assert module.model.bn.num_features == module.model.hidden.in_features == width
    assert module.model.bn.running_mean.shape == (width,)


def test_dense_unit_pruning_on_a_regressor(trainer_kwargs) -> None:
    datamodule = TabularDataModule("diabetes", batch_size=64)
    datamodule.setup()
    module = Regressor(MLP(datamodule.input_shape, 1, hidden=(64, 64)), datamodule.input_shape, lr=1e-2)
    pruning = DenseUnitPruning(epsilon=0.3, wide_epochs=2)
    trainer = pl.Trainer(max_epochs=3, callbacks=[pruning], **trainer_kwargs)
    trainer.fit(module, datamodule=datamodule)
    assert pruning.params_after < pruning.params_before
    assert "val/r2" in trainer.callback_metrics


DDP_SCRIPT = """
import lightning.pytorch as pl
from lightning_prune import DenseUnitPruning
from lightning_prune.data import TabularDataModule
from lightning_prune.models import MLP, Classifier

pl.seed_everything(0)
datamodule = TabularDataModule("breast_cancer", batch_size=64)
datamodule.setup()
net = MLP(datamodule.input_shape, 2, hidden=(64, 64))
model = Classifier(net, 2, datamodule.input_shape, lr=1e-2, optimizer="adam")
trainer = pl.Trainer(max_epochs=3, callbacks=[DenseUnitPruning(epsilon=0.3, wide_epochs=1)], accelerator="cpu",
                     devices=2, strategy="ddp", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, default_root_dir={root!r})
trainer.fit(model, datamodule=datamodule)
widths = f"{{model.net.layers[1].out_features}} {{model.net.layers[3].out_features}}"
open(f"widths_rank{{trainer.global_rank}}.txt", "w").write(widths)  # a file each: printed lines can interleave
"""


@pytest.mark.slow
def test_dense_unit_pruning_ddp(tmp_path) -> None:
    # Plain DDP re-launches the script once per rank (ddp_spawn would hand the shrunk weights back to a
    # wide model in the parent process): both ranks must rebuild the same widths from the gathered scores.
    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT.format(root=str(tmp_path)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    widths = {(tmp_path / f"widths_rank{rank}.txt").read_text() for rank in range(2)}
    assert len(widths) == 1  # the same architecture on both ranks
    summary = json.loads((tmp_path / "summary.json").read_text())["odf2nna"]
    assert summary["params_after"] < summary["params_before"]
    assert summary["finished"] is True
    assert summary["measured"]["params"] == summary["params_after"]
    assert widths == {" ".join(str(w) for w in summary["widths_after"].values())}
