"""SQLite connections of this process, study and MLflow stores alike: write-ahead log and a busy timeout."""

from __future__ import annotations

import os
from typing import Any


def busy_timeout_seconds() -> float:
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
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_seconds() * 1000)}")
            cursor.close()

    _WAL["on"] = True
