"""ICE-Pruning's layer freezing: the layers that move least in a probe fine-tune stay frozen in later ones."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from lightning_prune.callbacks._trainer import broadcast, ddp_without_unused_parameters, info, output_dir
from lightning_prune.callbacks.ice.layers import (
    CONV_TYPES,
    candidate_types,
    freeze_layers,
    norms_after,
    release_layers,
)
from lightning_prune.callbacks.protocol import PruningListener, PruningState, find_pruner
from lightning_prune.core.export import write_summary
from lightning_prune.core.selection import select_parameters, validate_selector
from lightning_prune.core.validate import check_fraction, check_output_dir, is_number

log = logging.getLogger(__name__)


class LayerFreezing(Callback, PruningListener):
    """Freeze, during each fine-tune, the conv layers whose weights moved least in a one-time probe.

    ICE-Pruning (Hu, Henderson, Cano, arXiv 2505.07411), the freezing mechanism. The probe is the first
    fine-tune that runs (it runs unfrozen): for every candidate conv ``l`` it scores
    ``d_l = | ||W_post||_1 - ||W_pre||_1 | / ||W_orig||_2`` (weights after and before that fine-tune,
    and before the first pruning step), and the ``ceil(fraction * N)`` candidates with the smallest
    ``d_l`` are frozen in every later fine-tune, then released when it ends (and at the end of
    training). Layers are remembered by name, since structured steps replace their parameters.

    Only a layer whose weights have stopped moving is frozen (``max_move``): among those chosen, one whose
    weights moved ``max_move`` of their norm or more in the probe (``||W_post - W_pre|| / ||W_pre||``) stays
    trainable. Freezing is free for a converged layer, as in the paper's pre-trained nets; in a run that
    trains from scratch every layer still moves 4 to 27 % an epoch at its schedule's rate, and freezing the
    30 % that changed their norm least cost the zoo's depthwise CNN and ConvNeXt 1.5 to 3 pt.

    A network without convolutions (an MLP) has its hidden ``Linear`` layers as candidates instead (the
    head is never one). A transformer (a model with an ``nn.MultiheadAttention`` or a Hugging Face
    attention: BERT, ViT, Llama) has its Linear layers as candidates too, beside any convs (attention
    projections and MLP layers; the head is never one), so ICE's block-by-block mode works on transformer
    blocks as well.

    Freezing follows Lightning's ``BaseFinetuning.freeze(train_bn=False)``: ``requires_grad=False`` on
    the conv's parameters and on those of the BatchNorm that reads its output; in addition that
    BatchNorm is put in eval mode, so it normalises with its fixed running statistics and they stay
    untouched. A frozen parameter costs nothing: no gradient is computed (backward stops early when
    the frozen layers come first), so ``torch.optim`` optimizers skip it entirely (no update, no
    weight decay, no momentum change), and pruning masks still hold.

    Requires from your LightningModule: a ``configure_optimizers`` over all parameters (frozen ones
    included); an ``example_input_array`` or an ``(x, y)`` validation batch (to find each conv's
    BatchNorm). Under DDP, ``Trainer(strategy=DDPStrategy(find_unused_parameters=True))``.

    Args:
        fraction: share of the candidate convs frozen, in [0, 1] (the paper's ``fr``).
        include_names: regular expression the candidate convs' module names must match (``None``: all).
        exclude_names: regular expressions of convs never frozen.
        max_move: a chosen conv is frozen only if its weights moved less than this share of their norm in the
            probe, > 0 (``None``: the paper's rule, the ``fraction`` frozen however far they moved; the ICE
            recipe sets it). The probe keeps a copy of the candidates' weights on the CPU while it runs.
        export_dir: where ``summary.json`` goes (default: the Trainer's root dir).

    Raises:
        ValueError: for ``fraction`` outside [0, 1] or bad selectors; in ``setup``, when there is no
            pruner, no candidate conv, or DDP without ``find_unused_parameters=True``.

    Example::

        >>> import lightning.pytorch as pl
        >>> from lightning_prune import BlockPruning, LayerFreezing
        >>> from lightning_prune.data import DigitsDataModule
        >>> from lightning_prune.models import Classifier, ResNet
        >>> pruning = BlockPruning(step_ratio=0.5, warmup_epochs=1, export_dir=None)
        >>> freezing = LayerFreezing(fraction=0.5, max_move=None)  # the paper's rule: from scratch, every conv moves
        >>> model = Classifier(ResNet((1, 8, 8), 10, blocks=(1, 1), widths=(8, 8)), 10, (1, 8, 8))
        >>> trainer = pl.Trainer(max_epochs=3, callbacks=[pruning, freezing], logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False, default_root_dir="/tmp/lp-doc")
        >>> trainer.fit(model, datamodule=DigitsDataModule(batch_size=128))
        >>> len(freezing.frozen)  # ceil(0.5 * 5 convs)
        3
    """

    def __init__(
        self,
        fraction: float = 0.3,
        include_names: str | None = None,
        exclude_names: Sequence[str] = (),
        max_move: float | None = 0.02,
        export_dir: str | None = None,
    ) -> None:
        check_fraction("fraction", fraction, closed_low=True, closed_high=True)
        if max_move is not None and not (is_number(max_move) and max_move > 0):
            raise ValueError(
                f"max_move must be a number > 0 (or None: freeze the fraction however far), got {max_move!r}"
            )
        self.max_move = max_move
        validate_selector(CONV_TYPES, include_names, exclude_names)
        self.fraction, self.include_names, self.exclude_names = fraction, include_names, list(exclude_names)
        self.export_dir = check_output_dir("export_dir", export_dir)
        self.candidates: list[str] = []
        self.frozen: list[str] | None = None
        self.scores: dict[str, float] = {}
        self.moves: dict[str, float] = {}  # how far each candidate moved in the probe (with max_move)
        self._pre_weights: dict[str, torch.Tensor] = {}
        self._norm_of: dict[str, str] = {}
        self._orig_l2: dict[str, float] | None = None
        self._pre_l1: dict[str, float] | None = None
        self._probe_step = 0
        self._frozen_params: list[str] = []
        self._eval_norms: list[str] = []
        self._frozen_count = 0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            fraction=self.fraction, include_names=self.include_names, max_move=self.max_move
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        find_pruner(trainer, "LayerFreezing")
        if ddp_without_unused_parameters(trainer):
            raise ValueError(
                "LayerFreezing changes requires_grad during training, which DDP only allows with "
                "Trainer(strategy=DDPStrategy(find_unused_parameters=True)) (or 'ddp_find_unused_parameters_true')"
            )
        weights = select_parameters(pl_module, candidate_types(pl_module), self.include_names, self.exclude_names)
        self.candidates = [name.rpartition(".")[0] for name in weights]

    # ---------------------------------------------------------------- pruner events

    def on_prune_step_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: PruningState) -> None:
        # A new step ends the previous fine-tune, even one whose end a resumed run did not see.
        self._finish_probe(trainer, pl_module)
        self._release(pl_module)
        if self._orig_l2 is None:
            self._orig_l2 = self._norms(pl_module, 2)

    def on_finetune_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: PruningState) -> None:
        if self._pre_l1 is None:
            self._pre_l1, self._probe_step = self._norms(pl_module, 1), state.step
            if self.max_move is not None and trainer.is_global_zero:  # rank 0 decides
                self._pre_weights = {
                    name: self._weight(pl_module, name).to("cpu", copy=True) for name in self.candidates
                }
            state.history[-1]["frozen_layers"] = self._frozen_count = 0
            return
        self._freeze(pl_module)
        state.history[-1]["frozen_layers"] = self._frozen_count = self.frozen_now

    def on_finetune_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: PruningState) -> None:
        self._finish_probe(trainer, pl_module)
        self._release(pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Resumed, or a fit continuing an earlier one, inside a fine-tune: the layers come back trainable (from a
        # checkpoint, or released when the earlier fit ended), so freeze them again.
        frozen = self._frozen_params or self._frozen_count
        if frozen and find_pruner(trainer, "LayerFreezing").pruning_state.phase == "finetune":
            self._frozen_params, self._eval_norms = [], []
            self._freeze(pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._release(pl_module)

    # ---------------------------------------------------------------- the probe

    @staticmethod
    def _weight(pl_module: pl.LightningModule, name: str) -> torch.Tensor:
        return pl_module.get_submodule(name).weight.detach()

    def _moves(self, pl_module: pl.LightningModule) -> dict[str, float]:
        """``||W_post - W_pre|| / ||W_pre||`` of each candidate over the probe (inf where its shape changed)."""
        moves = {}
        for name, before in self._pre_weights.items():
            after = self._weight(pl_module, name).cpu()
            moved = (after - before).norm() / before.norm().clamp_min(1e-12) if after.shape == before.shape else None
            moves[name] = float(moved) if moved is not None else math.inf
        return moves

    def _norms(self, pl_module: pl.LightningModule, order: int) -> dict[str, float]:
        with torch.no_grad():
            return {name: float(pl_module.get_submodule(name).weight.norm(order)) for name in self.candidates}

    def _finish_probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Score the probe fine-tune that just ended and decide (on rank 0) which convs stay frozen."""
        if self._pre_l1 is None or self.frozen is not None:
            return
        decision = None
        if trainer.is_global_zero:
            post_l1 = self._norms(pl_module, 1)
            scores = {
                name: abs(post_l1[name] - self._pre_l1[name]) / max(self._orig_l2[name], 1e-12)
                for name in self.candidates
            }
            count = math.ceil(self.fraction * len(scores) - 1e-9)
            chosen = sorted(scores, key=lambda name: (scores[name], self.candidates.index(name)))[:count]
            moves = self._moves(pl_module) if self.max_move is not None else {}
            frozen = [name for name in chosen if moves.get(name, 0.0) < (self.max_move or math.inf)]
            decision = {"scores": scores, "moves": moves, "frozen": frozen}
            decision["norm_of"] = norms_after(trainer, pl_module, frozen)
        decision = broadcast(trainer, decision)
        self.scores, self.moves, self.frozen = decision["scores"], decision["moves"], decision["frozen"]
        self._norm_of, self._pre_weights = decision["norm_of"], {}
        chosen = math.ceil(self.fraction * len(self.candidates) - 1e-9)
        kept = f" ({chosen} chosen, the others moved >= max_move={self.max_move})" if len(self.frozen) < chosen else ""
        info(log, f"layer freezing: probe after step {self._probe_step} froze {len(self.frozen)}{kept}: {self.frozen}")

    # ---------------------------------------------------------------- freeze / release

    def _freeze(self, pl_module: pl.LightningModule) -> None:
        """``requires_grad=False`` (and no stale gradient) on the frozen convs and their norms; norms in eval."""
        params, norms = freeze_layers(pl_module, self.frozen or [], self._norm_of)
        self._frozen_params += params
        self._eval_norms += norms

    def _release(self, pl_module: pl.LightningModule) -> None:
        """Undo exactly what :meth:`_freeze` changed (parameters the user froze stay frozen)."""
        release_layers(pl_module, self._frozen_params, self._eval_norms)
        self._frozen_params, self._eval_norms = [], []

    @property
    def frozen_now(self) -> int:
        """How many of the chosen convs are frozen at this moment (0 outside fine-tunes)."""
        return sum(any(p.startswith(f"{name}.") for p in self._frozen_params) for name in self.frozen or [])

    # ---------------------------------------------------------------- logging, summary, state

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.frozen is not None:
            pl_module.log("ice/frozen_layers", float(self._frozen_count), on_step=False, on_epoch=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        write_summary(
            output_dir(trainer, self.export_dir) / "summary.json",
            "ice_freezing",
            {
                "fraction": self.fraction,
                "max_move": self.max_move,
                "candidates": len(self.candidates),
                "probe_step": self._probe_step,
                "frozen": self.frozen,
                "scores": self.scores,
                "moves": self.moves,
            },
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "frozen": self.frozen,
            "scores": dict(self.scores),
            "moves": dict(self.moves),
            "pre_weights": dict(self._pre_weights),
            "norm_of": dict(self._norm_of),
            "orig_l2": self._orig_l2,
            "pre_l1": self._pre_l1,
            "probe_step": self._probe_step,
            "frozen_params": list(self._frozen_params),
            "eval_norms": list(self._eval_norms),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.frozen = state_dict.get("frozen", self.frozen)
        self.scores = dict(state_dict.get("scores", self.scores))
        self.moves = dict(state_dict.get("moves", self.moves))
        self._pre_weights = dict(state_dict.get("pre_weights", self._pre_weights))
        self._norm_of = dict(state_dict.get("norm_of", self._norm_of))
        self._orig_l2 = state_dict.get("orig_l2", self._orig_l2)
        self._pre_l1 = state_dict.get("pre_l1", self._pre_l1)
        self._probe_step = state_dict.get("probe_step", self._probe_step)
        self._frozen_params = list(state_dict.get("frozen_params", self._frozen_params))
        self._eval_norms = list(state_dict.get("eval_norms", self._eval_norms))
