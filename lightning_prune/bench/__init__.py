"""Benchmarks: ``python -m lightning_prune.bench NAME [overrides]`` composes ``conf/bench/NAME/main.yaml``.

Each runs its arms side by side in one process and records its JSON with the command and commit.
"""
