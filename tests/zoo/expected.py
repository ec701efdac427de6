"""What each matrix cell is expected to do: work (no entry), refuse at fit start, or fail today (a strict xfail).

``Refused(match)``: the fit raises before any optimizer step and the message contains ``match``. ``XFail(reason)``:
a bug, said precisely; the cell asserts that it works, so the fix makes it XPASS (a failure under
``xfail_strict``) and the entry must go. Everything not listed must work: the target reached (within
``SPARSITY_TOLERANCE``, or at least ``MIN_SHRINK`` of the parameters removed, or the latency budget met) and the
validation accuracy no more than ``ACC_BOUND_PT`` below plain training in the same Trainer.
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
class XFail:
    reason: str  # what goes wrong, precisely (pytest shows it; docs/zoo.md lists it)
    short: str  # the README cell: "crash", "prunes nothing", "-21 pt", ...
    strict: bool = True  # False only where the outcome rides on a shared CPU's timing (the latency planner)


NO_HIDDEN = "has no hidden layer: no nn.Linear feeds another nn.Linear"
UNREACHABLE = "is unreachable: the smallest network allowed"
COUPLED = (
    "BlockPruning counts a depthwise conv's channels twice: the 1x1 expand conv and the depthwise conv are one "
    "coupled group, the step removes half of the group through the first and then asks for half of the (already "
    "halved) depthwise conv again: ValueError 'would leave a coupled layer empty' at the first step, mid-training"
)


def _app(seen: str, short: str) -> XFail:
    return XFail(f"AnytimeProgressivePruning (2 megabatches x 2 epochs, sparsity 0.5) ends {seen}", short)


EXPECTED: dict[tuple[str, str], Refused | XFail] = {
    # -- clean refusals at fit start
    ("depthwise_cnn", "dense_unit"): Refused(NO_HIDDEN),
    ("resnet", "dense_unit"): Refused(NO_HIDDEN),
    ("tv_resnet18", "dense_unit"): Refused(NO_HIDDEN),
    ("mlp", "block"): Refused("matched no module of ImageClassifier: pass the class names of your model's"),
    # the smallest network LatencyBudgetPruning may build (attention kept whole) measures 16-25 % above a 0.8 budget
    ("vit", "latency_budget"): Refused(UNREACHABLE),
    ("hf_vit", "latency_budget"): Refused(UNREACHABLE),
    ("hf_bert", "latency_budget"): Refused(UNREACHABLE),
    # -- BlockPruning (structured)
    ("depthwise_cnn", "block"): XFail(COUPLED, "crash"),
    ("tv_mobilenet_v3", "block"): XFail(
        COUPLED.replace("1x1 expand conv", "InvertedResidual's 1x1 expand conv"), "crash"
    ),
    ("tv_convnext", "block"): XFail(
        "BlockPruning removes nothing from a ConvNeXt CNBlock (0 parameters) and reports success: the block's only "
        "conv is its depthwise 7x7, whose channels are the residual width, and its Linear MLP is not pruned",
        "prunes nothing",
    ),
    ("tv_resnet18", "block"): XFail(
        "BlockPruning on torchvision's ResNet-18 (all 8 BasicBlocks at step_ratio 0.5 after 2 epochs, then 2 more) "
        "ends at 0.41 validation accuracy against 0.97 for plain training",
        "-56 pt",
    ),
    ("timm_vit", "block"): XFail(
        "BlockPruning on timm's ViT blocks removes 39 % of the parameters and ends 7.8 pt below plain training "
        "(0.72 vs 0.80; plain training spreads 5.5 pt over data orders)",
        "-8 pt",
    ),
    # -- the ICE trio (IterativePruning as in its column + AccuracyGate(), LayerFreezing(), PruningAwareLR())
    ("depthwise_cnn", "ice"): XFail(
        "ends 5.6 pt below plain training (0.896 vs 0.952) where IterativePruning alone ends 3.0 pt below", "-6 pt"
    ),
    ("tv_convnext", "ice"): XFail(
        "ends 5.6 pt below plain training (0.822 vs 0.878) where IterativePruning alone ends 1.5 pt below", "-6 pt"
    ),
    ("tv_mobilenet_v3", "ice"): XFail(
        "ends 21 pt below plain training (0.46 vs 0.66) where IterativePruning alone ends 12 pt below", "-21 pt"
    ),
    # -- AnytimeProgressivePruning
    ("depthwise_cnn", "app"): _app("15.6 pt below plain training (0.80 vs 0.95)", "-16 pt"),
    ("mlp", "app"): _app("11 pt below plain training (0.81 vs 0.92)", "-11 pt"),
    ("vit", "app"): _app("10 pt below plain training (0.84 vs 0.94)", "-10 pt"),
    ("hf_bert", "app"): _app("at chance level (0.12 vs 0.65 for plain training)", "-53 pt"),
    ("hf_vit", "app"): _app("34 pt below plain training (0.46 vs 0.80)", "-34 pt"),
    ("hf_llama_gqa", "app"): _app("6 pt below plain training (next-token 0.30 vs 0.36)", "-6 pt"),
    ("timm_vit", "app"): _app("26 pt below plain training (0.54 vs 0.80)", "-26 pt"),
    ("tv_convnext", "app"): _app("12 pt below plain training (0.76 vs 0.88)", "-12 pt"),
    # -- InstantSoupPruning (2 ingredients x 5 steps per round)
    ("depthwise_cnn", "soup"): XFail("ends 6.7 pt below plain training (0.885 vs 0.952)", "-7 pt"),
    ("tv_mobilenet_v3", "soup"): XFail("ends 34 pt below plain training (0.32 vs 0.66)", "-34 pt"),
    # -- DenseUnitPruning
    ("tv_mobilenet_v3", "dense_unit"): XFail(
        "DenseUnitPruning prunes the classifier's 1024-unit Linear stack (31 % of the parameters) and ends 19 pt "
        "below plain training (0.47 vs 0.66)",
        "-19 pt",
    ),
    # -- LatencyBudgetPruning (budget 0.8 of dense). How much the planner cuts follows the timing of a shared CPU,
    # so these vary from run to run and are not strict; its crashes are.
    ("depthwise_cnn", "latency_budget"): XFail(
        "a 0.8 budget asks 62 % of what removing channels can save (the smallest network measures 0.68 of dense at "
        "batch 64; warned at fit start) and the half-width network that meets it ends 10 pt below when trained from "
        "scratch as long: 0.62-0.76 of dense with 54-93 % of the parameters removed, 17-65 pt below plain training",
        "overshoots",
        strict=False,
    ),
    ("resnet", "latency_budget"): XFail(
        "plans the table prices alike measure 0.48-0.76 of dense (cutting the residual width saves far more than the "
        "per-layer table says, the inner convs almost nothing): 0.56-0.90 of dense for a 0.8 budget with 60-96 % of "
        "the parameters removed, 8 to 60 pt below plain training from run to run",
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
        "overshoots a 0.8 budget on ResNet-18: 0.68-0.72 of dense latency with 51-57 % of the parameters removed, "
        "12-20 pt below plain training",
        "overshoots",
        strict=False,
    ),
    ("hf_llama_gqa", "latency_budget"): XFail(
        "a 0.8 budget lies within a few % of what the smallest allowed network measures (MLP units cut, attention "
        "kept whole: 0.86-0.91 of dense at batch 64): refused as unreachable in most runs, met in others (0.86 of "
        "dense, 58 % of the parameters removed, +0.3 pt)",
        "unreachable or met",
        strict=False,
    ),
    ("timm_vit", "latency_budget"): XFail(
        "a 0.8 budget lies within a few % of what the smallest allowed network measures: refused as unreachable in "
        "some runs, met in others",
        "unreachable or met",
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
