"""Distillation (issue 18, item 1): the KD term by hand, its gradient in the student, a frozen teacher kept out of
the model's state_dict, and a resumed run that gets the same teacher back."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_prune import BlockPruning, Distillation, IterativePruning, PruningListener
from lightning_prune.callbacks.distillation import kd_grad, kd_loss
from tests.callbacks.iterative.helpers import StopAt
from tests.faults.setups import SETUPS
from tests.helpers import resnet_classifier
from tests.test_recipes import compose_recipe


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": 0}, r"temperature must be a number > 0 \(the paper's code uses 2\), got 0"),
        ({"temperature": "2"}, "temperature must be a number > 0"),
        ({"weight": -1.0}, r"weight must be a number >= 0 \(the factor of the KD term\), got -1.0"),
    ],
)
def test_distillation_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Distillation(**kwargs)


def test_kd_loss_and_its_gradient_match_a_hand_computation() -> None:
    torch.manual_seed(0)
    student, teacher, t = torch.randn(5, 4, requires_grad=True), torch.randn(5, 4), 2.0
    p_t = torch.softmax(teacher / t, dim=-1)
    log_p_s = torch.log_softmax(student / t, dim=-1)
    by_hand = t * t * (p_t * (torch.log(p_t) - log_p_s)).sum() / 5  # KL(p_t || p_s), summed, over the batch
    assert float(kd_loss(student, teacher, t)) == pytest.approx(float(by_hand), rel=1e-6)
    (autograd,) = torch.autograd.grad(kd_loss(student, teacher, t), student)
    assert torch.allclose(kd_grad(student.detach(), teacher, t), autograd, atol=1e-7)
    assert float(kd_loss(teacher, teacher, t)) == pytest.approx(0.0, abs=1e-6)


class TeacherWitness(pl.Callback, PruningListener):
    """Keeps the weights right before the first step, and checks one batch's gradients against CE + w * KD."""

    def __init__(self, distill: Distillation) -> None:
        self.distill, self.before_first_step, self.batch = distill, None, None
        self.checked = 0

    def on_prune_step_start(self, trainer, pl_module, state) -> None:
        if self.before_first_step is None:
            self.before_first_step = {k: v.clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batch = batch

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.distill.teacher is None or self.checked:
            return
        x, y = self.batch
        params = [p for p in pl_module.parameters() if p.requires_grad]
        with torch.no_grad():
            teacher = self.distill.teacher(x)
        logits = pl_module(x)  # no BatchNorm or dropout in this net: the same function the step saw
        loss = F.cross_entropy(logits, y) + self.distill.weight * kd_loss(logits, teacher, self.distill.temperature)
        expected = torch.autograd.grad(loss, params)
        for param, grad in zip(params, expected):
            assert torch.allclose(param.grad, grad, atol=1e-6)
        without_kd = torch.autograd.grad(F.cross_entropy(pl_module(x), y), params)
        assert any(not torch.allclose(g, w, atol=1e-6) for g, w in zip(expected, without_kd))  # the term mattered
        self.checked += 1


class MLPClassifier(pl.LightningModule):
    """No BatchNorm: a second forward in the witness gives the exact function the training step differentiated."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
        )

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def test_distillation_gradient_reaches_the_student_and_the_teacher_stays_frozen(
    digits, trainer_kwargs: dict, tmp_path: Path
) -> None:
    pruner = IterativePruning(target_sparsity=0.5, step_ratio=0.5, warmup_epochs=1, export_dir=None)
    distill = Distillation(temperature=2.0, weight=3.0)
    witness = TeacherWitness(distill)
    model = MLPClassifier()
    trainer = pl.Trainer(max_epochs=3, callbacks=[pruner, witness, distill], limit_train_batches=5, **trainer_kwargs)
    trainer.fit(model, digits.train_dataloader())
    assert witness.checked == 1
    teacher = distill.teacher
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    for name, value in teacher.state_dict().items():  # the model at the first step, untouched by training
        assert torch.equal(value, witness.before_first_step[name])
    assert distill.last_kd > 0
    assert float(trainer.callback_metrics["distill/kd"]) > 0
    # not a submodule: the model's state_dict and checkpoint hold the student only; the teacher sits once, in our state
    assert set(model.state_dict()) == {"net.1.weight", "net.1.bias", "net.3.weight", "net.3.bias"}
    trainer.save_checkpoint(tmp_path / "end.ckpt")
    checkpoint = torch.load(tmp_path / "end.ckpt", weights_only=True)
    assert set(checkpoint["state_dict"]) == set(model.state_dict())
    assert set(checkpoint["callbacks"][distill.state_key]["teacher"]) == set(model.state_dict())


def _fit(digits, trainer_kwargs, root: Path, make_pruner, stop_at=None, ckpt_path=None):
    pl.seed_everything(0 if ckpt_path is None else 7, verbose=False)
    pruner, distill = make_pruner(), Distillation(temperature=2.0, weight=1.0)
    callbacks = [pruner, distill, ModelCheckpoint(dirpath=root / "ckpt", save_last=True, save_top_k=0)]
    callbacks += [StopAt(stop_at)] if stop_at is not None else []
    kwargs = {**trainer_kwargs, "enable_checkpointing": True, "default_root_dir": str(root)}
    trainer = pl.Trainer(max_epochs=6, callbacks=callbacks, limit_train_batches=4, limit_val_batches=2, **kwargs)
    model = resnet_classifier(widths=(8, 16))
    trainer.fit(model, datamodule=digits, ckpt_path=ckpt_path)
    return distill, pruner


@pytest.mark.parametrize(
    "make_pruner",
    [
        lambda: IterativePruning(target_sparsity=0.6, step_ratio=0.4, warmup_epochs=1, export_dir=None),
        lambda: BlockPruning(step_ratio=0.5, warmup_epochs=1, export_dir=None),  # the student shrinks, not the teacher
    ],
    ids=["masks", "structured"],
)
def test_resume_restores_the_teacher(make_pruner, digits, trainer_kwargs: dict, tmp_path: Path) -> None:
    first, _ = _fit(digits, trainer_kwargs, tmp_path, make_pruner, stop_at=1)  # one step taken, then stopped
    teacher = {k: v.clone() for k, v in first.teacher.state_dict().items()}
    resumed, pruner = _fit(digits, trainer_kwargs, tmp_path, make_pruner, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert pruner.pruning_state.step >= 2  # pruning went on after the resume
    assert resumed.teacher.state_dict().keys() == teacher.keys()
    for name, value in resumed.teacher.state_dict().items():
        assert torch.equal(value.cpu(), teacher[name])
    assert not any(p.requires_grad for p in resumed.teacher.parameters())
    assert resumed.last_kd is not None
    assert resumed.last_kd > 0


def test_the_ice_recipe_takes_distillation_as_an_option(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    assert "distillation" not in compose_recipe("ice_pruning", tmp_path).callbacks  # off by default
    node = compose_recipe("ice_pruning", tmp_path, ("+callbacks=distillation",)).callbacks.distillation
    distill = instantiate(node)
    assert (distill.temperature, distill.weight) == (2.0, 1.0)


@pytest.mark.parametrize("name", ["AnytimeProgressivePruning", "InstantSoupPruning", "DenseUnitPruning"])
def test_distillation_beside_every_other_pruner(name: str, trainer_kwargs: dict, tmp_path: Path) -> None:
    """Pruners with their own schedules: the teacher is the model before their first pruning, the term is added."""
    setup = SETUPS[name]
    distill = Distillation(temperature=2.0, weight=1.0)
    pl.seed_everything(0, verbose=False)
    model = setup.model()
    kwargs = {**trainer_kwargs, "default_root_dir": str(tmp_path), "max_epochs": setup.max_epochs, **setup.trainer}
    pl.Trainer(callbacks=[setup.make(export_dir=str(tmp_path)), distill], **kwargs).fit(model, datamodule=setup.data())
    assert distill.teacher is not None
    assert not any(p.requires_grad for p in distill.teacher.parameters())
    assert distill.last_kd is not None
