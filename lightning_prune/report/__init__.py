"""Pruning reports: ``python -m lightning_prune.report PATH`` writes ``report.md`` and PNG plots.

``PATH`` is a run directory (it holds ``summary.json``) or a Hydra sweep directory (job subdirectories
``0/``, ``1/``, ... each with ``summary.json`` and ``.hydra/overrides.yaml``). For a sweep every job gets
its own report, and the sweep directory gets a comparison table and a Pareto plot. Nothing is re-run:
the report reads only the files below, and skips (saying why in ``report.md``) what is absent.

What the report reads
---------------------
``summary.json``: one JSON object, one section per callback (written with
:func:`lightning_prune.core.export.write_summary`), plus ``run`` from the app. Every key is optional.

``run`` (the app)
    ``metrics`` ``{name: float}`` (e.g. ``test/acc``, ``test/loss``, ``latency/p50_ms``), ``wall_s``,
    ``seed``, ``epochs``.

any section ``<name>``
    ``history``: list of per-step records. A section whose records carry ``sparsity`` is a *pruner*
    (``iterative``, ``instant_soup``, ``dense_unit_pruning``, ...); its records may hold:

    - ``step`` (int, 1-based), ``epoch`` (the epoch at whose start the step ran), ``sparsity`` (after it);
    - accuracy as fractions: ``acc_before`` or ``<monitor>_before`` (e.g. ``val/acc_before``: the last
      validation before the step), ``acc_after`` (measured right after pruning, before any fine-tune),
      ``acc_finetuned`` (after the step's fine-tune; when absent it is read from the CSV log: the monitor's
      value at the last epoch before the next step);
    - ``finetune``: ``"ran"``, ``"skipped"`` or ``"none"``; ``reason`` (str): why it was skipped;
    - ``latency_ms`` / ``p50_ms`` / ``latency/p50_ms``: latency measured after the step;
    - any other scalar (``drop_pt``, ``prune_s``, ``block``, ...) is shown as detail; lists and dicts are not.

    Sections whose records have no ``sparsity`` (a gate's decisions, an LR schedule) get a plain table.

    ``time_s`` ``{phase: seconds}``: wall time per phase (the pruner's ``dense``, ``prune``, ``evaluate``,
    ``finetune``; others may add e.g. ``lut``, ``ingredients``, ``knapsack``).
    ``layer_sparsity`` ``{layer: fraction}``; ``widths_before`` / ``widths_after`` ``{layer: units kept}``.
    ``sparsity`` (final) or ``param_reduction``; ``params``, ``params_nonzero`` (or ``params_after``);
    ``finetunes_skipped``; ``metrics`` ``{name: float}`` (``val/acc``, ``prune/sparsity``, ``latency/...``).

latency
    the final p50 latency is the metric ``latency/p50_ms`` (in ``run.metrics`` or any section's
    ``metrics``), else ``p50_ms`` of a section whose name contains ``latency``; the dense model's, shown as
    reference, is ``latency/dense_p50_ms`` or that section's ``dense_p50_ms``. Milliseconds per batch.

``csv/metrics.csv`` (Lightning's CSVLogger): per-epoch columns ``val/acc`` (or the monitor),
``prune/sparsity`` and ``latency/p50_ms`` give the timeline and the per-epoch latency-accuracy points.
``.hydra/overrides.yaml``: a job's command-line overrides, shown in the sweep comparison.
"""

from lightning_prune.report.read import Run, Step, load_run
from lightning_prune.report.write import find_runs, write_report

__all__ = ["Run", "Step", "find_runs", "load_run", "write_report"]
