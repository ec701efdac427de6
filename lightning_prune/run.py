"""The Hydra app: ``python -m lightning_prune.run recipe=<name> [overrides]``.

Composes ``conf/`` (data, model, trainer, callbacks, logger) with a recipe from ``recipes/``, trains
and prunes, tests, writes ``summary.json`` in Hydra's run directory (with the data and model that ran and
their dense and pruned sizes), writes beside a pruning callback's ``pruned_model.pt`` the record that
rebuilds its model from this config (``lightning_prune.load_model``), and the deployable copies that
``export.formats`` asks for (ONNX, safetensors, a ``torch.export`` program), and returns ``cfg.optimized_metric``
so sweepers (Optuna, basic, joblib, submitit) can optimise it. Without a recipe it lists the recipes and
exits (``dense=true`` trains without pruning on purpose).
"""

from __future__ import annotations

import logging
import sys
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
from lightning_prune.core.deploy import check_formats, export_for_deploy
from lightning_prune.core.export import model_size, write_model_record, write_summary
from lightning_prune.report.console import describe, print_summary, run_record

log = logging.getLogger(__name__)
# lightning 2.6 + torch 2.13 warn about a pytree internal on every fit; it says nothing about the user's run.
warnings.filterwarnings("ignore", message=".*LeafSpec.*")
RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"
EXPORT = "pruned_model.pt"
_HYDRA_KEYS = ("_convert_", "_recursive_", "_partial_", "_args_")


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


def recipe_descriptions(recipes_dir: Path = RECIPES_DIR) -> dict[str, str]:
    """``{name: description}``: each recipe's first header paragraph (its ``#`` lines up to a bare ``#``), joined."""
    descriptions = {}
    for path in sorted(recipes_dir.glob("*.yaml")):
        lines = []
        for line in path.read_text().splitlines():
            if not line.startswith("#") or not line.strip("# "):
                break
            lines.append(line.lstrip("#").strip())
        descriptions[path.stem] = " ".join(lines)
    return descriptions


def no_recipe_message(recipes_dir: Path = RECIPES_DIR) -> str:
    """What a run without ``recipe=`` prints instead of training: the recipes, how to pick one, how to skip pruning."""
    descriptions = recipe_descriptions(recipes_dir)
    width = max(map(len, descriptions), default=0)
    listing = "\n".join(f"  {name:<{width}}  {text}" for name, text in descriptions.items())
    return (
        "No recipe chosen, so nothing would be pruned. The recipes:\n"
        f"{listing}\n"
        "Run one:  python -m lightning_prune.run recipe=<name>   (e.g. recipe=iterative)\n"
        "Train the dense model without pruning on purpose:  python -m lightning_prune.run dense=true"
    )


def check_recipe_chosen(recipe: str | None, dense: bool) -> None:
    """Refuse a run without a recipe (unless ``dense=true``), listing the recipes; refuse both together.

    Raises:
        SystemExit: code 2, after printing :func:`no_recipe_message` to stderr, when no recipe is chosen.
        ValueError: when ``dense=true`` comes with a recipe.
    """
    if recipe is None and not dense:
        print(no_recipe_message(), file=sys.stderr)
        raise SystemExit(2)
    if recipe is not None and dense:
        raise ValueError(f"dense=true trains without pruning; drop it or recipe={recipe}")


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


def model_config_record(cfg: DictConfig, datamodule: pl.LightningDataModule) -> dict[str, Any]:
    """How :func:`build` made the model, as a model record (``{"_target_": ..., "net": {"_target_": ...}}``)."""
    shape = {"input_shape": list(datamodule.input_shape), "num_classes": datamodule.num_classes}

    def plain(node: DictConfig) -> dict[str, Any]:
        values = OmegaConf.to_container(node, resolve=True)
        return {key: value for key, value in values.items() if key not in _HYDRA_KEYS}

    return {**plain(cfg.model.module), **shape, "net": {**plain(cfg.model.net), **shape}}


def names(cfg: DictConfig, module: pl.LightningModule, datamodule: pl.LightningDataModule) -> dict[str, str]:
    """``{"data": "digits (DigitsDataModule)", "model": "cnn (Classifier(net=SmallCNN))"}``: config choice, classes."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    classes = describe(module, datamodule)
    return {key: f"{choices[key]} ({classes[key]})" if choices.get(key) else classes[key] for key in ("data", "model")}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (resuming from ``cfg.ckpt_path`` if set), test, and write the run's summary."""
    output_dir = Path(cfg.paths.output_dir)
    check_resume_checkpoint(cfg.get("ckpt_path"))
    formats = check_formats(OmegaConf.select(cfg, "export.formats", default=None) or [], "export.formats")
    pl.seed_everything(cfg.seed, workers=True)
    started, started_at = time.perf_counter(), time.time()
    datamodule, module, trainer = build(cfg)
    example = getattr(module, "example_input_array", None)
    dense = model_size(module, example)
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
        summary.update({**run_record(module, datamodule, dense), **names(cfg, module, datamodule)})
        export = output_dir / EXPORT
        record = {"model": model_config_record(cfg, datamodule)}
        pruned = export.is_file() and export.stat().st_mtime >= started_at  # a pruning callback exported this run
        if pruned:
            write_model_record(export, record, "hydra config", summary["size"]["pruned"])
        path = write_summary(output_dir / "summary.json", "run", summary)
        OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
        if formats:  # last, so a failed export loses nothing written above
            stem = export.with_suffix("") if pruned else output_dir / "model"
            written = export_for_deploy(module, stem, formats, example, record, "hydra config")
            write_summary(path, "deploy", {fmt: file.name for fmt, file in written.items()})
            log.info("deployable copies: %s", ", ".join(str(file) for file in written.values()))
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
    check_recipe_chosen(HydraConfig.get().runtime.choices.get("recipe"), bool(cfg.get("dense")))
    log.info("output dir: %s", HydraConfig.get().runtime.output_dir)
    return metric_to_optimize(train(cfg), cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
