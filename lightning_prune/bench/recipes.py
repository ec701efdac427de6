"""What each recipe costs and ends with: ``python -m lightning_prune.bench recipes``.

Every ``recipes/*.yaml`` (globbed at run time, so a new recipe is measured without editing anything) runs
as a user runs it, ``python -m lightning_prune.run recipe=<name> seed=<seed>``, in its own process with
``OMP_NUM_THREADS`` fixed, from an empty working directory (so nothing a previous run left, such as a
latency table, is reused: the time is a first run's). Per recipe the JSON keeps the command's wall time
(Python start-up included), the fit time the app measured, the recipe's ``optimized_metric`` and the
final sparsity and parameter counts from its ``summary.json``, and the first line of its header.
``TABLES["table"]`` is the README's recipe table.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lightning_prune.bench._compose import REPO, Record
from lightning_prune.bench.docs import load_result
from lightning_prune.report.derived import final_figures
from lightning_prune.report.read import load_run

RECIPES_DIR = REPO / "recipes"
RESULT = "docs/bench/recipes/recipes.json"


def recipe_names(only: Sequence[str] = (), recipes_dir: Path = RECIPES_DIR) -> list[str]:
    """Every recipe in ``recipes_dir``, or those named in ``only`` (in its order).

    Raises:
        ValueError: naming an unknown recipe and the available ones.
    """
    names = sorted(path.stem for path in recipes_dir.glob("*.yaml"))
    unknown = [name for name in only if name not in names]
    if unknown:
        raise ValueError(f"only={list(only)}: no recipe named {unknown}; available: {names}")
    return list(only) or names


def description(path: Path) -> str:
    """The first line of a recipe's header comment ("" when it has none)."""
    first = next(iter(path.read_text().splitlines()), "")
    return first.lstrip("#").strip() if first.startswith("#") else ""


def command(name: str, seed: int, overrides: Sequence[str] = ()) -> list[str]:
    return ["python", "-m", "lightning_prune.run", f"recipe={name}", f"seed={seed}", *overrides]


def run_recipe(name: str, cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Run one recipe in a subprocess into ``run_dir`` and read back its figures."""
    wall_s = _launch(name, cfg, run_dir)
    run = load_run(run_dir)
    metric = OmegaConf.load(run_dir / "config.yaml").get("optimized_metric") or "test/acc"
    metrics = run.summary["run"]["metrics"]
    figures = final_figures(run)
    return {
        "command": " ".join(command(name, cfg.seed, cfg.overrides)),
        "description": description(RECIPES_DIR / f"{name}.yaml"),
        "wall_s": wall_s,
        "fit_s": metrics.get("run/fit_s"),
        "metric": metric,
        "value": metrics.get(metric),
        "sparsity": figures.get("sparsity"),
        "params": figures.get("params"),
        "params_nonzero": figures.get("params_nonzero"),
        "epochs": run.summary["run"].get("epochs"),
    }


def _launch(name: str, cfg: DictConfig, run_dir: Path) -> float:
    """The wall seconds of ``python -m lightning_prune.run recipe=<name> ...`` started in ``run_dir``.

    Raises:
        RuntimeError: when the run fails or times out, with the end of its log.
    """
    run_dir.mkdir(parents=True)
    # The progress bar is off only because the output goes to a log file.
    extra = [f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false"]
    args = [sys.executable, *command(name, cfg.seed, cfg.overrides)[1:], *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg.threads), "PYTHONUNBUFFERED": "1"}
    # This checkout's code, whatever is installed; the working directory is the empty run directory.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # conf/data/mnist.yaml's default data_dir is relative to the repository root, where users start runs.
    env.setdefault("LIGHTNING_PRUNE_MNIST", str((REPO / ".." / "shared" / "data" / "mnist").resolve()))
    log_path = run_dir / "bench.log"
    started = time.perf_counter()
    with log_path.open("w") as log:
        try:
            done = subprocess.run(
                args, cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=cfg.timeout_s
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"recipe {name} ran past timeout_s={cfg.timeout_s}:\n{_tail(log_path)}") from None
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"recipe {name} failed (exit {done.returncode}):\n{_tail(log_path)}")
    return wall_s


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run(cfg: DictConfig, record: Record) -> None:
    results: dict[str, dict[str, Any]] = {}
    names = recipe_names(list(cfg.only))
    with tempfile.TemporaryDirectory(prefix="lp-bench-recipes-") as scratch:
        root = Path(cfg.run_root) if cfg.run_root else Path(scratch)
        for name in names:
            results[name] = run_recipe(name, cfg, root / name)
            record({"recipes": results}, complete=name == names[-1])


def table(path: str = RESULT) -> str:
    """The README's recipe table: what each recipe is, its command, its measured wall time and result."""
    result = load_result(path)
    provenance = result["provenance"]
    config, load = provenance["config"], provenance["host_load"]
    lines = [f"| recipe | method | command | wall time | result (seed {config['seed']}) |", "|---|---|---|---|---|"]
    for name, entry in result["recipes"].items():
        method = entry["description"].split(": ")[0]
        lines.append(
            f"| `{name}` | {method} | `{entry['command']}` | {_duration(entry['wall_s'])} | {_outcome(entry)} |"
        )
    lines += [
        "",
        f"Wall time of the whole command (Python start-up included) with `OMP_NUM_THREADS={config['threads']}` "
        f"on {load['cpus']} CPU cores{_load(load['at_start'])}; measured by "
        f"`{provenance['command']}`.",
    ]
    return "\n".join(lines)


def _load(at_start: list[float] | None) -> str:
    return "" if not at_start else f", load {at_start[0]} at start"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _outcome(entry: dict[str, Any]) -> str:
    value = entry["value"]
    text = f"{entry['metric']} {value:.3f}" if value is not None else f"{entry['metric']} not logged"
    return text if entry["sparsity"] is None else f"{text} at sparsity {entry['sparsity']:.2f}"


TABLES = {"table": table}
