"""A Hydra callback that summarises a sweep when it ends (configured in ``conf/hydra/default.yaml``).

After the last job of ``python -m lightning_prune.run -m ...`` it writes the sweep's ``report.md``
(comparison table labelled by the swept settings, Pareto plot) into the sweep directory and prints the table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lightning_prune.report.console import print_sweep_summary

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    """``on_multirun_end``: :func:`~lightning_prune.report.console.print_sweep_summary` on the sweep directory."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = Path(config.hydra.sweep.dir)
        try:
            print_sweep_summary(path)
        except (FileNotFoundError, ValueError) as err:  # no job finished, or a summary.json is unreadable
            log.warning("no sweep summary: %s", err)
