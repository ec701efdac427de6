"""ICE-Pruning's pruning-aware learning rate around real pruning runs on digits."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest

from lightning_prune import IterativePruning, PruningAwareLR
from lightning_prune.callbacks.ice.lr import SCALE_DELTA
from lightning_prune.core.schedules import pruning_aware_lr
from tests.callbacks.ice.helpers import WARMUP, block_pruner, fit
from tests.helpers import cnn_classifier, resnet_classifier


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_lr": 0.0}, r"base_lr must be > 0 \(or None to scale your own rate\), got 0.0"),
        ({"delta": 1.0}, r"delta must be in \[0, 1 \(a fraction of your rate: base_lr=None\)\) .*got 1.0"),
        ({"base_lr": float("inf")}, "base_lr must be a finite number, got inf"),
        (
            {"base_lr": 0.01, "delta": 0.01},
            r"delta must be in \[0, base_lr=0.01\) so the rate stays positive, got 0.01",
        ),
        ({"delta": -1e-4}, "delta must be in"),
        ({"delta": "0.1"}, "delta must be a finite number, got '0.1'"),
        ({"p": 0.5}, r"p must be in \[0, 0.5\) .*got 0.5"),
        ({"p": -0.1}, r"p must be in \[0, 0.5\) .*got -0.1"),
        ({"beta": 0}, r"beta must be > 0 \(steepness of the step\), got 0"),
        ({"beta": "50"}, "beta must be a finite number, got '50'"),
        ({"base_lr": "0.01"}, "base_lr must be a finite number, got '0.01'"),
        ({"export_dir": __file__}, r"export_dir='.*test_lr.py' is an existing file"),
    ],
)
def test_pruning_aware_lr_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PruningAwareLR(**kwargs)


def test_pruning_aware_lr_state_key() -> None:
    assert PruningAwareLR(p=0.1).state_key != PruningAwareLR(p=0.2).state_key
    assert "PruningAwareLR" in PruningAwareLR().state_key


def test_pruning_aware_lr_needs_a_pruner(digits, trainer_kwargs: dict) -> None:
    trainer = pl.Trainer(max_epochs=3, callbacks=[PruningAwareLR()], **trainer_kwargs)
    with pytest.raises(
        ValueError,
        match=r"PruningAwareLR works around a pruning callback and needs exactly one in Trainer\(callbacks=\.\.\.\), "
        r"e\.g\. IterativePruning; found none",
    ):
        trainer.fit(cnn_classifier(), datamodule=digits)
    assert trainer.global_step == 0


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
    pruner, lr, spy = block_pruner(), PruningAwareLR(base_lr=0.02, delta=0.012, p=0.1, beta=40), LRSpy()
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


class StepSpy(pl.Callback):
    """The rate each ``optimizer.step`` actually uses (a pre-hook registered after PruningAwareLR's, each epoch)."""

    def __init__(self) -> None:
        self.step_lrs: dict[int, set[float]] = {}
        self._handle = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        self._handle = trainer.optimizers[0].register_step_pre_hook(
            lambda opt, *_: self.step_lrs.setdefault(epoch, set()).add(round(opt.param_groups[0]["lr"], 12))
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._handle.remove()


def test_pruning_aware_lr_by_default_caps_the_users_cosine_schedule(digits, trainer_kwargs: dict) -> None:
    pruner = IterativePruning(target_sparsity=0.5, step_ratio=0.3, warmup_epochs=1, export_dir=None)
    lr, spy, steps = PruningAwareLR(), LRSpy(), StepSpy()
    model = resnet_classifier(widths=(8, 16), scheduler="cosine")
    fit([pruner, lr, spy, steps], digits, trainer_kwargs, model=model, max_epochs=5)
    cosine = [0.05 * (1 + math.cos(math.pi * k / 5)) / 2 for k in range(5)]
    # the user's scheduler is never paused, and between steps the groups hold its rates
    assert [spy.scheduler_epochs[e] for e in range(5)] == [0, 1, 2, 3, 4]
    assert [spy.lrs[e][0] for e in range(5)] == pytest.approx(cosine)
    # fine-tunes (epochs 1, 2 at x = 0.7, 0.5) step at most LR(x) of base 1 times the starting rate 0.05
    factors = {0: 1.0, 1: lr.lr_at(0.7), 2: lr.lr_at(0.5), 3: 1.0, 4: 1.0}
    assert factors[1] == pytest.approx(1 - SCALE_DELTA, abs=1e-3)  # sparser than p = 0.15: 1 - delta
    # one rate through each epoch: cosine's 0.045 capped at 0.035 in epoch 1; its 0.0345 already below, left as is
    expected = [cosine[0], 0.05 * factors[1], cosine[2], cosine[3], cosine[4]]
    assert [rate for epoch in range(5) for rate in steps.step_lrs[epoch]] == pytest.approx(expected, rel=1e-9)
    assert [r["lr_scale"] for r in lr.history] == pytest.approx([factors[1], factors[2]])
    assert [r["lr"] for r in lr.history] == pytest.approx([0.05 * factors[1], cosine[2]])


def test_pruning_aware_lr_by_default_cuts_a_constant_rate_as_the_paper(digits, trainer_kwargs: dict) -> None:
    pruner = IterativePruning(target_sparsity=0.5, step_ratio=0.3, warmup_epochs=1, export_dir=None)
    lr, steps = PruningAwareLR(), StepSpy()
    fit([pruner, lr, steps], digits, trainer_kwargs, model=resnet_classifier(widths=(8, 16)), max_epochs=4)
    expected = [0.05, 0.05 * lr.lr_at(0.7), 0.05 * lr.lr_at(0.5), 0.05]  # no scheduler: 0.05 outside fine-tunes
    assert [rate for epoch in range(4) for rate in steps.step_lrs[epoch]] == pytest.approx(expected, rel=1e-9)


def test_pruning_aware_lr_default_delta_follows_the_mode() -> None:
    assert PruningAwareLR().delta == SCALE_DELTA  # a fraction of your own rate
    assert PruningAwareLR(base_lr=0.001).delta == pytest.approx(7e-4)  # the paper's ratio on its rate
