"""The resident worker pool: `run` forks its workers from a server that imported TensorFlow already; what a worker
needs (environment, folder, output, events, exit status) crosses the socket; a killed `run` takes its workers with
it; only this user's key opens the socket; edited code or another environment means another server."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from runner.execution import pool
from runner.execution.worker import ProcessSetup
from tests.conftest import run_cli
from tests.runner.execution.test_run import load_study, start_run_until_sleeping, trainings, wait_until, write_sweep
from zoo.errors import UserError

FEATURES = {"backbone": ["mobilenet_v2"], "weights": ["none"], "frame_size": ["32x32"]}


@pytest.fixture
def pool_folder(monkeypatch):
    folder = Path(tempfile.mkdtemp(prefix="vsp", dir="/tmp"))  # short: a socket's path is at most 107 bytes
    monkeypatch.setenv(pool.DIR_ENV, str(folder))
    yield folder
    for _, client in pool.servers():
        if client is not None:
            with client:
                client.request("stop")
    shutil.rmtree(folder, ignore_errors=True)


def test_a_server_is_found_only_for_the_same_code_setup_and_import_time_environment(monkeypatch, pool_folder):
    setup = ProcessSetup("tensorflow", cpu_threads=2)
    key = pool.setup_key(setup, "code-a")
    assert pool.setup_key(setup, "code-a") == key
    assert pool.setup_key(setup, "code-b") != key  # an edited source file
    assert pool.setup_key(replace(setup, cpu_threads=1), "code-a") != key
    assert pool.setup_key(replace(setup, gpu="0"), "code-a") != key
    monkeypatch.setenv("VIDEOSWEEP_FAULT", "raise:x")  # read at run time: handed to each worker
    assert pool.setup_key(setup, "code-a") == key
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")  # read when TensorFlow is imported
    assert pool.setup_key(setup, "code-a") != key
    assert not pool.pool_started() and pool.PoolClient.connect(setup) is None


def test_a_pool_folder_others_can_write_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "pool"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    monkeypatch.setenv(pool.DIR_ENV, str(folder))
    with pytest.raises(UserError, match="writable by others"):
        pool.pool_dir()
    monkeypatch.setenv(pool.DIR_ENV, "/tmp/" + "x" * 100)
    with pytest.raises(UserError, match="too long a path for a socket"):
        pool.socket_path(pool.pool_dir(), "k" * 16)


@pytest.mark.slow
def test_run_forks_its_workers_from_the_pool_and_a_killed_run_takes_them_along(tmp_path, cache_dir, pool_folder):
    started = run_cli("pool", "start", "--workers", "1", "--idle-minutes", "5")
    assert started.returncode == 0, started.stderr
    assert "started: server" in started.stdout and "on CPU" in started.stdout
    [(socket, client)] = pool.servers()
    assert socket.stat().st_mode & 0o077 == 0 and (pool_folder / "key").stat().st_mode & 0o077 == 0
    server = client.server_pid
    client.close()
    assert "already running" in run_cli("pool", "start", "--workers", "1").stdout  # one server per setup
    assert pool.PoolClient.at(socket, b"not the key" * 3) is None  # the challenge keeps others out

    # Two trials, a worker each (recycled after one): both forked, their output and events reach `run`.
    sweep = write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [8, 16]}],
                        resources={"trials_per_process": 1})
    workdir, counter = tmp_path / "work", tmp_path / "count.txt"
    first = run_cli("run", str(sweep), "--workdir", str(workdir), "--workers", "1",
                    env={"VIDEOSWEEP_FAULT": f"count:@{counter},raise:layer_1_size=16"})
    assert first.returncode == 1, first.stdout + first.stderr  # layer 16 failed for good (1 retry)
    assert "forked from the resident pool" in first.stdout
    assert "trial #0" in first.stdout and "RuntimeError: injected failure" in first.stdout + first.stderr
    assert [t["layer_1_size"] for t in trainings(counter)] == [8, 16, 16]  # the environment crossed over
    with pool.servers()[0][1] as client:
        status = client.request("status")
    assert status["pid"] == server and status["forked"] >= 3 and status["workers"] == [] and status["clients"] == 0
    assert psutil.Process(server).children() == []  # every worker reaped

    # kill -9 of `run` (its whole group): the worker it forked is SIGKILLed by the server; resume finishes the sweep
    sleeper = write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [8, 24]}],
                          name="s")
    counted = tmp_path / "count-s.txt"
    process = start_run_until_sleeping(sleeper, tmp_path / "work-s", counted, sleeper=24)
    [worker] = psutil.Process(server).children()
    assert worker.pid != process.pid and worker.pid not in [c.pid for c in psutil.Process(process.pid).children()]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    wait_until(lambda: not psutil.pid_exists(worker.pid) or worker.status() == psutil.STATUS_ZOMBIE, 10,
               "the killed run's worker was killed")
    resumed = run_cli("resume", str(sleeper), "--workdir", str(tmp_path / "work-s"), "--workers", "1")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "forked from the resident pool" in resumed.stdout and "1 abandoned trial(s) recovered" in resumed.stdout
    done = [t.user_attrs["params"]["layer_1_size"] for t in load_study(tmp_path / "work-s", "s").trials
            if t.state.name == "COMPLETE"]
    assert sorted(done) == [8, 24]  # the abandoned one (recorded FAIL) ran again, the finished one did not

    # a worker killed by a signal: the server reports how it died, the scheduler fails its trial with the reason
    process = start_run_until_sleeping(sleeper, tmp_path / "work-k", tmp_path / "count-k.txt", sleeper=24)
    [worker] = psutil.Process(server).children()
    worker.kill()

    def failed_by_signal() -> bool:
        return any("worker died with signal SIGKILL" in t.user_attrs.get("failure", "")
                   for t in load_study(tmp_path / "work-k", "s").trials)

    try:
        wait_until(failed_by_signal, 60, "the trial failed with its worker's signal", process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # its retry sleeps again
        process.wait()

    # stop: the server leaves (its socket with it); `run` then spawns its workers as without a pool
    stopped = run_cli("pool", "stop")
    assert stopped.returncode == 0 and f"server {server}: stopping" in stopped.stdout
    wait_until(lambda: not psutil.pid_exists(server), 30, "the server left")
    assert not socket.exists()
    again = run_cli("run", str(sweep), "--workdir", str(tmp_path / "work-2"), "--workers", "1")
    assert again.returncode == 0 and "forked from the resident pool" not in again.stdout
    assert "no worker pool server was running" in run_cli("pool", "stop").stdout
