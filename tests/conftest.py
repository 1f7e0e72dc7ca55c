"""Shared fixtures: the bundled real seals frames, small derived datasets, and an isolated cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SEALS = ROOT / "examples" / "seals"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Nothing in the tests touches the internet: ImageNet weights are fetched only by tests that point the real fetch
# code at a local server (tests/zoo/test_weights.py), which turn this off for themselves.
os.environ["VIDEOSWEEP_OFFLINE"] = "1"
# The one spelling of the `videosweep` command in the tests and benchmarks (the CLI is moving between packages).
CLI = [sys.executable, "-m", "videosweep"]
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
POSTGRES_URL = os.environ.get("VIDEOSWEEP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


# A resident worker pool for the whole run (`videosweep pool`): every sweep a test starts forks its workers from a
# server that imported TensorFlow once, instead of importing it per worker (seconds each, hundreds of workers).
# Sweeps whose setup or import-time environment differs (JAX, fake GPUs, another --cache-dir) spawn as without
# one; VIDEOSWEEP_TEST_POOL=0 turns it off. The folder is made by the controlling process: xdist's workers inherit it.
POOL_SETUPS = (1, 2)  # --workers values the tests use (one slot with all cores, two slots with a core each)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or os.environ.get("VIDEOSWEEP_TEST_POOL", "1") == "0":
        return
    config.stash[_POOL_KEY] = os.environ["VIDEOSWEEP_POOL_DIR"] = tempfile.mkdtemp(prefix="vsp", dir="/tmp")


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_POOL_KEY, None)
    if folder is None:
        return
    from runner.execution import pool

    for _, client in pool.servers():
        if client is not None:
            with client:
                client.request("stop")
    shutil.rmtree(folder, ignore_errors=True)


_POOL_KEY = pytest.StashKey[str]()


@pytest.fixture(scope="session", autouse=True)
def _worker_pool() -> None:
    """The pool's servers, started once (the first test of each xdist worker waits for them, or finds them)."""
    if "VIDEOSWEEP_POOL_DIR" not in os.environ:
        return
    from runner.execution import pool
    from runner.execution.scheduler import plan_slots, slot_setup
    from runner.execution.worker import ProcessSetup

    pool.start([slot_setup(ProcessSetup("tensorflow"), plan_slots("none", 1, workers)[0]) for workers in POOL_SETUPS],
               idle_seconds=900)


def require(condition: object, why: str) -> None:
    """A test's precondition: skipped locally when missing, a failure under CI=true (CI must run everything)."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and this test cannot run: {why}", pytrace=False)
    pytest.skip(why)


_UNREACHABLE = ("connection refused", "could not connect", "timeout expired", "no such file or directory",
                "could not translate host name", "network is unreachable", "no route to host")


def postgres_problem() -> str | None:
    """None when the test server answers; a reason when it is unreachable. Any other error (a wrong password, a
    missing database, no driver) raises: those are configuration mistakes, never a reason to skip."""
    import psycopg2

    try:
        connection = psycopg2.connect(POSTGRES_URL, connect_timeout=10)
    except psycopg2.OperationalError as err:
        message = str(err).strip()
        if any(marker in message.lower() for marker in _UNREACHABLE) and "fatal" not in message.lower():
            return f"no PostgreSQL answers at {POSTGRES_URL} (set VIDEOSWEEP_TEST_POSTGRES): {message.splitlines()[0]}"
        raise AssertionError(f"PostgreSQL at {POSTGRES_URL} is there but refused the tests: {message}") from None
    connection.close()
    return None


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    """The admin URL of the test PostgreSQL server (VIDEOSWEEP_TEST_POSTGRES); skip/fail per `require`."""
    problem = postgres_problem()
    require(problem is None, problem or "")
    return POSTGRES_URL


@pytest.fixture(scope="session")
def _chromium() -> None:
    import shutil as _shutil

    require(_shutil.which("chromium") or _shutil.which("chromium-browser"),
            "Debian's chromium is not installed (make test / .ci/run install it)")


def derive_dataset(target: Path, frames_per_video: int | None = None, labels: pd.DataFrame | None = None) -> Path:
    """A dataset in `target` made of links to the seals frames (optionally the first N of each video)."""
    table = labels if labels is not None else pd.read_csv(SEALS / "labels.csv", dtype=str)
    if frames_per_video is not None:
        table = table.groupby("video", sort=False).head(frames_per_video)
    for video, frame in zip(table.video, table.frame):
        (target / video).mkdir(parents=True, exist_ok=True)
        link = target / video / frame
        if not link.exists():
            link.symlink_to(SEALS / video / frame)
    table.to_csv(target / "labels.csv", index=False)
    return target


@pytest.fixture(scope="session")
def seals() -> Path:
    return SEALS


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the whole run (features are computed once, as in a sweep); subprocesses inherit it."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["VIDEOSWEEP_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_seals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 40 frames of each seals video (both classes in every split) for end-to-end frame models."""
    table = pd.read_csv(SEALS / "labels.csv", dtype=str)
    picked = []
    for _, frames in table.groupby("video", sort=False):
        seal = frames[frames.label == "seal"].head(20)
        noseal = frames[frames.label == "noseal"].head(20)
        picked.append(frames.loc[sorted(set(seal.index) | set(noseal.index))])
    return derive_dataset(tmp_path_factory.mktemp("tiny_seals"), labels=pd.concat(picked))


@pytest.fixture
def dataset_copy(tmp_path: Path):
    """Make a mutable dataset (labels.csv copied, frames linked) to break in one test."""

    def make(frames_per_video: int | None = None) -> Path:
        return derive_dataset(tmp_path / "data", frames_per_video)

    return make


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real `videosweep` entry point in a subprocess."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT,
                          env={**os.environ, **(env or {})})


def tree_snapshot(folder: Path) -> dict[str, float]:
    """Every file under `folder` with its mtime, to prove that nothing was written."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


@pytest.fixture(autouse=True)
def _isolated_mlflow_uri():
    """mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI, which CLI subprocesses would then honour."""
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if saved is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved
    try:
        import mlflow.tracking._tracking_service.utils as tracking_utils

        tracking_utils._tracking_uri = None
    except ImportError:
        pass
