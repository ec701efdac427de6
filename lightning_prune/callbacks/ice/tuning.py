"""ICE-Pruning's two-stage tuning: the stage-1 search space and objective, and reading stage 1's result.

Stage 1 (``hparams_search=ice_stage1_optuna``) runs the whole ICE pipeline on a small training subset
for a few sampled points of :data:`STAGE1_SPACE` and minimises :func:`bounded_time_objective`;
stage 2 (``python -m lightning_prune.callbacks.ice.stage2``) runs the full recipe with the best point, read by
:func:`best_overrides` from the sweep's ``optimization_results.yaml``.

On the objective: the paper's code minimises ``t/m + Δ/m`` with ``m = max(t, Δ)`` (``t`` wall
seconds, ``Δ`` accuracy drop). Whenever ``t > Δ`` (nearly always) that is ``1 + Δ/t``, which
*rewards longer runs*: a slower trial with the same drop scores better. We use a sound objective
instead: the accuracy drop is a constraint (``<= max_drop_pt``), and among trials that meet it the
fastest wins; a trial that breaks it is charged ``penalty_s_per_pt`` seconds per point over.

Against what is the drop measured? By default against ``A0``, the unpruned model's accuracy. On a
small subset that bound is unfair to every trial: one-epoch fine-tunes on a few hundred images do not
recover what full-data ones do, so even the traditional pipeline ends several points below ``A0`` and
every trial is penalised alike (the search then learns nothing). Give ``reference_acc``, the accuracy
the traditional pipeline (a fine-tune after every step) reaches on the same subset and batches, and the
bound becomes the issue's criterion: ICE may lose at most ``max_drop_pt`` against iterative pruning.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

# The search space of stage 1 (config key -> choices), the paper's ResNet grid (methods.md) scaled to
# the fine-tune rates of our small models; thresholds as large as the paper's DenseNet/WRN ones (5-10),
# since the recipe fine-tunes after the last step (``finetune_last``) whatever the gate says.
# conf/hparams_search/ice_stage1_optuna.yaml spells the same choices (a test keeps them equal); the
# benchmark samples from this dict.
STAGE1_SPACE: dict[str, list[float]] = {
    "callbacks.ice_gate.threshold": [2.0, 4.0, 8.0],
    "callbacks.ice_freezing.fraction": [0.3, 0.6],
    "callbacks.ice_lr.base_lr": [0.01, 0.02],
    "callbacks.ice_lr.p": [0.1, 0.15, 0.2],
    "callbacks.ice_lr.beta": [40, 50, 60],
    "callbacks.ice_lr.delta": [0.004, 0.006, 0.008],
}
RESULTS_FILE = "optimization_results.yaml"


def bounded_time_objective(
    metrics: Mapping[str, float],
    max_drop_pt: float = 1.0,
    penalty_s_per_pt: float = 1000.0,
    time_key: str = "run/fit_s",
    reference_acc: float | None = None,
) -> float:
    """Seconds to minimise: the run's time, plus a penalty per point of accuracy lost beyond the bound.

    The drop is ``100 * (reference - ice/acc_final)``: the accuracy at the end of the run, measured by
    :class:`~lightning_prune.AccuracyGate`, below ``reference_acc`` when given (the traditional
    pipeline's final accuracy on the same data and batches), else below ``ice/acc_reference`` (the
    unpruned model's, on the same batches).

    Raises:
        KeyError: naming the metric that is missing (a run without the gate cannot be scored).

    Example::

        >>> m = {"run/fit_s": 30.0, "ice/acc_reference": 0.95, "ice/acc_final": 0.945}
        >>> bounded_time_objective(m), round(bounded_time_objective(m, max_drop_pt=0.1), 6)
        (30.0, 430.0)
        >>> round(bounded_time_objective(m, max_drop_pt=0.1, reference_acc=0.9455), 6)  # 0.05 pt below it
        30.0
    """
    for key in (time_key, "ice/acc_reference", "ice/acc_final"):
        if key not in metrics:
            raise KeyError(
                f"bounded_time_objective needs metric {key!r} (from AccuracyGate / run.py); got {sorted(metrics)}"
            )
    reference = metrics["ice/acc_reference"] if reference_acc is None else reference_acc
    drop_pt = 100.0 * (reference - metrics["ice/acc_final"])
    return float(metrics[time_key]) + penalty_s_per_pt * max(0.0, drop_pt - max_drop_pt)


def best_overrides(path: str | Path) -> list[str]:
    """Hydra overrides ``key=value`` for the best parameters of a finished stage-1 sweep.

    ``path`` is the sweep's ``optimization_results.yaml`` or the sweep directory holding it.

    Raises:
        FileNotFoundError: when there is no results file there.
        ValueError: when the file has no ``best_params``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no stage-1 results; run stage 1 first (see docs/ice.md)")
    results = yaml.safe_load(path.read_text()) or {}
    params = results.get("best_params")
    if not isinstance(params, Mapping) or not params:
        raise ValueError(f"{path}: has no best_params mapping (is it Optuna's {RESULTS_FILE}?)")
    return [f"{key}={value}" for key, value in params.items()]
