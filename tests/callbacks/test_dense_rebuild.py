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

from lightning_prune import DenseUnitPruning, load_pruned
from lightning_prune.data import TabularDataModule
from lightning_prune.models import MLP, Classifier, Regressor
from tests.helpers import REPO, cnn_classifier


@pytest.fixture(scope="module")
def cancer() -> TabularDataModule:
    datamodule = TabularDataModule("breast_cancer", batch_size=64)
    datamodule.setup()
    return datamodule


def mlp_classifier(datamodule: TabularDataModule, hidden: tuple[int, ...] = (64, 64)) -> Classifier:
    net = MLP(datamodule.input_shape, datamodule.num_classes, hidden=hidden)
    return Classifier(net, datamodule.num_classes, datamodule.input_shape, lr=1e-2, optimizer="adam")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": -0.1}, r"epsilon must be a number in \[0, 1\)"),
        ({"epsilon": 1.0}, r"epsilon must be a number in \[0, 1\)"),
        ({"epsilon": 1.5}, "got 1.5"),
        ({"epsilon": float("nan")}, "got nan"),
        ({"epsilon": "0.1"}, "got '0.1'"),
        ({"epsilon": True}, "got True"),
        ({"statistic": "cv"}, "statistic must be one of"),
        ({"compensation": "median"}, r"compensation must be one of \['least_squares', 'mean', 'none'\], got 'median'"),
        ({"mode": "up"}, "mode must be one of"),
        ({"wide_epochs": None}, "set wide_epochs, patience or both"),
        ({"wide_epochs": -1}, "wide_epochs must be an integer >= 0"),
        ({"patience": 0}, "patience must be an integer >= 1"),
        ({"retrain_epochs": 0}, "retrain_epochs must be an integer >= 1"),
        ({"min_units": 0}, "min_units must be an integer >= 1"),
        ({"min_delta": -1.0}, "min_delta must be a number >= 0"),
        ({"retrain_lr_scale": 0.0}, r"retrain_lr_scale must be a number in \(0, 1\]"),
        ({"retrain_lr_scale": 2.0}, "got 2.0"),
        ({"reference_quantile": 0.0}, r"reference_quantile must be a number in \(0, 1\]"),
        ({"reference_quantile": 1.5}, "got 1.5"),
        ({"include_names": "("}, "include_names: .* is not a valid regular expression"),
        ({"carry_optimizer_state": "yes"}, "carry_optimizer_state must be true or false, got 'yes'"),
        ({"restore_best": 1}, "restore_best must be true or false, got 1"),
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

    summary = json.loads((Path(trainer_kwargs["default_root_dir"]) / "summary.json").read_text())["dense_unit_pruning"]
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


def _adam_run(datamodule, trainer_kwargs, callbacks) -> dict[str, torch.Tensor]:
    pl.seed_everything(0, verbose=False)
    net = MLP(datamodule.input_shape, datamodule.num_classes, hidden=(64, 64))
    model = Classifier(
        net, datamodule.num_classes, datamodule.input_shape, lr=1e-2, optimizer="adam", scheduler="cosine"
    )
    pl.Trainer(max_epochs=3, callbacks=callbacks, **trainer_kwargs).fit(model, datamodule=datamodule)
    return model.state_dict()


def test_rebuild_keeping_every_unit_continues_training_exactly(cancer, trainer_kwargs) -> None:
    """Carried Adam moments, step counts and cosine position: a rebuild that removes nothing changes nothing."""
    plain = _adam_run(cancer, trainer_kwargs, [])
    carried = _adam_run(cancer, trainer_kwargs, [DenseUnitPruning(epsilon=0.0, wide_epochs=1)])
    fresh = _adam_run(
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
    _adam_run(cancer, trainer_kwargs, [before, pruning, after])
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


class OutputCapture(pl.Callback):
    """The module's outputs on ``inputs`` at the start of ``epoch`` (before or after the rebuild)."""

    def __init__(self, epoch: int, inputs: torch.Tensor) -> None:
        self.epoch, self.inputs, self.outputs = epoch, inputs, None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            pl_module.eval()
            with torch.no_grad():
                self.outputs = pl_module(self.inputs)
            pl_module.train()


def test_least_squares_compensation_keeps_the_rebuilt_outputs_closest(cancer, trainer_kwargs) -> None:
    """Same trained net, same kept units: what replaces the removed units decides how far the outputs move."""
    inputs = cancer.train_set.tensors[0]
    moved = {}
    for compensation in ("least_squares", "mean", "none"):
        before, after = OutputCapture(2, inputs), OutputCapture(2, inputs)
        pruning = DenseUnitPruning(epsilon=0.6, wide_epochs=2, compensation=compensation)
        _adam_run(cancer, trainer_kwargs, [before, pruning, after])
        moved[compensation] = (after.outputs - before.outputs).abs().mean().item()
        assert pruning.params_after < pruning.params_before / 2
    assert moved["least_squares"] < moved["mean"] / 2
    assert moved["mean"] < moved["none"]


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
        pl.Trainer(max_epochs=2, callbacks=[pruning], **trainer_kwargs).fit(mlp_classifier(cancer), datamodule=cancer)


def test_dense_unit_pruning_checks_epoch_budget(cancer, trainer_kwargs) -> None:
    with pytest.raises(ValueError, match="wide_epochs must be < max_epochs"):
        pl.Trainer(max_epochs=3, callbacks=[DenseUnitPruning(wide_epochs=3)], **trainer_kwargs).fit(
            mlp_classifier(cancer), datamodule=cancer
        )


def test_dense_unit_pruning_refuses_model_without_linear_stack(digits, trainer_kwargs) -> None:
    trainer = pl.Trainer(max_epochs=2, callbacks=[DenseUnitPruning(wide_epochs=1)], **trainer_kwargs)
    with pytest.raises(ValueError, match="no hidden layer"):
        trainer.fit(cnn_classifier(widths=(8, 8)), datamodule=digits)


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
    summary = json.loads((tmp_path / "summary.json").read_text())["dense_unit_pruning"]
    assert summary["params_after"] < summary["params_before"]
    assert widths == {" ".join(str(w) for w in summary["widths_after"].values())}
