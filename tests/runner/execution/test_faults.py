"""Storage faults and pruning: a full disk, an unwritable workdir, a locked or unreachable database."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time

import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.conftest import CLI, ROOT, require, run_cli, tree_snapshot
from tests.runner.execution.test_run import FEATURES, grid, load_study, trainings, wait_until, write_sweep

pytestmark = pytest.mark.slow


def test_pruning_stops_a_bad_trial_early(tmp_path, cache_dir):
    space = [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [16],
              "learning_rates": [[1e-3], [3e-3], [50.0]]}]
    sweep = write_sweep(tmp_path, space, search={"strategy": "grid", "metric": "val_loss", "direction": "minimize",
                                                 "pruner": "median"})
    data = yaml.safe_load(sweep.read_text())
    data["training"].update(epochs=6, patience=6)
    sweep.write_text(yaml.safe_dump(data))
    workdir = tmp_path / "work"
    # one slot: the bad trial comes last and is judged against the two finished ones
    result = run_cli("run", str(sweep), "--workdir", str(workdir), "--workers", "1")
    assert result.returncode == 0, result.stderr
    trials = {t.user_attrs["params"]["learning_rates"][0]: t for t in load_study(workdir).trials}
    assert trials[1e-3].state.name == trials[3e-3].state.name == "COMPLETE"
    bad = trials[50.0]
    assert bad.state.name == "PRUNED" and "pruned at epoch" in bad.user_attrs["pruned"]
    assert len(bad.intermediate_values) < 6  # stopped before its epochs ran out
    assert not (workdir / "trials" / bad.user_attrs["trial_key"]).exists()  # no half-made trial folder
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id],
                              filter_string=f"tags.`videosweep.trial_key` = '{bad.user_attrs['trial_key']}'")
    assert len(runs) == 1 and runs[0].info.status == "KILLED" and runs[0].data.tags["videosweep.state"] == "pruned"


def test_a_full_disk_fails_the_trial_cleanly_and_resume_finishes_after_space_is_freed(tmp_path, cache_dir):
    full = tmp_path / "full"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(full)], capture_output=True)
    require(mounted.returncode == 0, f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        sweep = write_sweep(tmp_path, grid((0, 8)), name="full")
        workdir = tmp_path / "work"
        result = run_cli("run", str(sweep), "--workdir", str(workdir), "--cache-dir", str(full / "cache"),
                         "--max-retries", "0")
        assert result.returncode == 1, result.stderr  # every trial failed for good
        trials = load_study(workdir, "full").trials
        assert {t.state.name for t in trials} == {"FAIL"}
        assert all("cannot write cache entry" in t.user_attrs["failure"] and
                   "no space left on device" in t.user_attrs["failure"] for t in trials)
        leftovers = [p.name for p in (full / "cache").rglob("*") if p.is_file() and not p.name.endswith(".lock")
                     and p.parent.name != "digests"]  # (the fingerprint's digest memo is small and whole)
        assert leftovers == []  # no partial cache entry
        assert not (workdir / "trials").exists() or not list((workdir / "trials").iterdir())
        resumed = run_cli("resume", str(sweep), "--workdir", str(workdir), "--retry-failed")
        assert resumed.returncode == 0, resumed.stderr
        complete = [t for t in load_study(workdir, "full").trials if t.state.name == "COMPLETE"]
        assert sorted(t.user_attrs["params"]["layer_1_size"] for t in complete) == [0, 8]
    finally:
        subprocess.run(["umount", str(full)], check=False)


def test_unwritable_workdir_is_refused_before_anything_is_written(tmp_path):
    sweep = write_sweep(tmp_path, grid((0,)))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli("run", str(sweep), "--workdir", str(blocker / "work"))
    assert result.returncode == 2 and "workdir" in result.stderr and "not writable" in result.stderr
    assert blocker.read_text() == "x"


def test_locked_database_gives_a_clear_error_and_leaves_the_study_intact(tmp_path, cache_dir):
    sweep = write_sweep(tmp_path, grid((0,)))
    workdir = tmp_path / "work"
    assert run_cli("run", str(sweep), "--workdir", str(workdir)).returncode == 0
    before = tree_snapshot(workdir / "trials")
    holder = sqlite3.connect(workdir / "optuna.db")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = run_cli("run", str(sweep), "--workdir", str(workdir), env={"VIDEOSWEEP_DB_TIMEOUT": "1"})
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 2, result.stderr
    assert "study storage" in result.stderr and "database is locked" in result.stderr
    assert "Traceback" not in result.stderr
    assert tree_snapshot(workdir / "trials") == before
    assert [t.state.name for t in load_study(workdir).trials] == ["COMPLETE"]


def test_unreachable_database_gives_a_clear_error_and_exit_75(tmp_path):
    sweep = write_sweep(tmp_path, grid((0,)))
    result = run_cli("run", str(sweep), "--workdir", str(tmp_path / "w"),
                     "--storage", "postgresql://videosweep:secret@127.0.0.1:1/none",
                     env={"VIDEOSWEEP_DB_RETRY_SECONDS": "3"})
    assert result.returncode == 75 and "study storage unreachable for 3 s" in result.stderr
    assert "secret" not in result.stderr and "***" in result.stderr


def test_out_of_memory_fails_the_trial_and_recycles_the_worker(tmp_path, cache_dir):
    sweep = write_sweep(tmp_path, grid((8, 0)))
    workdir = tmp_path / "work"
    result = run_cli("run", str(sweep), "--workdir", str(workdir), "--max-retries", "1", "--workers", "1",
                     env={"VIDEOSWEEP_FAULT": "oom:layer_1_size=8"})
    assert result.returncode == 1, result.stderr  # a trial failed for good
    trials = {t.user_attrs["params"]["layer_1_size"]: t for t in load_study(workdir).trials}
    assert len(load_study(workdir).trials) == 2  # on_oom: fail (the default): not retried the same way
    failed = trials[8].user_attrs
    assert trials[8].state.name == "FAIL" and "MemoryError" in failed["failure"]
    assert failed["failure"].startswith("out of memory at batch size 64") and failed["failure_kind"] == "oom"
    assert failed["peak_memory_mb"] > 0 and "oom_retry_batch_size" not in failed
    assert trials[0].state.name == "COMPLETE"
    assert trials[0].user_attrs["pid"] != trials[8].user_attrs["pid"]  # a fresh process after the failure
    run = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}").get_run(failed["mlflow_run_id"])
    assert run.data.tags["videosweep.failure_kind"] == "oom"


def test_out_of_memory_retries_with_half_the_batch_whether_raised_or_killed(tmp_path, cache_dir):
    """on_oom: retry_smaller_batch. One key raises MemoryError at batch 64; the other's worker is SIGKILLed past
    its memory limit (as the OOM killer does). Each is retried once at 32, using up no retry, and finishes; the key
    still names the sweep file's batch, the run says the batch it trained with."""
    sweep = write_sweep(tmp_path, grid((8, 0)), resources={"on_oom": "retry_smaller_batch", "memory_limit_mb": 1})
    workdir, counter = tmp_path / "work", tmp_path / "count.txt"
    faults = f"count:@{counter},oom:layer_1_size=8&batch_size=64,kill:layer_1_size=0&batch_size=64@1"
    result = run_cli("run", str(sweep), "--workdir", str(workdir), "--max-retries", "0", "--workers", "1",
                     env={"VIDEOSWEEP_FAULT": faults})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    by_size: dict[int, list] = {}
    for trial in load_study(workdir).trials:
        by_size.setdefault(trial.user_attrs["params"]["layer_1_size"], []).append(trial)
    for size, reason in ((8, "out of memory at batch size 64"), (0, "out of memory: the worker was killed")):
        first, retry = by_size[size]
        assert first.state.name == "FAIL" and first.user_attrs["failure"].startswith(reason), first.user_attrs
        assert first.user_attrs["failure_kind"] == "oom" and first.user_attrs["oom_retry_batch_size"] == 32
        assert retry.state.name == "COMPLETE" and retry.user_attrs["batch_size"] == 32
        assert "failure_kind" not in retry.user_attrs
        key = retry.user_attrs["trial_key"]
        results = json.loads((workdir / "trials" / key / "results.json").read_text())
        assert results["batch_size"] == 64 and results["batch_size_used"] == 32
        run = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}").get_run(retry.user_attrs["mlflow_run_id"])
        assert run.data.params["batch_size"] == "64" and run.data.tags["videosweep.batch_size_used"].startswith("32")
    assert sorted(t["batch_size"] for t in trainings(counter)) == [32, 32, 64, 64]


def test_claims_prefer_cached_features_and_avoid_a_backbone_being_extracted(tmp_path, seals):
    import numpy as np
    import optuna
    from filelock import FileLock

    from runner.spec.trial_spec import TrialSpec
    from runner.study.claims import claim_waiting, enqueue
    from runner.study.storage import open_storage, open_study
    from runner.execution.worker import feature_rank
    from zoo import load_dataset
    from zoo.cache import features_path

    dataset = load_dataset(seals)
    study = open_study("rank", open_storage(f"sqlite:///{tmp_path / 'o.db'}"), "maximize")
    specs = {name: TrialSpec.from_flat({"architecture": "image_mlp_frozen", "backbone": backbone, "weights": "none",
                                        "frame_size": 32})
             for name, backbone in (("missing", "vgg16"), ("busy", "resnet50"), ("cached", "mobilenet_v2"))}
    specs["frames"] = TrialSpec.from_flat({"architecture": "c3d", "frame_size": 16})
    for name in ("missing", "busy", "cached", "frames"):  # queue order: the worst first
        enqueue(study, name, specs[name])
    cache = tmp_path / "cache"
    cached = features_path(dataset, specs["cached"].model, cache)
    cached.parent.mkdir(parents=True)
    np.save(cached, np.zeros((1, 1280), "float32"))
    busy = FileLock(str(features_path(dataset, specs["busy"].model, cache)) + ".lock")
    busy.acquire()  # another slot is extracting resnet50 features right now
    try:
        rank = feature_rank(dataset, str(cache))
        claimed = []
        while (trial := claim_waiting(study, rank)) is not None:
            claimed.append(study._storage.get_trial(trial._trial_id).user_attrs["trial_key"])
    finally:
        busy.release()
    assert claimed == ["cached", "frames", "missing", "busy"]
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.RUNNING}


def test_a_worker_past_its_memory_limit_is_replaced_between_trials(tmp_path, cache_dir):
    sweep = write_sweep(tmp_path, grid((0, 8)))
    workdir = tmp_path / "work"
    result = run_cli("run", str(sweep), "--workdir", str(workdir), "--memory-limit", "1")  # every worker is over
    assert result.returncode == 0, result.stderr
    trials = load_study(workdir).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[0].user_attrs["pid"] != trials[1].user_attrs["pid"]


def test_a_slow_start_is_not_taken_for_a_dead_worker(tmp_path, cache_dir, monkeypatch):
    """Between its claim and training a worker creates the MLflow run, which a loaded tracking server can make
    slower than the heartbeat grace; another machine's scheduler reaping dead trials must leave it alone."""
    from runner.study.liveness import fail_dead_trials

    # The default grace (heartbeats every grace/4 s): 10 s was missed once under a load average of 12 on 2 cores.
    grace = 20
    monkeypatch.setenv("VIDEOSWEEP_HEARTBEAT_GRACE_SECONDS", str(grace))
    sweep = write_sweep(tmp_path, grid((0,)))
    workdir, counter = tmp_path / "work", tmp_path / "count.txt"
    env = {**os.environ, "VIDEOSWEEP_FAULT": f"stall:layer_1_size=0@{2.5 * grace},count:@{counter}"}
    command = [*CLI, "run", str(sweep), "--workdir", str(workdir), "--workers", "1"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        study = None
        deadline = time.time() + 600
        while time.time() < deadline and process.poll() is None:
            try:
                if (workdir / "optuna.db").is_file():
                    study = load_study(workdir)
                    if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                        break
            except KeyError:  # the database exists, the study not yet
                pass
            time.sleep(0.2)
        assert study is not None and process.poll() is None, "the trial never started"
        reaped, watch_start = [], time.time()  # the stall lasts 2.5 graces from the claim; watch 1.5 of them
        while time.time() < watch_start + 1.5 * grace and not trainings(counter):
            reaped += fail_dead_trials(study)  # what another machine's scheduler does between trials
            time.sleep(0.5)
        assert reaped == [], "a live worker's trial was declared dead"
        assert time.time() - watch_start > grace, "the watch ended before the grace period had passed"
        stdout, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    trials = load_study(workdir).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] and len(trainings(counter)) == 1


def test_ranking_waiting_trials_never_reads_a_file_the_sweep_file_does_not_name(seals, tmp_path):
    """A planted trial's weights path would be hashed for its feature-cache key before its claim is refused."""
    from types import SimpleNamespace

    from runner.spec.trial_spec import TrialSpec
    from runner.execution.worker import feature_rank
    from zoo import cache, load_dataset

    planted = tmp_path / "someone-elses.weights.h5"
    planted.write_bytes(b"not ours to read")
    spec = TrialSpec.from_flat({"architecture": "image_mlp_frozen", "backbone": "mobilenet_v2", "frame_size": 32,
                                "weights": str(planted)})
    trial = SimpleNamespace(user_attrs={"params": spec.flat()})
    assert feature_rank(load_dataset(seals), str(tmp_path / "cache"), frozenset())(trial) == 1
    assert not [memo for memo in cache._DIGESTS if memo[0] == str(planted)]  # never opened to hash it
    named = frozenset({("weights", str(planted))})
    assert feature_rank(load_dataset(seals), str(tmp_path / "cache"), named)(trial) == 1  # the user's own: looked at
    assert [memo for memo in cache._DIGESTS if memo[0] == str(planted)]


def test_a_trial_whose_worker_on_another_machine_dies_is_run_here_not_left_for_a_human(tmp_path, cache_dir,
                                                                                       monkeypatch):
    """When its own queue is empty, a scheduler waits for trials running in other machines' workers: one whose
    worker stops sending heartbeats is failed after the grace period, queued again and run here (it used to wait
    for someone to type `videosweep resume`)."""
    from runner.study.liveness import DEAD_WORKER, Heartbeat
    from runner.study.optuna_internals import trial_id
    from runner.study.claims import KEY_ATTR, claim_waiting
    from runner.execution.context import load_context
    from runner.search.grid import GridSearch

    grace = 8
    monkeypatch.setenv("VIDEOSWEEP_HEARTBEAT_GRACE_SECONDS", str(grace))
    sweep = write_sweep(tmp_path, grid((0, 8)))
    workdir = tmp_path / "work"
    ctx = load_context(sweep, workdir, None, create_workdir=True)
    study = ctx.open_study()
    GridSearch(ctx.sweep, study, ctx.dataset.fingerprint, workdir, max_retries=1).prepare()
    elsewhere = claim_waiting(study)  # the first grid point, taken by a worker on another machine
    process = subprocess.Popen([*CLI, "run", str(sweep), "--workdir", str(workdir), "--workers", "1"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with Heartbeat(study, trial_id(elsewhere), interval=1):  # that worker is alive while ours trains
            wait_until(lambda: study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), 600,
                       "this machine's trial finishing", process)
        # ... and now it is gone: its trial must be run here
        stdout, stderr = process.communicate(timeout=600)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    trials = load_study(workdir).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[0].user_attrs["failure"] == DEAD_WORKER
    assert trials[2].user_attrs[KEY_ATTR] == trials[0].user_attrs[KEY_ATTR]  # the lost point, retried here
    assert "waiting for 1 trial(s) running in other workers" in stdout + stderr
