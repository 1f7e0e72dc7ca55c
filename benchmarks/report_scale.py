"""`report`, `best` and `status` on a sweep of 5,000 finished trials against one of 6 (issue #25, item 8).

    python benchmarks/report_scale.py [--trials 5000] [--small 6] [--repeats 3] [--template DIR] [--profile CMD]

One real trial is trained first (a one-point seals sweep, 5 epochs): its MLflow run and Optuna trial are the
template. Both sweeps are then synthesised from it, the same way: MLflow rows written in bulk straight into a copy
of the template's SQLite store (params, tags, final metrics, baselines and 5 epochs of history per trial, as a
real trial records them; every run's artefacts are the template's, so the best trial's confusion matrix is real),
and an Optuna study of as many COMPLETE trials. The three commands then run in this process as the CLI runs them
(`videosweep.cli.main`), each `--repeats` times after a warm-up; the median is reported. Synthesis is not timed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import io
import itertools
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
NAME = "scale"
# The swept values the synthetic trials draw from (9,600 points): a realistic head-and-training grid.
GRID = {"layer_1_size": [0, 8, 16, 32, 64, 128, 256, 512], "layer_2_size": [0, 8, 16, 32, 64],
        "dropout": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], "pooling": ["avg", "max"],
        "learning_rates": ["[0.001]", "[0.003]", "[0.0001]", "[0.01]", "[0.0003]"], "batch_size": [16, 32, 64, 128]}
EPOCHS = 5
VAL_WINDOWS = 174  # accuracies are whole numbers of windows right: real sweeps tie, which ranking must settle


def sweep_file(folder: Path) -> Path:
    data = {"name": NAME, "data": {"root": str(ROOT / "examples" / "seals")},
            "training": {"epochs": EPOCHS, "patience": EPOCHS, "learning_rates": [1e-3], "batch_size": 64, "seed": 0},
            "search": {"strategy": "grid"},
            "space": [{"architecture": ["image_mlp_frozen"], "backbone": ["mobilenet_v2"], "weights": ["none"],
                       "frame_size": ["32x32"], "layer_1_size": [16]}]}
    path = folder / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def train_template(folder: Path) -> Path:
    """One real trial, through the CLI: the run and study trial every synthetic one is copied from."""
    workdir = folder / "template"
    result = subprocess.run([sys.executable, "-m", "videosweep", "run", str(sweep_file(folder)), "--workdir",
                             str(workdir)], capture_output=True, text=True, cwd=ROOT, check=False,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)})
    if result.returncode != 0:
        raise SystemExit(f"the template trial failed:\n{result.stderr[-3000:]}")
    return workdir


def variants(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """`count` distinct points of GRID (seeded), each with the final metrics and history a trained trial logs."""
    rng = np.random.default_rng(seed)
    points = list(itertools.product(*GRID.values()))
    chosen = rng.choice(len(points), size=count, replace=False)
    trials = []
    for index, point in enumerate(chosen):
        params = dict(zip(GRID, points[point]))
        if params["layer_1_size"] == 0:  # no hidden layer: no second one either
            params["layer_2_size"] = 0
        right = int(rng.integers(int(0.45 * VAL_WINDOWS), int(0.8 * VAL_WINDOWS)))
        val_accuracy = right / VAL_WINDOWS
        history = [{"val_accuracy": min(1.0, val_accuracy * (0.9 + 0.025 * step)), "val_loss": 0.7 - 0.02 * step,
                    "accuracy": 0.5 + 0.05 * step, "loss": 0.69 - 0.03 * step, "learning_rate": 1e-3,
                    "round": 0.0} for step in range(EPOCHS)]
        heads = params["layer_1_size"] * 1280 + params["layer_1_size"] * params["layer_2_size"]
        trials.append({"params": params, "index": index, "val_accuracy_best": val_accuracy,
                       "val_loss_best": float(rng.uniform(0.45, 0.7)),
                       "test_accuracy": float(np.clip(val_accuracy + rng.normal(0, 0.03), 0, 1)),
                       "latency_ms": float(rng.uniform(3, 12)), "param_count": float(2562 + heads),
                       "history": history})
    return trials


def trial_key(params: dict[str, Any], index: int) -> str:
    return hashlib.sha256(json.dumps([params, index], sort_keys=True).encode()).hexdigest()[:12]


def _copy_db(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite store in WAL mode (the backup API, not a file copy)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def synthesise_mlflow(template: Path, workdir: Path, trials: list[dict[str, Any]]) -> list[str]:
    """The template's MLflow store with its trial run replaced by one run per synthetic trial; their run ids."""
    db = workdir / "mlflow.db"
    _copy_db(template / "mlflow.db", db)
    con = sqlite3.connect(db)
    (run,) = con.execute("select run_uuid from tags where key='videosweep.role' and value='trial'").fetchall()[0:1]
    run = run[0]
    row = con.execute("select * from runs where run_uuid=?", (run,)).fetchone()
    columns = [c[1] for c in con.execute("pragma table_info(runs)")]
    base = dict(zip(columns, row))
    tags = dict(con.execute("select key, value from tags where run_uuid=?", (run,)).fetchall())
    params = dict(con.execute("select key, value from params where run_uuid=?", (run,)).fetchall())
    finals = dict(con.execute("select key, value from latest_metrics where run_uuid=? and key not in "
                              f"({','.join('?' * 6)})", (run, "accuracy", "loss", "val_accuracy", "val_loss",
                                                         "learning_rate", "round")).fetchall())
    for table in ("tags", "params", "metrics", "latest_metrics", "runs"):
        con.execute(f"delete from {table} where run_uuid=?", (run,))
    rows: dict[str, list[tuple]] = {"runs": [], "tags": [], "params": [], "metrics": [], "latest_metrics": []}
    ids = []
    start = int(base["start_time"])
    for trial in trials:
        run_id = uuid.uuid4().hex
        key = trial_key(trial["params"], trial["index"])
        trial["key"], trial["run_id"] = key, run_id
        began = start + trial["index"] * 60_000
        rows["runs"].append(tuple({**base, "run_uuid": run_id, "name": f"image_mlp_frozen-{key}",
                                   "start_time": began, "end_time": began + 45_000}[c] for c in columns))
        run_tags = {**tags, "videosweep.trial_key": key, "optuna_trial": str(trial["index"]),
                    "mlflow.runName": f"image_mlp_frozen-{key}"}
        rows["tags"] += [(k, v, run_id) for k, v in run_tags.items()]
        rows["params"] += [(k, str(trial["params"].get(k, v)), run_id) for k, v in params.items()]
        metrics = {**finals, **{k: trial[k] for k in ("val_accuracy_best", "val_loss_best", "test_accuracy",
                                                       "latency_ms", "param_count")}}
        for name, value in metrics.items():
            rows["metrics"].append((name, value, began, run_id, 0, 0))
            rows["latest_metrics"].append((name, value, began, 0, 0, run_id))
        for step, epoch in enumerate(trial["history"]):
            for name, value in epoch.items():
                rows["metrics"].append((name, value, began + step, run_id, step, 0))
        for name, value in trial["history"][-1].items():
            rows["latest_metrics"].append((name, value, began + EPOCHS - 1, EPOCHS - 1, 0, run_id))
        ids.append(run_id)
    con.executemany(f"insert into runs ({','.join(columns)}) values ({','.join('?' * len(columns))})", rows["runs"])
    con.executemany("insert into tags (key, value, run_uuid) values (?,?,?)", rows["tags"])
    con.executemany("insert into params (key, value, run_uuid) values (?,?,?)", rows["params"])
    con.executemany("insert into metrics (key, value, timestamp, run_uuid, step, is_nan) values (?,?,?,?,?,?)",
                    rows["metrics"])
    con.executemany("insert into latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                    "values (?,?,?,?,?,?)", rows["latest_metrics"])
    con.commit()
    con.close()
    return ids


def synthesise_study(template: Path, workdir: Path, trials: list[dict[str, Any]]) -> None:
    """An Optuna study named as the template's, with its attributes and one COMPLETE trial per synthetic trial:
    the first added through Optuna, the rest as the same rows written in bulk (Optuna adds ~5 trials a second)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, distribution_to_json

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    source = optuna.load_study(study_name=NAME, storage=f"sqlite:///{template / 'optuna.db'}")
    model = source.trials[0]
    db = workdir / "optuna.db"
    study = optuna.create_study(study_name=NAME, storage=f"sqlite:///{db}", directions=source.directions)
    for name, value in source.user_attrs.items():
        study.set_user_attr(name, value)
    distributions = {**model.distributions, **{name: CategoricalDistribution(tuple(values))
                                               for name, values in GRID.items()}}
    frozen = []
    for trial in trials:
        value = trial["val_accuracy_best"]
        began = model.datetime_start + dt.timedelta(minutes=trial["index"])
        frozen.append(optuna.trial.FrozenTrial(
            number=trial["index"], state=optuna.trial.TrialState.COMPLETE, value=None, values=[value],
            datetime_start=began, datetime_complete=began + dt.timedelta(seconds=45),
            params={**model.params, **trial["params"]}, distributions=distributions,
            user_attrs={**model.user_attrs, "trial_key": trial["key"], "mlflow_run_id": trial["run_id"],
                        "params": {**model.user_attrs["params"], **trial["params"]}, "fit_val_acc": value},
            system_attrs={"videosweep:created": uuid.uuid4().hex},
            intermediate_values={step: epoch["val_accuracy"] for step, epoch in enumerate(trial["history"])},
            trial_id=0))
    study.add_trial(frozen[0])
    con = sqlite3.connect(db)
    study_id = con.execute("select study_id from studies where study_name=?", (NAME,)).fetchone()[0]
    first = con.execute("select max(trial_id) from trials").fetchone()[0] + 1
    rows: dict[str, list[tuple]] = {name: [] for name in ("trials", "params", "values", "steps", "user", "system")}
    for trial_id, trial in enumerate(frozen[1:], start=first):
        rows["trials"].append((trial_id, trial.number, study_id, "COMPLETE", str(trial.datetime_start),
                               str(trial.datetime_complete)))
        rows["params"] += [(trial_id, name, distributions[name].to_internal_repr(value),
                            distribution_to_json(distributions[name])) for name, value in trial.params.items()]
        rows["values"] += [(trial_id, objective, value, "FINITE") for objective, value in enumerate(trial.values)]
        rows["steps"] += [(trial_id, step, value, "FINITE") for step, value in trial.intermediate_values.items()]
        rows["user"] += [(trial_id, key, json.dumps(value)) for key, value in trial.user_attrs.items()]
        rows["system"] += [(trial_id, key, json.dumps(value)) for key, value in trial.system_attrs.items()]
    for sql, name in (
            ("trials (trial_id, number, study_id, state, datetime_start, datetime_complete) values (?,?,?,?,?,?)",
             "trials"),
            ("trial_params (trial_id, param_name, param_value, distribution_json) values (?,?,?,?)", "params"),
            ("trial_values (trial_id, objective, value, value_type) values (?,?,?,?)", "values"),
            ("trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type) "
             "values (?,?,?,?)", "steps"),
            ("trial_user_attributes (trial_id, key, value_json) values (?,?,?)", "user"),
            ("trial_system_attributes (trial_id, key, value_json) values (?,?,?)", "system")):
        con.executemany(f"insert into {sql}", rows[name])
    con.commit()
    con.close()


def synthesise(template: Path, folder: Path, count: int) -> Path:
    workdir = folder / f"sweep{count}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    trials = variants(count)
    started = time.perf_counter()
    synthesise_mlflow(template, workdir, trials)
    synthesise_study(template, workdir, trials)
    print(f"synthesised {count} finished trials in {time.perf_counter() - started:.1f} s", flush=True)
    return workdir


def cli(args: list[str]) -> float:
    """Seconds one CLI command takes in this process (its output swallowed; a failure stops the benchmark)."""
    from videosweep.cli import main

    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exit_:
            if exit_.code:
                raise SystemExit(f"videosweep {' '.join(args)} exited {exit_.code}:\n{err.getvalue()[-2000:]}")
    return time.perf_counter() - started


def commands(sweep: Path, workdir: Path, out: Path) -> dict[str, list[str]]:
    where = [str(sweep), "--workdir", str(workdir)]
    return {"report": ["report", *where, "--out", str(out), "--overwrite"], "best": ["best", *where],
            "best --json": ["best", *where, "--json"], "status": ["status", *where]}


def measure(sweep: Path, workdir: Path, folder: Path, repeats: int) -> dict[str, float]:
    medians = {}
    for name, args in commands(sweep, workdir, folder / f"report-{workdir.name}").items():
        medians[name] = statistics.median(cli(args) for _ in range(repeats))
    return medians


def profile(sweep: Path, workdir: Path, folder: Path, name: str) -> None:
    import cProfile
    import pstats

    args = commands(sweep, workdir, folder / f"report-{workdir.name}")[name]
    profiler = cProfile.Profile()
    profiler.enable()
    cli(args)
    profiler.disable()
    profiler.dump_stats(folder / f"profile-{name.replace(' ', '')}.pstats")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(r"videosweep|reports|runner|zoo", 60)


def growth(times: dict[int, dict[str, float]]) -> None:
    """Each command's time at each size, the ratio largest/smallest, and its marginal cost per trial over each step
    of sizes: growth no worse than linear keeps the later steps' cost per trial no higher than the earlier ones'."""
    sizes = sorted(times)
    small, large = sizes[0], sizes[-1]
    print(f"median seconds per command at {' | '.join(map(str, sizes))} finished trials; ratio {large}/{small}; "
          "marginal ms per added trial over each step")
    for name in times[small]:
        marginal = [1000 * (times[b][name] - times[a][name]) / (b - a) for a, b in zip(sizes, sizes[1:])]
        print(f"  {name:12s} {' | '.join(f'{times[n][name]:7.2f}' for n in sizes)}  ratio "
              f"{times[large][name] / times[small][name]:6.1f}x  marginal ms/trial "
              f"{' -> '.join(f'{m:.2f}' for m in marginal)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5000)
    parser.add_argument("--small", type=int, default=6)
    parser.add_argument("--middle", type=int, default=1000, help="a size between (0: none), to show the growth")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--template", type=Path, help="a workdir this script trained before (skips training)")
    parser.add_argument("--folder", type=Path, help="where the sweeps are written (default: a temporary folder)")
    parser.add_argument("--profile", choices=["report", "best", "best --json", "status"],
                        help="cProfile one command on the large sweep instead of timing")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory() as temporary:
        folder = (args.folder or Path(temporary)).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        sweep = sweep_file(folder)
        template = args.template.resolve() if args.template else train_template(folder)
        sizes = sorted({args.small, args.trials, *([args.middle] if args.middle else [])})
        workdirs = {count: synthesise(template, folder, count) for count in sizes}
        if args.profile:
            profile(sweep, workdirs[args.trials], folder, args.profile)
            return
        cli(commands(sweep, workdirs[args.small], folder / "warm-up")["report"])  # first-use costs, not measured
        times = {count: measure(sweep, workdir, folder, args.repeats) for count, workdir in workdirs.items()}
        print(f"in-process, median of {args.repeats} runs each")
        growth(times)
        for count, workdir in workdirs.items():
            html = folder / f"report-{workdir.name}" / "report.html"
            print(f"  report.html of {count} trials: {html.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
