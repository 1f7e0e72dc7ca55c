"""MLflow tracking checked with MlflowClient against a real SQLite store after real sweeps."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from pathlib import Path

from tests.conftest import CLI, ROOT, run_cli
from tests.runner.execution.test_run import FEATURES, load_study, write_sweep

pytestmark = pytest.mark.slow


def store(workdir):
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    return client, client.get_experiment_by_name("t").experiment_id


def test_one_parent_one_child_per_trial_with_metrics_artefacts_and_model(tmp_path, cache_dir):
    space = [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0, 8, 16]}]
    sweep = write_sweep(tmp_path, space)
    workdir = tmp_path / "work"
    result = run_cli("run", str(sweep), "--workdir", str(workdir), "--max-retries", "0",
                     env={"VIDEOSWEEP_FAULT": "raise:layer_1_size=16"})
    assert result.returncode == 1, result.stderr  # a trial failed for good
    client, experiment = store(workdir)
    runs = client.search_runs([experiment])
    parents = [r for r in runs if r.data.tags.get("videosweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("videosweep.role") == "trial"]
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert parent.data.params["search.strategy"] == "grid" and parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_complete"] == 2 and parent.data.metrics["trials_fail"] == 1
    assert parent.inputs.dataset_inputs[0].dataset.name == "seals"
    assert "sweep.yaml" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    study = {t.user_attrs["trial_key"]: t for t in load_study(workdir).trials}
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        key = child.data.tags["videosweep.trial_key"]
        trial = study[key]
        assert child.data.params["layer_1_size"] == str(trial.user_attrs["params"]["layer_1_size"])
        assert child.data.tags["optuna_trial"] == str(trial.number)
        assert child.data.tags["host"] == socket.gethostname() == trial.user_attrs["host"]
        if trial.state.name == "FAIL":
            assert child.info.status == "FAILED" and "injected failure" in child.data.tags["failure"]
            [saved] = [a.path for a in client.list_artifacts(child.info.run_id, "failure")]
            text = (Path(client.download_artifacts(child.info.run_id, saved, str(tmp_path))).read_text())
            assert text.startswith("Traceback") and "RuntimeError: injected failure for layer_1_size=16" in text
            assert text == Path(trial.user_attrs["traceback_path"]).read_text()
            continue
        assert child.info.status == "FINISHED"
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        results = (workdir / "trials" / key / "results.json").read_text()
        assert len(history) == int(child.data.metrics["epochs"]) and f'"fit_num_epochs": {len(history)}' in results
        assert [m.step for m in history] == list(range(len(history)))
        assert child.data.metrics["test_accuracy"] == pytest.approx(trial.user_attrs["fit_test_acc"])
        names = {a.path for a in client.list_artifacts(child.info.run_id, "trial")}
        for name in ("results.json", "params.json", "fit_history.csv", "confusion_matrix.png",
                     "confusion_matrix_normalized.csv", "model_summary.txt", "test_predictions.npy"):
            assert f"trial/{name}" in names
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    models = mlflow.search_logged_models(experiment_ids=[experiment], output_format="list")
    assert len(models) == 2
    model = mlflow.tensorflow.load_model(models[0].model_uri)
    assert model.predict(np.zeros((3, 1280), "float32"), verbose=0).shape == (3, 2)
    again = run_cli("run", str(sweep), "--workdir", str(workdir), "--max-retries", "0")
    assert again.returncode == 1 and len(client.search_runs([experiment])) == 4  # no new run


def test_unreachable_tracking_server_and_bad_storage_fail_fast(tmp_path):
    sweep = write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES}])
    started = time.time()
    result = run_cli("run", str(sweep), "--workdir", str(tmp_path / "w"), "--tracking-uri", "http://127.0.0.1:9")
    assert result.returncode == 2 and "cannot reach the MLflow tracking store http://127.0.0.1:9" in result.stderr
    assert time.time() - started < 90
    bad = run_cli("run", str(sweep), "--workdir", str(tmp_path / "w2"), "--storage", "redis://x")
    assert bad.returncode == 2 and "unsupported scheme 'redis'" in bad.stderr


def test_mlflow_telemetry_is_off_unless_the_user_turns_it_on():
    """MLflow 3 phones home by default; a tool that must run offline does not (CI markers removed, since MLflow
    itself stays quiet under pytest or CI and would hide a regression)."""
    # every marker mlflow.telemetry.utils._is_ci_env_or_testing() honours (MLflow 3.17), and the explicit switches
    quiet = {"PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI", "GITLAB_CI", "JENKINS_URL", "TRAVIS",
             "TF_BUILD", "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE", "TEAMCITY_VERSION",
             "CLOUD_RUN_EXECUTION", "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME", "RUNBOT_WORKER_ID", "DO_NOT_TRACK",
             "MLFLOW_DISABLE_TELEMETRY", "_MLFLOW_TESTING_TELEMETRY"}
    env = {k: v for k, v in os.environ.items() if k not in quiet}
    probe = ("import mlflow.telemetry.utils as u; ci = u._is_ci_env_or_testing(); import videosweep.cli; "
             "print(ci, u._IS_MLFLOW_DEV_VERSION, u.is_telemetry_disabled())")

    def disabled(extra: dict[str, str]) -> str:
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                                env={**env, **extra}, check=True)
        ci, dev, answer = result.stdout.split()
        # MLflow must not be keeping quiet on its own (a marker it honours that this list misses, a dev build)
        assert (ci, dev) == ("False", "False"), "MLflow sees a CI/testing marker: extend `quiet`"
        return answer

    assert disabled({}) == "True"
    assert disabled({"MLFLOW_DISABLE_TELEMETRY": "false"}) == "False"  # the user's choice is kept


def start_mlflow_server(backend: str, artifacts: Path) -> tuple[subprocess.Popen, str]:
    """A real `mlflow server` (its own process group) on a free port; returned once it answers."""
    from tests.videosweep.test_ui import free_port, wait_for

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--host",
                               "127.0.0.1", "--port", str(port), "--artifacts-destination", str(artifacts),
                               "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", 300)
    except BaseException:
        os.killpg(server.pid, signal.SIGKILL)
        raise
    return server, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(60)


def test_the_tracking_server_going_away_mid_sweep_stops_the_sweep_clearly_and_loses_nothing(tmp_path, cache_dir):
    """The MLflow server is killed while a trial runs: the sweep stops with one error line saying so (exit 75),
    nothing is left RUNNING and every key is still in the study; with the server back, resume finishes it."""
    from tests.runner.execution.test_run import trainings, wait_until

    backend, artifacts = f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts"
    sweep = write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0, 4, 8, 12]}])
    workdir, counter = tmp_path / "work", tmp_path / "count.txt"
    # MLflow's client retries a refused connection for minutes by default; the outcome is the same, sooner.
    env = {**os.environ, "VIDEOSWEEP_FAULT": f"count:@{counter},sleep:@3", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
    server, uri = start_mlflow_server(backend, artifacts)
    try:
        process = subprocess.Popen([*CLI, "run", str(sweep), "--workdir", str(workdir), "--workers", "1",
                                    "--max-retries", "0", "--tracking-uri", uri], cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            wait_until(lambda: len(trainings(counter)) >= 2, 600, "the second trial started", process)
            stop(server)  # mid-trial: the second trial sleeps 3 s before it trains and logs its epochs
            out, err = process.communicate(timeout=600)
        finally:
            stop(process)
    finally:
        stop(server)
    assert process.returncode == 75, (out[-2000:], err[-3000:])  # a temporary failure, not bad input
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    # said by the scheduler ("lost ... mid-sweep") or by the worker that found it gone ("cannot reach ...")
    assert len(errors) == 1 and f"the MLflow tracking store {uri}" in errors[0], err[-3000:]
    assert "videosweep resume" in errors[0] and "Traceback" not in err
    trials = load_study(workdir).trials
    by_size = {t.user_attrs["params"]["layer_1_size"]: t for t in trials}
    assert sorted(by_size) == [0, 4, 8, 12] and len(trials) == 4  # every key kept, none twice
    assert by_size[0].state.name == "COMPLETE" and by_size[4].state.name == "FAIL"
    assert not [t for t in trials if t.state.name == "RUNNING"]
    assert all("MlflowException" in t.user_attrs["failure"] for t in trials if t.state.name == "FAIL")
    server, uri = start_mlflow_server(backend, artifacts)  # back, at another address
    try:
        resumed = run_cli("resume", str(sweep), "--workdir", str(workdir), "--workers", "1", "--retry-failed",
                          "--tracking-uri", uri)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        complete = [t for t in load_study(workdir).trials if t.state.name == "COMPLETE"]
        assert sorted(t.user_attrs["params"]["layer_1_size"] for t in complete) == [0, 4, 8, 12]
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("t").experiment_id],
                                  "tags.`videosweep.role` = 'trial'")
        assert sorted(r.data.tags["videosweep.trial_key"] for r in runs) == \
            sorted(t.user_attrs["trial_key"] for t in complete)  # one run per key, the failed ones reused
        assert {r.info.status for r in runs} == {"FINISHED"}
    finally:
        stop(server)
