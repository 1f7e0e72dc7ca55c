"""Successive halving against training every trial fully (issue #17).

    python benchmarks/halving.py [--workers 1]

(1) A 27-trial grid of tiny models on the seals frames (image_mlp_frozen on random-init mobilenet_v2 features
at 32x32; 3 head sizes x 3 dropouts x 3 learning rates; 9 epochs, patience 9), run twice through the real CLI:
every trial fully, then `successive_halving` (min_epochs 1, reduction factor 3). Wall time, epochs trained and
the best validation accuracy of each. (2) The research grid's (`sweeps/research-grid.yaml`) epoch budget with
and without the schedule: arithmetic from `plan --json`, no training.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from videosweep.cli import main; main()"]
SPACE = [{"architecture": ["image_mlp_frozen"], "backbone": ["mobilenet_v2"], "weights": ["none"],
          "frame_size": ["32x32"], "layer_1_size": [0, 16, 64], "dropout": [0.0, 0.2, 0.4],
          "learning_rates": [[1e-3], [3e-3], [1e-2]]}]
SCHEDULE = {"kind": "successive_halving", "min_epochs": 1, "reduction_factor": 3}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=ROOT, check=False,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)})
    if result.returncode != 0:
        raise SystemExit(f"videosweep {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


def sweep_file(folder: Path, name: str, schedule: dict | None, workers: int) -> Path:
    data = {"name": name, "data": {"root": str(ROOT / "examples" / "seals")},
            "training": {"epochs": 9, "patience": 9, "batch_size": 64, "seed": 0},
            "search": {"strategy": "grid", **({"schedule": schedule} if schedule else {})},
            "space": SPACE, "resources": {"workers": workers}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def measure(folder: Path, name: str, schedule: dict | None, workers: int) -> dict:
    import optuna

    path = sweep_file(folder, name, schedule, workers)
    workdir = folder / name
    started = time.perf_counter()
    cli("run", str(path), "--workdir", str(workdir))
    seconds = time.perf_counter() - started
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'optuna.db'}")
    final: dict[str, optuna.trial.FrozenTrial] = {}  # each key's trial at its highest rung
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        key = trial.user_attrs["trial_key"]
        if key not in final or trial.user_attrs.get("rung", 0) > final[key].user_attrs.get("rung", 0):
            final[key] = trial
    epochs = sum(len(pd_history(workdir, key)) for key in final)
    return {"seconds": seconds, "epochs": epochs, "trials": len(final),
            "best": max(t.value for t in final.values())}


def pd_history(workdir: Path, key: str) -> list[str]:
    return (workdir / "trials" / key / "fit_history.csv").read_text().splitlines()[1:]


def research_budget(folder: Path) -> dict:
    data = yaml.safe_load((ROOT / "sweeps" / "research-grid.yaml").read_text())
    data["data"]["root"] = str(ROOT / "examples" / "seals")
    data["search"]["schedule"] = SCHEDULE
    path = folder / "research-grid.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    plan = json.loads(cli("plan", str(path), "--workdir", str(folder / "research"), "--json").stdout)
    return {"trials": plan["trials"], **plan["epoch_budget"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ.setdefault("VIDEOSWEEP_CACHE", str(folder / "cache"))
        warm = sweep_file(folder, "warm", None, 1)  # features extracted once, before either is timed
        data = yaml.safe_load(warm.read_text())
        data["space"] = [{**SPACE[0], "layer_1_size": [0], "dropout": [0.0], "learning_rates": [[1e-3]]}]
        data["training"]["epochs"] = 1
        warm.write_text(yaml.safe_dump(data))
        cli("run", str(warm), "--workdir", str(folder / "warm"))
        full = measure(folder, "full", None, args.workers)
        halving = measure(folder, "halving", SCHEDULE, args.workers)
        research = research_budget(folder)
    print(f"27-trial grid, 9 epochs, {args.workers} CPU worker(s):")
    print(f"  every trial fully      {full['seconds']:8.1f} s  {full['epochs']:4d} epochs  "
          f"best val_accuracy {full['best']:.4f}")
    print(f"  successive halving     {halving['seconds']:8.1f} s  {halving['epochs']:4d} epochs  "
          f"best val_accuracy {halving['best']:.4f}")
    print(f"  halving wall time ratio {halving['seconds'] / full['seconds']:.2f}")
    print(f"research grid ({research['trials']} trials, rungs "
          f"{', '.join(str(r['epochs']) for r in research['rungs'])} epochs):")
    print(f"  epoch budget without schedule {research['without_schedule']}")
    print(f"  epoch budget with schedule    {research['with_schedule']}")
    print(f"  budget ratio {research['with_schedule'] / research['without_schedule']:.3f}")


if __name__ == "__main__":
    main()
