"""ICE-Pruning's accuracy gate around a real BlockPruning run on digits."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_prune import (
    AccuracyGate,
    AnytimeProgressivePruning,
    IterativePruning,
)
from lightning_prune.data import DigitsDataModule, MegabatchDataModule
from lightning_prune.models import Classifier, SmallCNN
from tests.callbacks.ice.helpers import WARMUP, batches_per_epoch, block_pruner, fit, trained_resnet
from tests.helpers import cnn_classifier, resnet_classifier


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": -1.0}, r"threshold must be a number of accuracy points >= 0, got -1.0"),
        ({"threshold": "1"}, "threshold must be"),
        ({"val_batches": 0}, r"val_batches must be an integer >= 1 or None, got 0"),
        ({"val_batches": 1.5}, "val_batches must be"),
        ({"finetune_last": "yes"}, r"finetune_last must be true or false, got 'yes'"),
        (
            {"metric_fn": "no_such_module.f1"},
            r"metric_fn='no_such_module.f1' cannot be imported .*give the dotted import path of a callable",
        ),
        ({"metric_fn": "lightning_prune.callbacks.ice.gate.log"}, "dotted path of a callable"),
        ({"val_batches": "2"}, "val_batches must be an integer >= 1 or None, got '2'"),
        ({"export_dir": __file__}, r"export_dir='.*test_gate.py' is an existing file"),
        ({"export_dir": f"{__file__}/out"}, r"export_dir='.*/out' lies below"),
    ],
)
def test_accuracy_gate_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AccuracyGate(**kwargs)


def test_accuracy_gate_metric_fn_type() -> None:
    with pytest.raises(TypeError, match="metric_fn must be"):
        AccuracyGate(metric_fn=3)


def test_accuracy_gate_state_key() -> None:
    assert AccuracyGate(threshold=1.0).state_key != AccuracyGate(threshold=2.0).state_key
    assert AccuracyGate(finetune_last=True).state_key != AccuracyGate(finetune_last=False).state_key
    assert "AccuracyGate" in AccuracyGate().state_key


class DictBatches(pl.LightningDataModule):
    """Batches as dicts, not (x, y)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = DigitsDataModule(batch_size=64)
        self.inner.setup()

    def _loader(self, dataset):
        pairs = [{"image": x, "label": y} for x, y in dataset]
        return torch.utils.data.DataLoader(pairs, batch_size=64)

    def train_dataloader(self):
        return self._loader(self.inner.train_set)

    def val_dataloader(self):
        return self._loader(self.inner.val_set)


class TrainOnly(pl.LightningDataModule):
    """Training data and nothing to validate on."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = DigitsDataModule(batch_size=64)
        self.inner.setup()

    def train_dataloader(self):
        return self.inner.train_dataloader()


class EmptyValidation(TrainOnly):
    """A validation loader that yields nothing."""

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.Subset(self.inner.val_set, []), batch_size=64)


class DictClassifier(Classifier):
    """A module that trains on dict batches (so only the gate's default metric can object to them)."""

    def training_step(self, batch, batch_idx):
        return super().training_step((batch["image"], batch["label"]), batch_idx)

    def validation_step(self, batch, batch_idx):
        return super().validation_step((batch["image"], batch["label"]), batch_idx)


def _pruner() -> IterativePruning:
    return IterativePruning(target_sparsity=0.5, step_ratio=0.5, export_dir=None)


def _megabatches() -> MegabatchDataModule:
    return MegabatchDataModule(DigitsDataModule(batch_size=64), num_megabatches=3)


# (callbacks, model, data (None: digits), message): each fails in fit before the first optimizer step.
FIT = {
    "no validation data": (
        lambda: [_pruner(), AccuracyGate()],
        cnn_classifier,
        TrainOnly,
        r"AccuracyGate measures accuracy after every pruning step and needs validation data: define val_dataloader",
    ),
    "an empty validation set": (
        lambda: [_pruner(), AccuracyGate()],
        cnn_classifier,
        EmptyValidation,
        "AccuracyGate: the validation data yields no batches",
    ),
    "batches it cannot read": (
        # The pruner warms up for an epoch first: the gate must object before that training, not after it.
        lambda: [IterativePruning(target_sparsity=0.5, step_ratio=0.5, warmup_epochs=1), AccuracyGate()],
        lambda: DictClassifier(SmallCNN((1, 8, 8), 10, widths=(8, 8)), 10, (1, 8, 8)),
        DictBatches,
        r"AccuracyGate with metric_fn=None cannot score the first validation batch \(mapping with keys \['image', "
        r"'label'\]\): .*Define split_batch\(self, batch\) -> \(inputs, targets\) on your LightningModule, or give "
        r"metric_fn=",
    ),
    "no pruner": (
        lambda: [AccuracyGate()],
        cnn_classifier,
        None,
        r"AccuracyGate works around a pruning callback and needs exactly one in Trainer\(callbacks=\.\.\.\), "
        r"e\.g\. IterativePruning; found none",
    ),
    "before APP": (
        lambda: [AccuracyGate(), AnytimeProgressivePruning(num_megabatches=3, epochs_per_megabatch=1)],
        cnn_classifier,
        _megabatches,
        r"AccuracyGate cannot work with AnytimeProgressivePruning: that pruner has no pruning steps with fine-tunes",
    ),
}


@pytest.mark.parametrize("case", list(FIT))
def test_accuracy_gate_refuses_before_training(case: str, digits, trainer_kwargs: dict) -> None:
    callbacks, make_model, make_data, message = FIT[case]
    trainer = pl.Trainer(max_epochs=3, callbacks=callbacks(), **trainer_kwargs)
    with pytest.raises(ValueError, match=message):
        trainer.fit(make_model(), datamodule=make_data() if make_data else digits)
    assert trainer.global_step == 0


def test_accuracy_gate_skips_when_the_drop_is_small(digits, trainer_kwargs: dict, tmp_path: Path) -> None:
    pruner, gate = (
        block_pruner(export_dir=str(tmp_path)),
        AccuracyGate(threshold=100.0, val_batches=2, export_dir=str(tmp_path)),
    )
    trainer = fit([pruner, gate], digits, trainer_kwargs)
    history = pruner.pruning_state.history
    assert [r["finetune"] for r in history] == ["skipped"] * 4
    assert trainer.global_step == WARMUP * batches_per_epoch(digits)  # every block pruned at once, no fine-tune
    assert {r["acc_reference"] for r in history} == {gate.reference_acc}
    assert gate.reference_acc > 0.5  # measured on the trained dense model, before any step
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ice_gate"]["finetunes_skipped"] == 4
    assert [d["drop_pt"] for d in summary["ice_gate"]["decisions"]] == [
        r["drop_pt"] for r in summary["block_pruning"]["history"]
    ]
    assert summary["ice_gate"]["acc_final"] == pytest.approx(history[-1]["acc_after"])
    assert pruner.pruning_state.time_s["evaluate"] > 0


def test_accuracy_gate_fine_tunes_when_the_drop_is_large(digits, trainer_kwargs: dict) -> None:
    pruner, gate = (
        block_pruner(),
        AccuracyGate(threshold=1e-6, val_batches=2, require_settled=False),
    )  # the paper's rule
    trainer = fit([pruner, gate], digits, trainer_kwargs)
    history = pruner.pruning_state.history
    assert all(r["gate_skip"] == (r["drop_pt"] < 1e-6) for r in history)
    assert all((r["finetune"] == "skipped") == r["gate_skip"] for r in history)
    ran = [r for r in history if r["finetune"] == "ran"]
    assert len(ran) >= 3
    assert all(r["drop_pt"] > 0 for r in ran)
    assert trainer.global_step == (WARMUP + len(ran)) * batches_per_epoch(digits)
    assert trainer.callback_metrics["ice/finetunes_skipped"] == len(history) - len(ran)


def test_accuracy_gate_finetune_last_fine_tunes_after_the_last_step_only(digits, trainer_kwargs: dict) -> None:
    pruner, gate = block_pruner(), AccuracyGate(threshold=100.0, val_batches=2, finetune_last=True)
    trainer = fit([pruner, gate], digits, trainer_kwargs)
    history = pruner.pruning_state.history
    assert [r["finetune"] for r in history] == ["skipped"] * 3 + ["ran"]  # every drop is small, yet the last runs
    assert [d["skipped"] for d in gate.decisions] == [True] * 3 + [False]
    assert trainer.global_step == (WARMUP + 1) * batches_per_epoch(digits)
    assert gate.final_acc is not None  # measured once that fine-tune ended


def test_accuracy_gate_metric_fn(digits, trainer_kwargs: dict) -> None:
    runs = {}
    for name, metric in [("default", None), ("path", "lightning_prune.callbacks.ice.measure.batch_accuracy")]:
        pl.seed_everything(0)
        gate = AccuracyGate(threshold=100.0, val_batches=2, metric_fn=metric)
        fit([block_pruner(), gate], digits, trainer_kwargs)
        runs[name] = [d["acc_after"] for d in gate.decisions]
    assert runs["path"] == runs["default"]

    def always_right(module, batch) -> tuple[int, int]:
        return len(batch[1]), len(batch[1])

    pruner = block_pruner()
    fit([pruner, AccuracyGate(threshold=1e-6, metric_fn=always_right)], digits, trainer_kwargs)
    assert [r["drop_pt"] for r in pruner.pruning_state.history] == [0.0] * 4  # no drop measured: all skipped
    assert {r["finetune"] for r in pruner.pruning_state.history} == {"skipped"}


def test_accuracy_gate_needs_validation_data_from_any_source(digits, trainer_kwargs: dict) -> None:
    trainer = pl.Trainer(max_epochs=WARMUP + 4, callbacks=[block_pruner(), AccuracyGate()], **trainer_kwargs)
    with pytest.raises(ValueError, match="needs validation data"):
        trainer.fit(resnet_classifier(widths=(8, 16)), train_dataloaders=DataLoader(digits.train_set, batch_size=64))


@pytest.mark.slow
def test_accuracy_gate_ddp_decides_as_one_process(digits, trainer_kwargs: dict, tmp_path: Path) -> None:
    """Two gloo ranks pool their counts: the same accuracies (and decisions) as a single process."""
    decisions, trained = {}, trained_resnet(digits, trainer_kwargs)  # the same trained weights (A0 off chance level)
    for name, extra in [("single", {}), ("ddp", {"strategy": "ddp_spawn", "devices": 2})]:
        pl.seed_everything(0)
        out = tmp_path / name
        # Unstructured: ddp_spawn copies the final weights back into the unshrunk parent model.
        pruner = IterativePruning(target_sparsity=0.8, step_ratio=0.5, export_dir=str(out))
        gate = AccuracyGate(threshold=100.0, val_batches=3, export_dir=str(out))  # 3 batches: unequal shares
        fit([pruner, gate], digits, trainer_kwargs, model=copy.deepcopy(trained), max_epochs=3, **extra)
        decisions[name] = json.loads((out / "summary.json").read_text())["ice_gate"]
    assert decisions["ddp"]["acc_reference"] == pytest.approx(decisions["single"]["acc_reference"])
    assert len(decisions["ddp"]["decisions"]) == 3
    for ddp, single in zip(decisions["ddp"]["decisions"], decisions["single"]["decisions"]):
        assert ddp == pytest.approx(single)


def still_learning_run(digits, trainer_kwargs: dict, **gate_kwargs: object) -> tuple[IterativePruning, AccuracyGate]:
    """A from-scratch CNN pruned after one dense epoch: A0 is far above the epoch before, the net still learning."""
    pl.seed_everything(0)
    pruner = IterativePruning(target_sparsity=0.5, step_ratio=0.3, warmup_epochs=1, export_dir=None)
    gate = AccuracyGate(threshold=20.0, val_batches=2, **gate_kwargs)  # each step's drop is small beside 20 pt
    fit([pruner, gate], digits, trainer_kwargs, model=cnn_classifier(), max_epochs=3)
    return pruner, gate


def test_accuracy_gate_fine_tunes_while_the_reference_still_rises(digits, trainer_kwargs: dict) -> None:
    # A net still learning (MobileNetV3 in the zoo: A0 = 0.20 after two epochs) gains more in a fine-tune than any
    # step costs: measured against it, every drop looked small and every fine-tune was skipped (-9 pt there).
    with pytest.warns(UserWarning, match=r"still learning.*Fine-tunes run.*require_settled=False"):
        pruner, gate = still_learning_run(digits, trainer_kwargs)
    first, second = gate.decisions
    assert first["acc_reference"] - gate.hold.measured[0]["acc"] >= 0.2  # A0 against the epoch before: +55 pt
    assert second["acc_reference"] - first["acc_reference"] >= 0.2  # taken again before step 2: +30 pt, still rising
    assert [d["drop_pt"] < 20.0 for d in gate.decisions] == [True, True]
    assert [r["finetune"] for r in pruner.pruning_state.history] == ["ran", "ran"]  # as the pruner alone
    _, paper = still_learning_run(digits, trainer_kwargs, require_settled=False)  # the paper's gate skips them
    assert [d["skipped"] for d in paper.decisions] == [True, True]
    assert paper.reference_acc == first["acc_reference"]  # measuring the epoch before left the run's data order alone


class NeverSkips(AccuracyGate):
    def skip_finetune(self, trainer, pl_module, state) -> bool:
        return False


def test_a_gate_that_skips_nothing_leaves_the_run_unchanged(digits, trainer_kwargs: dict) -> None:
    """The gate's evaluations draw nothing from the run's random stream: with a user's shuffling loader (no
    generator of its own) the data order, and so every weight, is the pruner's alone."""
    models = [resnet_classifier(widths=(8, 16)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    for model, extra in zip(models, ([], [NeverSkips(val_batches=2, require_settled=False)])):
        pl.seed_everything(0)
        trainer = pl.Trainer(max_epochs=WARMUP + 4, callbacks=[block_pruner(), *extra], **trainer_kwargs)
        train = DataLoader(digits.train_set, batch_size=64, shuffle=True)
        trainer.fit(model, train, DataLoader(digits.val_set, batch_size=64))
    torch.testing.assert_close(models[1].state_dict(), models[0].state_dict(), rtol=0, atol=0)
