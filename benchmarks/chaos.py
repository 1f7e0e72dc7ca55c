"""A randomised fault harness (issue #28, item 5): a sweep is hit by seeded faults and resumed until it is done,
then checked against an uninterrupted run of the same sweep. Prints figures; exits 1 when a check fails.

    python benchmarks/chaos.py [--faults 50] [--seed 0] [--keys 6]

The sweep: image_mlp_frozen heads on the seals frames (32x32 features), 4 epochs with a checkpoint after every
epoch (each epoch naps 0.5 s, so faults land mid-trial), successive halving, 2 workers. The harness starts `run`
(then `resume`), waits a seeded random 1-12 s and injects one fault:
  kill-sweep    SIGKILL to the whole process group (the machine or the job is gone)
  term-sweep    SIGTERM to the scheduler alone (SLURM/Kubernetes preemption): it must exit 143
  kill-worker   SIGKILL to one worker (the scheduler fails its trial, which continues from its checkpoint)
  term-worker   SIGTERM to one worker (it stops at the next batch and records its trial as preempted)
  lock-db       an exclusive lock on the study database for 3 s (a database that is briefly unavailable)
then waits for the sweep to end (or ends it) and resumes it; after the last fault it resumes until the sweep is done.
Checks: every trial key finished exactly once in the study (once per rung it reaches, as uninterrupted); every trial's per-epoch history equals the
uninterrupted run's; MLflow holds one child run per key with each epoch's step once; no staging folder, stop file
or held lock is left behind. Figures: faults injected by kind, trials, epochs trained against the uninterrupted
run's, and batches likewise (the difference is the work the faults cost: a SIGTERM costs none, its checkpoint
is taken at the batch it stopped after; a SIGKILL costs the epoch in progress).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
FAULTS = ("kill-sweep", "term-sweep", "kill-worker", "term-worker", "lock-db")
COMPARED = ["round", "epoch", "step", "loss", "accuracy", "val_loss", "val_accuracy"]
NAME = "chaos"
RUN_SECONDS = 600  # a sweep that neither ends nor is ended by its fault within this is a hang: a failed check


def write_sweep(folder: Path, keys: int) -> Path:
    data = {"name": NAME, "data": {"root": str(ROOT / "examples" / "seals")},
            "training": {"epochs": 4, "patience": 4, "learning_rates": [1e-3], "batch_size": 64, "seed": 0,
                         "checkpoint_seconds": 0},
            "search": {"strategy": "grid", "schedule": {"kind": "successive_halving", "min_epochs": 1,
                                                        "reduction_factor": 2}},
            "space": [{"architecture": ["image_mlp_frozen"], "backbone": ["mobilenet_v2"], "weights": ["none"],
                       "frame_size": ["32x32"], "layer_1_size": [4 * i for i in range(keys)]}]}
    path = folder / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def start(command: str, sweep: Path, workdir: Path, epochs_file: Path) -> subprocess.Popen:
    """`run` or `resume` of the sweep in the background; every epoch and batch trained is counted beside
    `epochs_file` (`.jsonl` and `.batches.jsonl`)."""
    counted = f"epochs:@{epochs_file},batches:@{epochs_file.with_suffix('.batches.jsonl')}"
    env = {**os.environ, "VIDEOSWEEP_OFFLINE": "1", "VIDEOSWEEP_FAULT": f"nap:@0.5,{counted}"}
    with open(workdir.parent / f"{workdir.name}.log", "a") as log:  # a file: nobody reads a pipe while it sleeps
        return subprocess.Popen([sys.executable, "-m", "videosweep", command, str(sweep), "--workdir",
                                 str(workdir), "--workers", "2", "--max-retries", "100"], cwd=ROOT, env=env,
                                start_new_session=True, stdout=log, stderr=subprocess.STDOUT, text=True)


def workers_of(process: subprocess.Popen) -> list[int]:
    import psutil

    try:
        return [child.pid for child in psutil.Process(process.pid).children(recursive=True)
                if "videosweep" in " ".join(child.cmdline()) or "multiprocessing" in " ".join(child.cmdline())]
    except psutil.Error:
        return []


def inject(kind: str, process: subprocess.Popen, workdir: Path, rng: random.Random) -> bool:
    """One fault; False when it found nothing to hit (the sweep ended first, or no worker was up)."""
    if process.poll() is not None:
        return False
    if kind == "kill-sweep":
        os.killpg(process.pid, signal.SIGKILL)
    elif kind == "term-sweep":
        os.kill(process.pid, signal.SIGTERM)
    elif kind in ("kill-worker", "term-worker"):
        workers = workers_of(process)
        if not workers:
            return False
        os.kill(rng.choice(workers), signal.SIGKILL if kind == "kill-worker" else signal.SIGTERM)
    elif kind == "lock-db":
        with sqlite3.connect(workdir / "optuna.db", timeout=30) as connection:
            connection.execute("BEGIN EXCLUSIVE")
            time.sleep(3)
            connection.rollback()
    return True


def finish(process: subprocess.Popen, kind: str | None) -> int:
    """Wait for the sweep to end; a fault that left it running (a worker killed: it goes on) lets it run out."""
    try:
        process.wait(timeout=RUN_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise SystemExit(f"hang: the sweep did not end within {RUN_SECONDS} s after {kind}") from None
    try:
        os.killpg(process.pid, signal.SIGKILL)  # orphans of a killed scheduler, if any
    except ProcessLookupError:
        pass
    return process.returncode


def histories(workdir: Path) -> dict[str, object]:
    import pandas as pd

    return {path.parent.name: pd.read_csv(path)[COMPARED]
            for path in sorted((workdir / "trials").glob("*/fit_history.csv"))}


def completions(study: object) -> Counter:
    return Counter(t.user_attrs.get("trial_key") for t in study.trials if t.state.name == "COMPLETE")


def check(workdir: Path, reference: Path) -> list[str]:
    """What is wrong with the chaos sweep's outcome (nothing: an empty list)."""
    import optuna
    import pandas as pd
    from mlflow import MlflowClient

    from runner.study.storage import open_storage

    problems = []
    study = optuna.load_study(study_name=NAME, storage=open_storage(f"sqlite:///{workdir / 'optuna.db'}"))
    finished = completions(study)
    expected = histories(reference)
    wanted = completions(optuna.load_study(study_name=NAME, storage=open_storage(
        f"sqlite:///{reference / 'optuna.db'}")))  # a promoted key completes once per rung it reaches
    if finished != wanted:
        problems.append(f"rungs completed per key {dict(finished)}, the uninterrupted run's {dict(wanted)}")
    left = [t.number for t in study.trials if t.state.name in ("RUNNING", "WAITING")]
    if left:
        problems.append(f"trials left running or waiting: {left}")
    got = histories(workdir)
    for key, history in expected.items():
        try:
            pd.testing.assert_frame_equal(got[key], history)
        except (KeyError, AssertionError) as err:
            problems.append(f"history of {key} differs from the uninterrupted run's: {str(err).splitlines()[0]}")
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(NAME).experiment_id],
                              "tags.`videosweep.role` = 'trial'", max_results=1000)
    per_key = Counter(run.data.tags.get("videosweep.trial_key") for run in runs)
    if set(per_key.values()) != {1} or set(per_key) != set(expected):
        problems.append(f"MLflow child runs per key (want one each): {dict(per_key)}")
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        if sorted(steps) != list(range(len(steps))):
            problems.append(f"MLflow steps of {run.data.tags.get('videosweep.trial_key')}: {sorted(steps)}")
    leftovers = [str(p.relative_to(workdir)) for p in workdir.rglob("*")
                 if p.name.endswith(".partial") or p.name.startswith(".stop.")]
    if leftovers:
        problems.append(f"left behind: {leftovers}")
    from filelock import FileLock, Timeout

    for lock in workdir.rglob("*.lock"):
        try:
            with FileLock(str(lock), timeout=0):
                pass
        except Timeout:
            problems.append(f"a lock is still held: {lock.relative_to(workdir)}")
    return problems


def lines(path: Path) -> int:
    """Epochs (or batches) trained, redone ones included, by the file the `epochs` (`batches`) fault appends to."""
    return len(path.read_text().splitlines()) if path.exists() else 0


def chaos(faults: int, seed: int, keys: int, folder: Path, kinds: tuple[str, ...] | None = None,
          wait: tuple[float, float] = (1, 12)) -> tuple[dict[str, object], list[str]]:
    """Rounds of faults on fresh copies of the sweep until `faults` were injected; each round's sweep is resumed
    until done and checked. `kinds`: these faults in turn (a short run that must cover them), instead of seeded
    random ones; `wait`: the range of seconds from a start to its fault. The figures, and what the checks found."""
    rng = random.Random(seed)
    sweep = write_sweep(folder, keys)
    reference = folder / "reference"
    if finish(start("run", sweep, reference, folder / "reference.jsonl"), None) != 0:
        raise SystemExit(f"the uninterrupted run failed: {(folder / 'reference.log').read_text()[-3000:]}")
    injected, exits, problems, rounds, missed = Counter(), Counter(), [], 0, 0
    started = time.monotonic()
    while sum(injected.values()) < faults:
        workdir, command = folder / f"chaos{rounds}", "run"
        for _ in range(200):
            process = start(command, sweep, workdir, folder / f"chaos{rounds}.jsonl")
            done = sum(injected.values())
            kind = None if done >= faults else kinds[done % len(kinds)] if kinds else rng.choice(FAULTS)
            if kind is not None:
                time.sleep(rng.uniform(*wait))
                if inject(kind, process, workdir, rng):
                    injected[kind] += 1
                else:
                    missed += 1
            code = finish(process, kind)
            exits[f"{kind or 'none'} -> {code}"] += 1
            command = "resume"
            if code == 0:
                break
        else:
            problems.append(f"round {rounds}: 200 starts did not finish the sweep")
        problems += [f"round {rounds}: {problem}" for problem in check(workdir, reference)]
        rounds += 1
    uninterrupted = lines(folder / "reference.jsonl")
    trained = sum(lines(folder / f"chaos{r}.jsonl") for r in range(rounds))
    batches = lines(folder / "reference.batches.jsonl")
    batches_trained = sum(lines(folder / f"chaos{r}.batches.jsonl") for r in range(rounds))
    figures = {"faults": sum(injected.values()), "by_kind": dict(injected), "faults_missed": missed,
               "exits": dict(exits), "sweeps": rounds, "trials": rounds * keys,
               "epochs_uninterrupted": rounds * uninterrupted, "epochs_trained": trained,
               "epochs_lost": trained - rounds * uninterrupted, "batches_uninterrupted": rounds * batches,
               "batches_trained": batches_trained, "batches_lost": batches_trained - rounds * batches,
               "seconds": round(time.monotonic() - started)}
    return figures, problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keys", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("VIDEOSWEEP_CACHE", str(Path(tmp) / "cache"))
        figures, problems = chaos(args.faults, args.seed, args.keys, Path(tmp))
    print(json.dumps(figures, indent=2))
    print("checks: " + ("all passed" if not problems else f"{len(problems)} failed"))
    for problem in problems:
        print(f"  - {problem}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
