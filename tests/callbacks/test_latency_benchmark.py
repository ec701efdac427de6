import csv
import dataclasses
import json
import pickle
import statistics
import time

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils import benchmark

from lightning_prune import IterativePruning, LatencyBenchmark, LatencyBudgetPruning
from lightning_prune.core import ort_timing
from lightning_prune.core.ort_timing import OrtExportError
from lightning_prune.core.timing import batch_of, measure_latency
from lightning_prune.models import Classifier
from tests.helpers import cnn_classifier, resnet_classifier

ORT_KEYS = ("p50_ms", "p90_ms", "p99_ms", "throughput", "speedup")


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_sizes": []}, "batch_sizes must be a non-empty list of integers >= 1"),
        ({"batch_sizes": 8}, "batch_sizes must be a non-empty list"),
        ({"batch_sizes": [0, 4]}, "batch_sizes must be a non-empty list of integers >= 1, got \\[0, 4\\]"),
        ({"rounds": 0}, "rounds must be an integer >= 1"),
        ({"repeats": 1}, "repeats must be an integer >= 3"),
        ({"warmup": -1}, "warmup must be an integer >= 0"),
        ({"threads": 0}, "threads must be an integer >= 1 or None, got 0"),
        ({"amp_dtype": "int8"}, "amp_dtype must be None or one of"),
        ({"device": "xla"}, "device must be None, 'cpu' or 'cuda"),
        # numbers as strings (from YAML or a command line), booleans for counts, paths that cannot be written
        ({"warmup": "3"}, "warmup must be an integer >= 0, got '3'"),
        ({"warmup": True}, "warmup must be an integer >= 0, got True"),
        ({"repeats": "10"}, "repeats must be an integer >= 3, got '10'"),
        ({"rounds": "2"}, "rounds must be an integer >= 1, got '2'"),
        ({"threads": True}, "threads must be an integer >= 1 or None, got True"),
        ({"batch_sizes": ["1"]}, "batch_sizes must be a non-empty list of integers >= 1"),
        ({"compile": "yes"}, "compile must be true or false, got 'yes'"),
        ({"every_prune_step": 1}, "every_prune_step must be true or false, got 1"),
        ({"filename": "out/latency.json"}, "filename must be a plain file name such as 'latency.json'"),
        ({"filename": ""}, "filename must be a plain file name"),
        ({"export_dir": 3}, "export_dir must be a path"),
        (
            {"backend": "tensorrt"},
            r"backend='tensorrt': unknown backend\(s\) \['tensorrt'\]; allowed: \['eager', 'onnx",
        ),
        ({"backend": ["eager", "ort"]}, r"unknown backend\(s\) \['ort'\]; allowed: \['eager', 'onnxruntime'\]"),
        (
            {"backend": []},
            r"backend must be one of \['eager', 'onnxruntime'\] or a non-empty list of them, got \[\]",
        ),
        ({"backend": 1}, "backend must be one of .* or a non-empty list of them, got 1"),
    ],
)
def test_latency_benchmark_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LatencyBenchmark(**kwargs)


def test_latency_benchmark_state_key_and_restored_reference():
    a, b = LatencyBenchmark(batch_sizes=[1]), LatencyBenchmark(batch_sizes=[1, 64])
    assert a.state_key != b.state_key
    assert "LatencyBenchmark" in a.state_key
    assert LatencyBenchmark(batch_sizes=[1], backend="onnxruntime").state_key != a.state_key
    assert LatencyBenchmark(batch_sizes=[1], backend=["eager"]).state_key == a.state_key
    record = {"when": "fit_start", "results": {"1": {"p50_ms": 2.0}}, "speedup": {"1": 1.0}}
    a.load_state_dict({"records": [record]})
    assert a.reference == record["results"]  # a resumed run keeps the dense reference of its first part
    a.load_state_dict({})
    assert a.reference == record["results"]


def test_measures_dense_each_step_and_end_logs_and_writes_json(digits, trainer_kwargs, tmp_path):
    pruning = LatencyBudgetPruning(
        budget_fraction=0.6, num_steps=2, warmup_epochs=1, threads=1, batch_size=128, repeats=10, lut_repeats=5
    )
    bench = LatencyBenchmark(batch_sizes=[1, 128], threads=1, repeats=10, rounds=2)
    logger = CSVLogger(tmp_path, name="csv", version="")
    kwargs = {**trainer_kwargs, "logger": logger}
    trainer = pl.Trainer(max_epochs=4, callbacks=[pruning, bench], limit_train_batches=4, **kwargs)
    trainer.fit(resnet_classifier(), datamodule=digits)

    assert [(r["when"], r["step"]) for r in bench.records] == [
        ("fit_start", 0),
        ("prune_step", 1),
        ("prune_step", 2),
        ("fit_end", 2),
    ]
    final = bench.records[-1]
    for batch in ("1", "128"):
        assert final["speedup"][batch] == pytest.approx(
            bench.reference[batch]["p50_ms"] / final["results"][batch]["p50_ms"]
        )
        assert final["results"][batch]["threads"] == 1
        assert final["results"][batch]["throughput"] == pytest.approx(
            int(batch) / final["results"][batch]["p50_ms"] * 1e3
        )
    assert trainer.callback_metrics["latency/128/p50_ms"] > 0  # the epoch-end log, monitorable
    with open(tmp_path / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    logged = [float(r["latency/128/speedup"]) for r in rows if r.get("latency/128/speedup")]
    assert logged[-1] == pytest.approx(final["speedup"]["128"], rel=1e-5)  # the final record reached the logger

    record = json.loads((tmp_path / "latency.json").read_text())
    assert record["torch"] == torch.__version__
    assert record["device"] == final["results"]["1"]["device"]
    assert record["settings"]["batch_sizes"] == [1, 128]
    assert record["settings"]["threads"] == 1
    assert record["speedup"] == pytest.approx(final["speedup"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["latency_benchmark"]["history"]) == 4
    assert "latency_budget" in summary


def test_agrees_with_torch_utils_benchmark_within_ten_percent(digits, trainer_kwargs):
    bench = LatencyBenchmark(batch_sizes=[64], threads=1, repeats=30, rounds=3)
    model = cnn_classifier()
    trainer = pl.Trainer(max_epochs=1, callbacks=[bench], limit_train_batches=2, **trainer_kwargs)
    trainer.fit(model, datamodule=digits)
    assert bench.records[-1]["results"]["64"]["p50_ms"] > 0

    model.eval()
    inputs = batch_of(model.example_input_array, 64)
    # perf_counter as in measure_latency: Timer's default clock asks torch.accelerator.is_available() on
    # every reading, which on a CUDA build without a GPU adds ~10 % to a sub-millisecond call.
    timer = benchmark.Timer(
        stmt="model(inputs)", globals={"model": model, "inputs": inputs}, num_threads=1, timer=time.perf_counter
    )
    short = dataclasses.replace(bench.settings, repeats=9)
    ratios = []
    for _ in range(10):  # short alternations: the host's speed drifts within a second, and both sides see it
        ours = measure_latency(model, inputs, short, bench.device).p50_ms
        with torch.inference_mode():  # around the timer: a `with` inside its statement would be timed too
            timer.timeit(3)  # warm-up
            theirs = statistics.median(timer.timeit(1).median * 1e3 for _ in range(short.repeats))
        ratios.append(ours / theirs)
    # Per-call medians on both sides: Timer's blocked_autorange averages blocks of many calls, and on a
    # loaded machine every block then contains the time this process was descheduled (here up to 2x).
    assert statistics.median(ratios) == pytest.approx(1.0, rel=0.10), ratios


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_path_uses_cuda_events_and_reports_peak_memory(digits, trainer_kwargs):
    bench = LatencyBenchmark(batch_sizes=[1, 256], repeats=30, rounds=2)
    kwargs = {**trainer_kwargs, "accelerator": "gpu"}
    trainer = pl.Trainer(max_epochs=1, callbacks=[bench], limit_train_batches=2, **kwargs)
    trainer.fit(resnet_classifier(), datamodule=digits)
    result = bench.records[-1]["results"]["256"]
    assert result["timer"] == "cuda_events"
    assert result["peak_memory_mb"] > 0
    assert torch.cuda.get_device_name() == result["device"]
    assert trainer.callback_metrics["latency/256/peak_memory_mb"] > 0
    bf16 = LatencyBenchmark(batch_sizes=[256], amp_dtype="bfloat16", channels_last=True, compile=True, repeats=20)
    trainer = pl.Trainer(max_epochs=1, callbacks=[bf16], limit_train_batches=2, **kwargs)
    trainer.fit(resnet_classifier(), datamodule=digits)
    assert bf16.records[-1]["results"]["256"]["settings"]["compile"]


def test_unwritable_paths_are_refused_before_training(digits, trainer_kwargs, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=r"export_dir=.* is an existing file, not a directory"):
        LatencyBenchmark(export_dir=str(a_file))
    with pytest.raises(ValueError, match=r"export_dir=.* lies below .*, which is a file"):
        LatencyBenchmark(export_dir=str(a_file / "out"))
    (tmp_path / "latency.json").mkdir()
    trainer = pl.Trainer(max_epochs=1, callbacks=[LatencyBenchmark(batch_sizes=[1])], **trainer_kwargs)
    with pytest.raises(ValueError, match=r"filename=.*latency.json' is a directory"):
        trainer.fit(cnn_classifier(), datamodule=digits)
    assert trainer.global_step == 0


def test_a_second_fit_measures_on_against_the_same_reference_and_another_model_starts_anew(digits, trainer_kwargs):
    bench = LatencyBenchmark(batch_sizes=[1], threads=1, warmup=2, repeats=5, rounds=1)
    model = cnn_classifier()
    for _ in range(2):
        trainer = pl.Trainer(max_epochs=1, callbacks=[bench], limit_train_batches=2, **trainer_kwargs)
        trainer.fit(model, datamodule=digits)
    assert [r["when"] for r in bench.records] == ["fit_start", "fit_end", "fit_start", "fit_end"]
    reference = bench.records[0]["results"]
    assert bench.reference == reference
    last = bench.records[-1]
    assert last["speedup"]["1"] == pytest.approx(reference["1"]["p50_ms"] / last["results"]["1"]["p50_ms"])

    other = cnn_classifier(widths=(4, 4, 8, 8))  # a speed-up against the first model would be meaningless
    pl.Trainer(max_epochs=1, callbacks=[bench], limit_train_batches=2, **trainer_kwargs).fit(other, datamodule=digits)
    assert [r["when"] for r in bench.records] == ["fit_start", "fit_end"]
    assert bench.reference != reference
    assert bench.records[0]["speedup"] == {"1": 1.0}


def test_onnxruntime_not_installed_is_refused_at_construction_naming_the_extra(monkeypatch):
    real = ort_timing.importlib.util.find_spec
    monkeypatch.setattr(
        ort_timing.importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else real(name)
    )
    with pytest.raises(ImportError, match=r"needs \['onnxruntime'\]: pip install 'lightning-prune\[deploy\]'"):
        LatencyBenchmark(backend="onnxruntime")
    LatencyBenchmark(backend="eager")  # eager needs nothing more


def test_onnxruntime_backend_in_a_short_fit_records_logs_and_checks_parity(digits, trainer_kwargs, tmp_path):
    bench = LatencyBenchmark(batch_sizes=[1, 32], threads=1, warmup=2, repeats=5, rounds=2, backend="onnxruntime")
    logger = CSVLogger(tmp_path, name="csv", version="")
    trainer = pl.Trainer(max_epochs=1, callbacks=[bench], limit_train_batches=2, **{**trainer_kwargs, "logger": logger})
    trainer.fit(cnn_classifier(), datamodule=digits)

    assert [r["when"] for r in bench.records] == ["fit_start", "fit_end"]
    assert all("results" not in r for r in bench.records)  # eager was not asked for, so not timed
    start, final = bench.records[0]["ort"], bench.records[-1]["ort"]
    assert start["parity"]["max_abs_diff"] <= 1e-4  # the callback's own check of the exported model
    assert start["parity"]["ok"]
    assert start["parity"]["onnx_bytes"] > 0
    assert "parity" not in final  # once per series
    for batch in ("1", "32"):
        result = final["results"][batch]
        assert (result["runtime"], result["threads"], result["repeats"]) == ("onnxruntime", 1, 10)
        assert final["speedup"][batch] == pytest.approx(start["results"][batch]["p50_ms"] / result["p50_ms"])
        assert final["speedup"][batch] > 0
    metrics = trainer.callback_metrics
    assert {f"latency/ort/{b}/{k}" for b in ("1", "32") for k in ORT_KEYS} <= set(metrics)
    assert not any(key.startswith("latency/1/") for key in metrics)  # eager keys only when eager is timed
    with open(tmp_path / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    logged = [float(r["latency/ort/32/speedup"]) for r in rows if r.get("latency/ort/32/speedup")]
    assert logged[-1] == pytest.approx(final["speedup"]["32"], rel=1e-5)

    record = json.loads((tmp_path / "latency.json").read_text())
    assert record["settings"]["backend"] == ["onnxruntime"]
    assert record["onnxruntime"]["provider"] == "CPUExecutionProvider"
    assert record["onnxruntime"]["parity"]["max_abs_diff"] <= 1e-4
    assert record["onnxruntime"]["speedup"] == pytest.approx(final["speedup"])
    summary = json.loads((tmp_path / "summary.json").read_text())["latency_benchmark"]
    assert summary["ort_speedup"] == pytest.approx(final["speedup"])
    assert [set(h) >= {"ort_p50_ms", "ort_speedup"} for h in summary["history"]] == [True, True]


@pytest.mark.slow  # three ONNX exports: a few seconds each on a loaded 2-core machine
def test_both_backends_side_by_side_at_every_pruning_step(digits, trainer_kwargs):
    pruning = IterativePruning(target_sparsity=0.5, step_ratio=0.5, finetune_epochs=1)
    both = ["eager", "onnxruntime"]
    bench = LatencyBenchmark(batch_sizes=[16], threads=1, warmup=2, repeats=5, rounds=2, backend=both)
    trainer = pl.Trainer(max_epochs=2, callbacks=[pruning, bench], limit_train_batches=2, **trainer_kwargs)
    trainer.fit(cnn_classifier(), datamodule=digits)

    assert [(r["when"], r["step"]) for r in bench.records] == [("fit_start", 0), ("prune_step", 1), ("fit_end", 1)]
    for record in bench.records:  # each measurement times both runtimes, in the same rounds
        eager, ort = record["results"]["16"], record["ort"]["results"]["16"]
        assert (eager["runtime"], ort["runtime"]) == ("eager", "onnxruntime")
        assert len(eager["round_medians_ms"]) == len(ort["round_medians_ms"]) == 2
        assert record["ort"]["vs_eager"]["16"] == pytest.approx(eager["p50_ms"] / ort["p50_ms"])
    final = bench.records[-1]
    assert final["speedup"]["16"] > 0
    assert final["ort"]["speedup"]["16"] > 0
    assert bench.records[0]["ort"]["parity"]["max_abs_diff"] <= 1e-4
    metrics = trainer.callback_metrics
    assert {"latency/16/p50_ms", "latency/ort/16/p50_ms", "latency/ort/16/speedup", "latency/ort/16/vs_eager"} <= set(
        metrics
    )


class _DataDependent(Classifier):
    """A model torch.export cannot trace: Python control flow on a tensor's value."""

    def forward(self, x):
        logits = super().forward(x)
        return logits if x.sum() > 0 else -logits


def test_a_model_onnx_cannot_export_fails_at_fit_start_naming_it_and_the_reason(digits, trainer_kwargs):
    model = _DataDependent(cnn_classifier().net, 10, (1, 8, 8))
    bench = LatencyBenchmark(batch_sizes=[1], repeats=3, rounds=1, backend=["eager", "onnxruntime"])
    trainer = pl.Trainer(max_epochs=1, callbacks=[bench], limit_train_batches=2, **trainer_kwargs)
    with pytest.raises(OrtExportError, match=r"ONNX export of _DataDependent failed.*data-dependent.*x.sum\(\) > 0"):
        trainer.fit(model, datamodule=digits)
    assert trainer.global_step == 0
    assert bench.records == []


def test_a_used_benchmark_still_pickles(digits, trainer_kwargs):
    """ddp_spawn pickles the Trainer, which a used datamodule still reaches with this callback in it."""
    bench = LatencyBenchmark(batch_sizes=[1], threads=1, repeats=3)
    pl.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, callbacks=[bench], **trainer_kwargs).fit(
        cnn_classifier(), datamodule=digits
    )
    copy = pickle.loads(pickle.dumps(bench))
    assert copy.records == bench.records
