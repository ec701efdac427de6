"""ICE-Pruning's layer freezing around real pruning runs on digits."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lightning_prune import IterativePruning, LayerFreezing
from lightning_prune.models import MLP, Classifier
from tests.callbacks.ice.helpers import block_pruner, fit
from tests.helpers import cnn_classifier, resnet_classifier


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fraction": -0.1}, r"fraction must be in \[0, 1\], got -0.1"),
        ({"fraction": 1.5}, r"fraction must be in \[0, 1\], got 1.5"),
        ({"fraction": True}, "fraction must be in"),
        ({"include_names": "("}, "not a valid regular expression"),
        ({"exclude_names": "conv"}, "exclude_names must be a list"),
        ({"fraction": "0.3"}, r"fraction must be in \[0, 1\], got '0.3'"),
        ({"export_dir": __file__}, r"export_dir='.*test_freezing.py' is an existing file"),
    ],
)
def test_layer_freezing_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LayerFreezing(**kwargs)


def test_layer_freezing_state_key() -> None:
    assert LayerFreezing(fraction=0.3).state_key != LayerFreezing(fraction=0.6).state_key
    assert "LayerFreezing" in LayerFreezing().state_key


@pytest.mark.parametrize(
    ("callbacks", "make_model", "message"),
    [
        (
            lambda: [LayerFreezing()],
            cnn_classifier,
            r"LayerFreezing works around a pruning callback and needs exactly one in Trainer\(callbacks=\.\.\.\), "
            r"e\.g\. IterativePruning; found none",
        ),
        (
            lambda: [
                IterativePruning(target_sparsity=0.5, step_ratio=0.5, export_dir=None),
                LayerFreezing(include_names="no_such_layer"),
            ],
            cnn_classifier,
            r"the parameter selection matched nothing in Classifier \(include_types=\['Conv1d', 'Conv2d', 'Conv3d'\]",
        ),
    ],
    ids=["no pruner", "a selection matching no conv"],
)
def test_layer_freezing_refuses_before_training(callbacks, make_model, message, digits, trainer_kwargs) -> None:
    trainer = pl.Trainer(max_epochs=3, callbacks=callbacks(), **trainer_kwargs)
    with pytest.raises(ValueError, match=message):
        trainer.fit(make_model(), datamodule=digits)
    assert trainer.global_step == 0


def test_layer_freezing_on_a_model_without_convs_takes_its_hidden_linear_layers(digits, trainer_kwargs) -> None:
    pruner = IterativePruning(target_sparsity=0.5, step_ratio=0.5, warmup_epochs=1, export_dir=None)
    freezing = LayerFreezing(fraction=0.5, max_move=None)
    model = Classifier(MLP((1, 8, 8), 10, hidden=(64, 64)), 10, (1, 8, 8))
    pl.Trainer(max_epochs=3, callbacks=[pruner, freezing], limit_train_batches=3, **trainer_kwargs).fit(
        model, datamodule=digits
    )
    linear = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    assert freezing.candidates == linear[:-1]  # every hidden Linear, never the head
    assert len(freezing.frozen) == 1  # ceil(0.5 * 2), decided by the probe (the first fine-tune)


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
    freezing = LayerFreezing(fraction=0.5, max_move=None)
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
    pruner, freezing = block_pruner(), LayerFreezing(fraction=0.5, max_move=None)
    spy = FrozenSpy(freezing)
    fit([pruner, freezing, spy], digits, trainer_kwargs)
    assert [r["frozen_layers"] for r in pruner.pruning_state.history] == [0, 5, 5, 5]
    assert spy.checked_epochs == 3
    norms = list(freezing._norm_of.values())
    assert len(norms) == 5
    assert all(".bn" in n or "stem.1" in n or "shortcut.1" in n for n in norms)


def freezing_run(digits, trainer_kwargs: dict, lr: float, **kwargs: object) -> tuple[IterativePruning, LayerFreezing]:
    pl.seed_everything(0)
    pruner = IterativePruning(target_sparsity=0.6, step_ratio=0.3, warmup_epochs=1, export_dir=None)
    freezing = LayerFreezing(fraction=0.5, **kwargs)
    model = resnet_classifier(widths=(8, 16), lr=lr)
    fit([pruner, freezing], digits, trainer_kwargs, model=model, max_epochs=4)
    return pruner, freezing


def test_layer_freezing_by_default_keeps_training_the_layers_still_moving(digits, trainer_kwargs: dict) -> None:
    # From scratch at 0.05 every conv still moves several % of its norm an epoch: freezing the half whose norm
    # changed least (the paper's rule) cost the zoo's depthwise CNN and ConvNeXt 1.5 to 3 pt; they stay trainable.
    pruner, freezing = freezing_run(digits, trainer_kwargs, lr=0.05)
    assert len(freezing.moves) == len(freezing.candidates) == 10
    assert min(freezing.moves.values()) >= freezing.max_move == 0.02
    assert freezing.frozen == []
    assert [r["frozen_layers"] for r in pruner.pruning_state.history] == [0, 0, 0]
    _, paper = freezing_run(digits, trainer_kwargs, lr=0.05, max_move=None)
    assert len(paper.frozen) == 5
    assert paper.moves == {}


def test_layer_freezing_by_default_freezes_the_layers_that_stopped_moving(digits, trainer_kwargs: dict) -> None:
    pruner, freezing = freezing_run(digits, trainer_kwargs, lr=1e-4)  # a fine-tune's rate: nothing moves far
    chosen = sorted(freezing.scores, key=freezing.scores.get)[:5]
    assert freezing.frozen == chosen
    assert all(freezing.moves[name] < 0.02 for name in chosen)
    assert [r["frozen_layers"] for r in pruner.pruning_state.history] == [0, 5, 5]
