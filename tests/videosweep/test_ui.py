"""`videosweep ui` serves the sweep's runs: loaded in real headless Chromium, run names rendered on the page."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from tests.browser import ARTIFACTS, chromium, needs_chromium
from tests.conftest import CLI, ROOT, run_cli
from tests.runner.execution.test_run import FEATURES, write_sweep

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_line(stream, seconds: float) -> str:
    """The next line of a subprocess's output, or a failure after `seconds` (a bare readline can block forever)."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=seconds)
    except queue.Empty:
        raise AssertionError(f"no output within {seconds} s") from None


def wait_for(url: str, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {seconds} s")


@needs_chromium
def test_ui_shows_the_sweeps_runs_in_a_real_browser(tmp_path, cache_dir):
    sweep = write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0, 8]}])
    workdir = tmp_path / "work"
    assert run_cli("run", str(sweep), "--workdir", str(workdir)).returncode == 0
    port = free_port()
    command = [*CLI, "ui", str(sweep), "--workdir",
               str(workdir), "--port", str(port)]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        first_line = read_line(server.stdout, 180)
        assert f"http://127.0.0.1:{port}/#/experiments/" in first_line
        url = first_line.split("UI for t: ")[1].split()[0]
        wait_for(f"http://127.0.0.1:{port}/health", 90)
        page = chromium("--dump-dom", url, profile=tmp_path / "profile")
        assert page.returncode == 0, page.stderr[-2000:]
        from mlflow import MlflowClient

        client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
        runs = client.search_runs([client.get_experiment_by_name("t").experiment_id])
        assert len(runs) == 3  # the sweep's parent run and one child run per trial
        # MLflow's runs table lists the parent run with its trial runs nested under it, and counts them all.
        assert ">t<" in page.stdout and "seals" in page.stdout
        shown = re.search(r"(\d+)(?:<[^>]*>|\s)*matching runs", page.stdout)
        assert shown is not None and int(shown.group(1)) == len(runs), "the UI does not count the sweep's runs"
        ARTIFACTS.mkdir(exist_ok=True)
        shot = chromium(f"--screenshot={ARTIFACTS / 'mlflow-ui-experiment.png'}", url, profile=tmp_path / "p2")
        assert shot.returncode == 0 and (ARTIFACTS / "mlflow-ui-experiment.png").stat().st_size > 10_000
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


@needs_chromium
def test_the_optuna_dashboard_shows_a_running_sweeps_trials_read_only(tmp_path, cache_dir):
    """`ui --dashboard optuna` on a sweep still running (its second trial stuck): the page in headless Chromium
    lists the study's trials with their grid parameters, and the API refuses writes (a page left open changes
    nothing)."""
    import json

    from tests.runner.execution.test_run import start_run_until_sleeping

    sweep = write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0, 8]}],
                        name="live")
    workdir = tmp_path / "work"
    running = start_run_until_sleeping(sweep, workdir, tmp_path / "count.txt", sleeper=8)
    port, server = free_port(), None
    try:
        server = subprocess.Popen([*CLI, "ui", str(sweep), "--workdir", str(workdir), "--dashboard", "optuna",
                                   "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, start_new_session=True)
        first_line = read_line(server.stdout, 180)
        assert "(read-only)" in first_line and f"http://127.0.0.1:{port}/dashboard/studies/" in first_line
        url = first_line.split("(read-only): ")[1].split()[0]
        wait_for(f"http://127.0.0.1:{port}/api/studies", 90)
        study_id = url.rsplit("/", 1)[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study_id}", timeout=30) as response:
            detail = json.load(response)
        assert detail["name"] == "live" and sorted(t["state"] for t in detail["trials"]) == ["Complete", "Running"]
        assert {p["name"] for t in detail["trials"] for p in t["params"]} >= {"layer_1_size"}
        [stuck] = [t for t in detail["trials"] if t["state"] == "Running"]
        fail = urllib.request.Request(f"http://127.0.0.1:{port}/api/trials/{stuck['trial_id']}/tell",
                                      data=b'{"state": "Fail"}', headers={"Content-Type": "application/json"},
                                      method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:  # read-only: refused by the storage under the app
            urllib.request.urlopen(fail, timeout=30)
        assert refused.value.code == 500
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study_id}", timeout=30) as response:
            assert sorted(t["state"] for t in json.load(response)["trials"]) == ["Complete", "Running"]
        page = chromium("--dump-dom", url, profile=tmp_path / "profile")
        assert page.returncode == 0, page.stderr[-2000:]
        assert "live" in page.stdout and "layer_1_size" in page.stdout, page.stdout[-3000:]
    finally:
        for process in (server, running):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)


def test_the_optuna_dashboard_without_its_extra_names_the_extra(tmp_path):
    """Without optuna-dashboard installed: one line naming the extra, exit 2 (the package hidden from import)."""
    sweep = write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES}], name="noextra")
    hide = tmp_path / "hide"
    (hide / "optuna_dashboard").mkdir(parents=True)
    (hide / "optuna_dashboard" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    result = run_cli("ui", str(sweep), "--workdir", str(tmp_path / "w"), "--dashboard", "optuna",
                     env={"PYTHONPATH": os.pathsep.join([str(hide), str(ROOT)])})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == ("error: --dashboard optuna needs the optuna-dashboard package: "
                                                      "pip install 'videosweep[dashboard]'")
