"""Long trials: epoch checkpoints, continuation after an interruption, successive halving that promotes."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pandas as pd
import pytest
import yaml

from runner import preemption
from runner.spec.metrics import CONTINUED_METRIC
from runner.search.halving import planned_epochs, rung_budgets
from runner.spec.trial_spec import TrialSpec
from runner.spec.sweep import ScheduleConfig
from runner.trial.training import run_trial
from tests.conftest import ROOT, run_cli
from tests.runner.execution.test_run import FEATURES, load_study
from zoo import load_dataset

# Dropout (seed states), two rounds (optimizer rebuilt, best weights carried), a GRU on shuffled windows.
LRCNN = {"architecture": "video_lrcnn_frozen", "backbone": "mobilenet_v2", "weights": "none", "frame_size": "32x32",
         "sequence_length": 3, "sequence_model": "GRU", "layer_1_size": 16, "dropout": 0.3, "epochs": 3,
         "patience": 3, "learning_rates": [1e-2, 1e-3], "batch_size": 64}
COMPARED = ["round", "epoch", "step", "loss", "accuracy", "val_loss", "val_accuracy"]


def test_rungs_count_epochs_of_all_rounds_and_the_plan_arithmetic():
    schedule = ScheduleConfig(kind="successive_halving", min_epochs=1, reduction_factor=3)
    assert rung_budgets(schedule, 9) == [1, 3, 9]
    assert rung_budgets(schedule, 20 * 3) == [1, 3, 9, 27, 60]  # 20 epochs x 3 learning rates
    budget = planned_epochs(schedule, [9] * 9)  # the example: 6 stop at 1, 2 at 3, 1 at 9
    assert (budget["with_schedule"], budget["without_schedule"]) == (21, 81)
    assert [r["trials"] for r in budget["rungs"]] == [9, 3, 1]


@pytest.mark.slow
def test_a_paused_or_preempted_trial_continues_to_the_same_history_and_a_corrupt_checkpoint_starts_over(
        tmp_path, seals, cache_dir, monkeypatch):
    dataset = load_dataset(seals)
    spec = TrialSpec.from_flat(LRCNN)
    whole = run_trial(spec, dataset, tmp_path / "whole", cache_dir=cache_dir)
    out, rows, notes = tmp_path / "halved", [], []
    for budget in (2, 4, None):  # mid-round, then at the second round's first epoch, then to the end
        results = run_trial(spec, dataset, out, cache_dir=cache_dir, checkpoints=True, checkpoint_seconds=0,
                            epoch_budget=budget, overwrite=True, on_rows=lambda h: rows.append(len(h)),
                            on_start_over=notes.append)
        assert results["paused"] is (budget is not None)
        assert (out / "checkpoint").is_dir() is (budget is not None)  # removed once the trial completes
    assert notes == [] and results["resumed_from_epoch"] == 4
    expected = pd.read_csv(tmp_path / "whole" / "fit_history.csv")[COMPARED]
    pd.testing.assert_frame_equal(pd.read_csv(out / "fit_history.csv")[COMPARED], expected)
    assert results["fit_val_acc"] == whole["fit_val_acc"] and results["fit_test_acc"] == whole["fit_test_acc"]

    # Preempted twice inside epochs (SIGTERM after a batch, as a worker's handler takes it), once with a checkpoint
    # after every batch as well: each continues at its next batch and the history is the uninterrupted one.
    handler = signal.signal(signal.SIGTERM, lambda *_: preemption.requested.set())
    stops = []
    try:
        for seconds, term in ((0, "1.2"), (1e-6, "3.1")):
            monkeypatch.setenv("VIDEOSWEEP_FAULT", f"term:layer_1_size=16@{term}")
            with pytest.raises(preemption.Preempted) as stopped:
                run_trial(spec, dataset, out, cache_dir=cache_dir, checkpoints=True, checkpoint_seconds=seconds,
                          overwrite=True)
            stops.append(str(stopped.value))
            preemption.requested.clear()
    finally:
        signal.signal(signal.SIGTERM, handler)
        preemption.requested.clear()
        monkeypatch.delenv("VIDEOSWEEP_FAULT")
    # The signal comes right after batch 2 of epoch 2, then after batch 1 of round 2's first epoch: it stops there.
    assert stops == ["stopped at batch 2 of 5 in epoch 2 of round 1", "stopped at batch 1 of 5 in epoch 1 of round 2"]
    results = run_trial(spec, dataset, out, cache_dir=cache_dir, checkpoints=True, overwrite=True)
    assert (results["resumed_from_epoch"], results["resumed_from_batch"]) == (3, 1)
    pd.testing.assert_frame_equal(pd.read_csv(out / "fit_history.csv")[COMPARED], expected, check_exact=True)
    assert results["fit_test_acc"] == whole["fit_test_acc"]

    run_trial(spec, dataset, out, cache_dir=cache_dir, checkpoints=True, epoch_budget=2, overwrite=True)
    latest = json.loads((out / "checkpoint" / "latest.json").read_text())["dir"]
    (out / "checkpoint" / latest / "model.weights.h5").write_bytes(b"not hdf5")
    results = run_trial(spec, dataset, out, cache_dir=cache_dir, checkpoints=True, overwrite=True,
                        on_start_over=notes.append)
    assert len(notes) == 1 and "corrupt" in notes[0] and results["resumed_from_epoch"] == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "fit_history.csv")[COMPARED], expected)


def _sweep(folder: Path, name: str, space: list, training: dict, **search) -> Path:
    data = {"name": name, "data": {"root": str(ROOT / "examples" / "seals")},
            "training": {"batch_size": 64, "checkpoint_seconds": 0, **training}, "space": space,
            "search": search or {"strategy": "grid"}, "resources": {"workers": 1}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _steps(workdir: Path, name: str, metric: str = "val_accuracy") -> dict[str, list[int]]:
    """Each trial run's steps of `metric` in MLflow, by trial key (deleted runs left out)."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name).experiment_id
    runs = client.search_runs([experiment], "tags.`videosweep.role` = 'trial'")
    return {run.data.tags["videosweep.trial_key"]: sorted(m.step for m in client.get_metric_history(
        run.info.run_id, metric)) for run in runs}


SPACE = [{k: [v] for k, v in LRCNN.items() if k not in ("epochs", "patience", "learning_rates", "batch_size")}]
TRAINING = {"epochs": 3, "patience": 3, "learning_rates": [1e-2, 1e-3]}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache_dir) -> pd.DataFrame:
    """The per-epoch history of the LRCNN trial trained without interruption: what continued trials must match."""
    folder = tmp_path_factory.mktemp("whole")
    whole = _sweep(folder, "whole", SPACE, TRAINING)
    assert run_cli("run", str(whole), "--workdir", str(folder / "a")).returncode == 0
    [key] = [t.user_attrs["trial_key"] for t in load_study(folder / "a", "whole").trials]
    return pd.read_csv(folder / "a" / "trials" / key / "fit_history.csv")[COMPARED]


@pytest.mark.slow
def test_a_killed_trial_continues_from_its_checkpoint_and_mlflow_has_each_epoch_once(tmp_path, uninterrupted):
    space, training, expected = SPACE, TRAINING, uninterrupted
    killed = _sweep(tmp_path, "killed", space, training)
    result = run_cli("run", str(killed), "--workdir", str(tmp_path / "b"), "--max-retries", "1",
                     env={"VIDEOSWEEP_FAULT": "kill:layer_1_size=16@2"})  # kill -9 after epoch 2's checkpoint
    assert result.returncode == 0, result.stderr
    trials = load_study(tmp_path / "b", "killed").trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"] and "SIGKILL" in trials[0].user_attrs["failure"]
    key = trials[1].user_attrs["trial_key"]
    results = json.loads((tmp_path / "b" / "trials" / key / "results.json").read_text())
    assert results["resumed_from_epoch"] == 2 and not (tmp_path / "b" / "trials" / key / "checkpoint").exists()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "b" / "trials" / key / "fit_history.csv")[COMPARED],
                                  expected)
    assert _steps(tmp_path / "b", "killed") == {key: list(range(len(expected)))}  # once each, continuous
    assert _steps(tmp_path / "b", "killed", CONTINUED_METRIC) == {key: [2]}  # the curve says where it carried on

    # Re-queued onto a machine without the checkpoint (here: it is gone): starts over, and says so.
    again = run_cli("run", str(killed), "--workdir", str(tmp_path / "c"), "--max-retries", "0",
                    env={"VIDEOSWEEP_FAULT": "kill:layer_1_size=16@2"})
    assert again.returncode == 1 and load_study(tmp_path / "c", "killed").trials[0].state.name == "FAIL"  # for good
    import shutil

    shutil.rmtree(tmp_path / "c" / "trials" / key / "checkpoint")
    resumed = run_cli("resume", str(killed), "--workdir", str(tmp_path / "c"), "--retry-failed")
    assert resumed.returncode == 0 and "starts over" in resumed.stdout, resumed.stdout + resumed.stderr
    last = load_study(tmp_path / "c", "killed").trials[-1]
    assert last.state.name == "COMPLETE" and "is not on" in last.user_attrs["started_over"]
    assert _steps(tmp_path / "c", "killed") == {key: list(range(len(expected)))}


@pytest.mark.slow
def test_a_preempted_worker_exits_143_and_resume_continues_each_trial_without_using_a_retry(tmp_path, uninterrupted):
    """SIGTERM to `worker`'s scheduler alone (as SLURM's --signal=B:TERM and Kubernetes send it): it reaches the workers,
    each checkpoints at its next batch and records its trial as preempted, and the sweep exits 143 within the
    grace; resume continues inside that epoch to the uninterrupted history, with no retry left to use."""
    import os
    import signal
    import subprocess
    import time

    from runner.study.liveness import PREEMPTED
    from tests.conftest import CLI

    sweep = _sweep(tmp_path, "preempted", SPACE, TRAINING)
    workdir = tmp_path / "w"
    env = {**os.environ, "VIDEOSWEEP_FAULT": "nap:layer_1_size=16@2"}  # slow epochs: the signal lands mid-trial
    storage = f"sqlite:///{workdir / 'optuna.db'}"  # `worker` here (the chaos harness's test preempts `run`)
    process = subprocess.Popen([*CLI, "worker", str(sweep), "--storage", storage, "--workdir", str(workdir),
                                "--max-retries", "0"], cwd=ROOT, env=env, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        while not _checkpointed_epochs(workdir, "preempted"):
            assert process.poll() is None and time.time() < deadline, "no epoch was checkpointed"
            time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 143, stdout[-2000:] + stderr[-2000:]
    assert "preempted (SIGTERM)" in stdout
    [trial] = load_study(workdir, "preempted").trials
    assert trial.state.name == "FAIL" and trial.user_attrs["failure"] == PREEMPTED
    assert trial.user_attrs["preempted_at"].startswith("stopped at batch")
    key = trial.user_attrs["trial_key"]
    assert (workdir / "trials" / key / "checkpoint").is_dir()
    resumed = run_cli("resume", str(sweep), "--workdir", str(workdir), "--max-retries", "0")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    results = json.loads((workdir / "trials" / key / "results.json").read_text())
    assert results["resumed_from_epoch"] >= 1 and results["resumed_from_batch"] >= 1  # inside an epoch
    pd.testing.assert_frame_equal(pd.read_csv(workdir / "trials" / key / "fit_history.csv")[COMPARED], uninterrupted)
    assert _steps(workdir, "preempted") == {key: list(range(len(uninterrupted)))}  # each epoch once in MLflow


def _checkpointed_epochs(workdir: Path, name: str) -> int:
    if not (workdir / "optuna.db").is_file():
        return 0
    try:
        trials = load_study(workdir, name).trials
    except KeyError:  # the database exists, the study not yet
        return 0
    return max((int((t.user_attrs.get("checkpoint") or {}).get("epochs", 0)) for t in trials), default=0)


@pytest.mark.slow
def test_successive_halving_promotes_the_best_which_continue_from_their_checkpoints(tmp_path, cache_dir):
    space = [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0, 8, 16, 32]}]
    sweep = _sweep(tmp_path, "sh", space, {"epochs": 4, "patience": 4, "learning_rates": [1e-3]}, strategy="grid",
                   schedule={"kind": "successive_halving", "min_epochs": 1, "reduction_factor": 2})
    workdir = tmp_path / "work"
    plan = json.loads(run_cli("plan", str(sweep), "--workdir", str(workdir), "--json").stdout)
    assert plan["epoch_budget"]["with_schedule"] == 1 * 4 + 1 * 2 + 2 * 1 and \
        plan["epoch_budget"]["without_schedule"] == 16
    result = run_cli("run", str(sweep), "--workdir", str(workdir))
    assert result.returncode == 0, result.stderr
    trials = load_study(workdir, "sh").trials
    by_rung = {rung: [t for t in trials if t.user_attrs["rung"] == rung] for rung in (0, 1, 2)}
    assert [len(by_rung[r]) for r in (0, 1, 2)] == [4, 2, 1] and all(t.state.name == "COMPLETE" for t in trials)
    assert [t.user_attrs["epochs_trained"] for t in trials] == [1, 1, 1, 1, 2, 2, 4]
    assert all(t.user_attrs["paused"] for t in by_rung[0] + by_rung[1]) and not by_rung[2][0].user_attrs["paused"]
    values = {t.user_attrs["trial_key"]: (t.value, t.number) for t in by_rung[0]}
    promoted = sorted(values, key=lambda k: (-values[k][0], values[k][1]))[:2]  # best, ties by grid order
    assert sorted(t.user_attrs["trial_key"] for t in by_rung[1]) == sorted(promoted)
    winner = by_rung[2][0].user_attrs["trial_key"]
    steps = _steps(workdir, "sh")
    assert steps[winner] == [0, 1, 2, 3] and sorted(len(s) for s in steps.values()) == [1, 1, 2, 4]
    assert _steps(workdir, "sh", CONTINUED_METRIC)[winner] == [1, 2]  # promoted twice, each from its checkpoint
    history = pd.read_csv(workdir / "trials" / winner / "fit_history.csv")
    assert list(history.step) == [0, 1, 2, 3]
    checkpoints = sorted(p.parent.name for p in (workdir / "trials").glob("*/checkpoint"))
    assert checkpoints == [], "decided trials keep no checkpoint"
    status = run_cli("status", str(sweep), "--workdir", str(workdir))
    assert "promoted" in status.stdout and "paused" in status.stdout
    report = run_cli("report", str(sweep), "--workdir", str(workdir), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    board = pd.read_csv(tmp_path / "report" / "leaderboard.csv")
    assert sorted(board.rung) == [0, 0, 1, 2]


@pytest.mark.slow
def test_asha_promotes_as_trials_finish_and_the_promoted_continue(tmp_path, cache_dir):
    space = [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0, 8, 16, 32]}]
    sweep = _sweep(tmp_path, "asha", space, {"epochs": 2, "patience": 2, "learning_rates": [1e-3]},
                   strategy="random", trials=3, seed=1,
                   schedule={"kind": "asha", "min_epochs": 1, "reduction_factor": 2})
    workdir = tmp_path / "work"
    result = run_cli("run", str(sweep), "--workdir", str(workdir))
    assert result.returncode == 0, result.stderr
    trials = [t for t in load_study(workdir, "asha").trials if "duplicate_of" not in t.user_attrs]
    first = [t for t in trials if t.user_attrs["rung"] == 0]
    promoted = [t for t in trials if t.user_attrs["rung"] == 1]
    assert len(first) == 3 and all(t.state.name == "COMPLETE" and t.user_attrs["paused"] for t in first)
    assert promoted, "the better of the first two finished trials goes on at once"
    for trial in promoted:  # in the top half of its rung among the trials finished when it was queued
        key = trial.user_attrs["trial_key"]
        earlier = sorted((t for t in first if t.number < trial.number), key=lambda t: (-t.value, t.number))
        assert key in [t.user_attrs["trial_key"] for t in earlier[:len(earlier) // 2]]
        assert trial.state.name == "COMPLETE" and trial.user_attrs["epochs_trained"] == 2
        results = json.loads((workdir / "trials" / key / "results.json").read_text())
        assert results["resumed_from_epoch"] == 1 and not results["paused"]
        assert _steps(workdir, "asha", CONTINUED_METRIC)[key] == [1]


def test_a_checkpoint_for_other_parameters_or_code_is_refused_never_mixed(tmp_path):
    import keras
    import numpy as np

    from runner.trial.checkpoints import Checkpointer, CheckpointError, identity
    from zoo.windows import WindowSequence

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5), keras.layers.Dense(2)])
    sequence = WindowSequence(np.zeros((8, 4), "float32"), np.arange(8), np.zeros(8, int), 2, 1, False, 4,
                              shuffle=True, seed=0)
    mine = identity({"layer_1_size": 8}, "data-a")
    Checkpointer(tmp_path, mine).write(model, {"round": 1}, best=None, round_best=None, optimizer=None,
                                       sequence=sequence)
    assert Checkpointer(tmp_path, mine).read(model).state["round"] == 1
    for other, named in ((identity({"layer_1_size": 16}, "data-a"), "params"), (identity({"layer_1_size": 8},
                         "data-b"), "data"), ({**mine, "code": "videosweep 0.0.1, keras 3.0.0"}, "code")):
        with pytest.raises(CheckpointError, match=f"written for other {named}"):
            Checkpointer(tmp_path, other).read(model)


def test_a_checkpoint_names_the_code_backend_and_versions_that_wrote_it():
    import keras

    from runner.backends import version
    from runner.trial.checkpoints import code_version

    backend = keras.backend.backend()
    code = code_version()  # another commit or another backend is another identity: it never continues
    assert f"{backend} {version(backend)}" in code and f"keras {keras.__version__}" in code
    ours = code.split(",")[0].split()[1]
    assert len(ours) == 16 and int(ours, 16) >= 0  # a digest of the package files, not the package's version


def test_a_checkpoint_state_training_could_not_have_written_is_named():
    from types import SimpleNamespace

    from runner.trial.training import _state_problem

    weights = SimpleNamespace(best_weights=[1], round_best_weights=[1], metrics=[1])
    mid_second = {"round": 2, "epoch": 1, "batch": 2, "epoch_seconds": 1.5, "best_index": 0, "round_best": {},
                  "history": [{}] * 4, "rounds": [{"round": 1, "epochs_run": 3}], "stopper": {}}
    assert _state_problem(mid_second, weights, rates=2, epochs=3, batches=5) is None
    for edit, named in (({"round": 3}, "round 3 of 2"), ({"epoch": 7}, "epoch 7 of 3"),
                        ({"best_index": 1}, "best round index 1"), ({"history": []}, "0 history rows"),
                        ({"rounds": []}, "0 completed round(s) before round 2"),
                        ({"round_best": None}, "a round in progress without its best weights"),
                        ({"batch": 5}, "batch 5 of 5 in epoch 2 of 3"), ({"batch": -1}, "batch -1 of 5"),
                        ({"epoch": 3}, "batch 2 of 5 in epoch 4 of 3"), ({"stopper": None}, "batch 2 of 5"),
                        ({"epoch_seconds": -1}, "batch 2 of 5")):
        assert named in (_state_problem({**mid_second, **edit}, weights, rates=2, epochs=3, batches=5) or "")
    no_totals = SimpleNamespace(best_weights=[1], round_best_weights=[1], metrics=None)
    assert "batch 2 of 5" in _state_problem(mid_second, no_totals, rates=2, epochs=3, batches=5)
