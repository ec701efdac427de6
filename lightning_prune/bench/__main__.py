"""Dispatch ``python -m lightning_prune.bench NAME [args]`` to ``lightning_prune/bench/NAME.py:main``."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import lightning_prune.bench as package


def available() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(package.__path__) if not info.name.startswith("_"))


def dispatch(argv: list[str]) -> int:
    names = available()
    if not argv or argv[0] not in names:
        given = argv[0] if argv else "nothing"
        print(f"usage: python -m lightning_prune.bench NAME [--out FILE.json] ...; NAME one of {names}, got {given}")
        return 2
    module = importlib.import_module(f"lightning_prune.bench.{argv[0]}")
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(dispatch(sys.argv[1:]))
