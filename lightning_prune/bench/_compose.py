"""Benchmarks as Hydra configs: ``python -m lightning_prune.bench NAME [overrides]``.

Every setting of benchmark NAME sits in one YAML, ``conf/bench/NAME/main.yaml``; two optional groups
beside it only override: ``scale/`` (``scale=quick``: a smoke-sized run that checks the pipeline, not
the claim) and ``ablation/`` (``ablation=compensation_mean``: one switched-off or swapped part). The
benchmark's code is ``lightning_prune/bench/NAME.py`` (or a package of that name) with
``run(cfg, record)``: it measures, and hands its result to ``record`` as often as it likes (a long run
writes as it goes); ``record`` adds what makes the figures reproducible — the command, the commit, the
date, the host's load and the composed config — and writes ``cfg.out``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from lightning_prune.core.export import to_jsonable

REPO = Path(__file__).resolve().parents[2]
BENCH_CONF = REPO / "conf" / "bench"

Record = Callable[..., Path]


class Benchmark(Protocol):
    """What ``lightning_prune/bench/NAME.py`` provides."""

    def run(self, cfg: DictConfig, record: Record) -> None: ...


def available(conf_root: Path = BENCH_CONF) -> list[str]:
    """The benchmarks: every ``conf/bench/NAME/main.yaml``."""
    return sorted(path.parent.name for path in conf_root.glob("*/main.yaml"))


def compose_benchmark(name: str, overrides: Sequence[str] = (), conf_root: Path = BENCH_CONF) -> DictConfig:
    """The composed config of benchmark ``name`` with command-line ``overrides``.

    Raises:
        ValueError: naming the benchmark and the available ones when ``name`` is not one.
    """
    names = available(conf_root)
    if name not in names:
        raise ValueError(f"no benchmark named {name!r}; available: {names}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_root / name), version_base="1.3", job_name=f"bench_{name}"):
        cfg = compose(config_name="main", overrides=list(overrides))
    GlobalHydra.instance().clear()
    return cfg


def recorder(name: str, overrides: Sequence[str], cfg: DictConfig) -> Record:
    """A ``record(result, complete=True)`` that writes ``result`` with its provenance to ``cfg.out``."""
    started = _now()
    load_at_start = _load()
    command = shlex.join(["python", "-m", "lightning_prune.bench", name, *overrides])

    def record(result: dict[str, Any], complete: bool = True) -> Path:
        provenance = {
            "command": command,
            "commit": _commit(),
            "started": started,
            "written": _now(),
            "host_load": {"at_start": load_at_start, "at_write": _load(), "cpus": os.cpu_count()},
            "complete": complete,
            "config": OmegaConf.to_container(cfg, resolve=True),
        }
        path = Path(cfg.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(to_jsonable({**result, "provenance": provenance}), indent=2) + "\n")
        return path

    return record


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _load() -> list[float] | None:
    """1, 5 and 15-minute load averages: a busy host is why two timings of one thing disagree."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _commit() -> str | None:
    """The checked-out commit, with ``-dirty`` when tracked files differ from it; None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")
