"""ONNX Runtime latency of a PyTorch model, timed as eager PyTorch is and side by side with it.

The model is exported as it is, through :func:`~lightning_prune.core.deploy.export_onnx` (pruned weights are
already zero, structured shrinks physical), to a temporary file, and loaded into an
``onnxruntime.InferenceSession`` on the CPU execution provider with a fixed number of intra-op threads and
one inter-op thread. Its calls are timed one by one with ``time.perf_counter`` after warm-up, as eager CPU
calls are (:mod:`~lightning_prune.core.timing`). An :class:`OrtModel` is a
:class:`~lightning_prune.core.timing.Runtime`: :func:`~lightning_prune.core.timing.interleaved_latency`
times it in the same alternating rounds as eager modules, so a burst of load on a shared machine hits both
runtimes alike. ONNX Runtime runs float32 on the CPU whatever ``amp_dtype``/``channels_last``/``compile``
say; those shape the eager timing only. Needs ``pip install 'lightning-prune[deploy]'``.
"""

from __future__ import annotations

import importlib.util
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves

from lightning_prune.core.deploy import export_onnx
from lightning_prune.core.timing import TimingSettings, batch_of, time_calls

BACKENDS = ("eager", "onnxruntime")
PARITY_TOLERANCE = 1e-4  # largest absolute output difference ONNX Runtime may show against eager float32
_NEEDS = ("onnx", "onnxscript", "onnxruntime")  # the exporter and the runtime: the [deploy] extra
_CPU = torch.device("cpu")


class OrtExportError(RuntimeError):
    """The model could not be exported to ONNX, so ONNX Runtime cannot time it."""


def check_backends(backend: Any, name: str = "backend") -> list[str]:
    """``backend`` (one name or a list) as a list of runtimes, refused at once if unknown or not installed.

    Raises:
        ValueError: naming the value and the allowed backends.
        ImportError: for ``"onnxruntime"`` without its packages, naming them and the extra that installs them.
    """
    names = [backend] if isinstance(backend, str) else backend
    if not isinstance(names, Sequence) or not names or not all(isinstance(b, str) for b in names):
        raise ValueError(f"{name} must be one of {list(BACKENDS)} or a non-empty list of them, got {backend!r}")
    unknown = [b for b in names if b not in BACKENDS]
    if unknown:
        raise ValueError(f"{name}={backend!r}: unknown backend(s) {unknown}; allowed: {list(BACKENDS)}")
    if "onnxruntime" in names:
        missing = [pkg for pkg in _NEEDS if importlib.util.find_spec(pkg) is None]
        if missing:
            raise ImportError(
                f"{name}='onnxruntime' exports the model to ONNX and times it in ONNX Runtime, which needs "
                f"{missing}: pip install 'lightning-prune[deploy]'"
            )
    return list(dict.fromkeys(names))


class OrtModel:
    """``model`` exported to ONNX and loaded into an ONNX Runtime CPU session: call it, time it, compare it.

    Args:
        model: the module to export, as it is (eval mode for the trace; its mode is restored).
        example: an input batch to trace with (its batch dimension stays dynamic where the model allows).
        threads: ONNX Runtime's intra-op threads; ``None``: torch's current count, so both runtimes use the same.

    Raises:
        OrtExportError: naming the model and the exporter's reason when ONNX export fails.

    Example::

        >>> session = OrtModel(nn.Linear(4, 2), torch.zeros(3, 4), threads=1)  # doctest: +SKIP
        >>> session(torch.ones(5, 4))[0].shape  # doctest: +SKIP
        (5, 2)
    """

    runtime = "onnxruntime"

    def __init__(self, model: nn.Module, example: Tensor, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.model_name = type(model).__name__
        self.threads = threads if threads is not None else torch.get_num_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        with tempfile.TemporaryDirectory(prefix="lightning_prune_ort_") as tmp:
            path = Path(tmp) / "model.onnx"
            try:
                export_onnx(model, path, example)
            except Exception as err:
                raise OrtExportError(
                    f"ONNX export of {self.model_name} failed, so ONNX Runtime cannot time it "
                    f"(use backend='eager' for this model): {export_reason(err)}"
                ) from err
            self.file_bytes = path.stat().st_size
            self.session = ort.InferenceSession(str(path), options, providers=[runtime_info()["provider"]])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def feeds(self, *inputs: Tensor) -> dict[str, np.ndarray]:
        """The session's input dict: each tensor as a contiguous float CPU array, in the graph's input order."""
        return {name: t.detach().cpu().contiguous().numpy() for name, t in zip(self.input_names, inputs, strict=True)}

    def __call__(self, *inputs: Tensor) -> list[np.ndarray]:
        return self.session.run(None, self.feeds(*inputs))

    def timer(self, inputs: Tensor, settings: TimingSettings) -> Callable[[int], tuple[list[float], int]]:
        """One round of ``settings.repeats`` timed calls after ``warmup`` untimed ones (the ``Runtime`` protocol)."""
        feeds = self.feeds(inputs)  # converted once, outside the timed calls, as eager's input is moved once

        def run() -> Any:
            return self.session.run(None, feeds)

        return lambda warmup: (time_calls(run, _CPU, warmup, settings.repeats), self.threads)


def runtime_info() -> dict[str, str]:
    """What timed the sessions: ONNX Runtime's version and the execution provider."""
    import onnxruntime as ort

    return {"version": ort.__version__, "provider": "CPUExecutionProvider"}


def parity(model: nn.Module, session: OrtModel, example: Tensor, batch_size: int = 8) -> float:
    """Largest absolute difference between ``model``'s eager outputs (eval mode) and the session's.

    Compared on a batch of ``batch_size``: the first sample of ``example``, then (for float inputs) samples
    drawn from a fixed-seed normal, so the check covers a dynamic batch and more than one input value.

    Raises:
        ValueError: when the two return a different number of tensors.
    """
    inputs = batch_of(example.detach().cpu(), batch_size)
    if inputs.is_floating_point():
        noise = torch.randn(inputs.shape, generator=torch.Generator().manual_seed(0), dtype=inputs.dtype)
        inputs = torch.cat([inputs[:1], noise[1:]])
    device = next((p.device for p in model.parameters()), _CPU)
    training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            expected = [t for t in tree_leaves(model(inputs.to(device))) if isinstance(t, Tensor)]
    finally:
        model.train(training)
    got = session(inputs)
    if len(expected) != len(got):
        raise ValueError(f"{session.model_name}: eager returns {len(expected)} tensors, ONNX Runtime {len(got)}")
    return max(float(np.abs(e.float().cpu().numpy() - g).max(initial=0.0)) for e, g in zip(expected, got))


def export_reason(err: BaseException) -> str:
    """The exporter's reason in a few lines: its exception summary and the user's line that raised, if given."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    lines = [line.strip() for line in text.splitlines()]
    reason = [f"{type(err).__name__}: {lines[0] if lines else ''}"]
    if "## Exception summary" in lines:
        start = lines.index("## Exception summary") + 1
        reason = [next((line for line in lines[start:] if line), reason[0])]
    if "The following call raised this error:" in lines:
        start = lines.index("The following call raised this error:") + 1
        reason += ["raised at " + " ".join(line for line in lines[start : start + 2] if line)]
    return "; ".join(reason)[:800]
