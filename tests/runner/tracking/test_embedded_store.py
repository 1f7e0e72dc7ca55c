"""A new embedded MLflow store is a copy of the empty schema MLflow made once, and behaves as one MLflow made."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from runner.tracking import embedded_store
from runner.tracking.mlflow_runs import Tracker


def schema(path: Path) -> tuple[str, dict]:
    """The migration version and every table's and index's columns and constraints (as sorted lines: MLflow's
    migrations recreate some tables with their constraints in an order that varies from run to run)."""
    with closing(sqlite3.connect(path)) as connection:
        version = connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        rows = connection.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
    return version, {(kind, name): sorted(line.strip(" ,\t") for line in (sql or "").splitlines())
                     for kind, name, sql in rows}


def template_of(cache: Path) -> Path:
    return cache / "mlflow-schema" / f"mlflow-{mlflow.__version__}.db"


def test_a_seeded_store_is_the_store_mlflow_makes_and_takes_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's Default experiment points under the working directory
    cache = tmp_path / "cache"
    made_by_mlflow = tmp_path / "plain" / "mlflow.db"
    made_by_mlflow.parent.mkdir()
    plain = MlflowClient(f"sqlite:///{made_by_mlflow}")
    plain.search_experiments()

    seeded = tmp_path / "work" / "mlflow.db"
    tracker = Tracker(f"sqlite:///{seeded}", tmp_path / "work", "t", cache_dir=cache)
    assert template_of(cache).is_file()
    assert schema(seeded) == schema(made_by_mlflow)
    assert tracker.client.get_experiment("0").artifact_location == plain.get_experiment("0").artifact_location
    run = tracker.client.create_run(tracker.experiment_id)
    tracker.client.log_metric(run.info.run_id, "val_accuracy", 0.5)
    assert MlflowClient(f"sqlite:///{seeded}").get_run(run.info.run_id).data.metrics == {"val_accuracy": 0.5}
    assert not list(seeded.parent.glob(".mlflow.db.*"))  # no scratch copy left beside the store
    assert seeded.stat().st_mode & 0o777 == made_by_mlflow.stat().st_mode & 0o777


def test_an_existing_store_is_never_replaced(tmp_path):
    cache, store = tmp_path / "cache", tmp_path / "work" / "mlflow.db"
    tracker = Tracker(f"sqlite:///{store}", tmp_path / "work", "t", cache_dir=cache)
    tracker.client.create_run(tracker.experiment_id)
    assert embedded_store.seed(f"sqlite:///{store}", cache) is False
    assert len(tracker.client.search_runs([tracker.experiment_id])) == 1


@pytest.mark.parametrize("damage", ["garbage", "planted experiment"])
def test_a_damaged_template_is_made_again(tmp_path, damage):
    cache = tmp_path / "cache"
    assert embedded_store.seed(f"sqlite:///{tmp_path / 'first.db'}", cache)
    template = template_of(cache)
    if damage == "garbage":
        template.write_bytes(b"not a database")
    else:
        with closing(sqlite3.connect(template)) as connection, connection:
            connection.execute("INSERT INTO experiments (experiment_id, name, lifecycle_stage) "
                               "VALUES (7, 'planted', 'active')")
    second = tmp_path / "second.db"
    assert embedded_store.seed(f"sqlite:///{second}", cache)
    names = [e.name for e in MlflowClient(f"sqlite:///{second}").search_experiments()]
    assert names == ["Default"]


def test_only_a_plain_sqlite_file_uri_is_seeded(tmp_path):
    assert embedded_store.sqlite_path(f"sqlite:///{tmp_path}/m.db") == tmp_path / "m.db"
    for uri in ("http://127.0.0.1:5000", "sqlite:///m.db?timeout=5", "sqlite://", "postgresql://h/db"):
        assert embedded_store.seed(uri, tmp_path / "cache") is False
    assert not (tmp_path / "cache").exists()
