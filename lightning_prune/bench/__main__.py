"""``python -m lightning_prune.bench NAME [overrides]``: compose ``conf/bench/NAME/main.yaml`` and run it.

``--cfg`` prints the composed config instead of running (every setting the run would use).
"""

from __future__ import annotations

import importlib
import sys

from omegaconf import OmegaConf

from lightning_prune.bench._compose import available, compose_benchmark, recorder

USAGE = "usage: python -m lightning_prune.bench NAME [key=value ...] [scale=quick] [ablation=NAME] [--cfg]"


def dispatch(argv: list[str]) -> int:
    names = available()
    if not argv or argv[0] not in names:
        given = argv[0] if argv else "nothing"
        print(f"{USAGE}\nNAME is one of {names}, got {given}")
        return 2
    name, overrides = argv[0], [arg for arg in argv[1:] if arg != "--cfg"]
    cfg = compose_benchmark(name, overrides)
    if "--cfg" in argv:
        print(OmegaConf.to_yaml(cfg))
        return 0
    module = importlib.import_module(f"lightning_prune.bench.{name}")
    module.run(cfg, recorder(name, overrides, cfg))
    return 0


if __name__ == "__main__":
    sys.exit(dispatch(sys.argv[1:]))
