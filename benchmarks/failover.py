"""Database failover, repeated (issue: a database failover can still end a sweep). Prints figures only.

    python benchmarks/failover.py [--rounds 50] [--seed 0] [--postgres postgresql://postgres@127.0.0.1/test]

Each round runs the slow stress test's sweep (tests/runner/failover.py: 4 keys under successive halving, 2
workers, on its own PostgreSQL database) while every connection to that database is dropped four times a second,
from a seeded random moment of the sweep (the first round: from its start) until it exits, so rounds start cutting in different phases (opening,
claims, training, results, promotion, final reads). A round is clean when `videosweep run` exited 0, every key
finished exactly once at each rung, no trial failed and MLflow holds one run per key. Goal: every round clean.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--postgres", default=None, help="admin URL (default: $VIDEOSWEEP_TEST_POSTGRES or local)")
    args = parser.parse_args()
    if args.postgres:
        import os

        os.environ["VIDEOSWEEP_TEST_POSTGRES"] = args.postgres
    from tests.conftest import POSTGRES_URL
    from tests.runner.failover import sweep_through_cuts
    from tests.runner.execution.test_scale_out import database_url, drop_database, new_database

    print(f"failover: {args.rounds} rounds, seed {args.seed}, connections dropped 4x/s, PostgreSQL "
          f"{POSTGRES_URL.rsplit('@', 1)[-1]}", flush=True)
    chance, clean, seconds, cuts, cut_rounds = random.Random(args.seed), 0, [], 0, 0
    with tempfile.TemporaryDirectory(prefix="videosweep-failover-") as scratch:
        for index in range(args.rounds):
            # the first round cuts from the start (every phase); later ones from a random point within the
            # shortest round so far (later rounds are shorter: the features are cached by then)
            offset = 0.0 if index == 0 else chance.uniform(0, 0.8 * min(seconds))
            database = new_database()
            try:
                result = sweep_through_cuts(Path(scratch) / f"round{index}", database_url(database), cut_after=offset,
                                            name=f"failover-{uuid.uuid4().hex[:6]}")
            finally:
                drop_database(database)
            clean += result.clean
            seconds.append(result.seconds)
            cuts += len(result.cuts)
            cut_rounds += bool(result.cuts)
            why = "" if result.clean else f"  exit {result.returncode}: {result.problems or result.stderr[-300:]}"
            print(f"round {index + 1:2d}: cuts from {offset:4.1f} s, {len(result.cuts):3d} landed, "
                  f"{result.seconds:5.1f} s, {'clean' if result.clean else 'NOT CLEAN'}{why}", flush=True)
    print(f"clean rounds: {clean} of {args.rounds} (exit 0, every key once at each rung, no failed trial, one "
          f"MLflow run per key); cuts landed in {cut_rounds} rounds, {cuts} in all; median round "
          f"{statistics.median(seconds):.0f} s")


if __name__ == "__main__":
    main()
