"""Runs the report and console tests read: a real two-job sweep, a real own-Trainer run with latency, synthetic runs.

The real sweep is ``python -m lightning_prune.run -m recipe=iterative debug=fast`` over two target
sparsities; each job directory is a complete run directory, so job ``1`` (two pruning steps) also serves as
"a ``recipe=iterative debug=fast`` run". The latency run is a user's own Trainer with IterativePruning and
LatencyBenchmark and a CSV log, recording the ``run`` section as the console module documents. The
synthetic summary carries the keys the other methods write (skipped fine-tunes with reasons, accuracy right
after pruning, latency, kept widths, a gate's history). Each real run is made once per session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger

from lightning_prune import IterativePruning, LatencyBenchmark
from lightning_prune.core.export import model_size, write_summary
from lightning_prune.data import DigitsDataModule
from lightning_prune.report.console import run_record
from tests.helpers import REPO, cnn_classifier

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RUNS: dict[str, object] = {}
LATENCY_BATCHES = [1, 32]


@dataclass
class Sweep:
    path: Path
    stdout: str
    report_at_end: str | None  # the sweep's report.md as the run left it (written by the Hydra callback)

    @property
    def job(self) -> Path:
        """Job ``1``: target sparsity 0.75, two pruning steps (0.5, then 0.75)."""
        return self.path / "1"


def real_sweep(tmp_path_factory) -> Sweep:
    """The two-job sweep, run once per session whichever test module asks first."""
    if "sweep" not in _RUNS:
        path = tmp_path_factory.mktemp("sweep")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "lightning_prune.run",
                "-m",
                "recipe=iterative",
                "debug=fast",
                "callbacks.iterative.target_sparsity=0.5,0.75",
                f"hydra.sweep.dir={path}",
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        report = path / "report.md"
        _RUNS["sweep"] = Sweep(path, result.stdout, report.read_text() if report.is_file() else None)
    return _RUNS["sweep"]


def latency_run(tmp_path_factory) -> Path:
    """An own-Trainer run: IterativePruning + LatencyBenchmark (batches 1 and 32), CSV log, ``run`` section."""
    if "latency" not in _RUNS:
        path = tmp_path_factory.mktemp("latency_run")
        pl.seed_everything(0, verbose=False)
        module, datamodule = cnn_classifier(widths=(8, 8, 16, 16)), DigitsDataModule(batch_size=64)
        callbacks = [
            IterativePruning(target_sparsity=0.5, step_ratio=0.5, warmup_epochs=1, export_dir=str(path)),
            LatencyBenchmark(batch_sizes=LATENCY_BATCHES, warmup=2, repeats=5, rounds=1, export_dir=str(path)),
        ]
        trainer = pl.Trainer(
            max_epochs=3,
            limit_train_batches=4,
            limit_val_batches=2,
            callbacks=callbacks,
            logger=CSVLogger(path, name="csv", version=""),
            default_root_dir=path,
            accelerator="cpu",
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        dense = model_size(module, module.example_input_array)
        trainer.fit(module, datamodule=datamodule)
        write_summary(path / "summary.json", "run", run_record(module, datamodule, dense))
        _RUNS["latency"] = path
    return _RUNS["latency"]


def png_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the IHDR chunk, after checking the PNG signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def synthetic_history() -> list[dict]:
    """Six steps as an ICE-gated structured pruner records them: three fine-tunes skipped, with reasons."""
    epochs, skipped = [2, 2, 2, 3, 3, 4], {1, 2, 4}
    records, sparsity = [], 0.0
    for step in range(1, 7):
        sparsity = 1 - (1 - sparsity) * 0.7
        record = {
            "step": step,
            "epoch": epochs[step - 1],
            "val/acc_before": 0.95 - 0.01 * step,
            "sparsity": sparsity,
            "acc_after": 0.95 - 0.03 * step,
            "drop_pt": 3.0 * step,
            "finetune": "skipped" if step in skipped else "ran",
            "latency_ms": 2.2 - 0.2 * step,
            "block": f"net.blocks.{step}",
            "widths": {"conv": 8},
        }
        if step in skipped:
            record["reason"] = f"drop {record['drop_pt']:.1f} pt < threshold 13.0 pt"
        records.append(record)
    return records


def synthetic_summary() -> dict:
    history = synthetic_history()
    return {
        "iterative": {
            "sparsity": history[-1]["sparsity"],
            "params": 12000,
            "params_nonzero": 4100,
            "finetunes_skipped": 3,
            "time_s": {"dense": 5.0, "prune": 0.4, "evaluate": 0.9, "finetune": 3.0, "lut": 1.2},
            "layer_sparsity": {"net.blocks.1.conv.weight": 0.3, "net.blocks.2.conv.weight": 0.7},
            "history": history,
            "metrics": {"val/acc": 0.9, "prune/sparsity": history[-1]["sparsity"]},
        },
        "ice_gate": {
            "threshold_pt": 13.0,
            "history": [
                {"step": r["step"], "drop_pt": r["drop_pt"], "skipped": r["finetune"] == "skipped"} for r in history
            ],
        },
        "odf2nna": {"widths_before": {"net.fc1": 64, "net.fc2": 32}, "widths_after": {"net.fc1": 20}},
        "latency": {"p50_ms": 1.0, "dense_p50_ms": 2.5},
        "run": {"metrics": {"test/acc": 0.89, "test/loss": 0.35}, "wall_s": 12.0, "seed": 0, "epochs": 6},
    }


def write_synthetic_run(path: Path, summary: dict | None = None, csv_rows: int = 6) -> Path:
    """A run directory: ``summary.json`` and a CSV log with per-epoch val/acc, sparsity and latency."""
    path.mkdir(parents=True, exist_ok=True)
    summary = synthetic_summary() if summary is None else summary
    (path / "summary.json").write_text(json.dumps(summary))
    if csv_rows:
        history = summary.get("iterative", {}).get("history", [])
        lines = ["epoch,step,val/acc,prune/sparsity,latency/p50_ms"]
        for epoch in range(csv_rows):
            sparsity = max([r["sparsity"] for r in history if r["epoch"] <= epoch] or [0.0])
            lines.append(f"{epoch},{10 * epoch},{0.80 + 0.02 * epoch},{sparsity},{2.5 - 0.25 * epoch}")
        (path / "csv").mkdir(exist_ok=True)
        (path / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    return path
