"""Queue throughput of the study (issue: scale-out). Prints figures only.

    python benchmarks/claims.py [--workers 4] [--trials 400] [--postgres postgresql://postgres@127.0.0.1/test]

N worker processes claim WAITING trials exactly as `videosweep` workers do (runner.study.claims.claim_waiting: the
storage's compare-and-set under a row lock), record a heartbeat and tell a value, with no training in between.
Claims per second = trials / wall time; bookkeeping latency = per-trial claim + heartbeat + tell, median and p95.
Run on SQLite (WAL, one file) and on PostgreSQL (a database created and dropped for the run).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _worker(url: str, name: str, out: mp.Queue) -> None:
    from runner.study.claims import claim_waiting
    from runner.study.storage import existing_study, open_storage

    study = existing_study(name, open_storage(url))
    latencies = []
    while True:
        started = time.perf_counter()
        trial = claim_waiting(study)
        if trial is None:
            break
        study.tell(trial, 1.0)
        latencies.append(time.perf_counter() - started)
    out.put(latencies)


def measure(url: str, workers: int, trials: int) -> dict[str, float]:
    from runner.study.storage import open_storage, open_study

    name = f"claims-{uuid.uuid4().hex[:8]}"
    study = open_study(name, open_storage(url), "maximize")
    for index in range(trials):
        study.enqueue_trial(params={}, user_attrs={"trial_key": f"k{index}"})
    queue: mp.Queue = mp.Queue()
    processes = [mp.Process(target=_worker, args=(url, name, queue)) for _ in range(workers)]
    started = time.perf_counter()
    for process in processes:
        process.start()
    latencies = [value for _ in processes for value in queue.get()]
    wall = time.perf_counter() - started
    for process in processes:
        process.join()
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    assert len(complete) == trials == len(latencies), "every trial claimed exactly once"
    latencies.sort()
    return {"claims_per_second": trials / wall, "median_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))]}


def postgres_database(admin_url: str) -> tuple[str, callable]:
    import psycopg2

    name = f"videosweep_bench_{uuid.uuid4().hex[:8]}"

    def admin(sql: str) -> None:
        connection = psycopg2.connect(admin_url)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql)
        connection.close()

    admin(f"CREATE DATABASE {name}")

    def drop() -> None:
        admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        admin(f"DROP DATABASE {name}")

    return admin_url.rsplit("/", 1)[0] + f"/{name}", drop


def run(workers: int, trials: int, postgres: str | None) -> dict[str, dict[str, float]]:
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        results["sqlite"] = measure(f"sqlite:///{folder}/bench.db", workers, trials)
    if postgres:
        url, drop = postgres_database(postgres)
        try:
            results["postgresql"] = measure(url, workers, trials)
        finally:
            drop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    for storage, figures in run(args.workers, args.trials, args.postgres).items():
        print(f"{storage:>10}: {figures['claims_per_second']:.1f} claims/s with {args.workers} workers; "
              f"bookkeeping per trial median {figures['median_ms']:.1f} ms, p95 {figures['p95_ms']:.1f} ms")


if __name__ == "__main__":
    main()
