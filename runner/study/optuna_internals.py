"""Every use of Optuna's private API, behind one small adapter, each with the reason the public API falls short.

Optuna's public API is built for one process asking and telling; a sweep is many processes (and machines)
sharing one study as a work queue, which needs an atomic claim, liveness checks and direct attribute writes.
Only this module reaches into Optuna; if Optuna changes, this is the one file to fix.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import optuna
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

# The interface Optuna checks with isinstance() before it uses heartbeats: a storage proxy must declare it too.
HeartbeatStorage = BaseHeartbeat


def cached(rdb: optuna.storages.RDBStorage) -> optuna.storages.BaseStorage:
    """Optuna's caching wrapper around an RDB storage (what `optuna.create_study(storage=rdb)` would build): a
    proxy handed to Optuna in its place is used as it is, so it must bring the cache along."""
    return optuna.storages._CachedStorage(rdb)


def storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The study's storage: needed to write attributes and states of trials other than the one being asked
    (failing a dead worker's trial, re-queueing), which `Study` offers no method for."""
    return study._storage


def rdb_backend(study: optuna.Study) -> Any:
    """The RDBStorage under our retrying proxy (`rdb`) or Optuna's caching wrapper: its SQLAlchemy engine serves
    the claim's conditional UPDATE and the PostgreSQL advisory lock."""
    wrapped = study._storage
    return getattr(wrapped, "rdb", None) or getattr(wrapped, "_backend", wrapped)


def study_id(study: optuna.Study) -> int:
    """The storage's id of the study (`Study` exposes only its name)."""
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial; the public `number` is per study, storage calls take the id."""
    return trial._trial_id


def trial_handle(study: optuna.Study, claimed_id: int) -> optuna.Trial:
    """A live `Trial` for a trial this process claimed itself (public `ask` would create or pop another)."""
    return optuna.trial.Trial(study, claimed_id)


def stale_trial_ids(study: optuna.Study) -> list[int]:
    """RUNNING trials whose heartbeat is older than the grace period; `optuna.storages.fail_stale_trials`
    would fail them too, but without the reason we record."""
    return list(storage(study)._get_stale_trial_ids(study_id(study)))


def has_heartbeat(study: optuna.Study, claimed_id: int) -> bool:
    """Whether any heartbeat was ever recorded for the trial (Optuna can only tell stale from fresh)."""
    from optuna.storages._rdb import models

    with rdb_backend(study).scoped_session() as session:
        return session.query(models.TrialHeartbeatModel).filter_by(trial_id=claimed_id).count() > 0


def claim_start_time() -> dt.datetime:
    """The start time a claim writes, in the form Optuna's trial table keeps: naive UTC from Optuna 5 on (its
    model converts), naive local time before."""
    from optuna.storages._rdb import models

    if hasattr(models.TrialModel, "_datetime_start_utc"):
        return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    return dt.datetime.now()


def take_waiting(study: optuna.Study, claimed_id: int, started: dt.datetime) -> bool:
    """WAITING -> RUNNING in one conditional UPDATE; True only for the one process whose UPDATE matched.

    Optuna's own `set_trial_state_values` reads, checks and then writes; on SQLite (no SELECT ... FOR UPDATE,
    and pysqlite begins the transaction only at the write) two workers can both see WAITING and both win.
    """
    from optuna.storages._rdb import models
    from sqlalchemy import update

    table = models.TrialModel
    statement = (update(table)
                 .where(table.trial_id == claimed_id, table.state == TrialState.WAITING)
                 .values({table.state: TrialState.RUNNING, table.__table__.c.datetime_start: started}))
    with rdb_backend(study).engine.begin() as connection:
        return connection.execute(statement).rowcount == 1


def claimed_by(study: optuna.Study, claimed_id: int, started: dt.datetime) -> bool:
    """After a claim whose commit lost its answer: did our UPDATE go through? (Our start time says so; a
    database that keeps whole seconds only, as MySQL may, leaves it to the dead-trial reaper.)"""
    from optuna.storages._rdb import models
    from sqlalchemy import select

    table = models.TrialModel
    with rdb_backend(study).engine.connect() as connection:
        state, start = connection.execute(select(table.state, table.__table__.c.datetime_start)
                                          .where(table.trial_id == claimed_id)).one()
    return state == TrialState.RUNNING and start == started


def create_tables(url: str, engine_kwargs: dict[str, Any]) -> None:
    """Optuna's tables, one transaction each: Optuna creates them all in one transaction, which on PostgreSQL a
    database restarting every few hundred milliseconds rolls back every time; one at a time, each attempt keeps
    what it made. Then `RDBStorage(..., skip_table_creation=True)` only checks the schema and stamps its version."""
    import sqlalchemy
    from optuna.storages._rdb import models

    engine = sqlalchemy.create_engine(url, **engine_kwargs)
    try:
        for table in models.BaseModel.metadata.sorted_tables:
            try:
                models.BaseModel.metadata.create_all(engine, tables=[table])
            except sqlalchemy.exc.DatabaseError:
                # Another worker created it between our check and our CREATE (SQLite says "already exists" as an
                # OperationalError, PostgreSQL as a unique violation): theirs is the table we wanted.
                if not sqlalchemy.inspect(engine).has_table(table.name):
                    raise
    finally:
        engine.dispose()
