"""The study's storage: URLs (checked and masked), opening an Optuna RDB storage (SQLite pragmas, pools),
database errors as one line, and the database retry policy.

The study is the sweep's queue and source of truth: SQLite in the workdir by default (embedded, no server),
or any Optuna RDB URL (PostgreSQL for several machines).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import optuna

from runner import liveness
from runner.retry import database_budget, retry
from zoo.errors import UserError, one_line
from zoo.secrets import mask_text, mask_url  # storage.mask_url is also used by callers

T = TypeVar("T")
SUPPORTED_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2", "mysql", "mysql+pymysql")
SCHEMA_CREATION_ATTEMPTS = 5  # workers starting together on an empty database race to create its tables
optuna.logging.set_verbosity(optuna.logging.WARNING)
logging.getLogger("optuna").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def default_storage(workdir: Path) -> str:
    return f"sqlite:///{(workdir / 'optuna.db').resolve()}"


def _busy_timeout_seconds() -> float:
    return float(os.environ.get("VIDEOSWEEP_DB_TIMEOUT", 60))


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
            cursor.execute(f"PRAGMA busy_timeout={int(_busy_timeout_seconds() * 1000)}")
            cursor.close()

    _WAL["on"] = True


def check_storage_url(url: str) -> str:
    """The URL's scheme, or a one-line error for one Optuna cannot use."""
    scheme = urlsplit(url).scheme
    if scheme not in SUPPORTED_SCHEMES:
        raise UserError(f"storage URL {mask_url(url)}: unsupported scheme {scheme!r}; use one of "
                        f"{', '.join(SUPPORTED_SCHEMES)}")
    return scheme


def unreachable(err: BaseException) -> bool:
    """Connection trouble worth waiting out (server down, restarting, network), not a wrong query."""
    from sqlalchemy.exc import DBAPIError, OperationalError, PendingRollbackError

    if isinstance(err, optuna.exceptions.StorageInternalError) and err.__cause__ is not None:
        err = err.__cause__
    if isinstance(err, PendingRollbackError):  # a session whose connection dropped; Optuna rolled it back
        return True
    if isinstance(err, OperationalError):
        return "locked" not in str(err)  # SQLite's busy timeout already waited; more waiting will not help
    return isinstance(err, DBAPIError) and bool(getattr(err, "connection_invalidated", False))


def _short(err: BaseException, limit: int) -> str:
    """A database error's own message, without SQLAlchemy's appended SQL."""
    original = getattr(err, "orig", None) or getattr(err, "__cause__", None) or err
    return mask_text(one_line(str(original)).split(" [SQL")[0])[:limit]


def retrying(call: Callable[[], T], what: str) -> T:
    """`call()` retried while the database is unreachable (the budget is in runner/retry.py); then one clear
    error: nothing is lost, `videosweep resume` carries on once the database is back."""
    budget = database_budget()
    return retry(call, transient=unreachable, budget_seconds=budget, give_up=lambda err: UserError(
        f"study storage unreachable for {budget:.0f} s while {what}: {_short(err, 160)}; stopped cleanly, "
        "`videosweep resume` finishes the sweep when it is back"))


def _schema_race(err: BaseException) -> bool:
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    return isinstance(err, (IntegrityError, ProgrammingError))


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats and, on SQLite, a busy timeout; one-line errors for bad URLs."""
    scheme = check_storage_url(url)
    engine_kwargs: dict[str, Any] = {}
    if scheme == "sqlite":
        engine_kwargs["connect_args"] = {"timeout": _busy_timeout_seconds()}
        sqlite_wal_on_connect()
    else:
        engine_kwargs.update(pool_pre_ping=True, connect_args={"connect_timeout": 10})

    def connect() -> optuna.storages.RDBStorage:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                          heartbeat_interval=max(1, round(liveness.heartbeat_seconds())),
                                          grace_period=max(1, round(liveness.grace_seconds())))

    def connect_past_schema_races() -> optuna.storages.RDBStorage:  # another worker is creating the tables
        return retry(connect, transient=_schema_race, budget_seconds=SCHEMA_CREATION_ATTEMPTS * 2.0,
                     give_up=lambda err: err)

    try:
        return retrying(connect_past_schema_races, f"opening {mask_url(url)}")
    except UserError:
        raise
    except Exception as err:  # ImportError of a driver, a malformed URL, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot open study storage {mask_url(url)}: {mask_text(reason)}") from None


@contextmanager
def storage_errors(storage: Any) -> Iterator[None]:
    """Database trouble (locked past the busy timeout, gone, full) as one line instead of a traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as err:
        cause = err.__cause__ if isinstance(err, optuna.exceptions.StorageInternalError) and err.__cause__ else err
        label = storage if isinstance(storage, str) else getattr(getattr(storage, "engine", None), "url", "")
        url = mask_url(str(label or "the study storage"))
        raise UserError(f"study storage {url}: {_short(cause, 200)}") from None


def open_study(name: str, storage: optuna.storages.BaseStorage, direction: str | list[str],
               sampler: optuna.samplers.BaseSampler | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """`direction` is one direction, or a list of them for a multi-objective study."""
    ways = {"direction": direction} if isinstance(direction, str) else {"directions": list(direction)}
    with storage_errors(storage):
        return optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                   load_if_exists=True, **ways)


def existing_study(name: str, storage: optuna.storages.BaseStorage) -> optuna.Study | None:
    with storage_errors(storage):
        try:
            return optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            return None
