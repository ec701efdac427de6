"""Ship a pruned model where it runs: safetensors + JSON record, ONNX, and a ``torch.export`` program.

Pruned weights are already zero in the model (masks are held in place, see :mod:`~lightning_prune.core.masks`)
and structured pruning removed channels for real, so every format exports the module as it is: the zeros
and the smaller layers travel with it. What cannot be seen as folded is refused, naming the layer: a
``torch.nn.utils.prune`` reparametrisation (``weight_orig * weight_mask``) or a ``parametrize`` wrapper.

- ``safetensors``: ``<stem>.safetensors`` (tensors only) and ``<stem>.safetensors.json``, the model record of
  :mod:`~lightning_prune.core.model_record` (class path and constructor arguments) plus the layer shapes;
  :func:`load_safetensors` rebuilds the model, shrinks its layers to the saved shapes and loads the tensors,
  with no pickle anywhere.
- ``onnx``: ``<stem>.onnx`` from ``torch.onnx.export(..., dynamo=True)``, weights inside the file, batch
  dimension dynamic where the model allows it; run it with ONNX Runtime.
- ``torch_export``: ``<stem>.pt2`` from ``torch.export.save``; ``torch.export.load(path).module()`` runs it.

Each file is written to a temporary name and renamed, so a failed export leaves no partial file and never
touches what was written before it. Needs ``pip install 'lightning-prune[deploy]'`` (onnx, onnxscript,
onnxruntime, safetensors).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_prune.core.export import (
    RECORD_FORMAT,
    build_from_record,
    load_checked,
    model_record,
    model_size,
    to_jsonable,
)
from lightning_prune.core.structured import architecture_spec
from lightning_prune.core.validate import check_output_file

FORMATS = {"onnx": ".onnx", "safetensors": ".safetensors", "torch_export": ".pt2"}
_NEEDS = {"onnx": ("onnx", "onnxscript"), "safetensors": ("safetensors",), "torch_export": ()}


def check_formats(formats: Any, name: str = "formats") -> list[str]:
    """The requested formats as a list, refused at once if unknown or if their packages are missing.

    Raises:
        ValueError: naming the unknown format and the allowed ones.
        ImportError: naming the missing packages and the extra that installs them.
    """
    if isinstance(formats, str) or not isinstance(formats, Sequence):
        raise ValueError(f"{name} must be a list of formats from {list(FORMATS)}, got {formats!r}")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"{name}: unknown format(s) {unknown}; allowed: {list(FORMATS)}")
    missing = sorted({pkg for f in formats for pkg in _NEEDS[f] if importlib.util.find_spec(pkg) is None})
    if missing:
        raise ImportError(f"{name}={list(formats)} needs {missing}: pip install 'lightning-prune[deploy]'")
    return list(dict.fromkeys(formats))


def check_folded(model: nn.Module) -> None:
    """Refuse a model whose exported weights would not be the pruned ones, naming the layer and the fix.

    Raises:
        ValueError: for a ``torch.nn.utils.prune`` reparametrisation (``<name>_orig`` with a ``<name>_mask``
            buffer) or a ``torch.nn.utils.parametrize`` parametrisation left on a layer.
    """
    for layer, module in model.named_modules():
        where = layer or f"<root {type(model).__name__}>"
        buffers = dict(module.named_buffers(recurse=False))
        for param, _ in module.named_parameters(recurse=False):
            base = param.removesuffix("_orig")
            if param.endswith("_orig") and f"{base}_mask" in buffers:
                raise ValueError(
                    f"layer {where!r} carries an unfolded pruning mask ({base}_orig * {base}_mask, "
                    f"torch.nn.utils.prune): its weights as exported would be dense. Fold it first: "
                    f"torch.nn.utils.prune.remove(model.get_submodule({layer!r}), {base!r})"
                )
        if torch.nn.utils.parametrize.is_parametrized(module):
            names = list(module.parametrizations)
            raise ValueError(
                f"layer {where!r} computes {names} through torch.nn.utils.parametrize, so no weights hold the "
                f"result. Fold it first: torch.nn.utils.parametrize.remove_parametrizations("
                f"model.get_submodule({layer!r}), {names[0]!r}, leave_parametrized=True)"
            )


def export_for_deploy(
    model: nn.Module,
    stem: str | os.PathLike,
    formats: Sequence[str],
    example: Any = None,
    record: Mapping[str, Any] | None = None,
    source: str = "saved hyper-parameters",
) -> dict[str, Path]:
    """Write ``model`` in each of ``formats`` as ``<stem><suffix>`` (``FORMATS``); returns ``{format: path}``.

    Every format is tried; if some fail, the others are still written and one error names each failure.
    ``example`` (default ``model.example_input_array``) traces the graph formats; ``record`` (default
    :func:`~lightning_prune.core.model_record.model_record`) says how to rebuild the model from the safetensors.

    Raises:
        ValueError: for an unknown format, an output path that is a directory, unfolded masks, no example.
        RuntimeError: naming each format whose export failed (and what was written).

    Example::

        >>> from lightning_prune.models import MLP
        >>> paths = export_for_deploy(MLP((4,), 3), "out/model", ["onnx"], torch.zeros(1, 4))  # doctest: +SKIP
    """
    formats = check_formats(formats)
    stem = Path(stem)
    paths = {f: Path(check_output_file(f"{f} output", stem.with_name(stem.name + FORMATS[f]))) for f in formats}
    check_folded(model)
    for fmt in [f for f in formats if f != "safetensors"]:  # the graph formats trace: refused before any write
        _example_args(model, example, paths[fmt].name)
    writers: dict[str, Callable[[Path], Path]] = {
        "onnx": lambda path: export_onnx(model, path, example),
        "torch_export": lambda path: export_program(model, path, example),
        "safetensors": lambda path: save_safetensors(model, path, record, source),
    }
    written: dict[str, Path] = {}
    failed: dict[str, Exception] = {}
    for fmt, path in paths.items():
        try:
            written[fmt] = writers[fmt](path)
        except Exception as err:
            failed[fmt] = err
    if failed:
        lines = "\n".join(f"  {fmt}: {type(err).__name__}: {err}" for fmt, err in failed.items())
        raise RuntimeError(
            f"export of {type(model).__name__} failed for {list(failed)}:\n{lines}\nwritten: {written}"
        ) from next(iter(failed.values()))
    return written


def export_onnx(model: nn.Module, path: str | os.PathLike, example: Any = None) -> Path:
    """ONNX through ``torch.onnx.export(model, example, dynamo=True)``, in eval mode, weights in the file.

    Files over 2 GB (protobuf's limit) would need external data and are not supported here.
    """
    path, args = _checked(model, path, example)

    def write(tmp: Path) -> None:
        with _eval(model), _quiet_exporter():
            program = torch.onnx.export(model, args, dynamo=True, dynamic_shapes=_batch_dims(args), verbose=False)
            program.save(tmp, external_data=False)

    return _write_atomically(path, write)


def export_program(model: nn.Module, path: str | os.PathLike, example: Any = None) -> Path:
    """A ``torch.export`` program (``torch.export.save``), traced in eval mode; reload with ``torch.export.load``."""
    path, args = _checked(model, path, example)

    def write(tmp: Path) -> None:
        with _eval(model):
            program = torch.export.export(model, args, dynamic_shapes=_batch_dims(args))
        torch.export.save(program, tmp)

    return _write_atomically(path, write)


def save_safetensors(
    model: nn.Module,
    path: str | os.PathLike,
    record: Mapping[str, Any] | None = None,
    source: str = "saved hyper-parameters",
) -> Path:
    """Write the tensors to ``path`` (``.safetensors``) and the record that rebuilds the model to ``path + .json``.

    ``record`` is ``{"model": {"_target_": ..., **kwargs}}`` or ``{"model": None, "reason": ...}``; by default
    it comes from the model's saved hyper-parameters (:func:`~lightning_prune.core.model_record.model_record`).
    """
    from safetensors.torch import save

    path = Path(check_output_file("path", path))
    check_folded(model)
    tensors = {name: t.detach().cpu().contiguous().clone() for name, t in model.state_dict().items()}
    example = getattr(model, "example_input_array", None)
    payload = {
        "format": RECORD_FORMAT,
        "weights": path.name,
        "source": source,
        **(record if record is not None else model_record(model)),
        "load": "lightning_prune.deploy.load_safetensors(path)",
        "architecture": architecture_spec(model),
        "size": model_size(model, example),
    }
    _write_atomically(path, lambda tmp: tmp.write_bytes(save(tensors)))  # save_file would make it owner-only
    _write_atomically(record_path(path), lambda tmp: tmp.write_text(json.dumps(to_jsonable(payload), indent=2)))
    return path


def record_path(weights: str | os.PathLike) -> Path:
    """Where the record of a ``.safetensors`` file lies: beside it, its name plus ``.json``."""
    weights = Path(weights)
    return weights.with_name(weights.name + ".json")


def load_safetensors(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """Rebuild the model from its record (or take ``model``), shrink it to the saved shapes, load; eval mode.

    No pickle is involved: the tensors come from safetensors, the constructor from JSON. The record names
    classes to import and call, so load records you trust, as you would run their code.

    Raises:
        FileNotFoundError: when the weights or their record are missing.
        ValueError: when the record cannot rebuild the model (pass ``model``), or the layers do not match.
    """
    from safetensors.torch import load_file

    path = Path(path)
    record_file = path if path.suffix == ".json" else record_path(path)
    if not record_file.is_file():
        raise FileNotFoundError(f"{record_file}: no model record beside the weights (written by save_safetensors)")
    record = json.loads(record_file.read_text())
    weights = record_file.parent / record["weights"]
    if model is None:
        if not record.get("model"):
            raise ValueError(
                f"{record_file}: cannot rebuild the model: {record.get('reason') or 'no model in the record'}. "
                f"Build it yourself and call load_safetensors({str(weights)!r}, model)"
            )
        model = build_from_record(record["model"])
    load_checked(model, load_file(weights), record.get("architecture"), str(weights))
    return model.eval()


def _checked(model: nn.Module, path: str | os.PathLike, example: Any) -> tuple[Path, tuple]:
    path = Path(check_output_file("path", path))
    check_folded(model)
    return path, _example_args(model, example, path.name)


def _example_args(model: nn.Module, example: Any, target: str) -> tuple:
    example = getattr(model, "example_input_array", None) if example is None else example
    if example is None:
        raise ValueError(
            f"exporting {type(model).__name__} to {target} traces it and needs an example input: pass "
            f"example= or set model.example_input_array"
        )
    args = tuple(example) if isinstance(example, (tuple, list)) else (example,)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return tuple(_batch_of_two(a.to(device)) if isinstance(a, Tensor) else a for a in args)


def _batch_of_two(tensor: Tensor) -> Tensor:
    # torch.export fixes a dimension of size 1; a batch of two lets the batch stay dynamic.
    return tensor.expand(2, *tensor.shape[1:]).clone() if tensor.dim() > 0 and tensor.shape[0] == 1 else tensor


def _batch_dims(args: tuple) -> tuple:
    # Dim.AUTO: dynamic where the model allows it, fixed (not an error) where it does not.
    return tuple({0: torch.export.Dim.AUTO} if isinstance(a, Tensor) and a.dim() > 0 else None for a in args)


@contextlib.contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    """Eval mode for the trace (BatchNorm on running statistics, no dropout), the old mode restored after."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


# The exporter's chatter at the app's INFO level (each rewrite pass), and its warning that torchvision's ops
# cannot be registered when torchvision is absent: neither says anything about the user's model.
_CHATTY = {"onnxscript": logging.WARNING, "onnx_ir": logging.WARNING, "torch.onnx._internal.exporter": logging.ERROR}


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    loggers = {logging.getLogger(name): level for name, level in _CHATTY.items()}
    before = {logger: logger.level for logger in loggers}
    for logger, level in loggers.items():
        logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        for logger, level in before.items():
            logger.setLevel(level)


def _write_atomically(path: Path, write: Callable[[Path], Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")  # same suffix: writers may go by it
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
