"""ICE-Pruning's three callbacks, each around a real IterativePruning run on digits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from lightning_prune import AccuracyGate, IterativePruning, LayerFreezing, PruningAwareLR
from lightning_prune.core.schedules import pruning_aware_lr
from tests.helpers import resnet_classifier

WARMUP = 2


def structured(**kwargs: object) -> IterativePruning:
    kwargs.setdefault("export_dir", None)
    return IterativePruning(mode="structured", step_ratio=0.6, warmup_epochs=WARMUP, **kwargs)


def fit(callbacks: list, digits, trainer_kwargs: dict, model=None, max_epochs: int = WARMUP + 4, **extra) -> pl.Trainer:
    model = model if model is not None else resnet_classifier(widths=(8, 16))
    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=callbacks, **{**trainer_kwargs, **extra})
    trainer.fit(model, datamodule=digits)
    return trainer


def batches_per_epoch(digits) -> int:
    return math.ceil(len(digits.train_set) / digits.batch_size)


# ---------------------------------------------------------------- arguments and state keys


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": -1.0}, "threshold must be"),
        ({"threshold": "1"}, "threshold must be"),
        ({"val_batches": 0}, "val_batches must be"),
        ({"val_batches": 1.5}, "val_batches must be"),
        ({"finetune_last": "yes"}, "finetune_last must be"),
        ({"metric_fn": "no_such_module.accuracy"}, "cannot be imported"),
        ({"metric_fn": "lightning_prune.callbacks.ice_gate.log"}, "dotted path of a callable"),
    ],
)
def test_accuracy_gate_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AccuracyGate(**kwargs)


def test_accuracy_gate_metric_fn_type() -> None:
    with pytest.raises(TypeError, match="metric_fn must be"):
        AccuracyGate(metric_fn=3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fraction": -0.1}, "fraction must be"),
        ({"fraction": 1.5}, "fraction must be"),
        ({"fraction": True}, "fraction must be"),
        ({"include_names": "("}, "not a valid regular expression"),
        ({"exclude_names": "conv"}, "exclude_names must be a list"),
    ],
)
def test_layer_freezing_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LayerFreezing(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_lr": 0.0}, "base_lr must be > 0"),
        ({"base_lr": 0.01, "delta": 0.01}, "delta must be in"),
        ({"delta": -1e-4}, "delta must be in"),
        ({"p": 0.5}, "p must be in"),
        ({"beta": 0}, "beta must be > 0"),
        ({"beta": "50"}, "beta must be a number"),
    ],
)
def test_pruning_aware_lr_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PruningAwareLR(**kwargs)


def test_ice_state_keys() -> None:
    assert AccuracyGate(threshold=1.0).state_key != AccuracyGate(threshold=2.0).state_key
    assert AccuracyGate(finetune_last=True).state_key != AccuracyGate(finetune_last=False).state_key
    assert "AccuracyGate" in AccuracyGate().state_key
    assert LayerFreezing(fraction=0.3).state_key != LayerFreezing(fraction=0.6).state_key
    assert PruningAwareLR(p=0.1).state_key != PruningAwareLR(p=0.2).state_key


@pytest.mark.parametrize(
    "callback", [AccuracyGate(), LayerFreezing(), PruningAwareLR()], ids=lambda callback: type(callback).__name__
)
def test_ice_needs_a_pruner(callback, digits, trainer_kwargs: dict) -> None:
    with pytest.raises(ValueError, match="needs exactly one in Trainer"):
        fit([callback], digits, trainer_kwargs, max_epochs=1)


# ---------------------------------------------------------------- the schedule


def test_pruning_aware_lr_formula() -> None:
    base, delta, p = 0.01, 0.006, 0.15
    assert pruning_aware_lr(1.0, base, delta, p, 50) == pytest.approx(base, abs=1e-6)
    assert pruning_aware_lr(1 - p, base, delta, p, 50) == pytest.approx(base - delta / 2)
    assert pruning_aware_lr(0.3, base, delta, p, 50) == pytest.approx(base - delta, abs=1e-9)
    assert pruning_aware_lr(0.0, base, delta, p, 50) == base - delta
    # the closed form, away from the extremes, and no overflow for a very steep step
    x = 0.86
    assert pruning_aware_lr(x, base, delta, p, 5) == pytest.approx(base - delta / (1 + (x / (2 * (1 - p) - x)) ** 5))
    assert math.isfinite(pruning_aware_lr(0.999, base, delta, p, 1e6))


# ---------------------------------------------------------------- the gate


def test_accuracy_gate_skips_when_the_drop_is_small(digits, trainer_kwargs: dict, tmp_path: Path) -> None:
    pruner, gate = (
        structured(export_dir=str(tmp_path)),
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
        r["drop_pt"] for r in summary["iterative"]["history"]
    ]
    assert summary["ice_gate"]["acc_final"] == pytest.approx(history[-1]["acc_after"])
    assert pruner.pruning_state.time_s["evaluate"] > 0


def test_accuracy_gate_fine_tunes_when_the_drop_is_large(digits, trainer_kwargs: dict) -> None:
    pruner, gate = structured(), AccuracyGate(threshold=1e-6, val_batches=2)
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
    pruner, gate = structured(), AccuracyGate(threshold=100.0, val_batches=2, finetune_last=True)
    trainer = fit([pruner, gate], digits, trainer_kwargs)
    history = pruner.pruning_state.history
    assert [r["finetune"] for r in history] == ["skipped"] * 3 + ["ran"]  # every drop is small, yet the last runs
    assert [d["skipped"] for d in gate.decisions] == [True] * 3 + [False]
    assert trainer.global_step == (WARMUP + 1) * batches_per_epoch(digits)
    assert gate.final_acc is not None  # measured once that fine-tune ended


def test_accuracy_gate_metric_fn(digits, trainer_kwargs: dict) -> None:
    runs = {}
    for name, metric in [("default", None), ("path", "lightning_prune.callbacks.ice_gate.batch_accuracy")]:
        pl.seed_everything(0)
        gate = AccuracyGate(threshold=100.0, val_batches=2, metric_fn=metric)
        fit([structured(), gate], digits, trainer_kwargs)
        runs[name] = [d["acc_after"] for d in gate.decisions]
    assert runs["path"] == runs["default"]

    def always_right(module, batch) -> tuple[int, int]:
        return len(batch[1]), len(batch[1])

    pruner = structured()
    fit([pruner, AccuracyGate(threshold=1e-6, metric_fn=always_right)], digits, trainer_kwargs)
    assert [r["drop_pt"] for r in pruner.pruning_state.history] == [0.0] * 4  # no drop measured: all skipped
    assert {r["finetune"] for r in pruner.pruning_state.history} == {"skipped"}


def test_accuracy_gate_needs_validation_data(digits, trainer_kwargs: dict) -> None:
    trainer = pl.Trainer(max_epochs=WARMUP + 4, callbacks=[structured(), AccuracyGate()], **trainer_kwargs)
    with pytest.raises(ValueError, match="needs validation data"):
        trainer.fit(resnet_classifier(widths=(8, 16)), train_dataloaders=DataLoader(digits.train_set, batch_size=64))


# ---------------------------------------------------------------- freezing


class FrozenSpy(pl.Callback):
    """Checks, during every fine-tune with frozen layers, that they cost nothing and do not change."""

    def __init__(self, freezing: LayerFreezing) -> None:
        self.freezing, self.checked_epochs, self.snapshot = freezing, 0, None

    @staticmethod
    def _tensors(module: pl.LightningModule, names: list[str]) -> dict[str, torch.Tensor]:
        return {n: module.get_buffer(n) if "running" in n else module.get_parameter(n) for n in names}

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.snapshot = None
        if self.freezing.frozen_now:
            stats = [f"{norm}.{s}" for norm in self.freezing._eval_norms for s in ("running_mean", "running_var")]
            tensors = self._tensors(pl_module, self.freezing._frozen_params + stats)
            optimizer_state = trainer.optimizers[0].state
            self.snapshot = {
                "values": {n: t.detach().clone() for n, t in tensors.items()},
                "momentum": {
                    n: optimizer_state[t]["momentum_buffer"].clone() for n, t in tensors.items() if t in optimizer_state
                },
            }

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        if self.snapshot is None:
            return
        frozen = self._tensors(pl_module, self.freezing._frozen_params)
        assert frozen
        assert all(t.grad is None and not t.requires_grad for t in frozen.values())
        assert any(p.grad is not None for n, p in pl_module.named_parameters() if n not in frozen)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.snapshot is None:
            return
        tensors = self._tensors(pl_module, list(self.snapshot["values"]))
        optimizer_state = trainer.optimizers[0].state
        for name, before in self.snapshot["values"].items():
            assert torch.equal(tensors[name], before), name
        for name, before in self.snapshot["momentum"].items():
            assert torch.equal(optimizer_state[tensors[name]]["momentum_buffer"], before), name
        self.checked_epochs += 1
        self.momentum_checked = len(self.snapshot["momentum"])


def test_layer_freezing_frozen_layers_cost_nothing(digits, trainer_kwargs: dict, tmp_path: Path) -> None:
    # Unstructured steps keep one optimizer for the whole run, so frozen layers carry momentum from earlier
    # epochs (and weight decay is on): both must stay exactly as they were through a frozen fine-tune.
    pruner = IterativePruning(target_sparsity=0.6, step_ratio=0.3, warmup_epochs=1, export_dir=str(tmp_path))
    freezing = LayerFreezing(fraction=0.5)
    spy = FrozenSpy(freezing)
    model = resnet_classifier(widths=(8, 16))
    fit([pruner, freezing, spy], digits, trainer_kwargs, model=model, max_epochs=4)
    assert len(freezing.candidates) == 10
    assert len(freezing.frozen) == 5
    assert [r["frozen_layers"] for r in pruner.pruning_state.history] == [0, 5, 5]  # probe, then frozen
    assert spy.checked_epochs == 2
    assert spy.momentum_checked > 0
    assert sorted(freezing.scores, key=freezing.scores.get)[:5] == freezing.frozen  # the layers that moved least
    assert all(p.requires_grad for p in model.parameters())  # released at the end
    summary = json.loads((tmp_path / "summary.json").read_text())["iterative"]
    for name, sparsity in summary["layer_sparsity"].items():  # masks held on frozen layers too
        assert summary["layer_zero_fraction"][name] >= sparsity - 1e-6


def test_layer_freezing_structured_refreezes_by_name(digits, trainer_kwargs: dict) -> None:
    pruner, freezing = structured(), LayerFreezing(fraction=0.5)
    spy = FrozenSpy(freezing)
    fit([pruner, freezing, spy], digits, trainer_kwargs)
    assert [r["frozen_layers"] for r in pruner.pruning_state.history] == [0, 5, 5, 5]
    assert spy.checked_epochs == 3
    norms = list(freezing._norm_of.values())
    assert len(norms) == 5
    assert all(".bn" in n or "stem.1" in n or "shortcut.1" in n for n in norms)


# ---------------------------------------------------------------- learning rate


class LRSpy(pl.Callback):
    def __init__(self) -> None:
        self.lrs: dict[int, list[float]] = {}
        self.scheduler_epochs: dict[int, int] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        lrs = [group["lr"] for group in trainer.optimizers[0].param_groups]
        self.lrs.setdefault(trainer.current_epoch, lrs)
        assert lrs == self.lrs[trainer.current_epoch]  # constant through the epoch
        if trainer.lr_scheduler_configs:
            self.scheduler_epochs[trainer.current_epoch] = trainer.lr_scheduler_configs[0].scheduler.last_epoch


def test_pruning_aware_lr_follows_the_schedule(digits, trainer_kwargs: dict) -> None:
    pruner, lr, spy = structured(), PruningAwareLR(base_lr=0.02, delta=0.012, p=0.1, beta=40), LRSpy()
    fit([pruner, lr, spy], digits, trainer_kwargs)
    history = pruner.pruning_state.history
    expected = [pruning_aware_lr(1 - r["sparsity"], 0.02, 0.012, 0.1, 40) for r in history]
    assert [r["lr"] for r in history] == pytest.approx(expected)
    assert [spy.lrs[WARMUP + i][0] for i in range(4)] == pytest.approx(expected)
    assert expected[0] > expected[-1]  # the step down happened within the run
    assert spy.lrs[0][0] == 0.05  # the module's own rate before pruning


def test_pruning_aware_lr_pauses_and_restores_the_users_scheduler(digits, trainer_kwargs: dict) -> None:
    pruner = IterativePruning(
        target_sparsity=0.5, step_ratio=0.3, warmup_epochs=1, stop_when_done=False, export_dir=None
    )
    lr, spy = PruningAwareLR(base_lr=0.01, delta=0.004), LRSpy()
    model = resnet_classifier(widths=(8, 16), scheduler="cosine")
    fit([pruner, lr, spy], digits, trainer_kwargs, model=model, max_epochs=5)
    # epoch 0 dense, epochs 1-2 fine-tunes (scheduler paused at last_epoch 1), epochs 3-4 the scheduler again
    assert [spy.scheduler_epochs[e] for e in range(5)] == [0, 1, 1, 1, 2]
    assert [spy.lrs[e][0] for e in (1, 2)] == pytest.approx([lr.lr_at(0.7), lr.lr_at(0.5)])
    cosine = [0.05 * (1 + math.cos(math.pi * k / 5)) / 2 for k in range(3)]
    assert [spy.lrs[e][0] for e in (0, 3, 4)] == pytest.approx(cosine)


# ---------------------------------------------------------------- resume


class StopAfter(pl.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def ice_run(digits, trainer_kwargs: dict, root: Path, extra: list, ckpt_path: str | None = None):
    pl.seed_everything(0)
    gate = AccuracyGate(threshold=25.0, val_batches=2, finetune_last=True)  # as the recipe sets it
    parts = [gate, LayerFreezing(fraction=0.5), PruningAwareLR(base_lr=0.02)]
    pruner = structured()
    checkpoint = ModelCheckpoint(dirpath=root, save_last=True, save_top_k=0, every_n_epochs=1)
    kwargs = {**trainer_kwargs, "enable_checkpointing": True, "default_root_dir": str(root)}
    trainer = pl.Trainer(max_epochs=WARMUP + 4, callbacks=[pruner, *parts, checkpoint, *extra], **kwargs)
    model = resnet_classifier(widths=(8, 16))
    trainer.fit(model, datamodule=digits, ckpt_path=ckpt_path)
    return trainer, pruner, parts, model


@pytest.mark.parametrize("stop_epoch", [WARMUP, WARMUP + 1])
def test_ice_resume_gives_the_same_decisions(stop_epoch: int, digits, trainer_kwargs: dict, tmp_path: Path) -> None:
    full, pruner, parts, model = ice_run(digits, trainer_kwargs, tmp_path / "full", [])
    decisions = [r["finetune"] for r in pruner.pruning_state.history]
    assert "skipped" in decisions
    assert decisions[-1] == "ran"
    ice_run(digits, trainer_kwargs, tmp_path / "cut", [StopAfter(stop_epoch)])
    resumed, pruner2, parts2, model2 = ice_run(
        digits, trainer_kwargs, tmp_path / "cut", [], ckpt_path=str(tmp_path / "cut" / "last.ckpt")
    )
    keys = ("finetune", "block", "drop_pt", "acc_after", "lr", "frozen_layers", "sparsity")
    strip = lambda history: [{k: r.get(k) for k in keys} for r in history]  # noqa: E731
    assert strip(pruner2.pruning_state.history) == strip(pruner.pruning_state.history)
    assert parts2[1].frozen == parts[1].frozen
    torch.testing.assert_close(resumed.callback_metrics["val/acc"], full.callback_metrics["val/acc"])
    for (name, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.slow
def test_accuracy_gate_ddp_decides_as_one_process(digits, trainer_kwargs: dict, tmp_path: Path) -> None:
    """Two gloo ranks pool their counts: the same accuracies (and decisions) as a single process."""
    decisions = {}
    for name, extra in [("single", {}), ("ddp", {"strategy": "ddp_spawn", "devices": 2})]:
        pl.seed_everything(0)
        out = tmp_path / name
        # Unstructured: ddp_spawn copies the final weights back into the unshrunk parent model.
        pruner = IterativePruning(target_sparsity=0.8, step_ratio=0.5, export_dir=str(out))
        gate = AccuracyGate(threshold=100.0, val_batches=3, export_dir=str(out))  # 3 batches: unequal shares
        fit([pruner, gate], digits, trainer_kwargs, max_epochs=3, **extra)
        decisions[name] = json.loads((out / "summary.json").read_text())["ice_gate"]
    assert decisions["ddp"]["acc_reference"] == pytest.approx(decisions["single"]["acc_reference"])
    assert len(decisions["ddp"]["decisions"]) == 3
    for ddp, single in zip(decisions["ddp"]["decisions"], decisions["single"]["decisions"]):
        assert ddp == pytest.approx(single)
