"""ICE's stage-1 Optuna search on a persistent storage: workers share one study, a killed search resumes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from optuna.trial import TrialState

from lightning_prune.run import register_recipes
from lightning_prune.sweeps import OptunaStorage, TrialSeededSampler, open_storage, study_counts
from tests.helpers import REPO

STAGE1 = [sys.executable, "-m", "lightning_prune.run", "-m", "recipe=ice_pruning", "hparams_search=ice_stage1_optuna"]
# Tiny trials: a 2-block ResNet, 3 epochs of up to 30 batches of 8 (a few s each on one core).
TINY = [
    "model.net.blocks=[1,1]",
    "model.net.widths=[8,8]",
    "trainer.max_epochs=3",
    "callbacks.block_pruning.warmup_epochs=1",
    "data.batch_size=8",  # enough warm-up steps to lift the gate's A0 off chance level (it refuses an untrained net)
    "trainer.limit_train_batches=30",
    "trainer.limit_val_batches=2",
    "trainer.enable_progress_bar=false",
    "logger=none",
]
DEFAULT_DB = Path("multirun") / "ice_stage1" / "optuna.db"  # relative to the directory the search runs in


def stage1_hydra_config():
    register_recipes()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        overrides = ["recipe=ice_pruning", "hparams_search=ice_stage1_optuna"]
        return compose("run", overrides=overrides, return_hydra_config=True).hydra


def test_stage1_search_keeps_its_study_in_a_shared_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIGHTNING_PRUNE_OPTUNA_STORAGE", raising=False)
    hydra = stage1_hydra_config()
    assert hydra.sweeper.storage == f"sqlite:///{DEFAULT_DB}"
    assert hydra.sweeper.study_name == "ice_stage1"
    assert hydra.sweeper.sampler._target_ == "lightning_prune.sweeps.TrialSeededSampler"
    assert hydra.callbacks.optuna_storage._target_ == "lightning_prune.sweeps.OptunaStorage"
    monkeypatch.setenv("LIGHTNING_PRUNE_OPTUNA_STORAGE", "postgresql://optuna@db.example/studies")
    assert stage1_hydra_config().sweeper.storage == "postgresql://optuna@db.example/studies"


def test_trial_seeded_sampler_gives_workers_one_sequence() -> None:
    """Two workers (own sampler each, same seed) on one storage draw what one worker alone would, no repeats."""
    space = {f"p{i}": optuna.distributions.CategoricalDistribution(list(range(10))) for i in range(3)}

    def points(studies: list[optuna.Study], n: int) -> list[tuple]:
        trials = [studies[i % len(studies)].ask(space) for i in range(n)]
        assert [t.number for t in trials] == list(range(n))
        return [tuple(t.params.values()) for t in trials]

    storage = optuna.storages.InMemoryStorage()
    shared = [optuna.create_study(storage=storage, study_name="s", load_if_exists=True, sampler=TrialSeededSampler(0))]
    shared.append(
        optuna.create_study(storage=storage, study_name="s", load_if_exists=True, sampler=TrialSeededSampler(0))
    )
    alone = optuna.create_study(sampler=TrialSeededSampler(0))
    assert points(shared, 6) == points([alone], 6)
    assert len(set(points([optuna.create_study(sampler=TrialSeededSampler(0))], 6))) == 6
    # What the per-trial seeding avoids: two plain samplers with one seed hand both workers the same points.
    plain = [optuna.create_study(sampler=optuna.samplers.RandomSampler(0)) for _ in range(2)]
    assert points(plain[:1], 3) == points(plain[1:], 3)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("not-a-url", r"storage='not-a-url' cannot be opened: ArgumentError"),
        (
            "sqlite:///{tmp}/a_file/study.db",
            r"storage='sqlite:///.*/a_file/study.db' cannot be opened: FileExistsError",
        ),
        ("sqlite:///{tmp}/not_a_database.db", r"storage='sqlite:///.*/not_a_database.db' cannot be opened: .*Error"),
        ("postgresql://optuna:secret@127.0.0.1:1/studies", r"storage='postgresql://optuna:\*\*\*@127.0.0.1:1/studies'"),
    ],
)
def test_a_storage_that_cannot_be_opened_is_named(url: str, match: str, tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("a file where a folder should be")
    (tmp_path / "not_a_database.db").write_text("results I keep")
    url = url.format(tmp=tmp_path)
    with pytest.raises(ValueError, match=match) as raised:
        open_storage(url)
    assert "secret" not in str(raised.value)
    assert (tmp_path / "not_a_database.db").read_text() == "results I keep"  # nothing written is lost
    assert (tmp_path / "a_file").read_text() == "a file where a folder should be"

    with pytest.raises(SystemExit, match=match):  # Hydra would turn an exception into a warning and go on
        OptunaStorage().on_multirun_start(hydra_config(url))


def hydra_config(url: str, overrides: tuple[str, ...] = ("recipe=ice_pruning", "data=digits")):
    """The parts of a multirun's config the callback reads."""
    sweeper = {"storage": url, "study_name": "ice_stage1", "direction": "minimize"}
    return OmegaConf.create({"hydra": {"sweeper": sweeper, "overrides": {"task": list(overrides)}}})


def test_callback_creates_the_sqlite_folder_and_reports_a_resumed_study(tmp_path: Path, caplog) -> None:
    url = f"sqlite:///{tmp_path}/new/folder/study.db"
    config = hydra_config(url)
    with caplog.at_level(logging.INFO, logger="lightning_prune.sweeps"):
        OptunaStorage().on_multirun_start(config)
    assert "study 'ice_stage1': new" in caplog.text
    study = optuna.load_study(storage=url, study_name="ice_stage1")
    assert study.user_attrs["task_overrides"] == ["recipe=ice_pruning", "data=digits"]
    study.tell(study.ask(), 1.0)
    study.ask()  # left running, as by a killed worker
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lightning_prune.sweeps"):
        OptunaStorage().on_multirun_start(config)
    assert "resuming with 2 trials (1 complete, 1 running)" in caplog.text
    assert "belong to other workers or to a search that was killed" in caplog.text
    assert len(optuna.get_all_study_summaries(url)) == 1


def test_a_study_refuses_trials_of_another_search(tmp_path: Path) -> None:
    """Resuming with other overrides would mix objectives that do not compare: refused, the study untouched."""
    url = f"sqlite:///{tmp_path}/study.db"
    OptunaStorage().on_multirun_start(hydra_config(url))
    OptunaStorage().on_multirun_start(hydra_config(url, ("data=digits", "recipe=ice_pruning")))  # order is no matter
    with pytest.raises(SystemExit, match=r"study 'ice_stage1' in sqlite:///.* was started with the overrides "):
        OptunaStorage().on_multirun_start(hydra_config(url, ("recipe=ice_pruning", "data=mnist")))
    with pytest.raises(SystemExit, match=r"this run has \['recipe=ice_pruning', 'data=mnist'\].*study_name=<new"):
        OptunaStorage().on_multirun_start(hydra_config(url, ("recipe=ice_pruning", "data=mnist")))
    assert optuna.load_study(storage=url, study_name="ice_stage1").user_attrs["task_overrides"][-1] == "data=digits"


def start_worker(cwd: Path, n_trials: int, name: str) -> tuple[subprocess.Popen, Path]:
    """One stage-1 worker as documented, run from ``cwd`` (its default storage and sweep dirs land there)."""
    env = {key: value for key, value in os.environ.items() if key != "LIGHTNING_PRUNE_OPTUNA_STORAGE"}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    log = cwd / f"{name}.log"
    with log.open("w") as out:
        argv = [*STAGE1, f"hydra.sweeper.n_trials={n_trials}", *TINY]
        worker = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return worker, log


def finished(worker: tuple[subprocess.Popen, Path], timeout: float = 300) -> str:
    """Wait for ``worker`` to succeed; its log."""
    process, log = worker
    assert process.wait(timeout) == 0, log.read_text()[-3000:]
    return log.read_text()


def trials(cwd: Path) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{cwd / DEFAULT_DB}"
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["ice_stage1"]  # one study, no twin
    return optuna.load_study(study_name="ice_stage1", storage=storage).get_trials(deepcopy=False)


def swept_points(sweep_dirs: list[Path]) -> list[tuple]:
    """Each job's searched overrides, as the workers' own job directories record them: sorted (name, value) pairs."""
    points = []
    for job in sorted(job for sweep in sweep_dirs for job in sweep.iterdir() if job.name.isdigit()):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        points.append(tuple(sorted(tuple(o.split("=", 1)) for o in overrides if o.startswith("callbacks.ice_"))))
    return sorted(points)


@pytest.mark.slow
def test_two_workers_share_one_study(tmp_path: Path) -> None:
    """Two workers started together with the documented command and its defaults: one study holds both's trials."""
    workers = [start_worker(tmp_path, 2, name) for name in ("worker_a", "worker_b")]
    for worker in workers:
        finished(worker)
    study_trials = trials(tmp_path)
    assert [t.state for t in study_trials] == [TrialState.COMPLETE] * 4
    assert sorted(t.number for t in study_trials) == [0, 1, 2, 3]
    sweeps = sorted((tmp_path / "multirun" / "ice_stage1").glob("20*"))
    assert len(sweeps) == 2  # one directory per worker, though both started in the same second
    results = [yaml.safe_load((sweep / "optimization_results.yaml").read_text()) for sweep in sweeps]
    # Each worker reports the study's best when it ended: the one that ended last, the best of all trials.
    assert min(r["best_value"] for r in results) == pytest.approx(min(t.value for t in study_trials))
    in_study = sorted(tuple(sorted((key, str(value)) for key, value in t.params.items())) for t in study_trials)
    assert swept_points(sweeps) == in_study  # every job of both workers is a trial of the study
    assert len(set(in_study)) == 4  # and the workers searched different points


@pytest.mark.slow
def test_a_killed_search_resumes_the_same_study(tmp_path: Path) -> None:
    worker, log = start_worker(tmp_path, 6, "killed")
    deadline = time.monotonic() + 300

    def completed() -> int:  # opened as the workers open it: the worker may be creating the database right now
        if not (tmp_path / DEFAULT_DB).is_file():
            return 0
        counts = study_counts(open_storage(f"sqlite:///{tmp_path / DEFAULT_DB}"), "ice_stage1") or {}
        return counts.get("COMPLETE", 0)

    while not completed():
        assert worker.poll() is None, f"the worker ended before a trial finished: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no trial finished in 300 s"
        time.sleep(0.5)
    os.killpg(worker.pid, signal.SIGKILL)  # pre-empted mid-search
    worker.wait()
    before = trials(tmp_path)
    done = [t for t in before if t.state == TrialState.COMPLETE]
    assert 1 <= len(done) < 6

    resumed_log = finished(start_worker(tmp_path, 2, "resumed"))
    after = trials(tmp_path)
    assert [t.number for t in after[: len(before)]] == [t.number for t in before]
    assert [t.params for t in after if t.number in {d.number for d in done}] == [t.params for t in done]  # kept
    new = after[len(before) :]
    assert [t.state for t in new] == [TrialState.COMPLETE] * 2
    assert min(t.number for t in new) == len(before)  # the sequence continues after the killed worker's trials
    assert f"resuming with {len(before)} trials" in resumed_log
