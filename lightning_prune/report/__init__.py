"""Pruning reports: ``python -m lightning_prune.report PATH`` writes ``report.md`` and PNG plots.

``PATH`` is a run directory (it holds ``summary.json``) or a Hydra sweep directory (job subdirectories
``0/``, ``1/``, ... each with ``summary.json`` and ``.hydra/overrides.yaml``). For a sweep every job gets
its own report, and the sweep directory gets a comparison table and a Pareto plot, jobs labelled by their
swept settings. Nothing is re-run: the report reads only the files below, and skips (saying why in
``report.md``) what is absent. The same readings print on the console (:mod:`~lightning_prune.report.console`):
at the end of every run of the app, and at the end of every sweep (the Hydra callback
:class:`~lightning_prune.report.hydra_callback.SweepSummary`, which also writes the sweep's ``report.md``).

What the report reads
---------------------
``summary.json``: one JSON object, one section per callback (written with
:func:`lightning_prune.core.summary.write_summary`), plus ``run`` from the app. Every key is optional.

``run`` (the app; in your own Trainer, :func:`lightning_prune.report.console.run_record` writes the same)
    ``metrics`` ``{name: float}`` (e.g. ``test/acc``, ``test/loss``), ``wall_s``, ``seed``, ``epochs``;
    ``data`` and ``model`` (str: what ran, e.g. ``digits (DigitsDataModule)``); ``size`` ``{"dense": {...},
    "pruned": {...}}``, each with ``params``, ``params_nonzero`` and ``macs`` (Conv/Linear multiply-accumulates
    per example, ``null`` where not computable), the dense one measured before fitting.

any section ``<name>``
    ``history``: list of per-step records. A section whose records carry ``sparsity`` is a *pruner*
    (``iterative``, ``instant_soup``, ``odf2nna``, ...); its records may hold:

    - ``step`` (int, 1-based), ``epoch`` (the epoch at whose start the step ran), ``sparsity`` (after it);
    - accuracy as fractions: ``acc_before`` or ``<monitor>_before`` (e.g. ``val/acc_before``: the last
      validation before the step), ``acc_after`` (measured right after pruning, before any fine-tune),
      ``acc_finetuned`` (after the step's fine-tune; when absent it is read from the CSV log: the monitor's
      value at the last epoch before the next step);
    - ``finetune``: ``"ran"``, ``"skipped"`` or ``"none"``; ``reason`` (str): why it was skipped;
    - ``latency_ms`` / ``p50_ms`` / ``latency/p50_ms`` / ``measured_ms``: latency measured after the step;
    - any other scalar (``drop_pt``, ``prune_s``, ``block``, ...) is shown as detail; lists and dicts are not.

    Sections whose records have no ``sparsity`` (a gate's decisions, an LR schedule) get a plain table.

    ``time_s`` ``{phase: seconds}``: wall time per phase (the pruner's ``dense``, ``prune``, ``evaluate``,
    ``finetune``; others may add e.g. ``lut``, ``ingredients``, ``knapsack``).
    ``layer_sparsity`` ``{layer: fraction}``; ``widths_before`` / ``widths_after`` ``{layer: units kept}``.
    ``sparsity`` (final) or ``param_reduction``; ``params``, ``params_nonzero`` (or ``params_after``);
    ``finetunes_skipped``; ``metrics`` ``{name: float}`` (``val/acc``, ``prune/sparsity``, ``latency/...``).

latency (milliseconds per batch; every source found is shown, the first is the primary one)
    a ``latency/p50_ms`` metric (dense: ``latency/dense_p50_ms``); LatencyBenchmark's section: a ``history``
    whose records hold ``p50_ms`` ``{batch: ms}`` (the ``when: fit_start`` record is the dense reference,
    the last the final model), else its ``latency/<batch>/p50_ms`` and ``latency/<batch>/speedup`` metrics
    (the largest batch is primary); a latency-budget section's final check ``measured_ms`` against
    ``dense_ms`` at ``batch_size``; a ``*latency*`` section's ``p50_ms`` / ``dense_p50_ms``.

``csv/metrics.csv`` (Lightning's CSVLogger): per-epoch columns ``val/acc`` (or the monitor),
``prune/sparsity`` and the primary latency's column (``latency/<batch>/p50_ms``, ``latency/measured_ms`` or
``latency/p50_ms``) give the timeline and the per-epoch latency-accuracy points.
``.hydra/overrides.yaml``: a job's command-line overrides; in a sweep, the ones that differ between jobs
label the job (``target_sparsity=0.8``) in the comparison and on the Pareto plot.
"""

from lightning_prune.report.read import Run, Step, load_run
from lightning_prune.report.write import find_runs, write_report

__all__ = ["Run", "Step", "find_runs", "load_run", "write_report"]
