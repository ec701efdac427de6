"""Run and trace the user's model on one example input, whatever its shape (tensor, tuple, Hugging Face dict).

ODF2NNA runs the model itself three times: to trace torch-pruning's dependency graph (which Linear feeds
which), to find the order in which the Linear layers run (and any that run twice), and to stream the hidden
units' moments. All three pass inputs the way Lightning passes ``example_input_array``
(:func:`lightning_prune.core.model_io.call`: a tensor as ``forward(x)``, a mapping as ``forward(**x)``) and
trace every tensor of the output, so an output object with ``.logits`` and a key-value cache (Hugging Face's
``ModelOutput``) traces like a plain tensor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn

from lightning_prune.core import model_io


def trace_graph(model: nn.Module, example_inputs: Any) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of ``model`` on ``example_inputs``, traced in eval mode.

    Eval mode, so tracing moves no BatchNorm statistics and dropout is not traced; every tensor of the
    output is traced (a cache object in it is not a tensor: torch-pruning cannot flatten it).

    Raises:
        ValueError: when the forward or torch-pruning's tracing fails, naming the model and the error.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(
                model,
                example_inputs=example_inputs,
                forward_fn=model_io.call,
                output_transform=tensor_outputs,
                verbose=False,
            )
    except (TypeError, ValueError, RuntimeError, IndexError, KeyError) as error:
        raise ValueError(
            f"{type(model).__name__} cannot be traced on its example input ({type(error).__name__}: {error}); "
            "the Linear stacks are found in torch-pruning's traced graph, so the forward must run on "
            "example_input_array (or a validation batch) and torch-pruning must follow it"
        ) from error
    finally:
        model.train(was_training)


def tensor_outputs(output: Any) -> list[Tensor]:
    """Every tensor in a model's output: a tensor, or nested in mappings, tuples and lists (other values dropped)."""
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [tensor for item in output for tensor in tensor_outputs(item)]
    return []


def two_samples(example_inputs: Any) -> Any:
    """At least two samples: with one, autograd records a Linear on a non-leaf input as mm + reshape."""
    if model_io.batch_size_of(example_inputs) >= 2:
        return example_inputs
    return model_io.repeat_samples(example_inputs, 2)


def eval_forward(model: nn.Module, inputs: Iterable[Any]) -> None:
    """Run every input of ``inputs`` through ``model`` in eval mode without gradients (hooks read them)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in inputs:
                model_io.call(model, batch)
    finally:
        model.train(was_training)


def linear_call_counts(model: nn.Module, example_inputs: Any) -> dict[str, int]:
    """How often each ``nn.Linear`` runs as a module in one forward, in order of first call (0: never called).

    A Linear whose weight is used directly (``nn.MultiheadAttention``'s ``out_proj``) counts 0; one that runs
    twice shares its weights across two places.

    Raises:
        ValueError: when the forward fails on ``example_inputs``, naming the model, the error and the input.
    """
    calls: dict[str, int] = {}
    handles = [
        module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
    ]
    try:
        eval_forward(model, [example_inputs])
    except (TypeError, ValueError, RuntimeError, IndexError, KeyError) as error:
        raise ValueError(
            f"{type(model).__name__} does not run on its example input ({type(error).__name__}: {error}); "
            f"it is passed as forward(x), forward(*x) or forward(**x) for a tensor, tuple or mapping "
            f"({model_io.describe(example_inputs)} here)"
        ) from error
    finally:
        for handle in handles:
            handle.remove()
    never = {name: 0 for name, module in model.named_modules() if isinstance(module, nn.Linear) and name not in calls}
    return {**calls, **never}


def floating_to(inputs: Any, dtype: torch.dtype) -> Any:
    """The input with its floating tensors cast to ``dtype`` (token ids and masks stay integers)."""
    if isinstance(inputs, Tensor):
        return inputs.to(dtype) if inputs.is_floating_point() else inputs
    if isinstance(inputs, Mapping):
        return {key: floating_to(value, dtype) for key, value in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(floating_to(value, dtype) for value in inputs)
    return inputs
