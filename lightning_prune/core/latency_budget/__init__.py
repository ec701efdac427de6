"""Latency-aware structured pruning in pure torch: what :class:`LatencyBudgetPruning` decides with.

- ``table.py``: the latency lookup table, milliseconds per layer shape, timed on the target device.
- ``fit.py``: each layer shape's latency as an affine function of its channels, from at most 5 timed shapes.
- ``network.py``: the model as channel groups (torch-pruning's dependency graph) and timed layers, with
  SP-LAMP scores per group.
- ``knapsack.py``: the exact group (multiple-choice) knapsack.
- ``plan.py``: how many channels each group keeps under a latency budget (table + knapsack).
- ``measure.py``: timing policy on a shared machine: second opinions, side-by-side ratios to a dense
  copy, bounded rescaling of the table.
- ``planner.py``: rank 0's work of a run (calibrate the table, decide a step, measure the result).

The shared timing primitives (settings, percentiles, interleaved rounds) are :mod:`lightning_prune.core.timing`.
"""
