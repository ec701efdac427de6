"""What :class:`~lightning_prune.callbacks.latency_benchmark.LatencyBenchmark` reports: metrics, record, summary.

The callback decides when to measure and how; this module turns its measurements into what the user reads: the
metrics logged per batch size, the speed-ups against the run's first measurement, the JSON record written beside
the run (device, torch version, settings, every measurement) and its brief in ``summary.json``. Kept apart so the
record's layout, which the docs, reports and benchmarks read, is in one place and the callback reads as its hooks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lightning_prune.core.export import to_jsonable, write_summary
from lightning_prune.core.ort_timing import runtime_info

LOGGED = ("p50_ms", "p90_ms", "p99_ms", "throughput", "peak_memory_mb")


def first_measurement(records: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The first ``results`` (``key="results"``) or ONNX Runtime results (``key="ort"``): what speed-ups divide."""
    first = next((record[key] for record in records if key in record), None)
    return first["results"] if key == "ort" and first is not None else first


def speedup(reference: dict[str, Any], results: dict[str, Any]) -> dict[str, float]:
    """Per batch size, the reference's p50 over the results' p50."""
    return {b: reference[b]["p50_ms"] / results[b]["p50_ms"] for b in results}


def logged_metrics(record: dict[str, Any]) -> dict[str, float]:
    """``latency/<b>/<figure>`` (and ``latency/ort/...``) of one record, as logged to the Trainer's loggers."""
    metrics = {}
    ort = record.get("ort", {})
    for prefix, measured in (("latency", record), ("latency/ort", ort)):
        for batch, result in measured.get("results", {}).items():
            metrics.update({f"{prefix}/{batch}/{k}": float(result[k]) for k in LOGGED if result[k] is not None})
            metrics[f"{prefix}/{batch}/speedup"] = float(measured["speedup"][batch])
    metrics.update({f"latency/ort/{batch}/vs_eager": float(v) for batch, v in ort.get("vs_eager", {}).items()})
    return metrics


def write_record(
    directory: Path, filename: str, device: str, settings: dict[str, Any], records: list[dict[str, Any]]
) -> None:
    """Write ``<directory>/<filename>`` (every measurement) and the ``latency_benchmark`` section of the summary."""
    final = records[-1]
    payload = {
        "device": device,
        "torch": torch.__version__,
        "settings": settings,
        "reference": first_measurement(records, "results"),
        "final": final.get("results"),
        "speedup": final.get("speedup"),
        "records": records,
    }
    if "ort" in final:
        first = next(record["ort"] for record in records if "ort" in record)
        payload["onnxruntime"] = {
            **runtime_info(),
            "reference": first_measurement(records, "ort"),
            "final": final["ort"]["results"],
            "speedup": final["ort"]["speedup"],
            "vs_eager": final["ort"].get("vs_eager"),
            "parity": first.get("parity"),
        }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / filename).write_text(json.dumps(to_jsonable(payload), indent=2))
    history = [_brief(record) for record in records]
    summary = {k: payload[k] for k in ("device", "torch", "settings", "speedup")}
    if "onnxruntime" in payload:
        summary["ort_speedup"] = payload["onnxruntime"]["speedup"]
    write_summary(directory / "summary.json", "latency_benchmark", {**summary, "history": history})


def _brief(record: dict[str, Any]) -> dict[str, Any]:
    """A record in brief for ``summary.json``: when, p50 and speed-up per runtime."""
    brief = {"step": record["step"], "epoch": record["epoch"], "when": record["when"]}
    if "results" in record:
        brief.update(p50_ms={b: v["p50_ms"] for b, v in record["results"].items()}, speedup=record["speedup"])
    if "ort" in record:
        ort = record["ort"]
        brief.update(ort_p50_ms={b: v["p50_ms"] for b, v in ort["results"].items()}, ort_speedup=ort["speedup"])
    return brief
