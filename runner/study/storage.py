"""The study's storage: URLs (checked and masked), opening an Optuna RDB storage (SQLite pragmas, pools) behind
a proxy that rides out a dropped database on every call, and database errors as one line.

The study is the sweep's queue and source of truth: SQLite in the workdir by default (embedded, no server),
or any Optuna RDB URL (PostgreSQL for several machines).
"""

from __future__ import annotations

import abc
import copy
import logging
import math
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import optuna
from optuna.trial import FrozenTrial, TrialState

from runner.retry import database_budget, retry
from runner.sqlite import busy_timeout_seconds, sqlite_wal_on_connect
from runner.study import liveness
from runner.study import optuna_internals as internals
from zoo.errors import StoreUnreachable, UserError, one_line
from zoo.secrets import mask_text, mask_url  # storage.mask_url is also used by callers

T = TypeVar("T")
SUPPORTED_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2", "mysql", "mysql+pymysql")
SCHEMA_CREATION_ATTEMPTS = 5  # workers starting together on an empty database race to create its tables
optuna.logging.set_verbosity(optuna.logging.WARNING)
logging.getLogger("optuna").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def default_storage(workdir: Path) -> str:
    return f"sqlite:///{(workdir / 'optuna.db').resolve()}"


def check_storage_url(url: str) -> str:
    """The URL's scheme, or a one-line error for one Optuna cannot use."""
    scheme = urlsplit(url).scheme
    if scheme not in SUPPORTED_SCHEMES:
        raise UserError(f"storage URL {mask_url(url)}: unsupported scheme {scheme!r}; use one of "
                        f"{', '.join(SUPPORTED_SCHEMES)}")
    return scheme


# Connection-time mistakes that no wait mends (a wrong password, database, role or host; a full disk): one line at
# once. psycopg reports them without an SQLSTATE, so their messages are all there is to go by.
_PERMANENT = ("does not exist", "authentication failed", "no password supplied", "pg_hba.conf",
              "failed to resolve host", "could not translate host name", "name or service not known",
              "nodename nor servname", "access denied", "unknown database", "unable to open database file",
              "disk is full", "locked")  # SQLite's busy timeout already waited for a lock: more waiting will not help


def unreachable(err: BaseException) -> bool:
    """Connection trouble worth waiting out (server down, restarting, failing over, a dropped connection), not a
    wrong query or a configuration mistake."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, PendingRollbackError

    if isinstance(err, optuna.exceptions.StorageInternalError) and err.__cause__ is not None:
        err = err.__cause__
    if isinstance(err, LockLost):  # the step it interrupted is redone under a new lock
        return True
    if isinstance(err, PendingRollbackError):  # a session whose connection dropped; Optuna rolled it back
        return True
    if not isinstance(err, DBAPIError):
        return False
    message = str(getattr(err, "orig", None) or err).lower()
    if any(marker in message for marker in _PERMANENT):
        return False
    return isinstance(err, (OperationalError, InterfaceError)) or bool(err.connection_invalidated)


def _short(err: BaseException, limit: int) -> str:
    """A database error's own message, without SQLAlchemy's appended SQL."""
    original = getattr(err, "orig", None) or getattr(err, "__cause__", None) or err
    return mask_text(one_line(str(original)).split(" [SQL")[0])[:limit]


class LockLost(Exception):
    """The study lock went with its database connection (a restart, a failover) while its holder was writing:
    the holder stops before its next write, and its step is redone under a new lock (`retrying`)."""


_fence = threading.local()  # this thread's check that it still holds the study lock, inside `fenced`


@contextmanager
def fenced(check: Callable[[], None]) -> Iterator[None]:
    """Run `check` (raising LockLost) before every study write this thread makes inside the block."""
    outer = getattr(_fence, "check", None)
    _fence.check = check
    try:
        yield
    finally:
        _fence.check = outer


def _check_fence() -> None:
    check = getattr(_fence, "check", None)
    if check is not None:
        check()


def retrying(call: Callable[[], T], what: str) -> T:
    """`call()` retried while the database is unreachable (the budget is in runner/retry.py); then one clear
    error: nothing is lost, `videosweep resume` carries on once the database is back.

    Every call into the study goes through `RetryingStorage`; this is for the few that reach the database
    around Optuna (the claim's conditional UPDATE, the advisory lock) and for steps made of several calls."""
    budget = database_budget()
    return retry(call, transient=unreachable, budget_seconds=budget, give_up=lambda err: StoreUnreachable(
        f"study storage unreachable for {budget:.0f} s while {what}: {_short(err, 160)}; stopped cleanly, "
        "`videosweep resume` finishes the sweep when it is back"))


_CALLS = {"get_all_trials": "reading the trials", "get_trial": "reading a trial", "record_heartbeat":
          "recording a heartbeat", "set_trial_state_values": "recording a trial's state",
          "create_new_trial": "adding a trial", "set_trial_user_attr": "recording a trial attribute"}


class RetryingStorage(optuna.storages.BaseStorage, internals.HeartbeatStorage):
    """The study storage every process uses: each call, ours or one Optuna makes on our behalf (`study.trials`,
    `tell`, a sampler reading the history), waits out a dropped or restarting database under the database
    budget, so no call site has to remember to.

    Reads and upserts are simply called again. The two writes that are not idempotent check first whether a
    lost answer hid a success: a trial is created with a nonce in its system attributes and found by it; a
    state change already made (the same finished state and values) is not made twice.
    """

    def __init__(self, rdb: optuna.storages.RDBStorage) -> None:
        self.rdb = rdb  # for the few statements Optuna has no method for (runner/study/optuna_internals.py)
        self._inner = internals.cached(rdb)

    def __getattr__(self, name: str) -> Any:  # anything else Optuna may look up (its private helpers)
        if name == "_inner":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self._inner, name)
        if name in _WRITES:
            _check_fence()
        return retrying(lambda: method(*args, **kwargs), _CALLS.get(name, name.replace("_", " ")))

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        _check_fence()
        nonce = uuid.uuid4().hex
        template = _with_nonce(template_trial, nonce)
        tries = 0

        def once() -> int:
            nonlocal tries
            tries += 1
            if tries > 1 and (found := self._created(study_id, nonce)) is not None:
                return found  # the first attempt's commit went through; only its answer was lost
            return self._inner.create_new_trial(study_id, template)

        return retrying(once, _CALLS["create_new_trial"])

    def _created(self, study_id: int, nonce: str) -> int | None:
        for trial in self._inner.get_all_trials(study_id, deepcopy=False):  # also caches it, as a create would
            if trial.system_attrs.get(NONCE_ATTR) == nonce:
                return internals.trial_id(trial)
        return None

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
                               ) -> bool:
        _check_fence()
        tries = 0

        def once() -> bool:
            nonlocal tries
            tries += 1
            if tries > 1 and state.is_finished() and _already(self._inner.get_trial(trial_id), state, values):
                return True  # made by the attempt whose answer was lost
            return self._inner.set_trial_state_values(trial_id, state, values)

        # WAITING -> RUNNING retried after a lost answer reads False (taken): if it was ours after all, the trial
        # has no heartbeat and the dead-trial reaper fails it after the grace period (runner/study/liveness.py).
        return retrying(once, _CALLS["set_trial_state_values"])

    def get_heartbeat_interval(self) -> int | None:
        return self._inner.get_heartbeat_interval()

    def get_heartbeat_stale_trial_callback(self) -> Any:
        return self._inner.get_heartbeat_stale_trial_callback()

    def remove_session(self) -> None:
        self._inner.remove_session()


def _retried(name: str) -> Callable[..., Any]:
    def method(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    return method


# Reads, and writes that are upserts (attributes, parameters, intermediate values, heartbeats): calling one again
# after a lost answer leaves the study as one call would. `create_new_study` again after a lost answer raises
# DuplicatedStudyError, which `optuna.create_study(load_if_exists=True)` answers by loading it.
_IDEMPOTENT = ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
               "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
               "get_study_system_attrs", "get_all_studies", "set_trial_param", "get_trial_id_from_study_id_trial_number",
               "get_trial_number_from_id", "get_trial_param", "set_trial_intermediate_value", "set_trial_user_attr",
               "set_trial_system_attr", "get_trial", "get_all_trials", "get_n_trials", "get_best_trial",
               "get_trial_params", "get_trial_user_attrs", "get_trial_system_attrs", "record_heartbeat",
               "_get_stale_trial_ids")
_WRITE_PREFIXES = ("set_", "create_", "delete_", "record_")  # the storage methods that change the study
_WRITES = {name for name in _IDEMPOTENT if name.startswith(_WRITE_PREFIXES)}
for _name in _IDEMPOTENT:
    setattr(RetryingStorage, _name, _retried(_name))
abc.update_abstractmethods(RetryingStorage)


class ReadOnlyStorage(optuna.storages.BaseStorage):
    """The study as a viewer (the Optuna dashboard) sees it: every read passes through, every write is refused, so
    a page left open can neither tell, rename, delete nor annotate the sweep's trials."""

    def __init__(self, inner: optuna.storages.BaseStorage) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "_inner":
            raise AttributeError(name)
        if name.startswith(_WRITE_PREFIXES):
            return _refused(name).__get__(self)
        return getattr(self._inner, name)


def _refused(name: str) -> Callable[..., Any]:
    def method(self: ReadOnlyStorage, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(f"the study is shown read-only: {name} is refused")

    method.__name__ = method.__qualname__ = name
    return method


def _passed(name: str) -> Callable[..., Any]:
    def method(self: ReadOnlyStorage, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._inner, name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    return method


for _name in (*_IDEMPOTENT, "create_new_trial", "set_trial_state_values"):
    setattr(ReadOnlyStorage, _name, _refused(_name) if _name.startswith(_WRITE_PREFIXES) else _passed(_name))
abc.update_abstractmethods(ReadOnlyStorage)
NONCE_ATTR = "videosweep:created"  # a trial's creation nonce (system attribute): finds it after a lost answer


def _with_nonce(template: FrozenTrial | None, nonce: str) -> FrozenTrial:
    """The trial to create, marked with `nonce`; without a template, the RUNNING trial Optuna would make."""
    if template is None:
        template = FrozenTrial(number=0, state=TrialState.RUNNING, value=None, datetime_start=datetime.now(),
                               datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
                               intermediate_values={}, trial_id=0)
    marked = copy.deepcopy(template)
    marked.system_attrs[NONCE_ATTR] = nonce
    return marked


def _already(trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> bool:
    """Whether `trial` is already in `state` with `values`."""
    if trial.state != state:
        return False
    if values is None:
        return True
    return trial.values is not None and len(trial.values) == len(values) and all(
        math.isclose(a, b, rel_tol=1e-12) or a == b for a, b in zip(trial.values, values))


def _schema_race(err: BaseException) -> bool:
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    return isinstance(err, (IntegrityError, ProgrammingError))


def open_storage(url: str) -> RetryingStorage:
    """An RDB storage with heartbeats and, on SQLite, a busy timeout, behind the retrying proxy; one-line errors
    for bad URLs."""
    scheme = check_storage_url(url)
    engine_kwargs: dict[str, Any] = {}
    if scheme == "sqlite":
        engine_kwargs["connect_args"] = {"timeout": busy_timeout_seconds()}
        sqlite_wal_on_connect()
    else:
        engine_kwargs.update(pool_pre_ping=True, connect_args={"connect_timeout": 10})

    def connect() -> optuna.storages.RDBStorage:
        internals.create_tables(url, engine_kwargs)  # a table at a time: an attempt cut short keeps what it made
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=True,
                                          heartbeat_interval=max(1, round(liveness.heartbeat_seconds())),
                                          grace_period=max(1, round(liveness.grace_seconds())))

    def connect_past_schema_races() -> optuna.storages.RDBStorage:  # another worker is creating the tables
        return retry(connect, transient=_schema_race, budget_seconds=SCHEMA_CREATION_ATTEMPTS * 2.0,
                     give_up=lambda err: err)

    try:
        return RetryingStorage(retrying(connect_past_schema_races, f"opening {mask_url(url)}"))
    except UserError:
        raise
    except Exception as err:  # ImportError of a driver, a malformed URL, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot open study storage {mask_url(url)}: {mask_text(reason)}") from None


@contextmanager
def storage_errors(storage: Any) -> Iterator[None]:
    """Database trouble that waiting does not mend (locked past the busy timeout, a wrong database, full) as one
    line instead of a traceback. Connection trouble was already waited out by `RetryingStorage`; any that still
    gets here is never called bad input."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as err:
        cause = err.__cause__ if isinstance(err, optuna.exceptions.StorageInternalError) and err.__cause__ else err
        engine = getattr(getattr(storage, "rdb", storage), "engine", None)
        url = mask_url(str(storage if isinstance(storage, str) else getattr(engine, "url", "") or "the study storage"))
        if unreachable(err):
            raise StoreUnreachable(f"study storage {url} unreachable: {_short(cause, 200)}; stopped cleanly, "
                                   "`videosweep resume` finishes the sweep when it is back") from None
        raise UserError(f"study storage {url}: {_short(cause, 200)}") from None


def open_study(name: str, storage: optuna.storages.BaseStorage, direction: str | list[str],
               sampler: optuna.samplers.BaseSampler | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """`direction` is one direction, or a list of them for a multi-objective study."""
    ways = {"direction": direction} if isinstance(direction, str) else {"directions": list(direction)}
    # Retried as a whole too (it is idempotent): a failover round once saw a worker's opening end in a dropped
    # connection that no call of the storage proxy had waited out.
    with storage_errors(storage):
        return retrying(lambda: optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                                    load_if_exists=True, **ways), "opening the study")


def existing_study(name: str, storage: optuna.storages.BaseStorage) -> optuna.Study | None:
    def load() -> optuna.Study | None:
        try:
            return optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            return None

    with storage_errors(storage):
        return retrying(load, "opening the study")
