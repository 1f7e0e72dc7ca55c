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
from tests.runner.test_run import FEATURES, write_sweep

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
