"""A new embedded (SQLite) MLflow store starts as a copy of an empty schema made once per MLflow version.

MLflow builds a new SQLite store by running all its schema migrations, about 3-4 s of CPU for every new sweep.
The empty schema is made once by MLflow itself into the cache folder (`mlflow-schema/`), without the Default
experiment (MLflow adds it on opening, pointing where it would have), and copied with SQLite's backup API. This
is only a shortcut: whatever goes wrong, MLflow creates the store the usual way.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

from zoo import atomic
from zoo.cache import cache_root

EMPTY_TABLES = ("experiments", "runs", "registered_models", "model_versions")  # what a sweep would show


def sqlite_path(uri: str) -> Path | None:
    """The database file of a plain `sqlite:///path` URI (None for anything else, e.g. with query options)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or "?" in uri or uri == prefix:
        return None
    return Path(uri[len(prefix):])


def seed(uri: str, cache_dir: str | Path | None = None) -> bool:
    """Create the store at `uri` from the empty schema if it does not exist yet; True when it was seeded."""
    path = sqlite_path(uri)
    if path is None or path.exists():
        return False
    try:
        template = _template(cache_dir)
        return template is not None and _copy_into_place(template, path)
    except Exception:  # noqa: BLE001 - a shortcut only (a full disk, a read-only cache...): MLflow's own way
        return False


def _template(cache_dir: str | Path | None) -> Path | None:
    import mlflow

    template = cache_root(cache_dir) / "mlflow-schema" / f"mlflow-{mlflow.__version__}.db"
    if _is_empty_schema(template):
        return template
    _make_template(template)
    return template if _is_empty_schema(template) else None


def _is_empty_schema(path: Path) -> bool:
    """A migrated schema with nothing a sweep would show (the cache is ours, but checked all the same)."""
    if not path.is_file():
        return False
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            return {"alembic_version", "experiments", "runs"} <= tables and all(
                connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0  # noqa: S608 - fixed names
                for table in EMPTY_TABLES if table in tables)
    except sqlite3.Error:  # not a database (a damaged file)
        return False


def _make_template(template: Path) -> None:
    """MLflow creates a store in a scratch folder; the Default experiment is dropped; a consistent copy of it is
    renamed into the cache."""
    from mlflow.tracking import MlflowClient

    template.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=template.parent) as scratch:
        made = Path(scratch) / "mlflow.db"
        client = MlflowClient(tracking_uri=f"sqlite:///{made}")
        client.search_experiments()  # opening the store runs MLflow's migrations
        with closing(sqlite3.connect(made)) as connection, connection:
            connection.execute("DELETE FROM experiments WHERE experiment_id = 0")
        copy = Path(scratch) / "template.db"
        _backup(made, copy)
        with closing(sqlite3.connect(copy)) as connection:  # no -wal/-shm files beside the template when read
            connection.execute("PRAGMA journal_mode=DELETE")
        os.replace(copy, template)


def _backup(source: Path, target: Path) -> None:
    with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as reading, \
            closing(sqlite3.connect(target)) as writing:
        reading.backup(writing)


def _copy_into_place(template: Path, path: Path) -> bool:
    """Copy to a scratch file beside `path`, then link it in: a store that appeared meanwhile is never replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~atomic.UMASK)  # as MLflow would create it, not mkstemp's 0600
    os.close(fd)
    try:
        _backup(template, Path(scratch))
        os.link(scratch, path)
        return True
    except FileExistsError:
        return False
    finally:
        Path(scratch).unlink(missing_ok=True)
