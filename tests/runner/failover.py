"""A sweep run while PostgreSQL drops every connection four times a second (a restart, a failover), and what
must hold afterwards. Shared by the slow stress test and `benchmarks/failover.py` (which repeats it 50 times).

The cuts start `cut_after` seconds after `videosweep run` starts and go on until it exits, so with cut_after=0
they reach every phase of a sweep: opening and enqueueing, claims, training (heartbeats, per-epoch reports),
results, the successive-halving promotion, and the scheduler's final reads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from tests.conftest import CLI, POSTGRES_URL, ROOT
from tests.runner.execution.test_run import FEATURES, write_sweep

KEYS = 4  # successive halving, factor 2: 4 keys for one epoch, then the best 2 for two
HALVING = {"strategy": "grid", "schedule": {"kind": "successive_halving", "min_epochs": 1, "reduction_factor": 2}}
TRAINING = {"epochs": 2, "patience": 2, "learning_rates": [1e-3], "batch_size": 64}


def terminate_connections(database: str) -> int:
    """Drop every connection to `database`, as a server restart does; how many there were."""
    import psycopg2

    connection = psycopg2.connect(POSTGRES_URL)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
                           (database,))
            return int(cursor.fetchone()[0])
    finally:
        connection.close()


class Cutter:
    """Drops every connection to a database every `interval` seconds from `after` seconds on, in a thread;
    keeps when each cut that found connections landed (seconds since it started)."""

    def __init__(self, url: str, interval: float = 0.25, after: float = 0.0) -> None:
        self.database, self.interval, self.after = url.rsplit("/", 1)[1], interval, after
        self.landed: list[float] = []
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._cut, daemon=True)

    def _cut(self) -> None:
        if self._stop.wait(self.after):
            return
        while not self._stop.wait(self.interval):
            if terminate_connections(self.database):
                self.landed.append(time.monotonic() - self._started)

    def __enter__(self) -> Cutter:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@dataclass
class Round:
    """One sweep through the cuts: how it ended and what the study and MLflow hold."""

    returncode: int
    stderr: str
    seconds: float
    cuts: list[float]
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.returncode == 0 and not self.problems


def sweep_through_cuts(folder: Path, postgres: str, cut_after: float = 0.0, name: str = "failover",
                       timeout: float = 900) -> Round:
    """Run a 2-worker successive-halving sweep on `postgres` while its connections are cut; check the result."""
    folder.mkdir(parents=True, exist_ok=True)
    sweep = write_sweep(folder, [{"architecture": ["image_mlp_frozen"], **FEATURES,
                                  "layer_1_size": list(range(KEYS))}], name=name, training=TRAINING, search=HALVING)
    workdir = folder / "work"
    command = [*CLI, "run", str(sweep), "--storage", postgres, "--workdir", str(workdir), "--workers", "2",
               "--no-reuse"]
    started = time.monotonic()
    with Cutter(postgres, after=cut_after) as cutter:
        process = subprocess.Popen(command, cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            _, err = process.communicate(timeout=timeout)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)
                err = "timed out"
    result = Round(process.returncode, err, time.monotonic() - started, cutter.landed)
    if result.returncode == 0:
        result.problems = problems(postgres, name, workdir)
    return result


def problems(postgres: str, name: str, workdir: Path) -> list[str]:
    """What breaks 'every key finished once at each rung, nothing failed, one MLflow run per key'."""
    from mlflow import MlflowClient

    trials = optuna.load_study(study_name=name, storage=postgres).trials
    found = []
    # twins that two processes enqueued (a lock lost with its connection) are refused unrun: never trained
    twins = [t for t in trials if t.user_attrs.get("refused") and "already stands for" in t.user_attrs["failure"]]
    trained = [t for t in trials if t not in twins]
    by_rung = Counter((t.user_attrs.get("trial_key"), t.user_attrs.get("rung", 0)) for t in trained)
    if sorted(Counter(rung for _, rung in by_rung).items()) != [(0, KEYS), (1, KEYS // 2)]:
        found.append(f"keys per rung {sorted(Counter(rung for _, rung in by_rung).items())}")
    if set(by_rung.values()) != {1}:
        found.append(f"a key trained twice at one rung: {[k for k, n in by_rung.items() if n > 1]}")
    not_complete = [(t.number, t.state.name, t.user_attrs.get("failure")) for t in trained
                    if t.state.name != "COMPLETE"]
    if not_complete:
        found.append(f"trials not complete: {not_complete}")
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name).experiment_id
    runs = client.search_runs([experiment], "tags.`videosweep.role` = 'trial'")
    per_key = Counter(run.data.tags["videosweep.trial_key"] for run in runs)
    if len(per_key) != KEYS or set(per_key.values()) != {1}:
        found.append(f"MLflow runs per key {dict(per_key)}")
    return found
