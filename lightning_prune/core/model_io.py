"""How every callback feeds the user's model and reads its answer: the one place that knows batch and output shapes.

Callbacks run the model themselves (the gate's accuracy, SNIP's gradients, soup ingredients, unit statistics,
latency timing, dependency tracing), so they must read batches and outputs the way the user's training step does.
The defaults cover what users bring:

- batches: a tensor (input only), a tuple/list ``(x, y, ...)``, or a mapping (Hugging Face:
  ``input_ids``, ``attention_mask``, ..., ``labels``): the label keys are split off, the rest is the input;
- inputs are passed as Lightning's ``example_input_array`` is: a tensor as ``forward(x)``, a tuple as
  ``forward(*x)``, a mapping as ``forward(**x)``;
- outputs: a tensor of logits, an object with ``.logits`` (Hugging Face ``ModelOutput``), a mapping with
  ``"logits"``, or a tuple whose first tensor is the logits;
- token-level targets are flattened and ``-100`` (Hugging Face's ignore index) is dropped; a causal LM
  (a ``*ForCausalLM`` / ``*LMHeadModel`` inside the module) is scored on the next token, as its loss is.

Anything else takes ONE hook, a method on the LightningModule, read by every callback::

    def split_batch(self, batch):  # -> (inputs passed to forward as above, integer targets or None)
        return {"pixel_values": batch["image"]}, batch["class_id"]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LABEL_KEYS = ("labels", "label", "targets", "target", "y")
IGNORE_INDEX = -100  # Hugging Face's (and cross_entropy's) "no label here"
HOOK = "split_batch"
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def split_batch(model: nn.Module, batch: Any) -> tuple[Any, Tensor | None]:
    """``(inputs, targets)`` of a batch: the module's ``split_batch`` hook if it has one, else the defaults above.

    Raises:
        ValueError: for a batch none of the defaults reads, naming its type and the hook that would.
    """
    hook = getattr(model, HOOK, None)
    if callable(hook):
        return hook(batch)
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, Mapping):
        inputs = {key: value for key, value in batch.items() if key not in LABEL_KEYS}
        labels = next((batch[key] for key in LABEL_KEYS if key in batch), None)
        if inputs:
            return inputs, labels
    if isinstance(batch, (tuple, list)) and batch and _is_input(batch[0]):
        labels = batch[1] if len(batch) >= 2 and isinstance(batch[1], Tensor) else None
        return batch[0], labels
    raise ValueError(
        f"cannot read a {describe(batch)} batch: expected a tensor, (x, y, ...) or a mapping of tensors (with "
        f"'labels'); define `{HOOK}(self, batch) -> (inputs, targets)` on your LightningModule"
    )


def _is_input(value: Any) -> bool:
    return isinstance(value, Tensor) or (isinstance(value, Mapping) and bool(value))


def describe(batch: Any) -> str:
    """A batch's shape in words, for error messages."""
    if isinstance(batch, Mapping):
        return f"mapping with keys {sorted(map(str, batch))}"
    if isinstance(batch, (tuple, list)):
        return f"{type(batch).__name__} of {[type(item).__name__ for item in batch]}"
    return type(batch).__name__


def as_args(inputs: Any) -> tuple[tuple, dict]:
    """``(args, kwargs)`` for the forward, as Lightning runs ``example_input_array`` (tuple spread, dict as kwargs)."""
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, tuple):
        return inputs, {}
    return (inputs,), {}


def call(model: nn.Module, inputs: Any) -> Any:
    args, kwargs = as_args(inputs)
    return model(*args, **kwargs)


def logits_of(output: Any) -> Tensor:
    """The logits in a model's output (tensor, ``.logits``, ``["logits"]`` or the first tensor of a tuple).

    Raises:
        ValueError: when there is none, naming the output's type.
    """
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if logits is None and isinstance(output, (tuple, list)):
        logits = next((item for item in output if isinstance(item, Tensor)), None)
    if not isinstance(logits, Tensor):
        raise ValueError(
            f"cannot find logits in the model's output ({type(output).__name__}): return a tensor, an object with "
            "`.logits`, a mapping with 'logits' or a tuple whose first tensor is the logits"
        )
    return logits


def forward_logits(model: nn.Module, inputs: Any) -> Tensor:
    return logits_of(call(model, inputs))


def scored(model: nn.Module, batch: Any, forward: Callable[[Any], Any] | None = None) -> tuple[Tensor, Tensor]:
    """``(logits (N, C), targets (N,))`` of a labelled batch, aligned the way the model's own loss aligns them.

    ``forward`` runs the inputs instead of ``model`` (e.g. with substituted weights); ``model`` still decides
    how the batch is read.

    Raises:
        ValueError: when the batch carries no targets, or their shape does not match the logits'.
    """
    inputs, targets = split_batch(model, batch)
    if targets is None:
        raise ValueError(
            f"a {describe(batch)} batch carries no targets (no second element, no {list(LABEL_KEYS)} key); define "
            f"`{HOOK}(self, batch) -> (inputs, targets)` on your LightningModule"
        )
    logits = logits_of(call(model, inputs) if forward is None else forward(inputs))
    return align(logits, targets.to(logits.device), causal=is_causal_lm(model))


def align(logits: Tensor, targets: Tensor, causal: bool = False) -> tuple[Tensor, Tensor]:
    """Flatten token-level logits and targets to ``(N, C)``/``(N,)``, shifting a causal LM's, dropping ``-100``."""
    if logits.dim() == targets.dim():  # regression or per-class targets: as they are
        return logits, targets
    if logits.dim() == 3:
        if causal:
            logits, targets = logits[:, :-1], targets[:, 1:]
        logits, targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"the model's logits {tuple(logits.shape)} do not match the batch's targets {tuple(targets.shape)}; "
            f"define `{HOOK}(self, batch)` on your LightningModule"
        )
    kept = targets != IGNORE_INDEX
    return (logits, targets) if bool(kept.all()) else (logits[kept], targets[kept])


def is_causal_lm(model: nn.Module) -> bool:
    return any(type(module).__name__.endswith(_CAUSAL_SUFFIXES) for module in model.modules())


def correct_and_total(model: nn.Module, batch: Any) -> tuple[Tensor, int]:
    """Top-1 hits and scored positions of a batch (samples, or tokens for token-level targets)."""
    logits, targets = scored(model, batch)
    return (logits.argmax(dim=-1) == targets).sum(), targets.numel()


def classification_loss(model: nn.Module, batch: Any) -> Tensor:
    logits, targets = scored(model, batch)
    return F.cross_entropy(logits, targets)


def first_samples(inputs: Any, count: int = 1) -> Any:
    """The first ``count`` samples of an input (a tensor, or every tensor of a tuple or mapping)."""
    return _map_tensors(inputs, lambda t: t[:count])


def repeat_samples(inputs: Any, batch_size: int) -> Any:
    """An input of ``batch_size`` samples made by tiling the given ones (for timing at a batch size)."""

    def tile(t: Tensor) -> Tensor:
        reps = -(-batch_size // t.shape[0])
        return t.repeat(reps, *([1] * (t.dim() - 1)))[:batch_size]

    return _map_tensors(inputs, tile)


def to_device(inputs: Any, device: torch.device | str) -> Any:
    return _map_tensors(inputs, lambda t: t.to(device))


def batch_size_of(inputs: Any) -> int:
    return next(iter(_tensors(inputs))).shape[0]


def _tensors(inputs: Any) -> list[Tensor]:
    if isinstance(inputs, Tensor):
        return [inputs]
    values = inputs.values() if isinstance(inputs, Mapping) else inputs
    return [value for value in values if isinstance(value, Tensor)]


def _map_tensors(inputs: Any, fn: Any) -> Any:
    if isinstance(inputs, Tensor):
        return fn(inputs)
    if isinstance(inputs, Mapping):
        return {key: fn(value) if isinstance(value, Tensor) else value for key, value in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(fn(value) if isinstance(value, Tensor) else value for value in inputs)
    raise ValueError(f"cannot take samples of a {type(inputs).__name__} input: expected a tensor, tuple or mapping")
