"""Sweeps run for real: child worker processes, SQLite study, tiny models on the seals frames."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml

from runner.study.storage import open_storage
from tests.conftest import CLI, ROOT, run_cli

pytestmark = pytest.mark.slow
FEATURES = {"backbone": ["mobilenet_v2"], "weights": ["none"], "frame_size": ["32x32"]}


def write_sweep(folder: Path, space: list, name: str = "t", **extra) -> Path:
    data = {"name": name, "data": {"root": str(ROOT / "examples" / "seals")},
            "training": {"epochs": 1, "patience": 1, "learning_rates": [1e-3], "batch_size": 64},
            "space": space, **extra}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def grid(sizes=(0, 8, 16, 24)) -> list:
    return [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": list(sizes)}]


def load_study(workdir: Path, name: str = "t") -> optuna.Study:
    """The sweep's study, read through our storage: a test that polls while `run` creates the database must not
    race it to create the tables (Optuna's own storage did once, failing a CI run)."""
    return optuna.load_study(study_name=name, storage=open_storage(f"sqlite:///{workdir / 'optuna.db'}"))


def trainings(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_until(condition, seconds: float, what: str, process: subprocess.Popen | None = None) -> None:
    """Poll `condition` until it holds; fail (naming `what`) if time runs out or `process` exits first."""
    deadline = time.time() + seconds
    while not condition():
        assert process is None or process.poll() is None, f"the process exited ({process.returncode}) before {what}"
        assert time.time() < deadline, f"{what} did not happen within {seconds} s"
        time.sleep(0.3)


def start_run_until_sleeping(sweep: Path, workdir: Path, counter: Path, sleeper: int,
                             command: str = "run", extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """`videosweep run` (one slot: trials in grid order) in its own process group, returned once the trial of
    layer_1_size=sleeper is stuck (its next start, when it has started before)."""
    started_before = sum(t["layer_1_size"] == sleeper for t in trainings(counter))
    env = {**os.environ, "VIDEOSWEEP_FAULT": f"count:@{counter},sleep:layer_1_size={sleeper}@3600"}
    command = [*CLI, command, str(sweep), "--workdir", str(workdir), "--workers", "1", *extra]
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: sum(t["layer_1_size"] == sleeper for t in trainings(counter)) > started_before, 600,
                   f"the trial layer_1_size={sleeper} started", process)
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return process


def test_grid_runs_what_plan_says_once_and_a_rerun_trains_nothing(tmp_path, cache_dir):
    sweep = write_sweep(tmp_path, grid())
    workdir, counter = tmp_path / "work", tmp_path / "count.txt"
    planned = run_cli("plan", str(sweep), "--workdir", str(workdir), "--json")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["trials"] == 4 and plan["states"]["pending"] == 4
    # image models see 1-frame windows: the baselines are labels.csv's own shares (noseal: 91/174 val, 152/285 test)
    assert list(plan["baselines"]) == ["1"] and plan["baselines"]["1"]["test"]["majority_class"] == "noseal"
    assert plan["baselines"]["1"]["val"]["majority_accuracy"] == pytest.approx(91 / 174)
    env = {"VIDEOSWEEP_FAULT": f"count:@{counter}"}
    # A generous trial timeout (a healthy trial on a machine 6x slower fits) kills none of the healthy trials.
    first = run_cli("run", str(sweep), "--workdir", str(workdir), "--trial-timeout", "300", env=env)
    assert first.returncode == 0, first.stderr
    study = load_study(workdir)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == plan["trials"] == len(trainings(counter))
    assert len({t.user_attrs["trial_key"] for t in complete}) == 4
    for trial in complete:
        assert (workdir / "trials" / trial.user_attrs["trial_key"] / "results.json").is_file()
    second = run_cli("run", str(sweep), "--workdir", str(workdir), env=env)
    assert second.returncode == 0 and "nothing to run" in second.stdout
    assert len(trainings(counter)) == 4 and len(load_study(workdir).trials) == 4
    replanned = json.loads(run_cli("plan", str(sweep), "--workdir", str(workdir), "--json").stdout)
    assert replanned["states"] == {"finished": 4, "failed": 0, "pending": 0, "running": 0}
    status = run_cli("status", str(sweep), "--workdir", str(workdir))
    assert status.returncode == 0 and "4 finished" in status.stdout and "complete" not in status.stdout
    assert "val 0.5230 (noseal, 174 windows)" in " ".join(status.stdout.split())  # the baselines, as plan's


def test_raising_and_segfaulting_trials_fail_with_reasons_are_retried_and_the_sweep_goes_on(tmp_path, cache_dir):
    sweep = write_sweep(tmp_path, grid((0, 8, 16)))
    workdir = tmp_path / "work"
    env = {"VIDEOSWEEP_FAULT": "raise:layer_1_size=8,segfault:layer_1_size=16"}
    result = run_cli("run", str(sweep), "--workdir", str(workdir), "--max-retries", "1", env=env)
    assert result.returncode == 1, result.stderr  # trials failed for good
    study = load_study(workdir)
    by_size: dict[int, list] = {}
    for trial in study.trials:
        by_size.setdefault(trial.user_attrs["params"]["layer_1_size"], []).append(trial)
    assert [t.state.name for t in by_size[0]] == ["COMPLETE"]
    for size, reason in ((8, "RuntimeError: injected failure"), (16, "worker died with signal SIGSEGV")):
        attempts = by_size[size]
        assert [t.state.name for t in attempts] == ["FAIL", "FAIL"]  # one try + one retry
        assert all(reason in t.user_attrs["failure"] for t in attempts)
    saved = Path(by_size[8][0].user_attrs["traceback_path"])
    assert saved.is_file() and "Traceback" in saved.read_text()
    assert not any(p.name.endswith(".partial") for p in (workdir / "trials").iterdir())


def test_fake_gpus_pin_each_worker_to_its_device(tmp_path, cache_dir):
    sweep = write_sweep(tmp_path, grid((0, 4, 8, 12, 16, 20)))
    workdir = tmp_path / "work"
    result = run_cli("run", str(sweep), "--workdir", str(workdir), "--gpus", "0,1", "--trials-per-gpu", "2",
                     env={"VIDEOSWEEP_FAKE_GPUS": "2"})
    assert result.returncode == 0, result.stderr
    trials = load_study(workdir).trials
    assert all(t.state.name == "COMPLETE" for t in trials) and len(trials) == 6
    pids_per_slot: dict[str, set] = {}
    for trial in trials:
        slot = trial.user_attrs["slot"]
        assert slot in {"gpu0.0", "gpu0.1", "gpu1.0", "gpu1.1"}
        device = slot[len("gpu"):].split(".")[0]  # what the scheduler assigned, read off the slot's name
        # ...and what the worker process saw in its environment
        assert trial.user_attrs["cuda_visible_devices"] == device == trial.user_attrs["gpu"]
        pids_per_slot.setdefault(slot, set()).add(trial.user_attrs["pid"])
    # one worker process per slot (no recycling in 6 trials), and never one process for two slots
    assert all(len(pids) == 1 for pids in pids_per_slot.values()), pids_per_slot
    assert len(set.union(*pids_per_slot.values())) == len(pids_per_slot)
    missing = run_cli("run", str(sweep), "--workdir", str(workdir), "--gpus", "3", env={"VIDEOSWEEP_FAKE_GPUS": "2"})
    assert missing.returncode == 2 and "GPU 3 which is not there (GPUs found: 0, 1)" in missing.stderr


def test_kill_9_mid_sweep_then_resume_reruns_no_finished_trial(tmp_path, cache_dir):
    sweep = write_sweep(tmp_path, grid((0, 4, 8, 12, 16)))
    workdir, counter = tmp_path / "work", tmp_path / "count.txt"
    process = start_run_until_sleeping(sweep, workdir, counter, 12)
    time.sleep(1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = load_study(workdir)
    finished_before = {t.user_attrs["trial_key"] for t in before.trials if t.state.name == "COMPLETE"}
    assert any(t.state.name == "RUNNING" for t in before.trials)  # left behind by the killed worker
    trained_before = len(trainings(counter))
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("t").experiment_id
    [orphan] = client.search_runs([experiment], "attributes.status = 'RUNNING' and tags.`videosweep.role` = 'trial'")
    assert orphan.data.params["layer_1_size"] == "12"  # the killed process's run, left RUNNING
    # Resume without retries first: the killed trial fails for good and its run is closed as KILLED ...
    first = run_cli("resume", str(sweep), "--workdir", str(workdir), "--max-retries", "0",
                    env={"VIDEOSWEEP_FAULT": f"count:@{counter}"})
    assert first.returncode == 1, first.stderr  # the killed trial failed for good
    closed = client.get_run(orphan.info.run_id)
    assert closed.info.status == "KILLED" and closed.data.tags["videosweep.state"] == "killed"
    assert [t.state.name for t in load_study(workdir).trials
            if t.user_attrs["params"]["layer_1_size"] == 12] == ["FAIL"]
    # ... then a resume that retries it finishes the sweep, reusing that run.
    result = run_cli("resume", str(sweep), "--workdir", str(workdir), "--retry-failed",
                     env={"VIDEOSWEEP_FAULT": f"count:@{counter}"})
    assert result.returncode == 0, result.stderr
    assert client.get_run(orphan.info.run_id).info.status == "FINISHED"
    after = load_study(workdir)
    complete = [t for t in after.trials if t.state.name == "COMPLETE"]
    keys = [t.user_attrs["trial_key"] for t in complete]
    assert len(keys) == len(set(keys)) == 5  # each key exactly once as finished
    assert not any(t.state.name in ("RUNNING", "WAITING") for t in after.trials)
    retrained = [json.dumps(t, sort_keys=True) for t in trainings(counter)[trained_before:]]
    finished_params = {json.dumps(t.user_attrs["params"], sort_keys=True) for t in complete
                       if t.user_attrs["trial_key"] in finished_before}
    assert not finished_params & set(retrained)  # zero finished trials re-run
    assert len(retrained) == 5 - len(finished_before)
    runs = client.search_runs([experiment])
    children = [r for r in runs if r.data.tags.get("videosweep.role") == "trial"]
    assert sorted(r.data.tags["videosweep.trial_key"] for r in children) == sorted(keys)  # one run per key
    assert all(r.info.status == "FINISHED" for r in runs)  # no orphan RUNNING run


def test_optuna_search_stays_within_its_budget(tmp_path, cache_dir):
    space = [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": {"low": 4, "high": 64, "log": True},
              "dropout": [0.0, 0.3]}]
    sweep = write_sweep(tmp_path, space, search={"strategy": "optuna", "trials": 3, "sampler": "tpe",
                                                 "pruner": "median"})
    workdir = tmp_path / "work"
    result = run_cli("run", str(sweep), "--workdir", str(workdir))
    assert result.returncode == 0, result.stderr
    study = load_study(workdir)
    trained = {t.user_attrs["trial_key"] for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")}
    assert len(trained) == 3
    assert all(4 <= t.params["layer_1_size"] <= 64 for t in study.trials if t.state.name == "COMPLETE")
    assert study.user_attrs["sweep_yaml"] and "image_mlp_frozen" in study.user_attrs["sweep_yaml"]
    again = run_cli("run", str(sweep), "--workdir", str(workdir))
    assert again.returncode == 0 and len(load_study(workdir).trials) == len(study.trials)


def test_ctrl_c_stops_handing_out_trials_then_stops_running_ones_and_the_sweep_resumes(tmp_path, cache_dir):
    sweep = write_sweep(tmp_path, grid((0, 4, 8)))
    workdir, counter = tmp_path / "work", tmp_path / "count.txt"
    process = start_run_until_sleeping(sweep, workdir, counter, 4)
    os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
    wait_until(lambda: any(workdir.glob(".stop.*")), 120, "the scheduler took the first Ctrl-C", process)
    time.sleep(1)  # time for a wrong reaction to the signal; the trial sleeps for an hour
    assert process.poll() is None  # the running trial is allowed to finish
    running = [t for t in load_study(workdir).trials if t.state.name == "RUNNING"]
    assert [t.user_attrs["params"]["layer_1_size"] for t in running] == [4]
    os.killpg(process.pid, signal.SIGINT)  # the second Ctrl-C stops it
    assert process.wait(60) == 130
    trials = {t.user_attrs["params"]["layer_1_size"]: t for t in load_study(workdir).trials}
    assert trials[0].state.name == "COMPLETE"
    assert trials[4].state.name == "FAIL" and trials[4].user_attrs["failure"] == "interrupted by the user"
    assert trials[8].state.name == "WAITING"  # never handed out
    interrupted = start_run_until_sleeping(sweep, workdir, counter, 4, command="resume")
    os.killpg(interrupted.pid, signal.SIGINT)
    wait_until(lambda: any(workdir.glob(".stop.*")), 120, "resume took the first Ctrl-C", interrupted)
    os.killpg(interrupted.pid, signal.SIGINT)
    assert interrupted.wait(60) == 130  # resume, interrupted: 130 as run (8 finished first: it was queued first)
    storage = ("--storage", f"sqlite:///{workdir / 'optuna.db'}")
    interrupted = start_run_until_sleeping(sweep, workdir, counter, 4, command="worker", extra=storage)
    os.killpg(interrupted.pid, signal.SIGINT)
    wait_until(lambda: any(workdir.glob(".stop.*")), 120, "the worker took the first Ctrl-C", interrupted)
    os.killpg(interrupted.pid, signal.SIGINT)
    assert interrupted.wait(60) == 130  # a worker, interrupted: 130 too
    worker = run_cli("worker", str(sweep), "--storage", f"sqlite:///{workdir / 'optuna.db'}", "--workdir",
                     str(workdir), "--max-retries", "0", env={"VIDEOSWEEP_FAULT": f"count:@{counter},"
                                                                   "raise:layer_1_size=4"})
    assert worker.returncode == 1, worker.stderr  # a worker whose trial failed for good: 1, naming where
    assert "1 trial(s) failed for good" in worker.stdout
    resumed = run_cli("resume", str(sweep), "--workdir", str(workdir), "--max-retries", "0", "--retry-failed",
                      env={"VIDEOSWEEP_FAULT": f"count:@{counter}"})
    assert resumed.returncode == 0, resumed.stderr
    complete = [t for t in load_study(workdir).trials if t.state.name == "COMPLETE"]
    assert sorted(t.user_attrs["params"]["layer_1_size"] for t in complete) == [0, 4, 8]
    assert [t["layer_1_size"] for t in trainings(counter)].count(0) == 1  # the finished trial never reran


def test_keras_tuner_hyperband_drives_the_search_and_the_promoted_continue(tmp_path, cache_dir):
    """Keras Tuner end to end with its Hyperband oracle (the random and Bayesian oracles' side of the loop is
    tested without training in tests/runner/search/test_strategies.py)."""
    space = [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0, 8, 16, 32], "dropout": [0.0, 0.2]}]
    sweep = write_sweep(tmp_path, space, search={"strategy": "keras_tuner", "oracle": "hyperband", "trials": 4})
    workdir = tmp_path / "work"
    data = yaml.safe_load(sweep.read_text())
    data["training"].update(epochs=3, patience=3)
    sweep.write_text(yaml.safe_dump(data))
    result = run_cli("run", str(sweep), "--workdir", str(workdir))
    assert result.returncode == 0, result.stderr
    trials = [t for t in load_study(workdir).trials if t.state.name == "COMPLETE"]
    # The budget is spent exactly: every oracle trial is one finished study trial.
    assert len(trials) == 4 and all(t.user_attrs.get("keras_tuner_trial") is not None for t in trials)
    oracle_files = list((workdir / "keras_tuner" / "t").glob("trial_*/trial.json"))
    statuses = [json.loads(p.read_text())["status"] for p in oracle_files]
    assert statuses.count("COMPLETED") == len({t.user_attrs["keras_tuner_trial"] for t in trials}) == 4
    keys = {t.user_attrs["trial_key"] for t in trials}
    # 3 for 1 epoch each; the best of them continues from its checkpoint to all 3
    first = [t for t in trials if t.user_attrs["rung"] == 0]
    [promoted] = [t for t in trials if t.user_attrs["rung"] == 1]
    assert len(keys) == 3 and len(first) == 3 and all(t.user_attrs["paused"] for t in first)
    assert promoted.user_attrs["trial_key"] == max(first, key=lambda t: (t.value, -t.number)).user_attrs[
        "trial_key"]
    assert promoted.user_attrs["epoch_budget"] == 3 and promoted.user_attrs["epochs_trained"] == 3
    results = json.loads((workdir / "trials" / promoted.user_attrs["trial_key"] / "results.json").read_text())
    assert results["resumed_from_epoch"] == 1 and not results["paused"]
    assert not list((workdir / "trials").glob("*/checkpoint"))  # the search is over: none is kept
    finished = len(trials)
    again = run_cli("run", str(sweep), "--workdir", str(workdir))
    assert again.returncode == 0
    assert len([t for t in load_study(workdir).trials if t.state.name == "COMPLETE"]) == finished  # oracle done
