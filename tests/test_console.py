"""The end-of-run console summary, on real runs (read back and as the app prints it) and on synthetic summaries."""

import io
import json

import pytest
from rich.console import Console

from lightning_prune.report import write_report
from lightning_prune.report.console import describe, print_summary
from lightning_prune.report.derived import latencies
from tests.helpers import cnn_classifier
from tests.report_runs import LATENCY_BATCHES, latency_run, real_sweep, write_synthetic_run


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return real_sweep(tmp_path_factory)


@pytest.fixture(scope="module")
def own_trainer_run(tmp_path_factory):
    return latency_run(tmp_path_factory)


def printed(path) -> str:
    console = Console(record=True, width=160, file=io.StringIO())
    print_summary(path, console=console)
    return console.export_text()


def row_of(text: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is ``first_cell``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("│").split("│")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row starting with {first_cell!r} in\n{text}")


def test_real_run_summary_matches_the_json(sweep):
    summary = json.loads((sweep.job / "summary.json").read_text())
    text = printed(sweep.job / "summary.json")
    assert "lightning-prune summary" in text
    assert "pruning steps: iterative" in text
    for record in summary["iterative"]["history"]:
        _step, epoch, sparsity, before, finetuned, finetune = row_of(text, str(record["step"]))
        assert (int(epoch), sparsity, finetune) == (record["epoch"], f"{record['sparsity']:.1%}", "ran")
        assert before == f"{record['val/acc_before']:.1%}"
        assert finetuned.endswith("%")
    last = summary["iterative"]["history"][-1]
    assert row_of(text, str(last["step"]))[4] == f"{summary['iterative']['metrics']['val/acc']:.1%}"
    assert row_of(text, "test/acc")[1] == f"{summary['run']['metrics']['test/acc']:.2%}"
    assert row_of(text, "params_nonzero")[1] == f"{summary['iterative']['params_nonzero']:,}"
    assert row_of(text, "iterative")[4] == f"{summary['iterative']['time_s']['finetune']:.2f}"  # time table


def test_the_app_prints_the_summary_at_the_end(sweep):
    assert sweep.stdout.count("pruning steps: iterative") == 2  # one per job
    assert "full report with plots: python -m lightning_prune.report" in sweep.stdout


def test_the_app_names_data_and_model_and_compares_dense_with_pruned(sweep):
    summary = json.loads((sweep.job / "summary.json").read_text())
    names = "data: digits (DigitsDataModule) | model: cnn (Classifier(net=SmallCNN))"
    assert sweep.stdout.count(names) == 2
    assert summary["run"]["data"] == "digits (DigitsDataModule)"
    text = printed(sweep.job / "summary.json")
    dense, pruned = summary["run"]["size"]["dense"], summary["run"]["size"]["pruned"]
    assert pruned["params_nonzero"] == summary["iterative"]["params_nonzero"]
    assert row_of(text, "parameters")[1:3] == [f"{dense['params']:,}", f"{pruned['params']:,}"]
    nonzero = row_of(text, "nonzero parameters")
    assert nonzero[1:] == [
        f"{dense['params_nonzero']:,}",
        f"{pruned['params_nonzero']:,}",
        f"{pruned['params_nonzero'] / dense['params_nonzero'] - 1:+.1%}",
    ]
    assert pruned["params_nonzero"] < 0.3 * dense["params_nonzero"]  # 75 % of the conv weights; head and BN dense
    assert row_of(text, "MACs per example")[1:] == [f"{dense['macs']:,}", f"{pruned['macs']:,}", "+0.0%"]


def test_own_trainer_summary_names_classes_and_shows_measured_speed_up(own_trainer_run):
    summary = json.loads((own_trainer_run / "summary.json").read_text())
    text = printed(own_trainer_run / "summary.json")
    assert "data: DigitsDataModule | model: Classifier(net=SmallCNN)" in text
    history = summary["latency_benchmark"]["history"]
    assert [r["when"] for r in (history[0], history[-1])] == ["fit_start", "fit_end"]
    for batch in LATENCY_BATCHES:
        dense, pruned = history[0]["p50_ms"][str(batch)], history[-1]["p50_ms"][str(batch)]
        row = row_of(text, f"latency p50 (ms), batch {batch}")
        assert row[1:] == [f"{dense:.3f}", f"{pruned:.3f}", f"{dense / pruned:.2f}x speed-up"]
    assert row_of(text, "latency_p50_ms")[1] == f"{history[-1]['p50_ms']['32']:.3f}"  # the largest batch
    assert "pruning steps: iterative" in text


def test_describe_names_nested_modules_by_class():
    assert describe(cnn_classifier()) == {"model": "Classifier(net=SmallCNN)"}


def test_skipped_finetunes_reasons_latency_and_size(tmp_path):
    text = printed(write_synthetic_run(tmp_path / "run") / "summary.json")
    assert row_of(text, "1")[-1] == "skipped: drop 3.0 pt < threshold 13.0 pt"
    assert row_of(text, "3")[-2:] == ["84.0%", "ran"]
    assert row_of(text, "2")[3:5] == ["-", "89.0%"]  # stale "before" hidden; right after pruning shown
    assert row_of(text, "latency_p50_ms")[1] == "1.000"
    assert row_of(text, "latency p50 (ms), latency")[1:] == ["2.500", "1.000", "2.50x speed-up"]
    assert [lat.label for lat in latencies(json.loads((tmp_path / "run" / "summary.json").read_text()))] == ["latency"]
    assert row_of(text, "params")[1] == "12,000"
    assert "also recorded: ice_gate (6 records)" in text


def test_summary_without_history_prints_the_final_figures(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text(json.dumps({"run": {"metrics": {"test/acc": 0.5}, "wall_s": 3.0}}))
    text = printed(run_dir / "summary.json")
    assert row_of(text, "test/acc")[1] == "50.00%"
    assert "pruning steps" not in text


def test_odd_section_shapes_do_not_break_the_summary_or_the_report(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    odd = {
        "pruner": {
            "history": [{"step": "x", "sparsity": "0.5", "finetune": None}, {"sparsity": "n/a"}, "not a record"],
            "time_s": 3.0,
            "layer_sparsity": ["not", "a", "dict"],
            "metrics": None,
        },
        "gate": {"history": {"not": "a list"}},
        "notes": "a string section",
        "run": {"metrics": {"test/acc": "0.75"}, "wall_s": None},
    }
    (run_dir / "summary.json").write_text(json.dumps(odd))
    text = printed(run_dir / "summary.json")
    assert row_of(text, "1")[:2] == ["1", "50.0%"]  # step from position; no epoch column
    assert row_of(text, "test/acc")[1] == "75.00%"
    report = write_report(run_dir).read_text()
    assert "| 1 | - | 0.5000 |" in report
