"""The end-of-run console summary, on a real run (read back and as the app prints it) and on synthetic summaries."""

import io
import json

import pytest
from rich.console import Console

from lightning_prune.report import write_report
from lightning_prune.summary import print_summary
from tests.report_runs import real_sweep, write_synthetic_run


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return real_sweep(tmp_path_factory)


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


def test_skipped_finetunes_reasons_latency_and_size(tmp_path):
    text = printed(write_synthetic_run(tmp_path / "run") / "summary.json")
    assert row_of(text, "1")[-1] == "skipped: drop 3.0 pt < threshold 13.0 pt"
    assert row_of(text, "3")[-2:] == ["84.0%", "ran"]
    assert row_of(text, "2")[3:5] == ["-", "89.0%"]  # stale "before" hidden; right after pruning shown
    assert row_of(text, "latency_p50_ms")[1] == "1.000"
    assert row_of(text, "dense model")[1] == "2.500"
    assert row_of(text, "speed-up")[1] == "2.50x"
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
