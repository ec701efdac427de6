"""What :class:`~lightning_prune.callbacks.latency_budget.LatencyBudgetPruning` checkpoints beside its PruningState."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class BudgetState:
    """The calibration and the architecture of a run, as plain values (checkpoints load with ``weights_only``).

    Attributes:
        dense_ms: the dense model's latency measured at fit start (``None`` until then).
        budget_ms: the budget fixed from it.
        scale: the latency table's factor to whole-model milliseconds, rescaled after each step.
        budgets: every step's target on HALP's exponential schedule.
        original_weights: conv/linear weights of the dense model (the sparsity's denominator).
        architecture: the pruned layers' shapes, so a fresh model is resized on load.
        original_params: parameters of the dense model (``None`` in checkpoints older than this field).
        overhead: the milliseconds of the whole model that do not shrink with its channels (see
            :func:`~lightning_prune.core.latency_budget.measure.whole_model_fit`; 0 in older checkpoints).
    """

    dense_ms: float | None = None
    budget_ms: float | None = None
    scale: float = 1.0
    budgets: list[float] = field(default_factory=list)
    original_weights: int = 0
    architecture: dict[str, Any] | None = None
    original_params: int | None = None
    overhead: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> BudgetState:
        """Tolerant of missing keys (an older checkpoint): they keep their defaults."""
        loaded = cls(**{f.name: state[f.name] for f in fields(cls) if f.name in state})
        loaded.budgets = list(loaded.budgets)
        return loaded
