"""Benchmarks: ``python -m lightning_prune.bench NAME --out FILE.json``, arms side by side in one process."""
