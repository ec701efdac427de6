"""What each matrix cell is expected to do: work (no entry), refuse or warn at fit start, or fail today (strict xfail).

``Refused(match)``: the fit raises before any optimizer step and the message contains ``match``. ``Warned(match)``:
a warning containing ``match`` is emitted before the first optimizer step (or, with ``when``, later but before the
harm it warns of: DenseUnitPruning's rebuild), naming the cause and the fix; the target is reached, and the accuracy
is recorded but not held to the bound: the user was told. ``XFail(reason)``: a bug, said precisely; the cell asserts
that it works, so the fix makes it XPASS (a failure under ``xfail_strict``) and the entry must go. Everything not
listed must work: the target reached (within ``SPARSITY_TOLERANCE``, or at least ``MIN_SHRINK`` of the parameters
removed, or the latency budget met) and the validation accuracy no more than ``ACC_BOUND_PT`` below plain training
in the same Trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.zoo.cells import COLUMNS
from tests.zoo.models import ZOO

ACC_BOUND_PT = 5.0  # issue 21: no callback's defaults end a from-scratch run more than 5 pt below plain training
# Where plain training alone, from the same initialisation, spreads wider over four data orders (the shuffle a
# callback's RNG draw changes), 5 pt would judge the data order: those models get their spread, rounded up
# (MobileNetV3 0.66-0.80, HF ViT 0.70-0.80, timm ViT 0.75-0.81, HF BERT 0.60-0.65 after so few steps).
ACC_BOUND_PT_BY_MODEL = {"tv_mobilenet_v3": 15.0, "hf_vit": 12.0, "timm_vit": 6.0, "hf_bert": 6.0}
SPARSITY_TOLERANCE = 0.01
MIN_SHRINK = 0.1  # structured pruners: at least this share of all parameters removed


@dataclass(frozen=True)
class Refused:
    match: str


@dataclass(frozen=True)
class Warned:
    match: str  # in a warning emitted before the first optimizer step (or before the harm, see `when`)
    short: str  # the cause in a few words (docs/zoo.md; the README cell shows the measured figure)
    when: str = "before the first step"  # otherwise the warning may come later in the fit, before what it warns of


@dataclass(frozen=True)
class XFail:
    reason: str  # what goes wrong, precisely (pytest shows it; docs/zoo.md lists it)
    short: str  # the README cell: "crash", "prunes nothing", "-21 pt", ...
    strict: bool = True  # False only where the outcome rides on a shared CPU's timing (the latency planner)


NO_HIDDEN = "has no hidden layer: no nn.Linear feeds another nn.Linear"
UNREACHABLE_MHA = "; attention kept whole: net.blocks.0.attn, net.blocks.1.attn (heads are removed only where"


# Warned before any step (the user is told the cause and the fix; the accuracy is recorded, not bounded)
APP_UNTRAINED = "SNIP prunes 20% of the selected weights at the first megabatch, before any training step"
SOUP_UNTRAINED = "(warmup_steps=0, calibration_steps=2), at global step 0"
APP_WARNED = Warned(APP_UNTRAINED, "SNIP prunes the untrained net, then again after 2 epochs on half the data")
SOUP_WARNED = Warned(SOUP_UNTRAINED, "magnitude rounds at optimizer steps 2 and 6 of an untrained net")


EXPECTED: dict[tuple[str, str], Refused | Warned | XFail] = {
    # -- clean refusals at fit start
    ("depthwise_cnn", "dense_unit"): Refused(NO_HIDDEN),
    ("resnet", "dense_unit"): Refused(NO_HIDDEN),
    ("tv_resnet18", "dense_unit"): Refused(NO_HIDDEN),
    ("mlp", "block"): Refused("matched no module of ImageClassifier: pass the class names of your model's"),
    # nn.MultiheadAttention keeps its heads (its width is the residual's): with the MLP units cut alone the smallest
    # network LatencyBudgetPruning may build measures ~0.95 of dense, above a 0.8 budget
    ("vit", "latency_budget"): Refused(UNREACHABLE_MHA),
    # -- BlockPruning (structured)
    # Both lose most of it to the heads: half of them go at step_ratio 0.5 (timm 2 -> 1, BERT 4 -> 2; removal is
    # exact, tests/core/test_structured_transformers.py). A step keeps the user's schedule now; the fresh optimizer
    # it once built restarted BERT's warm-up-and-decay, extra learning rate that undertrained BERT took (-3 pt).
    ("timm_vit", "block"): XFail(
        "BlockPruning on timm's ViT blocks (heads 2 -> 1, MLP 128 -> 64: 39 % of the parameters) ends 7.8 pt below "
        "plain training (0.72 vs 0.80); heads alone cost 6.7 pt, MLP units alone 1.5; other seeds -2.6, +0.4, -2.6",
        "-8 pt",
    ),
    ("hf_bert", "block"): XFail(
        "BlockPruning on BERT's layers (heads 4 -> 2, MLP 64 -> 32, at epoch 2 of 4) ends 10 pt below plain training "
        "(0.55 vs 0.65; seeds 1-3: -8, -13, -10); heads alone cost 7 pt, MLP units alone 2.2",
        "-10 pt",
    ),
    # -- AnytimeProgressivePruning (2 megabatches x 2 epochs, sparsity 0.5) from scratch
    ("depthwise_cnn", "app"): APP_WARNED,
    ("mlp", "app"): APP_WARNED,
    ("hf_bert", "app"): APP_WARNED,
    ("hf_vit", "app"): APP_WARNED,
    ("hf_llama_gqa", "app"): APP_WARNED,
    ("timm_vit", "app"): APP_WARNED,
    # -- InstantSoupPruning (2 ingredients x 5 steps per round) from scratch with the pre-trained defaults
    ("depthwise_cnn", "soup"): SOUP_WARNED,
    ("tv_mobilenet_v3", "soup"): SOUP_WARNED,
    # -- DenseUnitPruning
    # MobileNetV3 at epoch 2 of 4 from scratch: eval-mode val_loss 4.46 against 2.29 at epoch 0 (accuracy 0.14)
    ("tv_mobilenet_v3", "dense_unit"): Warned(
        "on a network that has not settled",
        "wide_epochs rebuilds a net still far from its best val_loss: the units' scores are noise",
        when="at the rebuild, before any unit is removed",
    ),
    # -- LatencyBudgetPruning (budget 0.8 of dense). How much the planner cuts follows the timing of a shared CPU,
    # so these vary from run to run and are not strict; its crashes are.
    # a 0.8 budget asks ~62 % of what removing channels can save (the smallest network measures 0.67-0.72 of dense at
    # batch 64): it is met by cutting 54-93 % of the parameters, 17-65 pt below plain training; said at fit start
    ("depthwise_cnn", "latency_budget"): Warned(
        "of what removing channels can save", "the budget needs most channels gone: fixed costs dominate"
    ),
    ("resnet", "latency_budget"): XFail(
        "plans the table prices alike measure 0.48-0.76 of dense (cutting the residual width saves far more than the "
        "per-layer table says, the inner convs almost nothing): 0.56-0.90 of dense for a 0.8 budget with 60-96 % of "
        "the parameters removed, 7 to 60 pt below plain training from run to run",
        "overshoots",
        strict=False,
    ),
    ("tv_convnext", "latency_budget"): XFail(
        "on ConvNeXt's depthwise 7x7 blocks the planner overshoots (0.73-0.77 of dense for a 0.8 budget, 61-95 % of "
        "the parameters removed, 8-43 pt below plain training), misses the budget (1.08-1.12 of dense) or refuses "
        "it as unreachable (its smallest network measured 0.94 of dense once)",
        "overshoots / misses",
        strict=False,
    ),
    ("tv_resnet18", "latency_budget"): XFail(
        "passes in most runs (the record: 0.68 of dense, 51 % of the parameters removed, -2.6 pt; 3 of 3 local runs "
        "after) but a clean-clone CI run's plan ended 6.3 pt below plain training, past the 5 pt bound",
        "-2.6 to -6.3 pt",
        strict=False,
    ),
    # heads and MLP units cut together: budget met in every run (0.67-0.80 of dense), accuracy as below
    ("hf_bert", "latency_budget"): XFail(
        "the budget is met (0.68-0.80 of dense, 50-58 % of the parameters removed) by cutting the MLP to 8 of 64 "
        "units and keeping 4-5 of 8 heads at epoch 2 of 4: 14-21 pt below plain training (BlockPruning's halving "
        "costs this BERT 10 pt too; SP-LAMP's harmonic values price deep MLP cuts cheaply)",
        "-14 to -21 pt",
        strict=False,
    ),
    ("timm_vit", "latency_budget"): XFail(
        "the budget is met in every run (0.69-0.74 of dense, 58-60 % of the parameters removed, heads and MLP units "
        "cut) at 6.3-6.7 pt below plain training, past this model's 6 pt bound",
        "-6.5 pt",
        strict=False,
    ),
}


def acc_bound_pt(model: str) -> float:
    return ACC_BOUND_PT_BY_MODEL.get(model, ACC_BOUND_PT)


def all_cells() -> list[tuple[str, str]]:
    return [(model, column) for model in ZOO for column in COLUMNS]


def marks(model: str, column: str) -> list[Any]:
    found: list[Any] = []
    if ZOO[model].slow:
        found.append(pytest.mark.slow)
    expected = EXPECTED.get((model, column))
    if isinstance(expected, XFail):
        found.append(pytest.mark.xfail(strict=expected.strict, reason=expected.reason))
    return found
