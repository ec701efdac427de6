"""ODF2NNA's framework-free engine: find the hidden units of ``nn.Linear`` stacks, score them, rebuild smaller.

ODF2NNA (Balderas, Lastra & Benítez, "Optimizing dense feed-forward neural networks", *Neural Networks*
2024) keeps the hidden units whose output varies over the training data and rebuilds a narrower dense
net with the survivors' trained weights. One module per step:

- :mod:`~lightning_prune.core.odf2nna.graph`: which ``Linear`` layers are hidden layers of a plain stack.
- :mod:`~lightning_prune.core.odf2nna.units`: per-unit moments over the data, the scores, the keep rule.
- :mod:`~lightning_prune.core.odf2nna.replacement`: what replaces the removed units (mean, least squares).
- :mod:`~lightning_prune.core.odf2nna.rebuild`: the plan (decided once) and the in-place rebuild.
- :mod:`~lightning_prune.core.odf2nna.configs`: a Hugging Face config's ``intermediate_size`` after it.
- :mod:`~lightning_prune.core.odf2nna.tracing`: running and tracing the model on tensor or dict inputs.

The Lightning side is :class:`lightning_prune.callbacks.odf2nna.DenseUnitPruning`.
"""

from lightning_prune.core.odf2nna.configs import sync_configs
from lightning_prune.core.odf2nna.graph import HiddenLayer, LinearScan, find_hidden_layers, layer_widths, scan_linears
from lightning_prune.core.odf2nna.rebuild import COMPENSATIONS, RebuildPlan, plan_rebuild, rebuild_layers
from lightning_prune.core.odf2nna.replacement import REPLACEMENTS, Replacement, apply_replacement, replacement
from lightning_prune.core.odf2nna.units import (
    UNIT_STATISTICS,
    UnitMoments,
    collect_unit_moments,
    keep_units,
    unit_range,
    unit_std,
    unit_variance,
)

__all__ = [
    "COMPENSATIONS",
    "REPLACEMENTS",
    "UNIT_STATISTICS",
    "HiddenLayer",
    "LinearScan",
    "RebuildPlan",
    "Replacement",
    "UnitMoments",
    "apply_replacement",
    "collect_unit_moments",
    "find_hidden_layers",
    "keep_units",
    "layer_widths",
    "plan_rebuild",
    "rebuild_layers",
    "replacement",
    "scan_linears",
    "sync_configs",
    "unit_range",
    "unit_std",
    "unit_variance",
]
