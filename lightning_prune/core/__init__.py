"""Framework-free pruning engine: masks, scores, schedules, selection, structured removal, export.

Nothing here imports Lightning, so the same engine runs inside callbacks, benchmarks and plain scripts.
"""
