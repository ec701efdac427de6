import json

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lightning_prune import IterativePruning, PruningListener, load_pruned
from lightning_prune.models import Classifier
from tests.helpers import cnn_classifier


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "target_sparsity is required"),
        ({"target_sparsity": 1.2}, r"target_sparsity must be in \(0, 1\), got 1.2"),
        ({"target_sparsity": 1.0}, r"target_sparsity must be in \(0, 1\), got 1.0"),
        ({"target_sparsity": -0.1}, r"target_sparsity must be in \(0, 1\)"),
        ({"target_sparsity": 0.5, "step_ratio": 0}, r"step_ratio must be in \(0, 1\)"),
        ({"target_sparsity": 0.5, "step_ratio": None}, r"step_ratio must be in \(0, 1\)"),
        ({"target_sparsity": 0.5, "schedule": "cubic"}, "num_steps must be an integer >= 1 for schedule='cubic'"),
        (
            {"target_sparsity": 0.5, "schedule": "cubic", "num_steps": 0},
            "num_steps must be an integer >= 1 for schedule='cubic', got 0",
        ),
        ({"target_sparsity": 0.5, "schedule": "exp"}, r"schedule must be one of \['fixed', 'cubic', 'linear'\]"),
        (
            {"target_sparsity": 0.5, "importance": "taylor"},
            r"importance must be one of \['magnitude', 'lamp'\], got 'taylor'",
        ),
        ({"target_sparsity": 0.5, "scope": "row"}, "scope must be one of"),
        ({"target_sparsity": 0.5, "finetune_epochs": -1}, "finetune_epochs must be an integer >= 0, got -1"),
        ({"target_sparsity": 0.5, "warmup_epochs": 1.5}, "warmup_epochs must be an integer >= 0"),
        (
            {"target_sparsity": 0.5, "include_types": ["Conv9d"]},
            r"include_types has unknown module type\(s\) \['Conv9d'\]; allowed: \[",
        ),
        (
            {"target_sparsity": 0.5, "include_names": "conv("},
            r"include_names: 'conv\(' is not a valid regular expression",
        ),
        (
            {"target_sparsity": 0.5, "include_types": "Linear"},
            "include_types must be a non-empty list of module type names, got 'Linear'",
        ),
        ({"target_sparsity": 0.5, "on_nonfinite": "ignore"}, r"on_nonfinite must be one of \['raise', 'skip'\]"),
        ({"target_sparsity": 0.5, "rewind_epoch": 2, "warmup_epochs": 1}, r"rewind_epoch must be an integer in \[0, "),
        # Numbers as strings (YAML, a CLI) are refused naming the argument, not with a bare TypeError.
        ({"target_sparsity": "0.5"}, r"target_sparsity must be in \(0, 1\), got '0.5'"),
        ({"target_sparsity": 0.5, "step_ratio": "0.2"}, r"step_ratio must be in \(0, 1\), got '0.2'"),
        (
            {"target_sparsity": 0.5, "schedule": "cubic", "num_steps": "3"},
            "num_steps must be an integer >= 1 for schedule='cubic', got '3'",
        ),
        ({"target_sparsity": 0.5, "num_steps": "3"}, "num_steps must be an integer >= 1 or None, got '3'"),
        ({"target_sparsity": 0.5, "finetune_epochs": "1"}, "finetune_epochs must be an integer >= 0, got '1'"),
        (
            {"target_sparsity": 0.5, "warmup_epochs": 1, "rewind_epoch": "0"},
            r"rewind_epoch must be an integer in \[0, warmup_epochs=1\], got rewind_epoch='0'",
        ),
        ({"target_sparsity": 0.5, "stop_when_done": "false"}, "stop_when_done must be true or false, got 'false'"),
        ({"target_sparsity": 0.5, "prune_head": 1}, "prune_head must be true or false, got 1"),
        ({"target_sparsity": 0.5, "export_dir": __file__}, r"export_dir='.*test_iterative.py' is an existing file"),
        ({"target_sparsity": 0.5, "export_dir": f"{__file__}/out"}, r"export_dir='.*/out' lies below '.*', which is a"),
    ],
)
def test_iterative_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IterativePruning(**kwargs)


def test_iterative_has_no_structured_mode():
    with pytest.raises(TypeError, match="unexpected keyword argument 'mode'"):
        IterativePruning(target_sparsity=0.5, mode="structured")


def _head_only_model() -> Classifier:
    return Classifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), 10, (1, 8, 8))


@pytest.mark.parametrize(
    ("kwargs", "make_model", "max_epochs", "message"),
    [
        (
            {"target_sparsity": 0.5, "include_names": "nomatch"},
            cnn_classifier,
            3,
            r"the parameter selection matched nothing in Classifier \(include_types=.*include_names='nomatch'",
        ),
        ({"target_sparsity": 0.5}, _head_only_model, 3, r"matched nothing in Classifier .*prune_head=False"),
        (
            {"target_sparsity": 0.9, "step_ratio": 0.5, "warmup_epochs": 2},
            cnn_classifier,
            3,
            r"needs 6 training epochs .*Trainer\(max_epochs=3, max_steps=-1\)",
        ),
        (
            {"target_sparsity": 0.8, "step_ratio": 0.5, "warmup_epochs": 2, "finetune_epochs": 2},
            cnn_classifier,
            5,
            r"IterativePruning needs 8 training epochs \(warmup_epochs=2 \+ 3 steps x finetune_epochs=2\).*=5,",
        ),
    ],
    ids=["regex matching nothing", "model with no prunable layer", "too few epochs", "too few epochs, named"],
)
def test_iterative_refuses_before_training(kwargs, make_model, max_epochs, message, digits, trainer_kwargs):
    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=[IterativePruning(**kwargs)], **trainer_kwargs)
    with pytest.raises(ValueError, match=message):
        trainer.fit(make_model(), datamodule=digits)
    assert trainer.global_step == 0


def test_iterative_state_key():
    a = IterativePruning(target_sparsity=0.5)
    b = IterativePruning(target_sparsity=0.8)
    assert a.state_key != b.state_key
    assert a.state_key == IterativePruning(target_sparsity=0.5).state_key
    assert "IterativePruning" in a.state_key


class ZeroChecker(pl.Callback):
    """Placed after the pruner: after every optimizer step, pruned weights must be exactly zero."""

    def __init__(self, pruning: IterativePruning) -> None:
        self.pruning, self.checked = pruning, 0

    def on_train_batch_end(self, trainer, pl_module, *args):
        if self.pruning.pruning_state.step == 0:
            return
        for name, mask in self.pruning.state_dict()["masks"].items():
            assert pl_module.get_parameter(name)[~mask.to(pl_module.device)].abs().max() == 0, name
        self.checked += 1


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_masks_hold_after_every_optimizer_step(optimizer, digits, trainer_kwargs):
    pruning = IterativePruning(target_sparsity=0.7, step_ratio=0.5, warmup_epochs=1, finetune_epochs=1)
    checker = ZeroChecker(pruning)
    model = cnn_classifier(optimizer=optimizer, lr=0.01 if optimizer != "sgd" else 0.05, weight_decay=0.01)
    trainer = pl.Trainer(max_epochs=5, callbacks=[pruning, checker], limit_train_batches=5, **trainer_kwargs)
    trainer.fit(model, datamodule=digits)
    assert checker.checked == 4 * 5  # two fine-tune epochs, then two more to max_epochs (the default), 5 batches each
    assert pruning.pruning_state.sparsity == pytest.approx(0.7, abs=1e-3)
    assert trainer.current_epoch == 5  # warm-up + 2 steps x 1 fine-tune epoch, then on to max_epochs


def test_fit_reaches_target_logs_and_exports(digits, trainer_kwargs, tmp_path):
    pruning = IterativePruning(target_sparsity=0.8, step_ratio=0.5, warmup_epochs=2, finetune_epochs=1, scope="layer")
    model = cnn_classifier()
    trainer = pl.Trainer(max_epochs=20, callbacks=[pruning], **trainer_kwargs)
    trainer.fit(model, datamodule=digits)
    assert [round(r["sparsity"], 3) for r in pruning.pruning_state.history] == [0.5, 0.75, 0.8]
    assert trainer.callback_metrics["prune/sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert trainer.callback_metrics["prune/step"] == 3
    assert trainer.callback_metrics["prune_layer/net.features.0.weight"] == pytest.approx(0.8, abs=0.01)
    assert trainer.callback_metrics["val/acc"] > 0.9

    summary = json.loads((tmp_path / "summary.json").read_text())["iterative"]
    assert summary["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert summary["finetunes_run"] == 3
    assert all(v == pytest.approx(0.8, abs=0.01) for v in summary["layer_zero_fraction"].values())
    assert summary["time_s"]["finetune"] > 0
    assert summary["time_s"]["dense"] > 0
    fresh = cnn_classifier()
    load_pruned(fresh, tmp_path / "pruned_model.pt")
    state = torch.load(tmp_path / "pruned_model.pt", weights_only=True)["state_dict"]
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.state_dict(), model.state_dict())


def test_accumulated_gradients_and_cubic_schedule(digits, trainer_kwargs):
    pruning = IterativePruning(target_sparsity=0.6, schedule="cubic", num_steps=3, finetune_epochs=1)
    trainer = pl.Trainer(
        max_epochs=3, callbacks=[pruning], accumulate_grad_batches=3, limit_train_batches=7, **trainer_kwargs
    )
    model = cnn_classifier()
    trainer.fit(model, datamodule=digits)
    assert pruning.pruning_state.sparsity == pytest.approx(0.6, abs=1e-3)
    zeros = sum(int((model.get_parameter(n) == 0).sum()) for n in pruning.state_dict()["masks"])
    assert zeros >= 0.6 * sum(m.numel() for m in pruning.state_dict()["masks"].values()) - 1


def test_fast_dev_run_prunes_once_and_exports_nothing(digits, trainer_kwargs, tmp_path):
    pruning = IterativePruning(target_sparsity=0.5, step_ratio=0.5)
    pl.Trainer(
        fast_dev_run=True, callbacks=[pruning], **{k: v for k, v in trainer_kwargs.items() if k != "logger"}
    ).fit(cnn_classifier(), datamodule=digits)
    assert pruning.pruning_state.step == 1
    assert not (tmp_path / "summary.json").exists()


class SkipEveryOther(PruningListener, pl.Callback):
    def __init__(self) -> None:
        self.events = []

    def on_prune_step_start(self, trainer, pl_module, state):
        self.events.append(("start", state.step))

    def on_prune_step_end(self, trainer, pl_module, state):
        self.events.append(("end", state.step))

    def skip_finetune(self, trainer, pl_module, state):
        return state.step % 2 == 1

    def on_finetune_start(self, trainer, pl_module, state):
        self.events.append(("finetune", state.step))

    def on_finetune_end(self, trainer, pl_module, state):
        self.events.append(("finetune_end", state.step))


def test_listeners_can_skip_finetunes(digits, trainer_kwargs):
    pruning = IterativePruning(target_sparsity=0.9, step_ratio=0.5, finetune_epochs=1, stop_when_done=True)
    listener = SkipEveryOther()
    trainer = pl.Trainer(max_epochs=10, callbacks=[pruning, listener], limit_train_batches=2, **trainer_kwargs)
    trainer.fit(cnn_classifier(), datamodule=digits)
    history = pruning.pruning_state.history
    assert [r["finetune"] for r in history] == ["skipped", "ran", "skipped", "ran"]
    assert [r["epoch"] for r in history] == [0, 0, 1, 1]
    assert listener.events[:5] == [("start", 0), ("end", 1), ("start", 1), ("end", 2), ("finetune", 2)]
    assert trainer.current_epoch == 2


def test_rewinding_resets_surviving_weights_to_the_rewind_epoch(digits, trainer_kwargs):
    class Snapshot(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                self.weights = pl_module.net.features[0].weight.detach().clone()

    class AfterStep(PruningListener, pl.Callback):
        def on_prune_step_end(self, trainer, pl_module, state):
            self.weights = pl_module.net.features[0].weight.detach().clone()

    pruning = IterativePruning(target_sparsity=0.5, step_ratio=0.5, warmup_epochs=2, rewind_epoch=1)
    snapshot, after = Snapshot(), AfterStep()
    trainer = pl.Trainer(max_epochs=3, callbacks=[pruning, snapshot, after], limit_train_batches=4, **trainer_kwargs)
    trainer.fit(cnn_classifier(), datamodule=digits)
    kept = pruning.state_dict()["masks"]["net.features.0.weight"]
    torch.testing.assert_close(after.weights, snapshot.weights * kept)


class PoisonWeights(pl.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            with torch.no_grad():
                pl_module.net.features[0].weight[0, 0, 0, 0] = float("nan")


def test_nonfinite_weights_stop_the_step_with_a_clear_error(digits, trainer_kwargs):
    pruning = IterativePruning(target_sparsity=0.5, step_ratio=0.5, warmup_epochs=1)
    trainer = pl.Trainer(max_epochs=3, callbacks=[pruning, PoisonWeights()], limit_train_batches=2, **trainer_kwargs)
    with pytest.raises(
        FloatingPointError, match=r"IterativePruning step 1 at epoch 1: .*non-finite.*on_nonfinite='skip'"
    ):
        trainer.fit(cnn_classifier(), datamodule=digits)
    assert pruning.state_dict()["masks"]["net.features.0.weight"].all()  # no NaN mask was written


def test_nonfinite_can_be_skipped_when_asked_but_is_never_exported(digits, trainer_kwargs, tmp_path):
    pruning = IterativePruning(target_sparsity=0.5, step_ratio=0.5, warmup_epochs=1, on_nonfinite="skip")
    trainer = pl.Trainer(max_epochs=3, callbacks=[pruning, PoisonWeights()], limit_train_batches=2, **trainer_kwargs)
    with pytest.raises(FloatingPointError, match=r"not finite at fit end \(net\.features\.0\.weight"):
        trainer.fit(cnn_classifier(), datamodule=digits)
    assert pruning.pruning_state.step == 0
    assert "non-finite" in pruning.pruning_state.history[0]["skipped"]
    assert not (tmp_path / "pruned_model.pt").exists()
