"""Distillation from the unpruned model: every fine-tune learns the teacher's soft targets as well as the labels."""

from __future__ import annotations

import copy
import logging
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from lightning_prune.callbacks._trainer import info
from lightning_prune.callbacks.protocol import PruningCallback, PruningListener, PruningState
from lightning_prune.core import model_io
from lightning_prune.core.validate import is_number

log = logging.getLogger(__name__)


def kd_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, summed over classes, averaged over rows.

    Hinton et al.'s soft-target loss; the ``T^2`` keeps its gradient's scale independent of ``T``. Logits of
    any shape ``(..., C)`` count every leading position as one row (tokens of a language model).
    """
    student, teacher = student.reshape(-1, student.shape[-1]).float(), teacher.reshape(-1, teacher.shape[-1]).float()
    log_p_student = F.log_softmax(student / temperature, dim=-1)
    p_teacher = F.softmax(teacher / temperature, dim=-1)
    kl = F.kl_div(log_p_student, p_teacher, reduction="batchmean")
    return kl * temperature**2


def kd_grad(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """The gradient of :func:`kd_loss` with respect to the student's logits: ``T (p_s - p_t) / rows``."""
    rows = student.numel() // student.shape[-1]
    p_student = F.softmax(student.float() / temperature, dim=-1)
    p_teacher = F.softmax(teacher.float() / temperature, dim=-1)
    return (temperature * (p_student - p_teacher) / rows).to(student.dtype)


class Distillation(Callback, PruningListener):
    """Add ``weight * KD`` to the training loss, distilling the model at the first pruning step into the pruned one.

    The paper pipelines fine-tune with cross-entropy plus distillation from the unpruned model (ICE-Pruning's
    ResNet code: ``T=2``; the iterative baseline uses the same loss). The teacher is a frozen copy of your
    LightningModule taken right before the first pruning step (the ``on_prune_step_start`` of any step-wise
    pruner; at fit start for pruners that report no steps): on the same device, in eval mode, never trained,
    and not a submodule of your model, so the model's ``state_dict`` holds the student only and the
    checkpoint holds the teacher once, in this callback's state (restored on resume).

    **How the term reaches your loss.** Lightning gives callbacks no way to change the loss
    ``training_step`` returns, and a second backward pass would double its cost. Instead a forward hook
    on your LightningModule sees the first forward call of each training batch (the ``self(x)`` in your
    ``training_step``): it runs the teacher on the same inputs (no grad) and registers a hook on the
    student's logits that adds the exact gradient of ``weight * KD`` (:func:`kd_grad`) as your backward
    passes through them. So the gradients are those of ``loss + weight * KD`` in one backward,
    your ``training_step`` stays as it is, and ``distill/kd`` is logged beside your loss. Logits are
    read as every callback reads them (a tensor, ``.logits``, ``["logits"]``; :mod:`~lightning_prune.core.model_io`).
    Gradient accumulation and AMP's loss scaling are applied to the added gradient as Lightning applies
    them to your loss.

    Requires from your LightningModule: a ``training_step`` whose loss is computed from the output of
    ``self(...)`` (automatic optimization), or logits reached by another call before it (then the first call
    of the batch is the one distilled).

    Args:
        temperature: softmax temperature ``T`` of both models' logits, > 0 (the paper's code uses 2).
        weight: factor of the KD term added to your loss, >= 0.

    Raises:
        ValueError: for a ``temperature`` <= 0 or a negative ``weight``.

    Example::

        >>> import lightning.pytorch as pl
        >>> from lightning_prune import Distillation, IterativePruning
        >>> from lightning_prune.data import DigitsDataModule
        >>> from lightning_prune.models import Classifier, SmallCNN
        >>> pruning = IterativePruning(target_sparsity=0.5, step_ratio=0.3, warmup_epochs=1, export_dir=None)
        >>> distill = Distillation(temperature=2.0, weight=1.0)
        >>> model = Classifier(SmallCNN((1, 8, 8), 10, widths=(8, 8)), 10, (1, 8, 8))
        >>> trainer = pl.Trainer(max_epochs=3, callbacks=[pruning, distill], logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False, default_root_dir="/tmp/lp-doc")
        >>> trainer.fit(model, datamodule=DigitsDataModule(batch_size=128))
        >>> distill.teacher is not None and "teacher" not in str(list(model.state_dict()))
        True
    """

    # Works beside pruners that report no steps too (the teacher is then the model at fit start).
    acts_on_steps = False

    def __init__(self, temperature: float = 2.0, weight: float = 1.0) -> None:
        if not is_number(temperature) or not temperature > 0:
            raise ValueError(f"temperature must be a number > 0 (the paper's code uses 2), got {temperature!r}")
        if not is_number(weight) or weight < 0:
            raise ValueError(f"weight must be a number >= 0 (the factor of the KD term), got {weight!r}")
        self.temperature, self.weight = float(temperature), float(weight)
        self.teacher: nn.Module | None = None
        self.last_kd: float | None = None
        self._skeleton: nn.Module | None = None  # a resumed run's model as built, before pruning reshapes it
        self._restored: dict[str, Tensor] | None = None
        self._handle: Any = None
        self._armed = False
        self._grad_scale = 1.0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(temperature=self.temperature, weight=self.weight)

    # ---------------------------------------------------------------- taking the teacher

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self.teacher is None:
            # Before a checkpoint is restored the model is as the user built it: the teacher's architecture (a
            # structured pruner reshapes the student on restore), kept in case this fit resumes one that had a
            # teacher (its weights come from this callback's state); dropped at train start otherwise.
            self._skeleton = _frozen_copy(pl_module)

    def on_prune_step_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: PruningState) -> None:
        if self.teacher is None:
            self._set_teacher(pl_module, _frozen_copy(pl_module), f"before pruning step {state.step + 1}")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.teacher is None and self._restored is not None and self._skeleton is not None:
            self._skeleton.load_state_dict(self._restored)
            self._set_teacher(pl_module, self._skeleton, "restored from the checkpoint")
        elif self.teacher is None and not _reports_steps(trainer):
            self._set_teacher(pl_module, _frozen_copy(pl_module), "at fit start (the pruner reports no steps)")
        self._skeleton, self._restored = None, None
        self._attach(pl_module)

    def _set_teacher(self, pl_module: pl.LightningModule, teacher: nn.Module, when: str) -> None:
        self.teacher = teacher.to(pl_module.device)
        self._attach(pl_module)
        info(log, f"distillation: teacher taken {when} (T={self.temperature}, weight={self.weight})")

    # ---------------------------------------------------------------- adding the term

    def _attach(self, pl_module: pl.LightningModule) -> None:
        if self._handle is None and self.teacher is not None:
            self._handle = pl_module.register_forward_hook(self._on_forward, with_kwargs=True)

    def _detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        self._armed = self.teacher is not None and self.weight > 0
        self._grad_scale = _loss_scale(trainer, pl_module)

    def _on_forward(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        """The first forward of a training batch: run the teacher on its inputs, hook the student's logits."""
        if not (self._armed and module.training and torch.is_grad_enabled()):
            return
        self._armed = False
        student = model_io.logits_of(output)
        with torch.no_grad():
            teacher = model_io.logits_of(self.teacher(*args, **kwargs))
            self.last_kd = float(kd_loss(student.detach(), teacher, self.temperature))
            extra = self.weight * kd_grad(student.detach(), teacher, self.temperature)
        if student.requires_grad:
            scale = self._grad_scale
            student.register_hook(lambda grad: grad + extra.to(grad.dtype) * _current_scale(module, scale))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._armed = False
        if self.last_kd is not None and self.teacher is not None:
            pl_module.log("distill/kd", self.last_kd, on_step=False, on_epoch=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._detach()

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        teacher = None if self.teacher is None else {k: v.detach().cpu() for k, v in self.teacher.state_dict().items()}
        return {"teacher": teacher, "last_kd": self.last_kd}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict.get("teacher")
        self.last_kd = state_dict.get("last_kd")
        if self._restored is not None:
            self.teacher = None  # rebuilt at train start from the skeleton taken in setup


def _frozen_copy(pl_module: pl.LightningModule) -> nn.Module:
    """A copy of the module that never trains: eval mode, no grad, no hooks (others' would run on it too)."""
    teacher = copy.deepcopy(pl_module)  # LightningModule.__getstate__ leaves the Trainer out
    for module in teacher.modules():
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()
    teacher.eval().requires_grad_(False)
    return teacher


def _reports_steps(trainer: pl.Trainer) -> bool:
    return any(isinstance(cb, PruningCallback) and cb.notifies_listeners for cb in trainer.callbacks)


def _loss_scale(trainer: pl.Trainer, pl_module: pl.LightningModule) -> float:
    """What Lightning divides the loss by before backward: the gradient-accumulation count."""
    return 1.0 / trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1.0


def _current_scale(module: nn.Module, scale: float) -> float:
    """The accumulation factor, times AMP's loss scale when a grad scaler multiplies the loss."""
    trainer = getattr(module, "_trainer", None)
    scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
    return scale * float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else scale
