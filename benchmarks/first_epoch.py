"""Time from `videosweep run` to the first trial's first finished epoch (issue #29, item 1), split into its phases,
for this tree and a baseline commit measured in the same run. Prints figures; asserts nothing.

    python benchmarks/first_epoch.py [--baseline f7a6cce] [--rounds 3]

The sweep is the seals demo's first trial (image_mlp_frozen on mobilenet_v2, 64x64 frames), one worker, a
checkpoint after every epoch: the first checkpoint on disk is the first finished epoch. Cold: a new feature cache
(the frames go through the backbone); warm: the cache of the cold run (what every later trial of a sweep sees).
current+pool: this tree with a resident worker pool (`videosweep pool start`, before the timed runs and not
timed): `run` forks its worker from a server that imported TensorFlow already. Rounds alternate baseline and
current so that a machine's drift hits both. Phases, read off `run`'s output:
  startup   until `run` says what it queued (imports, preflight, study and MLflow stores opened)
  worker    until the first trial started (worker process up with its Keras backend, the trial claimed)
  trial     until the first epoch finished (frames or features read, model built, one epoch trained)
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "f7a6cce"  # main before #29's work began: "today's code" of the issue
PHASES = ("startup", "worker", "trial")


def sweep_file(folder: Path) -> Path:
    data = {"name": "first-epoch", "data": {"root": str(ROOT / "examples" / "seals")},
            "training": {"epochs": 2, "patience": 2, "learning_rates": [1e-3], "batch_size": 32, "seed": 0,
                         "checkpoint_seconds": 0},
            "space": [{"architecture": ["image_mlp_frozen"], "backbone": ["mobilenet_v2"], "weights": ["none"],
                       "frame_size": ["64x64"], "layer_1_size": [64]}]}
    path = folder / "first-epoch.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def first_checkpoint(workdir: Path) -> bool:
    return any((workdir / "trials").glob("*/checkpoint/latest.json")) if (workdir / "trials").is_dir() else False


def environment(tree: Path, cache: Path, pool: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "VIDEOSWEEP_CACHE": str(cache), "VIDEOSWEEP_OFFLINE": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    if pool is not None:
        env["VIDEOSWEEP_POOL_DIR"] = str(pool)
    return env


def pool_command(tree: Path, env: dict[str, str], *args: str) -> None:
    """`videosweep pool ...` with `tree`'s code (a resident pool is started before the timed `run`, not timed)."""
    subprocess.run([sys.executable, "-m", "videosweep", "pool", *args], cwd=tree, env=env, check=True,
                   capture_output=True)


def time_to_first_epoch(tree: Path, sweep: Path, workdir: Path, env: dict[str, str]) -> dict[str, float]:
    """One `run` of the sweep with `tree`'s code, killed once its first epoch is on disk: seconds per phase."""
    marks: dict[str, float] = {}
    start = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "videosweep", "run", str(sweep), "--workdir", str(workdir),
                                "--workers", "1"], cwd=tree, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def read() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            now = time.monotonic() - start
            if "queued" in line and "startup" not in marks:
                marks["startup"] = now
            elif " started" in line and "worker" not in marks:
                marks["worker"] = now

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while not first_checkpoint(workdir):
            if process.poll() is not None:
                raise SystemExit(f"`run` ended ({process.returncode}) before its first epoch, tree {tree}")
            time.sleep(0.05)
        total = time.monotonic() - start
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    reader.join(5)
    startup, worker = marks.get("startup", float("nan")), marks.get("worker", float("nan"))
    return {"startup": startup, "worker": worker - startup, "trial": total - worker, "total": total}


def checkout(commit: str, folder: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(folder), commit],
                   check=True, capture_output=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help="commit measured against (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trees = {"baseline": checkout(args.baseline, folder / "baseline"), "current": ROOT, "current+pool": ROOT}
        sweep = sweep_file(folder)
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        try:
            for round_ in range(args.rounds):
                for name, tree in trees.items():
                    pool = folder / f"pool-{round_}" if name.endswith("+pool") else None
                    env = environment(tree, folder / f"cache-{name}-{round_}", pool)
                    if pool is not None:
                        pool_command(tree, env, "start", "--workers", "1", "--idle-minutes", "10")
                    for temperature in ("cold", "warm"):
                        workdir = folder / f"work-{name}-{round_}-{temperature}"
                        results.setdefault((name, temperature), []).append(
                            time_to_first_epoch(tree, sweep, workdir, env))
                    if pool is not None:
                        pool_command(tree, env, "stop")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees["baseline"])],
                           capture_output=True)
    print(f"time to the first finished epoch, median of {args.rounds} rounds (seconds); baseline {args.baseline}")
    print(f"{'':18}{'startup':>9}{'worker':>9}{'trial':>9}{'total':>9}")
    for (name, temperature), runs in sorted(results.items()):
        medians = {phase: statistics.median(run[phase] for run in runs) for phase in (*PHASES, "total")}
        print(f"{name + ' ' + temperature:18}" + "".join(f"{medians[p]:9.1f}" for p in (*PHASES, "total")))
    for name in ("current", "current+pool"):
        for temperature in ("cold", "warm"):
            ratio = (statistics.median(r["total"] for r in results[(name, temperature)])
                     / statistics.median(r["total"] for r in results[("baseline", temperature)]))
            print(f"first epoch {temperature}: {name}/baseline = {ratio:.2f}x (target <= 0.5x)")


if __name__ == "__main__":
    main()
