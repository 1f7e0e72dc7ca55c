"""The sweep's state: an Optuna study on SQLite (embedded default) or any Optuna RDB storage URL.

The study is the queue and the source of truth. Each Optuna trial carries the user attribute `trial_key`;
grid points are enqueued once per key under a lock (Optuna's GridSampler and `enqueue_trial` duplicate points
across processes); a WAITING trial is claimed atomically by the storage's compare-and-set; running trials send
heartbeats, and trials whose worker died are failed and re-queued by `reconcile`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import warnings
import os
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import optuna
from filelock import FileLock
from optuna.trial import FrozenTrial, TrialState

from runner.spec import TrialSpec
from zoo.errors import UserError, one_line

T = TypeVar("T")
GRACE_SECONDS = 20  # default; VIDEOSWEEP_HEARTBEAT_GRACE_SECONDS for slow networks or heavily loaded hosts
KEY = "trial_key"
INTERRUPTED = "interrupted by the user"  # not the trial's fault: does not use up a retry
SUPPORTED_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2", "mysql", "mysql+pymysql")
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def default_storage(workdir: Path) -> str:
    return f"sqlite:///{(workdir / 'optuna.db').resolve()}"


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, for printing and logging."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


_WAL = {"on": False}


def sqlite_wal_on_connect() -> None:
    """Every SQLite connection of this process (study and MLflow stores): WAL, normal syncing, busy timeout.

    A commit then appends to the write-ahead log without an fsync of its own (still safe if a process is
    killed; only an OS crash can lose the last commits), and readers no longer block the writer, which
    matters with several workers heart-beating into one file.
    """
    if _WAL["on"]:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _pragmas(connection: Any, record: Any) -> None:
        if type(connection).__module__.startswith("sqlite3"):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={int(float(os.environ.get('VIDEOSWEEP_DB_TIMEOUT', 60)) * 1000)}")
            cursor.close()

    _WAL["on"] = True


def check_storage_url(url: str) -> str:
    """The URL's scheme, or a one-line error for one Optuna cannot use."""
    scheme = urlsplit(url).scheme
    if scheme not in SUPPORTED_SCHEMES:
        raise UserError(f"storage URL {mask_url(url)}: unsupported scheme {scheme!r}; use one of "
                        f"{', '.join(SUPPORTED_SCHEMES)}")
    return scheme


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats and, on SQLite, a busy timeout; one-line errors for bad URLs."""
    scheme = check_storage_url(url)
    engine_kwargs: dict[str, Any] = {}
    if scheme == "sqlite":
        engine_kwargs["connect_args"] = {"timeout": float(os.environ.get("VIDEOSWEEP_DB_TIMEOUT", 60))}
    else:
        engine_kwargs.update(pool_pre_ping=True, connect_args={"connect_timeout": 10})
    if scheme == "sqlite":
        sqlite_wal_on_connect()
    def connect() -> optuna.storages.RDBStorage:
        from sqlalchemy.exc import IntegrityError, ProgrammingError

        for attempt in range(5):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                  heartbeat_interval=max(1, round(heartbeat_seconds())),
                                                  grace_period=max(1, round(grace_seconds())))
            except (IntegrityError, ProgrammingError):  # another worker is creating the same tables right now
                if attempt == 4:
                    raise
                time.sleep(0.5 + attempt)
        raise AssertionError("unreachable")

    try:
        return retrying(connect, f"opening {mask_url(url)}")
    except UserError:
        raise
    except Exception as err:  # ImportError of a driver, a malformed URL, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot open study storage {mask_url(url)}: {reason}") from None


def grace_seconds() -> float:
    """How long a RUNNING trial may go without a heartbeat before another process declares its worker dead."""
    return float(os.environ.get("VIDEOSWEEP_HEARTBEAT_GRACE_SECONDS", GRACE_SECONDS))


def heartbeat_seconds() -> float:
    """Four beats per grace period: one late beat (a busy database, a starved thread) is not a death."""
    return grace_seconds() / 4


def retry_seconds() -> float:
    return float(os.environ.get("VIDEOSWEEP_DB_RETRY_SECONDS", 120))


def _unreachable(err: BaseException) -> bool:
    """Connection trouble worth waiting out (server down, restarting, network), not a wrong query."""
    from sqlalchemy.exc import DBAPIError, OperationalError, PendingRollbackError

    if isinstance(err, optuna.exceptions.StorageInternalError) and err.__cause__ is not None:
        err = err.__cause__
    if isinstance(err, PendingRollbackError):  # a session whose connection dropped; Optuna rolled it back
        return True
    if isinstance(err, OperationalError):
        return "locked" not in str(err)  # SQLite's busy timeout already waited; more waiting will not help
    return isinstance(err, DBAPIError) and bool(getattr(err, "connection_invalidated", False))


def retrying(call: Callable[[], T], what: str) -> T:
    """`call()` retried with backoff while the database is unreachable, for VIDEOSWEEP_DB_RETRY_SECONDS (120);
    then one clear error: nothing is lost, `videosweep resume` carries on once the database is back."""
    budget = retry_seconds()
    deadline, delay = time.monotonic() + budget, 0.5
    while True:
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - filtered by _unreachable
            if not _unreachable(err):
                raise
            if time.monotonic() + delay > deadline:
                original = getattr(err, "orig", None) or getattr(err, "__cause__", None) or err
                raise UserError(f"study storage unreachable for {budget:.0f} s while {what}: "
                                f"{one_line(str(original)).split(' [SQL')[0][:160]}; stopped cleanly, "
                                "`videosweep resume` finishes the sweep when it is back") from None
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


@contextmanager
def storage_errors(storage: Any) -> Iterator[None]:
    """Database trouble (locked past the busy timeout, gone, full) as one line instead of a traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as err:
        cause = err.__cause__ if isinstance(err, optuna.exceptions.StorageInternalError) and err.__cause__ else err
        original = getattr(cause, "orig", None) or cause
        label = storage if isinstance(storage, str) else getattr(getattr(storage, "engine", None), "url", "")
        url = mask_url(str(label or "the study storage"))
        raise UserError(f"study storage {url}: {one_line(str(original)).split(' [SQL')[0][:200]}") from None


def open_study(name: str, storage: optuna.storages.BaseStorage, direction: str,
               sampler: optuna.samplers.BaseSampler | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    with storage_errors(storage):
        return optuna.create_study(study_name=name, storage=storage, direction=direction, sampler=sampler,
                                   pruner=pruner, load_if_exists=True)


def existing_study(name: str, storage: optuna.storages.BaseStorage) -> optuna.Study | None:
    with storage_errors(storage):
        try:
            return optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            return None


def rdb_storage(study: optuna.Study) -> Any:
    """The RDBStorage under Optuna's caching wrapper."""
    return getattr(study._storage, "_backend", study._storage)


def _advisory_key(study: optuna.Study) -> int:
    digest = hashlib.sha256(f"videosweep:{study.study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def study_lock(study: optuna.Study, workdir: Path) -> Iterator[None]:
    """Serialise queue maintenance (enqueue, re-queue, the parent run) between every process of the sweep.

    On PostgreSQL this is a session advisory lock in the study's own database, so it holds across machines and
    is released by the server if its holder dies. Other storages use a file lock in the workdir (one machine).
    """
    engine = getattr(rdb_storage(study), "engine", None)
    if engine is not None and engine.url.get_backend_name() == "postgresql":
        from sqlalchemy import text

        key = _advisory_key(study)
        connection = retrying(lambda: _advisory_lock(engine, key), "taking the study lock")
        try:
            yield
        finally:
            try:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
            except Exception as err:  # noqa: BLE001 - filtered by _unreachable
                if not _unreachable(err):
                    raise  # (a dropped session took its lock with it: the server released it)
            finally:
                connection.close()
        return
    workdir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(workdir / ".study.lock"), timeout=120):
        yield


def _advisory_lock(engine: Any, key: int) -> Any:
    """A connection holding the PostgreSQL session advisory lock `key` (waits for it)."""
    from sqlalchemy import text

    connection = engine.connect()
    try:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        connection.commit()
    except BaseException:
        connection.close()
        raise
    return connection


def trials_by_key(study: optuna.Study) -> dict[str, list[FrozenTrial]]:
    grouped: dict[str, list[FrozenTrial]] = defaultdict(list)
    for trial in study.get_trials(deepcopy=False):
        key = trial.user_attrs.get(KEY)
        if key:
            grouped[key].append(trial)
    return grouped


def finished_keys(study: optuna.Study) -> set[str]:
    return {k for k, ts in trials_by_key(study).items() if any(t.state == TrialState.COMPLETE for t in ts)}


def fail_dead_trials(study: optuna.Study, reason: str = "worker stopped sending heartbeats") -> list[int]:
    """Fail RUNNING trials whose worker is gone: stale heartbeat, or none ever sent after the grace period."""
    storage = study._storage
    stale = set(storage._get_stale_trial_ids(study._study_id))
    cutoff = dt.datetime.now() - dt.timedelta(seconds=grace_seconds())
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _local_worker_gone(trial):
            stale.add(trial._trial_id)
        elif trial.datetime_start and trial.datetime_start < cutoff and not _has_heartbeat(rdb_storage(study), trial._trial_id):
            stale.add(trial._trial_id)
    failed = []
    for trial_id in stale:
        try:
            storage.set_trial_user_attr(trial_id, "failure", reason)
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
    return failed


def _local_worker_gone(trial: FrozenTrial) -> bool:
    """A trial run on this host by a process that no longer exists is dead now, not after the grace period.

    A zombie counts as gone (a container's PID 1 may never reap it), and so does a process started after the
    trial did (its PID was reused).
    """
    import psutil

    pid = trial.user_attrs.get("pid")
    if trial.user_attrs.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        started = trial.datetime_start.timestamp() if trial.datetime_start else None
        return started is not None and process.create_time() > started + 1
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def _has_heartbeat(storage: Any, trial_id: int) -> bool:
    from optuna.storages._rdb import models

    with storage.scoped_session() as session:
        return session.query(models.TrialHeartbeatModel).filter_by(trial_id=trial_id).count() > 0


def fail_trial(study: optuna.Study, trial_id: int, reason: str) -> None:
    """Mark a trial FAIL with its reason (used when a worker process died under it)."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial_id, "failure", reason)
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def enqueue(study: optuna.Study, key: str, spec: TrialSpec, attempt: int = 0) -> None:
    study.enqueue_trial(params={}, user_attrs={KEY: key, "params": spec.flat(), "attempt": attempt})


def requeue_failed(study: optuna.Study, max_retries: int, wanted: set[str] | None = None) -> int:
    """Enqueue again every key whose last attempt failed, up to `max_retries` retries. Call under the lock."""
    count = 0
    for key, trials in trials_by_key(study).items():
        if wanted is not None and key not in wanted:
            continue
        states = {t.state for t in trials}
        if TrialState.COMPLETE in states or TrialState.PRUNED in states:
            continue
        if TrialState.WAITING in states or TrialState.RUNNING in states:
            continue
        failed = [t for t in trials if t.state == TrialState.FAIL]
        failures = sum(t.user_attrs.get("failure") != INTERRUPTED for t in failed)
        if failed and failures <= max_retries:
            last = max(trials, key=lambda t: t.number)
            study.enqueue_trial(params={}, user_attrs={**last.user_attrs, "attempt": failures})
            count += 1
    return count


def enqueue_missing(study: optuna.Study, keys: list[str], specs: list[TrialSpec]) -> int:
    """Enqueue grid points that have no trial yet (never twice, whoever calls first). Call under the lock."""
    known = trials_by_key(study)
    count = 0
    for key, spec in zip(keys, specs):
        if key not in known:
            enqueue(study, key, spec)
            count += 1
    return count


def _take(backend: Any, trial_id: int) -> bool:
    """WAITING -> RUNNING in one conditional UPDATE; True only for the one process whose UPDATE matched.

    Optuna's own set_trial_state_values reads, checks and then writes; on SQLite (no SELECT ... FOR UPDATE,
    and pysqlite begins the transaction only at the write) two workers can both see WAITING and both win.
    If the connection drops around the commit, the start time we wrote says whether the claim went through.
    """
    from optuna.storages._rdb import models
    from sqlalchemy import select, update

    start_column = models.TrialModel.__table__.c.datetime_start
    # Optuna 5 keeps naive UTC in the column (its model converts); Optuna 4 kept naive local time.
    utc = hasattr(models.TrialModel, "_datetime_start_utc")
    started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) if utc else dt.datetime.now()
    statement = (update(models.TrialModel)
                 .where(models.TrialModel.trial_id == trial_id, models.TrialModel.state == TrialState.WAITING)
                 .values({models.TrialModel.state: TrialState.RUNNING, start_column: started}))
    try:
        with backend.engine.begin() as connection:
            return connection.execute(statement).rowcount == 1
    except Exception as err:  # noqa: BLE001 - filtered by _unreachable
        if not _unreachable(err):
            raise

    def ours() -> bool:  # (a database that keeps whole seconds only, as MySQL may, leaves it to the reaper)
        with backend.engine.connect() as connection:
            state, start = connection.execute(select(models.TrialModel.state, start_column)
                                              .where(models.TrialModel.trial_id == trial_id)).one()
        return state == TrialState.RUNNING and start == started

    return retrying(ours, f"checking the claim of trial {trial_id}")


def claim_waiting(study: optuna.Study, rank: Callable[[FrozenTrial], int] | None = None) -> optuna.Trial | None:
    """Atomically take a WAITING trial (the storage's compare-and-set, as Optuna's own queue does), preferring
    the lowest `rank` and then the lowest number; None when the queue is empty.

    Once taken, the trial is ours: a storage hiccup after that is waited out, never answered by claiming
    another trial (which would leave this one RUNNING with nobody on it).
    """
    storage = study._storage
    waiting = storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,))
    order = sorted(waiting, key=lambda t: ((rank(t) if rank else 0), t.number))
    for trial in order:
        if not _take(rdb_storage(study), trial._trial_id):
            continue  # another worker took it first
        trial_id = trial._trial_id
        retrying(lambda: storage.record_heartbeat(trial_id), f"recording the claim of trial {trial_id}")
        return retrying(lambda: optuna.trial.Trial(study, trial_id), f"starting trial {trial_id}")
    return None


def state_counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state (and `invalid`); a read, so a dropped connection is simply waited out."""
    return retrying(lambda: _count_states(study), "counting trials")


def _count_states(study: optuna.Study) -> dict[str, int]:
    counts = {state.name.lower(): 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("invalid_reason"):
            counts["invalid"] = counts.get("invalid", 0) + 1
            continue
        counts[trial.state.name.lower()] += 1
    return counts


logging.getLogger("optuna").setLevel(logging.WARNING)
