"""One retry policy for calls to the services a sweep shares: the study database and the MLflow tracking store.

A call is retried only while its error is transient (the caller says which errors are), with delays that
start at 0.5 s and double up to 10 s, until a time budget is spent; then the caller's one-line error is raised.
The budgets, in one place:

- study database: `VIDEOSWEEP_DB_RETRY_SECONDS` (default 120 s): long enough to ride out a PostgreSQL restart
  or failover; past it a worker stops cleanly and `videosweep resume` carries on later;
- MLflow tracking store: `VIDEOSWEEP_TRACKING_RETRY_SECONDS` (default 10 s) for reaching it at all: a server
  that is down when a sweep starts is refused before anything is written, not waited for all night;
- a new study database's tables: about 10 s (`storage.SCHEMA_CREATION_ATTEMPTS` x 2 s) while workers that
  start together race to create them, inside the database budget above.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 10.0


def database_budget() -> float:
    return float(os.environ.get("VIDEOSWEEP_DB_RETRY_SECONDS", 120))


def tracking_budget() -> float:
    return float(os.environ.get("VIDEOSWEEP_TRACKING_RETRY_SECONDS", 10))


def retry(call: Callable[[], T], *, transient: Callable[[BaseException], bool], budget_seconds: float,
          give_up: Callable[[BaseException], BaseException]) -> T:
    """`call()`, again after each transient error until `budget_seconds` are spent; then `give_up(last error)`
    is raised. Errors that are not transient propagate at once."""
    deadline, delay = time.monotonic() + budget_seconds, FIRST_DELAY_SECONDS
    while True:
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - filtered by `transient`
            if not transient(err):
                raise
            if time.monotonic() + delay > deadline:
                raise give_up(err) from None
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_SECONDS)
