"""ICE-Pruning stage 2: ``python -m lightning_prune.callbacks.ice.stage2 STAGE1_RESULTS [overrides...]``.

Runs ``python -m lightning_prune.run recipe=ice_pruning`` with the best parameters of a stage-1 sweep
(its ``optimization_results.yaml``, or the sweep directory) and any further Hydra overrides, which
take precedence. Example::

    python -m lightning_prune.run -m recipe=ice_pruning hparams_search=ice_stage1_optuna
    python -m lightning_prune.callbacks.ice.stage2 multirun/ice_stage1/<date_time> seed=1
"""

from __future__ import annotations

import subprocess
import sys

from lightning_prune.callbacks.ice.tuning import best_overrides


def stage2_argv(results: str, overrides: list[str]) -> list[str]:
    """The command line of the stage-2 run: recipe, stage 1's best parameters, then the user's overrides."""
    return ["recipe=ice_pruning", "task_name=ice_stage2", *best_overrides(results), *overrides]


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-") or "=" in argv[0]:
        print(__doc__)
        return 2
    # A child process: Hydra finds conf/ relative to the app it runs as ``python -m lightning_prune.run``.
    return subprocess.call([sys.executable, "-m", "lightning_prune.run", *stage2_argv(argv[0], argv[1:])])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
