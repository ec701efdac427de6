"""The Hydra app: ``python -m lightning_prune.run recipe=<name> [overrides]``.

Composes ``conf/`` (data, model, trainer, callbacks, logger) with a recipe from ``recipes/``, trains
and prunes, tests, writes ``summary.json`` in Hydra's run directory and returns
``cfg.optimized_metric`` so sweepers (Optuna, basic, joblib, submitit) can optimise it.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lightning_prune.callbacks._trainer import final_metrics
from lightning_prune.core.export import write_summary
from lightning_prune.summary import print_summary

log = logging.getLogger(__name__)
# lightning 2.6 + torch 2.13 warn about a pytree internal on every fit; it says nothing about the user's run.
warnings.filterwarnings("ignore", message=".*LeafSpec.*")
RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


def register_recipes(recipes_dir: Path = RECIPES_DIR) -> list[str]:
    """Make every ``recipes/*.yaml`` an option of the config group ``recipe`` (package ``_global_``).

    A Hydra group must live under a search-path root, and ``recipes/`` sits beside ``conf/`` so users
    find the recipes at the top of the repository; registering them in the ConfigStore keeps
    ``recipe=<name>``, ``--help`` listings and the "Available options" error working.
    """
    store = ConfigStore.instance()
    names = sorted(path.stem for path in recipes_dir.glob("*.yaml"))
    for name in names:
        store.store(group="recipe", name=name, node=OmegaConf.load(recipes_dir / f"{name}.yaml"), package="_global_")
    return names


def build(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule, pl.Trainer]:
    """Instantiate data, model and Trainer (with callbacks and loggers) from a composed config."""
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    shape = {"input_shape": list(datamodule.input_shape), "num_classes": datamodule.num_classes}
    # _convert_="all": plain lists and dicts, so hyper-parameters and callback state stay weights_only-loadable.
    net = instantiate(cfg.model.net, **shape, _convert_="all")
    module = instantiate(cfg.model.module, net=net, **shape, _convert_="all")
    callbacks = [
        instantiate(node, _convert_="all")
        for node in (cfg.get("callbacks") or {}).values()
        if node and "_target_" in node
    ]
    loggers = [
        instantiate(node, _convert_="all") for node in (cfg.get("logger") or {}).values() if node and "_target_" in node
    ]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, _convert_="all")
    return datamodule, module, trainer


def check_resume_checkpoint(path: str | None) -> None:
    """Fail before any work when ``ckpt_path`` is missing or unreadable, naming it.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when it does not load as a weights-only checkpoint (truncated, corrupt, not a checkpoint).
    """
    if path is None:
        return
    if not Path(path).is_file():
        raise FileNotFoundError(f"ckpt_path={path!r} does not exist (expected <run dir>/checkpoints/last.ckpt)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise ValueError(f"ckpt_path={path!r} is not a readable checkpoint: {type(err).__name__}: {err}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"ckpt_path={path!r} is not a Lightning checkpoint (no 'state_dict' entry)")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (resuming from ``cfg.ckpt_path`` if set), test, and write the run's summary."""
    output_dir = Path(cfg.paths.output_dir)
    check_resume_checkpoint(cfg.get("ckpt_path"))
    pl.seed_everything(cfg.seed, workers=True)
    started = time.perf_counter()
    datamodule, module, trainer = build(cfg)
    fit_started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    fit_s = time.perf_counter() - fit_started
    if cfg.get("test"):
        trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = final_metrics(trainer, "prune_layer/")
    # Wall time as a metric, and an optional objective computed from the metrics (ICE's stage-1 search).
    metrics["run/fit_s"] = fit_s
    if cfg.get("objective") is not None:
        metrics["objective"] = float(instantiate(cfg.objective)(metrics))
    summary = {
        "metrics": metrics,
        "wall_s": time.perf_counter() - started,
        "seed": cfg.seed,
        "epochs": trainer.current_epoch,
    }
    if trainer.is_global_zero:
        path = write_summary(output_dir / "summary.json", "run", summary)
        OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
        print_summary(path)
    return metrics


def metric_to_optimize(metrics: dict[str, float], name: str | None) -> float | None:
    """The value sweepers optimise.

    Raises:
        KeyError: naming ``optimized_metric`` and the metrics the run produced.
    """
    if name is None:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric={name!r} was not produced by this run; available: {sorted(metrics)}")
    return metrics[name]


register_recipes()


@hydra.main(version_base="1.3", config_path="../conf", config_name="run")
def main(cfg: DictConfig) -> float | None:
    """Entry point; returns ``cfg.optimized_metric``."""
    log.info("output dir: %s", HydraConfig.get().runtime.output_dir)
    return metric_to_optimize(train(cfg), cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
