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
# MobileNetV3 after 80 steps from scratch: plain training ends at 0.66, 0.80, 0.74, 0.73 for seeds 0-3, a 13 pt
# spread, so 5 pt would judge the seed; 15 pt still catches a collapse.
ACC_BOUND_PT_BY_MODEL = {"tv_mobilenet_v3": 15.0}
SPARSITY_TOLERANCE = 0.01
MIN_SHRINK = 0.1  # structured pruners: at least this share of all parameters removed


@dataclass(frozen=True)
class Refused:
    match: str


@dataclass(frozen=True)
class XFail:
    reason: str  # what goes wrong, precisely (pytest shows it; docs/zoo.md lists it)
    short: str  # the README cell: "crash", "prunes nothing", "-21 pt", ...
    strict: bool = True  # False only where the outcome rides on a shared CPU's timing (the latency planner's cuts)


NO_HIDDEN = "has no hidden layer: no nn.Linear feeds another nn.Linear"
# ICE's defaults replace the user's learning rate in every fine-tune (see ICE_LR below).
ICE_LR = (
    "PruningAwareLR's default base_lr=0.001 (delta 7e-4: 3e-4 once 15 % is pruned) replaces the user's SGD rate "
    "(0.05-0.1, cosine) in both fine-tunes, so the last two epochs barely train"
)
NO_CONV_TO_FREEZE = (
    "LayerFreezing freezes convs only: on a model without one it refuses at setup with select_parameters' message "
    "('the parameter selection matched nothing ... include_types=[Conv1d, Conv2d, Conv3d]'), which does not name "
    "LayerFreezing; issue 21 wants the ICE trio with its defaults to work on every zoo model"
)
BLOCK_NOTHING = (
    "BlockPruning removes the output filters of the convs inside each block only: a {block} has {what}, so every "
    "step removes nothing (0 parameters) and the run reports success"
)
DICT_INPUT = {
    "latency_benchmark": "LatencyBenchmark crashes at fit start on a dict input (HF input_ids/pixel_values): "
    "core.timing.batch_of slices the example input, TypeError: unhashable type: 'slice'",
    "latency_budget": "LatencyBudgetPruning crashes at setup on a dict input: the planner calls model(inputs) "
    "positionally, TypeError: forward() takes 1 positional argument but 2 were given",
    "dense_unit": "DenseUnitPruning crashes at setup on a dict input: odf2nna.graph.two_samples reads .shape of the "
    "example input, AttributeError: 'dict' object has no attribute 'shape'",
}
COUPLED = (
    "BlockPruning counts a depthwise conv's channels twice: the 1x1 expand conv and the depthwise conv are one "
    "coupled group, the step removes half of the group through the first and then asks for half of the (already "
    "halved) depthwise conv again: ValueError 'would leave a coupled layer empty' at the first step, mid-training"
)

EXPECTED: dict[tuple[str, str], Refused | XFail] = {
    # -- clean refusals at fit start
    ("depthwise_cnn", "dense_unit"): Refused(NO_HIDDEN),
    ("resnet", "dense_unit"): Refused(NO_HIDDEN),
    ("tv_resnet18", "dense_unit"): Refused(NO_HIDDEN),
    ("mlp", "block"): Refused("block_types=['BasicBlock'] matched no module"),
    ("tv_convnext", "dense_unit"): Refused("is not part of a plain feed-forward stack"),
    # -- BlockPruning (structured)
    ("depthwise_cnn", "block"): XFail(COUPLED, "crash"),
    ("tv_mobilenet_v3", "block"): XFail(
        COUPLED.replace("1x1 expand conv", "InvertedResidual's 1x1 expand conv"), "crash"
    ),
    ("vit", "block"): XFail(BLOCK_NOTHING.format(block="ViT EncoderBlock", what="no conv"), "prunes nothing"),
    ("hf_bert", "block"): XFail(BLOCK_NOTHING.format(block="BertLayer", what="no conv"), "prunes nothing"),
    ("hf_vit", "block"): XFail(BLOCK_NOTHING.format(block="ViTLayer", what="no conv"), "prunes nothing"),
    ("timm_vit", "block"): XFail(BLOCK_NOTHING.format(block="timm Block", what="no conv"), "prunes nothing"),
    ("tv_convnext", "block"): XFail(
        BLOCK_NOTHING.format(block="CNBlock", what="one conv, the depthwise 7x7 whose channels are the residual width"),
        "prunes nothing",
    ),
    ("hf_llama_gqa", "block"): XFail(
        "BlockPruning crashes tracing LlamaForCausalLM at its first step: torch-pruning's graph reads .grad_fn of the "
        "output, a tuple (AttributeError: 'tuple' object has no attribute 'grad_fn')",
        "crash",
    ),
    ("tv_resnet18", "block"): XFail(
        "BlockPruning on torchvision's ResNet-18 (all 8 BasicBlocks at step_ratio 0.5 after 2 epochs, then 2 more) "
        "ends at about 0.41 validation accuracy against 0.97 for plain training",
        "-56 pt",
    ),
    # -- the ICE trio
    ("depthwise_cnn", "ice"): XFail(f"ends 12.6 pt below plain training: {ICE_LR}", "-13 pt"),
    ("tv_mobilenet_v3", "ice"): XFail(f"ends 23 pt below plain training: {ICE_LR}", "-23 pt"),
    ("tv_convnext", "ice"): XFail(
        "ends 10 pt below plain training (0.78 vs 0.88): PruningAwareLR's default base_lr=0.001 (3e-4 once 15 % is "
        "pruned) replaces the user's AdamW rate (3e-3 with warm-up) in both fine-tunes",
        "-10 pt",
    ),
    ("mlp", "ice"): XFail(NO_CONV_TO_FREEZE, "refuses"),
    ("hf_bert", "ice"): XFail(NO_CONV_TO_FREEZE, "refuses"),
    ("hf_llama_gqa", "ice"): XFail(NO_CONV_TO_FREEZE, "refuses"),
    ("hf_vit", "ice"): XFail(
        "AccuracyGate refuses dict batches at fit start ('needs (x, y) validation batches ... the first validation "
        "batch is a dict'), although core.model_io reads them for every other callback",
        "refuses dicts",
    ),
    # -- AnytimeProgressivePruning
    ("depthwise_cnn", "app"): XFail("ends 15.6 pt below plain training (0.80 vs 0.95) at the same sparsity", "-16 pt"),
    ("mlp", "app"): XFail("ends 11 pt below plain training (0.81 vs 0.92) at the same sparsity", "-11 pt"),
    ("vit", "app"): XFail("ends 10 pt below plain training (0.84 vs 0.94) at the same sparsity", "-10 pt"),
    ("hf_bert", "app"): XFail("ends at chance level (0.12 vs 0.65 for plain training)", "-53 pt"),
    ("hf_vit", "app"): XFail("ends 34 pt below plain training (0.46 vs 0.80)", "-34 pt"),
    ("hf_llama_gqa", "app"): XFail("ends 6 pt below plain training (next-token 0.30 vs 0.36)", "-6 pt"),
    ("timm_vit", "app"): XFail("ends 26 pt below plain training (0.54 vs 0.80)", "-26 pt"),
    ("tv_convnext", "app"): XFail("ends 12 pt below plain training (0.76 vs 0.88)", "-12 pt"),
    # -- InstantSoupPruning
    ("depthwise_cnn", "soup"): XFail("ends 6 pt below plain training (0.89 vs 0.95)", "-6 pt"),
    ("tv_mobilenet_v3", "soup"): XFail("ends 35 pt below plain training (0.31 vs 0.66)", "-35 pt"),
    # -- DenseUnitPruning
    ("vit", "dense_unit"): XFail(
        "DenseUnitPruning crashes at setup on nn.MultiheadAttention: odf2nna.graph looks up its out_proj "
        "(NonDynamicallyQuantizableLinear) in the traced graph, KeyError; issue 21 wants the block's MLP pruned",
        "crash",
    ),
    ("hf_bert", "dense_unit"): XFail(DICT_INPUT["dense_unit"], "crash"),
    ("hf_vit", "dense_unit"): XFail(DICT_INPUT["dense_unit"], "crash"),
    ("hf_llama_gqa", "dense_unit"): XFail(DICT_INPUT["dense_unit"], "crash"),
    ("timm_vit", "dense_unit"): XFail(
        "DenseUnitPruning refuses the timm ViT at setup ('nn.Linear blocks.0.attn.qkv is not part of a plain "
        "feed-forward stack'): issue 21 wants a transformer's MLP (fc1 -> GELU -> fc2) pruned, not refused",
        "refuses",
    ),
    ("tv_mobilenet_v3", "dense_unit"): XFail(
        "DenseUnitPruning prunes the classifier's 1024-unit Linear stack (31 % of the parameters) and ends 19 pt "
        "below plain training (0.47 vs 0.66)",
        "-19 pt",
    ),
    # -- LatencyBudgetPruning (budget 0.8 of dense)
    # (the planner's cuts and its calibration time follow the timing of a shared CPU: their outcome varies from run
    # to run, so these are not strict; its crashes are)
    ("depthwise_cnn", "latency_budget"): XFail(
        "overshoots a 0.8 budget on depthwise blocks: 0.66-0.75 of dense latency with 78-93 % of the parameters "
        "removed, accuracy 44-62 pt below plain training",
        "overshoots",
        strict=False,
    ),
    ("resnet", "latency_budget"): XFail(
        "overshoots a 0.8 budget: 0.67-0.78 of dense latency with 60-83 % of the parameters removed, accuracy 4.5 to "
        "21.5 pt below plain training from run to run",
        "overshoots",
        strict=False,
    ),
    ("vit", "latency_budget"): XFail(
        "overshoots a 0.8 budget on the ViT: 0.22-0.75 of dense latency with 74-98 % of the parameters removed, "
        "accuracy 5 to 73 pt below plain training from run to run",
        "overshoots",
        strict=False,
    ),
    ("tv_convnext", "latency_budget"): XFail(
        "on ConvNeXt's depthwise 7x7 blocks the planner either overshoots (0.73 of dense for a 0.8 budget, 61 % of "
        "the parameters removed, -8 pt) or misses the budget (1.08-1.12 of dense, 9 % removed) from run to run",
        "overshoots / misses",
        strict=False,
    ),
    ("tv_resnet18", "latency_budget"): XFail(
        "calibration (dense timing and the latency table) on ResNet-18 runs past the cell's 30 s CPU limit with no "
        "step taken (over 22 s of CPU before the first step in every run seen)",
        "too slow",
        strict=False,
    ),
    ("tv_mobilenet_v3", "latency_budget"): XFail(
        "calibration and planning on MobileNetV3's grouped convs take 20-30+ s of CPU: past the cell's limit in two "
        "runs of three, within it (budget met) in the third",
        "too slow",
        strict=False,
    ),
    ("timm_vit", "latency_budget"): XFail(
        "crashes in the first fine-tune after a step: the qkv Linear is cut without the heads' attributes, timm's "
        "Attention reshapes to the old head size (RuntimeError: shape '[64, 5, 3, 2, 16]' is invalid)",
        "crash",
    ),
    ("hf_bert", "latency_budget"): XFail(DICT_INPUT["latency_budget"], "crash"),
    ("hf_vit", "latency_budget"): XFail(DICT_INPUT["latency_budget"], "crash"),
    ("hf_llama_gqa", "latency_budget"): XFail(
        "LatencyBudgetPruning crashes at setup tracing LlamaForCausalLM: torch-pruning's graph reads .grad_fn of a "
        "tuple output (AttributeError)",
        "crash",
    ),
    # -- LatencyBenchmark
    ("hf_bert", "latency_benchmark"): XFail(DICT_INPUT["latency_benchmark"], "crash"),
    ("hf_vit", "latency_benchmark"): XFail(DICT_INPUT["latency_benchmark"], "crash"),
    ("hf_llama_gqa", "latency_benchmark"): XFail(DICT_INPUT["latency_benchmark"], "crash"),
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
