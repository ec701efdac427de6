"""Optuna searches that scale out: one study in a persistent storage, shared by workers, resumable.

``hparams_search=ice_stage1_optuna`` keeps its study in ``hydra.sweeper.storage`` (SQLite by default, any
SQLAlchemy URL) under a fixed ``study_name``. hydra-optuna-sweeper opens it with ``load_if_exists=True``, so
every process started with the same storage and study name adds its ``n_trials`` to one study: several
workers on one machine or on a cluster share it, and a search that was killed resumes by running again.
Two pieces make that hold:

- :class:`OptunaStorage`, a Hydra callback, opens the storage before the sweeper does: it creates a SQLite
  file's folder, fails naming the URL when the storage cannot be opened (Optuna's own error names neither
  the URL nor the setting), refuses to add trials of another search (other command-line overrides) to a
  study, and logs how many trials the study already holds.
- :class:`TrialSeededSampler` draws trial ``n``'s point from ``(seed, n)`` alone. A plain seeded sampler
  would hand every worker, and every resumed run, the same sequence of points; trial numbers come from the
  shared storage, so workers draw different points and a resumed search continues the sequence.
"""

from __future__ import annotations

import logging
import random
import time
import zlib
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

log = logging.getLogger(__name__)


class TrialSeededSampler(optuna.samplers.RandomSampler):
    """Random search in which trial ``n`` draws each parameter from a generator seeded by ``(seed, n, name)``.

    The same seed gives the same point for trial ``n`` whichever worker asks for it, so the study's points
    follow one sequence however many workers share it and however often it is resumed.

    Example::

        >>> import optuna
        >>> space = {"lr": optuna.distributions.CategoricalDistribution([0.01, 0.02, 0.05, 0.1])}
        >>> points = []
        >>> for _ in range(2):  # two workers, each with its own sampler, on one study
        ...     study = optuna.create_study(sampler=TrialSeededSampler(seed=0))
        ...     points.append(study.ask(space).params["lr"])
        >>> points[0] == points[1]  # both trials are number 0 of their study: the same point
        True
    """

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(seed)
        self.seed = seed

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        if self.seed is not None:
            key = [self.seed, trial.number, zlib.crc32(param_name.encode())]
            self._rng = np.random.RandomState(np.random.SeedSequence(key).generate_state(1)[0])
        return super().sample_independent(study, trial, param_name, param_distribution)


def shown_url(url: str) -> str:
    """``url`` as logs and errors show it: a password masked (SQLAlchemy's rendering), else unchanged."""
    try:
        return repr(make_url(url))
    except Exception:  # not parseable: shown as given (the error says why)
        return url


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Open (and create, for SQLite with its folder) the Optuna storage at ``url``.

    Raises:
        ValueError: naming the URL (password masked) and the cause, when it cannot be parsed or opened.
    """
    try:
        parsed = make_url(url)
        if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return _create_rdb_storage(url)
    except Exception as err:
        cause = f"{type(err).__name__}: {str(err).rstrip('.')}"
        raise ValueError(
            f"hydra.sweeper.storage={shown_url(url)!r} cannot be opened: {cause}. Give an SQLAlchemy URL of a "
            "database this machine can reach, e.g. sqlite:///multirun/ice_stage1/optuna.db"
        ) from None


def _create_rdb_storage(url: str, attempts: int = 6) -> optuna.storages.RDBStorage:
    """``RDBStorage(url)``, tried again while other workers are creating the same new database.

    Optuna's first open of a database creates its tables and stamps their schema version without a lock, so
    workers started together on a new database collide ("table ... already exists", a duplicate version
    stamp, "database is locked"); a later try finds the schema in place. Other failures are raised at once.
    """
    for attempt in range(1, attempts + 1):
        try:
            return optuna.storages.RDBStorage(url)
        except DBAPIError as err:
            racing = isinstance(err, IntegrityError) or any(sign in str(err) for sign in ("already exists", "locked"))
            if not racing or attempt == attempts:
                raise
            time.sleep(0.1 * attempt * (1 + random.random()))  # jitter: racing workers should not meet again
    raise AssertionError(attempts)  # attempts < 1


def study_counts(storage: optuna.storages.BaseStorage, study_name: str) -> dict[str, int] | None:
    """``{"COMPLETE": 3, "RUNNING": 1, ...}`` for the study's trials, or ``None`` when there is no such study."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return None
    counts: dict[str, int] = {}
    for trial in storage.get_all_trials(study_id, deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def check_same_search(study: optuna.Study, overrides: list[str], url: str) -> None:
    """Record the command-line overrides that define a new study's objective; refuse to resume it with others.

    Trials of one study are compared with each other: a worker or a resumed run with other overrides (other
    data, model, seed, budget) would mix objectives that do not compare, and stage 2 would read a wrong best.

    Raises:
        ValueError: naming the study, the storage and both sets of overrides.
    """
    recorded = study.user_attrs.get("task_overrides")
    if recorded is None:
        study.set_user_attr("task_overrides", list(overrides))
    elif sorted(recorded) != sorted(overrides):
        raise ValueError(
            f"Optuna study {study.study_name!r} in {shown_url(url)} was started with the overrides {recorded}; "
            f"this run has {list(overrides)}. Resume it with the same overrides, or start another study: "
            "hydra.sweeper.study_name=<new name>"
        )


def _directions(direction: Any) -> list[str]:
    """hydra-optuna-sweeper's ``direction`` (a name, an enum, or a list of them) as Optuna's list of names."""
    values = direction if isinstance(direction, (list, ListConfig)) else [direction]
    return [value.name if isinstance(value, Enum) else str(value) for value in values]


class OptunaStorage(Callback):
    """Hydra callback: open the sweeper's study before the sweep, check it is the same search, say if it resumes.

    Configured by ``conf/hparams_search/ice_stage1_optuna.yaml`` (``hydra.callbacks.optuna_storage``).
    Nothing happens without a storage URL (an in-memory study, or a storage given as an object) or a study name.

    Raises:
        SystemExit: before any trial, with the message of :func:`open_storage` (a storage that cannot be opened)
            or of :func:`check_same_search` (a study started with other overrides).
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = config.hydra.sweeper
        url, name = sweeper.get("storage"), sweeper.get("study_name")
        if not isinstance(url, str) or name is None:
            return
        try:
            storage = open_storage(url)
            counts = study_counts(storage, name)
            directions = _directions(sweeper.get("direction", "minimize"))
            study = optuna.create_study(storage=storage, study_name=name, directions=directions, load_if_exists=True)
            check_same_search(study, list(config.hydra.overrides.task), url)
        except ValueError as err:
            # Hydra turns a callback's exception into a warning, and the sweeper would then fail inside Optuna
            # (or mix searches) without naming the setting; SystemExit is no Exception: it stops the sweep here.
            raise SystemExit(f"Error: {err}") from None
        if not counts:
            log.info("Optuna study %r: new, in %s", name, shown_url(url))
            return
        running = counts.get(TrialState.RUNNING.name, 0)
        log.info(
            "Optuna study %r in %s: resuming with %d trials (%s)%s",
            name,
            shown_url(url),
            sum(counts.values()),
            ", ".join(f"{count} {state.lower()}" for state, count in sorted(counts.items())),
            f"; {running} running ones belong to other workers or to a search that was killed" if running else "",
        )
