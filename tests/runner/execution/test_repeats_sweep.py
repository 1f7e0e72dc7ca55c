"""training.repeats end to end: one tiny grid sweep of 2 points x 2 seed repeats, `kill -9`ed while a repeat sits on
its checkpoint and resumed; its assertions share that one sweep (real training, real Optuna and MLflow stores)."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
from pathlib import Path

import pytest
import yaml

from runner.spec.trial_spec import repeat_seed
from runner.trial.checkpoints import LATEST
from runner.workdir import CHECKPOINT_FOLDER
from tests.conftest import CLI, ROOT, run_cli
from tests.runner.execution.test_run import load_study, trainings, wait_until

pytestmark = pytest.mark.slow
NAME = "rep"


def write_sweep(folder: Path) -> Path:
    data = {"name": NAME, "data": {"root": str(ROOT / "examples" / "seals")},
            "training": {"epochs": 2, "patience": 2, "learning_rates": [1e-3], "batch_size": 64, "repeats": 2,
                         "checkpoint_seconds": 0},
            "space": [{"architecture": ["image_mlp_frozen"], "backbone": ["mobilenet_v2"], "weights": ["none"],
                       "frame_size": ["32x32"], "layer_1_size": [0, 8]}]}
    path = folder / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def napping_key(workdir: Path) -> str | None:
    """The key of the running repeat 1 of layer_1_size 8 once its epoch-1 checkpoint is on disk (it naps there)."""
    if not (workdir / "optuna.db").exists():
        return None
    try:
        trials = load_study(workdir, NAME).trials
    except KeyError:  # the database is there, the study not yet
        return None
    for trial in trials:
        params = trial.user_attrs.get("params", {})
        if trial.state.name == "RUNNING" and params.get("layer_1_size") == 8 and params.get("repeat") == 1:
            key = trial.user_attrs["trial_key"]
            return key if (workdir / "trials" / key / CHECKPOINT_FOLDER / LATEST).is_file() else None
    return None


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, cache_dir):
    """The sweep killed (`kill -9` of the whole run) mid-repeat, then resumed: (sweep file, workdir, what it
    trained before the kill, the killed key, the resume's result)."""
    folder = tmp_path_factory.mktemp("repeats")
    path, workdir, counter = write_sweep(folder), folder / "work", folder / "count.txt"
    env = {**os.environ, "VIDEOSWEEP_FAULT": f"count:@{counter},nap:layer_1_size=8&repeat=1@3600"}
    process = subprocess.Popen([*CLI, "run", str(path), "--workdir", str(workdir), "--workers", "1"], cwd=ROOT,
                               env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: napping_key(workdir) is not None, 600, "repeat 1 of layer_1_size 8 checkpointed", process)
        killed = napping_key(workdir)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    before = trainings(counter)
    resumed = run_cli("resume", str(path), "--workdir", str(workdir), env={"VIDEOSWEEP_FAULT": f"count:@{counter}"})
    return path, workdir, before, trainings(counter)[len(before):], killed, resumed


def trial_runs(workdir: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(NAME).experiment_id
    return client.search_runs([experiment], "tags.`videosweep.role` = 'trial'")


def test_each_repeat_finishes_exactly_once_and_the_killed_one_continues_from_its_checkpoint(sweep):
    _, workdir, before, after, killed, resumed = sweep
    assert resumed.returncode == 0, resumed.stderr
    study = load_study(workdir, NAME)
    complete = [t.user_attrs["trial_key"] for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == len(set(complete)) == 4  # 2 points x 2 repeats, each finished once
    assert not any(t.state.name in ("RUNNING", "WAITING") for t in study.trials)
    assert sorted((t["layer_1_size"], t.get("repeat", 0)) for t in before) == [(0, 0), (0, 1), (8, 0), (8, 1)]
    assert [(t["layer_1_size"], t["repeat"]) for t in after] == [(8, 1)]  # only the killed repeat trained again
    results = json.loads((workdir / "trials" / killed / "results.json").read_text())
    assert results["resumed_from_epoch"] == 1 and not (workdir / "trials" / killed / CHECKPOINT_FOLDER).exists()
    [run] = [r for r in trial_runs(workdir) if r.data.tags["videosweep.trial_key"] == killed]
    assert run.data.metrics["continued_at_step"] == 1  # from its epoch-1 checkpoint, not from scratch
    from mlflow import MlflowClient

    history = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}").get_metric_history(run.info.run_id, "val_accuracy")
    assert sorted(m.step for m in history) == [0, 1]  # each epoch once


def test_repeats_are_child_runs_grouped_by_point_and_trained_with_their_own_seeds(sweep):
    _, workdir, *_ = sweep
    runs = trial_runs(workdir)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    groups: dict[str, list] = {}
    for run in runs:
        groups.setdefault(run.data.tags["videosweep.point_key"], []).append(run)
    assert len(groups) == 2
    for point, members in groups.items():
        by_repeat = {int(r.data.tags["videosweep.repeat"]): r for r in members}
        assert sorted(by_repeat) == [0, 1]
        assert by_repeat[0].data.tags["videosweep.trial_key"] == point  # repeat 0's key is the point key
        assert "repeat" not in by_repeat[0].data.params and by_repeat[1].data.params["repeat"] == "1"
        results = json.loads((workdir / "trials" / by_repeat[1].data.tags["videosweep.trial_key"]
                              / "results.json").read_text())
        assert results["seed_used"] == repeat_seed(0, 1) and results["repeat"] == 1
        assert "seed_used" not in json.loads((workdir / "trials" / point / "results.json").read_text())


def test_the_leaderboard_and_best_show_each_point_as_the_mean_of_its_repeats(sweep):
    from reports.leaderboard import leaderboard, to_markdown
    from reports.records import read_sweep_runs
    from runner.tracking.mlflow_runs import Tracker

    path, workdir, *_ = sweep
    tracker = Tracker(f"sqlite:///{workdir / 'mlflow.db'}", workdir, NAME, create=False)
    board = leaderboard(read_sweep_runs(tracker), "val_accuracy")
    assert len(board) == 2 and list(board["repeats"]) == [2, 2]
    runs = trial_runs(workdir)
    for _, row in board.iterrows():
        members = [r for r in runs if r.data.tags["videosweep.point_key"] == row.trial_key]
        values = [r.data.metrics["val_accuracy_best"] for r in members]
        assert row.val_accuracy == pytest.approx(statistics.mean(values))
        assert row.val_accuracy_std == pytest.approx(statistics.stdev(values))
        assert sorted(row.repeat_keys.split()) == sorted(r.data.tags["videosweep.trial_key"] for r in members)
    assert board.val_accuracy.is_monotonic_decreasing or board.val_accuracy.iloc[0] == board.val_accuracy.iloc[1] \
        and board.val_loss.iloc[0] <= board.val_loss.iloc[1]
    header = to_markdown(board, "t").splitlines()[2]
    assert "| val_accuracy_std | repeats |" in header
    best = run_cli("best", str(path), "--workdir", str(workdir), "--json")
    assert best.returncode == 0, best.stderr
    chosen = json.loads(best.stdout)
    assert chosen["trial_key"] == board.trial_key.iloc[0] == chosen["point_key"] and chosen["repeats"] == 2
    assert chosen["val_accuracy"] == pytest.approx(board.val_accuracy.iloc[0])
    assert sorted(chosen["repeat_keys"]) == sorted(board.repeat_keys.iloc[0].split())
