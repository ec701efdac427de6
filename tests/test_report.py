"""The report tool on a real sweep (two jobs of ``recipe=iterative debug=fast``), a real run with measured latency,
and synthetic summaries."""

import json
import re
import shutil

import pytest
from matplotlib.container import BarContainer

from lightning_prune.report import derived, find_runs, load_run, markdown, plots, read, write, write_report
from lightning_prune.report.__main__ import main
from lightning_prune.report.sweep import job_labels
from tests.report_runs import LATENCY_BATCHES, latency_run, png_size, real_sweep, synthetic_summary, write_synthetic_run

RUN_PLOTS = ("accuracy_sparsity", "timeline", "time_split", "layers")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return real_sweep(tmp_path_factory)


@pytest.fixture(scope="module")
def sweep_report(sweep):
    return write_report(sweep.path)


@pytest.fixture(scope="module")
def own_trainer_run(tmp_path_factory):
    return latency_run(tmp_path_factory)


def markdown_table(text: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the markdown table whose header starts with ``| first_header |``, bold marks removed."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    headers = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip().strip("*") for cell in line.strip("|").split("|")]
        rows.append(dict(zip(headers, cells)))
    return rows


def legend_labels(figure) -> list[str]:
    return [label for ax in figure.axes for label in ax.get_legend_handles_labels()[1]]


# ---------------------------------------------------------------- a real run


def test_run_report_writes_valid_pngs(sweep, sweep_report):
    text = (sweep.job / "report.md").read_text()
    for name in RUN_PLOTS:
        width, height = png_size(sweep.job / f"{name}.png")
        assert width >= 500, name
        assert height >= 150, name
        assert (sweep.job / f"{name}.png").stat().st_size > 5_000
        assert f"]({name}.png)" in text
    assert not (sweep.job / "latency_accuracy.png").exists()
    assert re.search(r"\*\*Accuracy vs latency\*\*: no latency measured", text)


def test_run_report_tables_match_the_summary(sweep, sweep_report):
    summary = json.loads((sweep.job / "summary.json").read_text())
    history = summary["iterative"]["history"]
    text = (sweep.job / "report.md").read_text()
    rows = markdown_table(text, "step")
    assert [int(r["step"]) for r in rows] == [r["step"] for r in history] == [1, 2]
    for row, record in zip(rows, history):
        assert float(row["sparsity"]) == pytest.approx(record["sparsity"], abs=5e-5)
        assert float(row["acc before"]) == pytest.approx(record["val/acc_before"], abs=5e-5)
        assert row["fine-tune"] == record["finetune"] == "ran"
    # After a step's fine-tune = the next step's "before" (same validation); the last = the final val/acc.
    assert float(rows[0]["acc after fine-tune"]) == pytest.approx(history[1]["val/acc_before"], abs=5e-5)
    assert float(rows[1]["acc after fine-tune"]) == pytest.approx(summary["iterative"]["metrics"]["val/acc"], abs=5e-5)
    figures = {r["figure"]: r["value"] for r in markdown_table(text, "figure")}
    assert float(figures["test/acc"]) == pytest.approx(summary["run"]["metrics"]["test/acc"], abs=5e-5)
    assert float(figures["sparsity"]) == pytest.approx(0.75, abs=5e-5)
    assert int(figures["params_nonzero"]) == summary["iterative"]["params_nonzero"]
    phases = markdown_table(text, "section")[0]
    assert float(phases["finetune"]) == pytest.approx(summary["iterative"]["time_s"]["finetune"], abs=0.006)


def test_run_plots_have_one_series_per_kind(sweep):
    run = load_run(sweep.job)
    steps = read.steps(run)
    figure = plots.accuracy_sparsity(steps)
    assert legend_labels(figure) == ["after fine-tune"]
    (line,) = figure.axes[0].get_lines()
    assert list(line.get_xdata()) == pytest.approx([0.0, 0.5, 0.75])  # dense, then each step
    timeline = plots.timeline(run.log, "val/acc", steps)
    assert legend_labels(timeline) == ["val/acc", "pruning step", "sparsity"]
    assert len(timeline.axes[0].get_lines()) == 1 + len(steps)  # accuracy + one marker per step epoch
    times = derived.phase_times(run)
    split = plots.time_split(times, run.summary["run"]["wall_s"])
    bars = [c for c in split.axes[0].containers if isinstance(c, BarContainer)]
    assert len(bars) == len([p for p, v in times["iterative"].items() if v > 0])
    layers = plots.layers(derived.layer_values(run.summary, "layer_sparsity"), {})
    (container,) = layers.axes[0].containers
    assert len(container) == len(run.summary["iterative"]["layer_sparsity"])


def test_report_reads_the_latency_the_callbacks_log(own_trainer_run):
    """LatencyBenchmark logs ``latency/<batch>/p50_ms`` and writes its history: the report finds both."""
    text = write_report(own_trainer_run).read_text()
    summary = json.loads((own_trainer_run / "summary.json").read_text())
    history = summary["latency_benchmark"]["history"]
    rows = markdown_table(text, "measured at")
    assert [r["measured at"] for r in rows] == [f"batch {b}" for b in sorted(LATENCY_BATCHES, reverse=True)]
    for row in rows:
        batch = row["measured at"].removeprefix("batch ")
        dense, pruned = history[0]["p50_ms"][batch], history[-1]["p50_ms"][batch]
        assert (row["dense p50 (ms per batch)"], row["pruned p50 (ms per batch)"]) == (f"{dense:.3f}", f"{pruned:.3f}")
        assert row["speed-up"] == f"{dense / pruned:.2f}x"
    assert "no latency measured" not in text
    run = load_run(own_trainer_run)
    assert "latency/32/p50_ms" in run.log  # the CSV column the per-epoch points come from
    series = write.latency_series(run, read.steps(run), derived.final_figures(run), "val/acc")
    per_epoch = next(points for label, points in series.items() if label.startswith("per epoch (latency/32/p50_ms"))
    assert len(per_epoch) == len(run.log["val/acc"])
    png_size(own_trainer_run / "latency_accuracy.png")
    sizes = {r["size"]: r for r in markdown_table(text, "size")}
    assert int(sizes["nonzero parameters"]["pruned"]) == summary["run"]["size"]["pruned"]["params_nonzero"]
    assert "Data: DigitsDataModule. Model: Classifier(net=SmallCNN)." in text


def test_latency_budget_section_and_metrics_only_are_read():
    budget = {"latency_budget": {"dense_ms": 3.0, "measured_ms": 1.5, "batch_size": 128}}
    assert [(m.label, m.dense_ms, m.pruned_ms) for m in derived.latencies(budget)] == [
        ("batch 128 (latency_budget check)", 3.0, 1.5)
    ]
    logged = {"run": {"metrics": {"latency/128/p50_ms": 2.0, "latency/128/speedup": 1.5, "latency/1/p50_ms": 0.5}}}
    found = derived.latencies(logged)
    assert [(m.label, m.dense_ms, m.pruned_ms, m.column) for m in found] == [
        ("batch 128", 3.0, 2.0, "latency/128/p50_ms"),
        ("batch 1", None, 0.5, "latency/1/p50_ms"),
    ]
    assert derived.final_latency(logged) == (2.0, 3.0)


# ---------------------------------------------------------------- a real sweep


def test_sweep_end_writes_and_prints_the_comparison(sweep):
    """The Hydra callback in conf/hydra/default.yaml summarised the sweep as it ended."""
    assert "lightning-prune sweep" in sweep.stdout
    table = sweep.stdout[sweep.stdout.index("lightning-prune sweep") :]
    assert "target_sparsity=0.5" in table
    assert "target_sparsity=0.75" in table
    assert sweep.report_at_end is not None
    rows = markdown_table(sweep.report_at_end, "settings")
    assert [r["settings"] for r in rows] == ["[target_sparsity=0.5](0/)", "[target_sparsity=0.75](1/)"]


def test_sweep_report_compares_jobs(sweep, sweep_report):
    assert sweep_report == sweep.path / "report.md"
    assert find_runs(sweep.path)[0] == "sweep"
    text = sweep_report.read_text()
    rows = markdown_table(text, "settings")
    assert [r["settings"] for r in rows] == [f"[target_sparsity={t}]({j}/report.md)" for j, t in ((0, 0.5), (1, 0.75))]
    assert "Swept: `callbacks.iterative.target_sparsity`" in text
    assert "Common overrides: `recipe=iterative debug=fast`" in text
    for row, job in zip(rows, ("0", "1")):
        summary = json.loads((sweep.path / job / "summary.json").read_text())
        assert float(row["sparsity"]) == pytest.approx(summary["iterative"]["sparsity"], abs=5e-5)
        assert float(row["test/acc"]) == pytest.approx(summary["run"]["metrics"]["test/acc"], abs=5e-5)
        assert (sweep.path / job / "report.md").exists()
    assert "| **0.7500** |" in text  # the best sparsity is marked
    png_size(sweep.path / "pareto.png")


def test_job_labels_are_the_swept_settings_cut_to_distinct_keys():
    varying = {
        "0": ["callbacks.iterative.lr=0.1", "model.module.lr=1", "seed=0"],
        "1": ["callbacks.iterative.lr=0.2", "model.module.lr=1", "seed=1"],
        "2": [],
        "3": [],
    }
    assert job_labels(varying) == {
        "0": "iterative.lr=0.1 module.lr=1 seed=0",
        "1": "iterative.lr=0.2 module.lr=1 seed=1",
        "2": "job 2",
        "3": "job 3",
    }
    assert job_labels({"0": ["+x=1"], "1": ["+x=1"]}) == {"0": "x=1 (job 0)", "1": "x=1 (job 1)"}


def test_pareto_marks_the_front_and_the_bests():
    jobs = {
        "ratio=0.5": {"test/acc": 0.95, "sparsity": 0.5, "latency_p50_ms": 3.0},
        "ratio=0.8": {"test/acc": 0.93, "sparsity": 0.8, "latency_p50_ms": 2.0},
        "ratio=0.7": {"test/acc": 0.90, "sparsity": 0.7, "latency_p50_ms": 2.5},  # dominated on both
    }
    front = plots.pareto_front({n: (f["sparsity"], f["test/acc"]) for n, f in jobs.items()}, 1)
    assert front == ["ratio=0.5", "ratio=0.8"]
    front = plots.pareto_front({n: (f["latency_p50_ms"], f["test/acc"]) for n, f in jobs.items()}, -1)
    assert front == ["ratio=0.8", "ratio=0.5"]
    figure = plots.pareto(jobs, "test/acc", [("sparsity", 1), ("latency_p50_ms", -1)])
    assert len(figure.axes) == 2
    for ax in figure.axes:
        assert len(ax.collections) == 3  # the jobs, the best accuracy, the best x
        assert len(ax.get_lines()) == 1  # the front
    assert "best test/acc (ratio=0.5)" in legend_labels(figure)
    assert "best latency_p50_ms (ratio=0.8)" in legend_labels(figure)
    annotations = [text.get_text() for text in figure.axes[0].texts]
    assert annotations == list(jobs)  # each point named by its settings


# ---------------------------------------------------------------- what the other methods write


def test_synthetic_summary_covers_skips_latency_and_widths(tmp_path):
    run_dir = write_synthetic_run(tmp_path / "run")
    text = write_report(run_dir).read_text()
    rows = markdown_table(text, "step")
    assert [r["fine-tune"] for r in rows] == ["skipped", "skipped", "ran", "skipped", "ran", "ran"]
    assert rows[0]["reason"] == "drop 3.0 pt < threshold 13.0 pt"
    assert [r["acc before"] for r in rows] == ["0.9400", "-", "-", "0.9100", "-", "0.8900"]  # stale ones hidden
    assert float(rows[1]["acc after pruning"]) == pytest.approx(0.89)
    assert [r["acc after fine-tune"] for r in rows] == ["-", "-", "0.8400", "-", "0.8600", "0.9000"]  # from CSV
    assert "block=net.blocks.1" in rows[0]["detail"]
    assert "widths" not in rows[0]["detail"]
    (latency,) = markdown_table(text, "measured at")
    assert (latency["dense p50 (ms per batch)"], latency["speed-up"]) == ("2.500", "2.50x")
    phases = markdown_table(text, "section")[0]
    assert float(phases["skipped (est.)"]) == pytest.approx(3.0)
    assert float(phases["other"]) == pytest.approx(1.5)
    assert "## History: ice_gate" in text
    assert "Plots not drawn" not in text
    for name in (*RUN_PLOTS, "latency_accuracy"):
        png_size(run_dir / f"{name}.png")


def test_synthetic_plots_show_skips_and_latency(tmp_path):
    run = load_run(write_synthetic_run(tmp_path / "run"))
    steps = read.steps(run)
    labels = legend_labels(plots.accuracy_sparsity(steps))
    assert labels == ["after fine-tune", "right after pruning", "fine-tune skipped"]
    figures = derived.final_figures(run)
    series = write.latency_series(run, steps, figures, "val/acc")
    assert [len(points) for points in series.values()] == [6, 6, 1]  # CSV epochs, steps, final model
    latency = plots.latency_accuracy(series, derived.final_latency(run.summary)[1])
    assert legend_labels(latency)[-1] == "dense model (2.50 ms)"
    assert len(latency.axes[0].get_lines()) == 3
    assert len(latency.axes[0].collections) == 1
    split = plots.time_split(derived.phase_times(run), 12.0)
    hatched = [c for c in split.axes[0].containers if c.patches[0].get_hatch()]
    assert len(hatched) == 1
    assert "not spent" in hatched[0].get_label()
    layers = plots.layers(derived.layer_values(run.summary, "layer_sparsity"), write._widths(run.summary))
    assert [ax.get_title() for ax in layers.axes] == [
        "Per-layer sparsity (iterative)",
        "Kept units per layer (odf2nna)",
    ]


def test_synthetic_sweep_with_latency_gets_two_pareto_panels(tmp_path):
    for job, (acc, latency) in enumerate([(0.91, 1.2), (0.88, 0.9), (0.85, 1.1)]):
        summary = synthetic_summary()
        summary["run"]["metrics"]["test/acc"], summary["latency"]["p50_ms"] = acc, latency
        write_synthetic_run(tmp_path / str(job), summary)
    text = write_report(tmp_path).read_text()
    rows = markdown_table(text, "settings")
    assert [r["job"] for r in rows] == ["0", "1", "2"]  # nothing varied in the overrides: labelled by job
    assert [r["settings"] for r in rows] == [f"[job {j}]({j}/report.md)" for j in range(3)]
    assert [r["latency_p50_ms"] for r in rows] == ["1.2000", "0.9000", "1.1000"]
    assert "| **0.9000** |" in text  # the lowest latency is the best
    png_size(tmp_path / "pareto.png")


# ---------------------------------------------------------------- degrading and failing


def test_summary_without_history_degrades(tmp_path, sweep, sweep_report):
    run_dir = tmp_path / "run"
    shutil.copytree(sweep.job, run_dir, ignore=shutil.ignore_patterns("csv"))
    assert list(run_dir.glob("*.png"))  # from the earlier report: stale once the data is gone
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({"run": summary["run"]}))
    text = write_report(run_dir).read_text()
    assert markdown_table(text, "figure")[0] == {
        "figure": "test/acc",
        "value": f"{summary['run']['metrics']['test/acc']:.4f}",
    }
    for reason in ("no section has a `history` of records with `sparsity`", "no CSV log", "no section has a `time_s`"):
        assert reason in text
    assert not list(run_dir.glob("*.png"))


def test_without_matplotlib_tables_are_still_written(tmp_path, monkeypatch):
    monkeypatch.setattr(markdown, "matplotlib_available", lambda: False)
    run_dir = write_synthetic_run(tmp_path / "run")
    text = write_report(run_dir).read_text()
    assert "matplotlib is not installed" in text
    assert markdown_table(text, "step")
    assert not list(run_dir.glob("*.png"))


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", r"missing: no such directory; expected a run directory"),
        ("empty", r"empty: no summary.json in it nor in its subdirectories"),
        ("bad_json", r"bad_json/summary.json: not valid JSON"),
    ],
)
def test_cli_names_the_bad_path(tmp_path, capsys, layout, message):
    if layout != "missing":
        (tmp_path / layout).mkdir()
    if layout == "bad_json":
        (tmp_path / layout / "summary.json").write_text("{not json")
    assert main([str(tmp_path / layout)]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_cli_on_a_run_prints_the_report_path(tmp_path, capsys):
    run_dir = write_synthetic_run(tmp_path / "run", csv_rows=0)
    assert main([str(run_dir / "summary.json")]) == 0
    assert capsys.readouterr().out.strip() == str(run_dir / "report.md")
