"""Measured inference latency of the model being trained: dense reference, after each pruning step, at the end."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from lightning_prune.callbacks._contract import FittedModel
from lightning_prune.callbacks._trainer import broadcast, example_input, info, output_dir
from lightning_prune.callbacks.latency_report import first_measurement, logged_metrics, speedup, write_record
from lightning_prune.callbacks.protocol import PruningCallback, PruningListener, PruningState
from lightning_prune.core.devices import check_device, device_name, resolve_device
from lightning_prune.core.ort_timing import (
    PARITY_TOLERANCE,
    OrtExportError,
    OrtModel,
    check_backends,
    parity,
)
from lightning_prune.core.timing import (
    TimingSettings,
    batch_of,
    interleaved_latency,
)
from lightning_prune.core.validate import check_int, check_output_dir, check_output_file, is_int

log = logging.getLogger(__name__)


class LatencyBenchmark(PruningListener, Callback):
    """Measure the model's inference latency where it runs, so "smaller" can be checked as "faster".

    At fit start the (dense) model is measured as the reference; with a pruning callback in the Trainer
    it is measured again after every pruning step (``every_prune_step``), and once more at the end of
    training. Each measurement times ``rounds`` x ``repeats`` forward calls per batch size under
    ``torch.inference_mode`` after ``warmup`` calls: CUDA events with synchronisation on a GPU,
    ``time.perf_counter`` at a fixed, recorded thread count on a CPU (see
    :mod:`lightning_prune.core.timing`). Inputs repeat one sample of ``example_input_array`` (or of
    the first validation batch) to each batch size. Logged per batch size ``b``: ``latency/<b>/p50_ms``,
    ``p90_ms``, ``p99_ms``, ``throughput`` (samples/s), ``speedup`` (reference p50 / current p50, both
    measured in this run) and, on CUDA, ``peak_memory_mb``: through ``pl_module.log`` at every epoch end
    (the latest measurement) and to the Trainer's loggers at the final one. A JSON record (device name,
    torch version, settings, every measurement) goes to ``<export_dir>/<filename>`` and a section of
    ``summary.json``.

    With ``backend="onnxruntime"`` each measurement exports the model as it is (pruned weights already zero,
    structured shrinks physical) to ONNX (:func:`~lightning_prune.core.deploy.export_onnx`, a temporary
    file) and times an ONNX Runtime session on the CPU (``intra_op_num_threads=threads``, one inter-op
    thread) with the same protocol; logged as ``latency/ort/<b>/p50_ms``, ..., ``speedup`` (against the
    first ONNX Runtime measurement). With ``backend=["eager", "onnxruntime"]`` both are timed side by side
    in alternating rounds, and ``latency/ort/<b>/vs_eager`` is eager p50 / ONNX Runtime p50. At the first
    ONNX Runtime measurement the callback checks that the session's outputs match eager's (largest
    absolute difference, warned above ``1e-4``) and records the figure.

    A second ``fit`` of the same model goes on with the same reference (the first fit's dense model) and
    measures the model again at its start; a ``fit`` of another model starts a new series with that
    model as the reference (a speed-up is only meaningful against the model it was pruned from).

    Requires from your LightningModule: an ``example_input_array`` or an ``(x, y)`` validation batch.

    Args:
        batch_sizes: batch sizes to measure (throughput needs the larger ones, latency the small).
        device: where to measure (``"cpu"``, ``"cuda:0"``); ``None``: where the model trains.
        warmup: untimed calls before each round.
        repeats: timed calls per round.
        rounds: rounds per measurement (``quiet_p50_ms`` in the record is the lowest round median).
        threads: CPU threads while timing (``None``: torch's current count; recorded either way).
        amp_dtype: ``"bfloat16"``/``"float16"`` to time under autocast, ``None`` for float32.
        channels_last: time a channels-last copy of the model.
        compile: time a ``torch.compile``'d copy of the model.
        every_prune_step: also measure after each step of a pruning callback.
        backend: ``"eager"`` (PyTorch), ``"onnxruntime"``, or a list of both to time them side by side.
        export_dir: where the JSON record and ``summary.json`` go (default: the Trainer's root dir).
        filename: name of the JSON record.

    Raises:
        ValueError: for arguments out of range or of the wrong type (a number given as a string), an
            ``export_dir`` that cannot be a directory, a ``filename`` that is not a plain file name, an unknown
            ``backend``; at setup, a CUDA ``device`` where none is available or a record path that is a directory.
        ImportError: for ``backend="onnxruntime"`` without ONNX Runtime (``pip install 'lightning-prune[deploy]'``).
        OrtExportError: at fit start, naming the model and the exporter's reason, when it cannot be exported.

    Example::

        >>> import lightning.pytorch as pl
        >>> from lightning_prune import LatencyBenchmark
        >>> from lightning_prune.data import DigitsDataModule
        >>> from lightning_prune.models import MLP, Classifier
        >>> bench = LatencyBenchmark(batch_sizes=[1, 32], repeats=5, rounds=1, export_dir="/tmp/lp-doc")
        >>> trainer = pl.Trainer(max_epochs=1, callbacks=[bench], logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False, limit_train_batches=2,
        ...                      limit_val_batches=1, default_root_dir="/tmp/lp-doc")
        >>> trainer.fit(Classifier(MLP((1, 8, 8), 10), 10, (1, 8, 8)), datamodule=DigitsDataModule())
        >>> [record["when"] for record in bench.records], sorted(bench.records[-1]["results"])
        (['fit_start', 'fit_end'], ['1', '32'])
    """

    acts_on_steps = False  # it measures at fit start and end whether or not a pruner reports steps

    def __init__(
        self,
        batch_sizes: Sequence[int] = (1, 64),
        device: str | None = None,
        warmup: int = 10,
        repeats: int = 50,
        rounds: int = 3,
        threads: int | None = None,
        amp_dtype: str | None = None,
        channels_last: bool = False,
        compile: bool = False,
        every_prune_step: bool = True,
        export_dir: str | None = None,
        filename: str = "latency.json",
        backend: str | Sequence[str] = "eager",
    ) -> None:
        self.backends = check_backends(backend)
        self.backend = backend if isinstance(backend, str) else list(backend)
        self.warmup, self.repeats, self.rounds, self.threads = warmup, repeats, rounds, threads
        self.amp_dtype, self.channels_last, self.compile = amp_dtype, channels_last, compile
        self.every_prune_step, self.filename = every_prune_step, filename
        if isinstance(batch_sizes, (str, int)) or not batch_sizes or not all(is_int(b) and b >= 1 for b in batch_sizes):
            raise ValueError(f"batch_sizes must be a non-empty list of integers >= 1, got {batch_sizes!r}")
        self.batch_sizes, self.device = list(batch_sizes), device
        for name, low in [("warmup", 0), ("repeats", 3), ("rounds", 1)]:
            check_int(name, getattr(self, name), low)
        check_int("threads", threads, 1, optional=True)
        for name in ("channels_last", "compile", "every_prune_step"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(filename, str) or not filename or filename != Path(filename).name:
            raise ValueError(f"filename must be a plain file name such as 'latency.json', got {filename!r}")
        check_device(device)
        self.export_dir = check_output_dir("export_dir", export_dir)
        self.settings = TimingSettings(warmup, repeats, threads, amp_dtype, channels_last, compile)
        self.records: list[dict[str, Any]] = []
        self._model: FittedModel | None = None  # the model measured, so a fit of another one starts a new series

    @property
    def state_key(self) -> str:
        other = {"backend": self.backends} if self.backends != ["eager"] else {}  # eager: the key of old checkpoints
        return self._generate_state_key(batch_sizes=self.batch_sizes, device=self.device, **other)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            _refuse_a_second_benchmark(trainer, self)
            resolve_device(self.device, pl_module)
            check_output_file("filename", output_dir(trainer, self.export_dir) / self.filename)

    @property
    def reference(self) -> dict[str, Any] | None:
        """The fit-start measurement every eager speed-up is relative to."""
        return first_measurement(self.records, "results")

    @property
    def ort_reference(self) -> dict[str, Any] | None:
        """The first ONNX Runtime measurement (fit start) every ONNX Runtime speed-up is relative to."""
        return first_measurement(self.records, "ort")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        measured = self._model() if self._model is not None else None
        if measured is not None and measured is not pl_module:
            info(log, "a fit of another model: its latency is measured against its own start, not the last model's")
            self.records = []
        self._model = FittedModel(pl_module)
        # A resumed run continues its checkpoint's records; a second fit measures the model it starts from.
        if not self.records or (measured is pl_module and trainer.ckpt_path is None):
            self._record(trainer, pl_module, "fit_start", self._pruner_step(trainer))

    def on_prune_step_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, state: PruningState) -> None:
        if self.every_prune_step:
            self._record(trainer, pl_module, "prune_step", state.step)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.records:
            for name, value in logged_metrics(self.records[-1]).items():
                pl_module.log(name, value, on_step=False, on_epoch=True)

    @staticmethod
    def _pruner_step(trainer: pl.Trainer) -> int:
        pruners = [cb for cb in trainer.callbacks if isinstance(cb, PruningCallback)]
        return pruners[0].pruning_state.step if pruners else 0

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        record = self._record(trainer, pl_module, "fit_end", self._pruner_step(trainer))
        for logger in trainer.loggers:
            logger.log_metrics(logged_metrics(record), step=trainer.global_step)
            logger.save()
        if trainer.is_global_zero and not trainer.fast_dev_run:
            self._write(trainer, pl_module)

    def _record(self, trainer: pl.Trainer, pl_module: pl.LightningModule, when: str, step: int) -> dict[str, Any]:
        """Measure every batch size on rank 0, broadcast, and append the record."""
        example = example_input(trainer, pl_module)
        measured, failure = None, None
        if trainer.is_global_zero:
            try:
                measured = self._measure(pl_module, example)
            except OrtExportError as err:
                failure = str(err)
        measured, failure = broadcast(trainer, (measured, failure))
        if failure is not None:  # every rank stops, not only the one that exported
            raise OrtExportError(failure)
        record = {"when": when, "step": step, "epoch": trainer.current_epoch, "global_step": trainer.global_step}
        if "eager" in measured:
            record["results"] = measured["eager"]
            record["speedup"] = speedup(self.reference or measured["eager"], measured["eager"])
        if "onnxruntime" in measured:
            ort = measured["onnxruntime"]
            record["ort"] = {"results": ort, "speedup": speedup(self.ort_reference or ort, ort)}
            if "eager" in measured:
                record["ort"]["vs_eager"] = speedup(measured["eager"], ort)
            if "parity" in measured:
                record["ort"]["parity"] = measured["parity"]
        self.records.append(record)
        summary = "; ".join(
            f"{runtime}: " + ", ".join(f"batch {b}: {r['p50_ms']:.3f} ms" for b, r in results.items())
            for runtime, results in measured.items()
            if runtime != "parity"
        )
        info(log, f"latency at {when} (step {step}): {summary}")
        return record

    def _measure(self, pl_module: pl.LightningModule, example: torch.Tensor) -> dict[str, Any]:
        """``{runtime: {batch: latency}}``, both runtimes in alternating rounds; the parity check once per series."""
        runtimes: dict[str, Any] = {"eager": pl_module} if "eager" in self.backends else {}
        measured: dict[str, Any] = {}
        if "onnxruntime" in self.backends:
            session = OrtModel(pl_module, example, self.threads)
            runtimes["onnxruntime"] = session
            if self.ort_reference is None:
                measured["parity"] = self._parity(pl_module, session, example)
        for runtime in runtimes:
            measured[runtime] = {}
        for b in self.batch_sizes:
            timed = interleaved_latency(runtimes, batch_of(example, b), self.settings, self.rounds, self.device)
            for runtime, latency in timed.items():
                measured[runtime][str(b)] = latency.to_dict()
        return measured

    @staticmethod
    def _parity(pl_module: pl.LightningModule, session: OrtModel, example: torch.Tensor) -> dict[str, Any]:
        difference = parity(pl_module, session, example)
        checked = {"max_abs_diff": difference, "tolerance": PARITY_TOLERANCE, "ok": difference <= PARITY_TOLERANCE}
        info(log, f"ONNX Runtime vs eager outputs of {type(pl_module).__name__}: max |difference| {difference:.2e}")
        if not checked["ok"]:
            rank_zero_warn(
                f"ONNX Runtime's outputs of {type(pl_module).__name__} differ from eager by up to {difference:.2e} "
                f"(> {PARITY_TOLERANCE:.0e}): its latency is of a model that computes something else"
            )
        return {**checked, "onnx_bytes": session.file_bytes}

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        settings = {**self.settings.__dict__, "rounds": self.rounds, "batch_sizes": self.batch_sizes}
        device = device_name(resolve_device(self.device, pl_module))
        directory = output_dir(trainer, self.export_dir)
        write_record(directory, self.filename, device, {**settings, "backend": self.backends}, self.records)

    def state_dict(self) -> dict[str, Any]:
        return {"records": self.records}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.records = list(state_dict.get("records", self.records))


def _refuse_a_second_benchmark(trainer: pl.Trainer, me: LatencyBenchmark) -> None:
    """Two benchmarks would write the same summary section, the second over the first: one measures everything.

    Raises:
        ValueError: naming both and how one benchmark covers what the two would measure.
    """
    others = [cb for cb in trainer.callbacks if isinstance(cb, LatencyBenchmark) and cb is not me]
    if others:
        raise ValueError(
            f"Trainer(callbacks=...) holds more than one LatencyBenchmark ({me.state_key}, {others[0].state_key}); "
            "they would write the same summary section. Use one with every batch size and backend you want to "
            "measure: LatencyBenchmark(batch_sizes=[1, 128], backend=['eager', 'onnxruntime'])"
        )
