"""What videosweep does not trust (the study, the artefact store, the tracking server) and what it keeps to
itself (credentials), through the real CLI on real sweeps; plus the resume paths that must not redo or leak."""

from __future__ import annotations

import json
import os
import pickle
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import CLI, ROOT, SEALS, copy_tree, require, run_cli
from tests.runner.search.test_reuse import keyed_sweep, new_experiment, new_store, plant
from tests.runner.execution.test_run import FEATURES, load_study, trainings, write_sweep

pytestmark = pytest.mark.slow
SECRET = "hunter2"


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache_dir):
    """A finished two-trial grid sweep `t` (SQLite study and MLflow store in its workdir); tests copy it."""
    folder = tmp_path_factory.mktemp("finished")
    sweep = write_sweep(folder, [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0, 8]}])
    result = run_cli("run", str(sweep), "--workdir", str(folder / "work"), "--workers", "1")
    assert result.returncode == 0, result.stderr
    return sweep, folder / "work"


@pytest.fixture
def copied(finished, tmp_path):
    """A copy of the finished sweep whose MLflow store keeps its artefacts in the copy (tests plant data there)."""
    sweep, workdir = finished
    copy = copy_tree(workdir, tmp_path / "work")
    old, new = str(workdir.resolve()), str(copy.resolve())
    with sqlite3.connect(copy / "mlflow.db") as connection:
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                              ("logged_models", "artifact_location")):
            connection.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)", (old, new))
    return sweep, copy


def mlflow_client(workdir: Path) -> tuple[MlflowClient, str]:
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    return client, client.get_experiment_by_name("t").experiment_id


def enqueue_raw(workdir: Path, key: str, params: dict, **attrs) -> None:
    """What anyone who can write the shared study can do: a WAITING trial with whatever attributes."""
    study = load_study(workdir)
    study.enqueue_trial(params={}, user_attrs={"trial_key": key, "params": params, "attempt": 0, **attrs})


def planted_file(tmp_path: Path) -> Path:
    """A local file an attacker would have us load as backbone weights."""
    path = tmp_path / "planted.weights.h5"
    path.write_bytes(b"whatever the attacker wants in the model")
    return path


def key_of(params: dict, fingerprint: str) -> str:
    """A trial key as anyone who can read the code computes it."""
    from runner.spec.trial_spec import TrialSpec

    return TrialSpec.from_flat({k: v for k, v in params.items() if k != "data_root"}).key(fingerprint)


# ---------------------------------------------------------------- item 21: grid parameters in Optuna


def test_grid_trials_show_their_parameters_to_optuna_tools(finished):
    _, workdir = finished
    frame = load_study(workdir).trials_dataframe()
    assert sorted(frame["params_layer_1_size"]) == [0, 8]
    assert set(frame["params_architecture"]) == {"image_mlp_frozen"} and set(frame["params_frame_size"]) == {"32x32"}


# ---------------------------------------------------------------- item 2: trial keys from the study


def test_a_planted_trial_key_is_refused_and_never_touches_the_filesystem(copied, tmp_path):
    sweep, workdir = copied
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    params = load_study(workdir).trials[0].user_attrs["params"]
    enqueue_raw(workdir, "../../victim", params)  # workdir/trials/../../victim is the victim
    enqueue_raw(workdir, "0123456789ab", params)  # the right form, but not the key of these parameters
    enqueue_raw(workdir, "x'y", params)
    counter = tmp_path / "count.txt"
    result = run_cli("resume", str(sweep), "--workdir", str(workdir), "--workers", "1",
                     env={"VIDEOSWEEP_FAULT": f"count:@{counter}"})
    assert result.returncode == 0, result.stderr
    assert (victim / "precious.txt").read_text() == "keep me" and [p.name for p in victim.iterdir()] == ["precious.txt"]
    assert trainings(counter) == []  # nothing ran
    refused = [t for t in load_study(workdir).trials if t.user_attrs.get("refused")]
    assert len(refused) == 3 and {t.state.name for t in refused} == {"FAIL"}
    assert all(t.user_attrs["failure"].startswith("refused:") for t in refused)
    assert sorted(p.name for p in (workdir / "trials").iterdir()) == sorted(
        t.user_attrs["trial_key"] for t in load_study(workdir).trials if t.state.name == "COMPLETE")
    again = run_cli("resume", str(sweep), "--workdir", str(workdir), "--workers", "1")
    assert again.returncode == 0 and "nothing to run" in again.stdout  # refused trials are never re-queued


def test_planted_study_trials_naming_a_file_or_with_a_malformed_rung_are_refused_and_named(copied, tmp_path):
    sweep, workdir = copied
    study = load_study(workdir)
    trial = study.trials[0]
    planted = {**trial.user_attrs["params"], "weights": str(planted_file(tmp_path))}
    enqueue_raw(workdir, key_of(planted, study.user_attrs["data_fingerprint"]), planted)  # the key is right
    enqueue_raw(workdir, trial.user_attrs["trial_key"], trial.user_attrs["params"], rung="x")
    status = run_cli("status", str(sweep), "--workdir", str(workdir), env={"COLUMNS": "250"})
    assert status.returncode == 0, status.stderr[-2000:]
    assert "malformed, ignored: rung 'x' is not a whole number" in status.stdout
    counter = tmp_path / "count.txt"
    result = run_cli("resume", str(sweep), "--workdir", str(workdir), "--workers", "1",
                     env={"VIDEOSWEEP_FAULT": f"count:@{counter}"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert trainings(counter) == []  # nothing ran
    # (found by what they say: their order follows the keys, and the planted trial's key hashes a temporary path)
    refused = [t.user_attrs["failure"] for t in load_study(workdir).trials if t.user_attrs.get("refused")]
    assert len(refused) == 2, refused
    assert any("rung 'x' is not a whole number" in reason for reason in refused), refused
    assert any(f"would load weights {planted['weights']}, a file the sweep file does not name" in reason
               for reason in refused), refused


def test_export_and_predict_never_load_a_weights_file_planted_in_the_store(copied, tmp_path):
    sweep, workdir = copied
    client, experiment = mlflow_client(workdir)
    run = client.search_runs([experiment], "tags.`videosweep.role` = 'trial'")[0]
    stored = Path(run.info.artifact_uri.removeprefix("file://")) / "trial"
    params = {**json.loads((stored / "params.json").read_text()), "weights": str(planted_file(tmp_path))}
    key = key_of(params, json.loads((stored / "results.json").read_text())["data_fingerprint"])
    (stored / "params.json").write_text(json.dumps(params))
    client.set_tag(run.info.run_id, "videosweep.trial_key", key)  # params and key agree: only the path is foreign
    exported = run_cli("export", str(sweep), "--workdir", str(workdir), "--trial", key, "--out", str(tmp_path / "e"),
                       "--allow-baseline")
    predicted = run_cli("predict", key, "--sweep", str(sweep), "--workdir", str(workdir), "--data", str(SEALS),
                        "--out", str(tmp_path / "p.csv"))
    for result in (exported, predicted):
        assert result.returncode == 2, result.stderr[-2000:]
        assert f"would load weights {params['weights']}, a file your sweep file does not name" in \
            result.stderr.splitlines()[-1]
    assert not (tmp_path / "e").exists() and not (tmp_path / "p.csv").exists()
    assert client.search_registered_models() == []


def test_predict_copies_a_registered_model_only_from_the_store(copied, tmp_path):
    import shutil

    sweep, workdir = copied
    assert run_cli("export", str(sweep), "--workdir", str(workdir), "--out", str(tmp_path / "e"),
                   "--allow-baseline").returncode == 0
    command = ("predict", "models:/t@champion", "--sweep", str(sweep), "--workdir", str(workdir), "--data", str(SEALS),
               "--out", str(tmp_path / "p.csv"))
    honest = run_cli(*command)
    assert honest.returncode == 0 and (tmp_path / "p.csv").is_file(), honest.stderr[-2000:]
    (tmp_path / "p.csv").unlink()
    client, _ = mlflow_client(workdir)
    source = client.get_model_version_by_alias("t", "champion").source
    location = Path(client.get_logged_model(source.removeprefix("models:/")).artifact_location.removeprefix("file://"))
    elsewhere = tmp_path / "someone-elses" / "folder"
    shutil.copytree(location, elsewhere)  # any local folder the registry names, here one that holds a model
    with sqlite3.connect(workdir / "mlflow.db") as connection:
        connection.execute("UPDATE model_versions SET storage_location = ?", (elsewhere.as_uri(),))
    planted = run_cli(*command)
    assert planted.returncode == 2, planted.stderr[-2000:]
    assert "outside the store's artefact root" in planted.stderr.splitlines()[-1] and not (tmp_path / "p.csv").exists()


def test_an_edited_checkpoint_starts_the_trial_over_with_the_reason(tmp_path, cache_dir):
    sweep = write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [8]}],
                        name="ckpt", training={"epochs": 3, "patience": 3, "learning_rates": [1e-2, 1e-3],
                                               "batch_size": 64, "checkpoint_seconds": 0})
    workdir = tmp_path / "w"
    killed = run_cli("run", str(sweep), "--workdir", str(workdir), "--max-retries", "0",
                     env={"VIDEOSWEEP_FAULT": "kill:layer_1_size=8@2"})  # kill -9 after epoch 2's checkpoint
    assert killed.returncode == 1, killed.stderr[-2000:]
    [key] = [t.user_attrs["trial_key"] for t in load_study(workdir, "ckpt").trials]
    checkpoint = workdir / "trials" / key / "checkpoint"
    state_path = checkpoint / json.loads((checkpoint / "latest.json").read_text())["dir"] / "state.json"
    state = json.loads(state_path.read_text())
    assert (state["round"], state["epoch"]) == (1, 2)
    state_path.write_text(json.dumps({**state, "round": 3}))  # there are two rounds
    resumed = run_cli("resume", str(sweep), "--workdir", str(workdir), "--retry-failed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    last = load_study(workdir, "ckpt").trials[-1]
    assert last.state.name == "COMPLETE" and "starts over" in resumed.stdout
    assert "does not fit this trial (round 3 of 2)" in last.user_attrs["started_over"]
    results = json.loads((workdir / "trials" / key / "results.json").read_text())
    assert results["resumed_from_epoch"] == 0 and not (workdir / "trials" / key / "checkpoint").exists()


def test_a_key_with_quotes_does_not_break_the_mlflow_search(copied):
    from runner.tracking.mlflow_runs import Tracker

    _, workdir = copied
    tracker = Tracker(f"sqlite:///{workdir / 'mlflow.db'}", workdir, "t", create=False)
    assert tracker.finished_trial("x'y") is None and tracker.finished_trial('x"y') is None


# ---------------------------------------------------------------- item 15: resume after losing the study


def test_resume_after_losing_the_study_logs_no_model_again(copied, tmp_path):
    sweep, workdir = copied
    client, experiment = mlflow_client(workdir)
    models_before = len(client.search_logged_models([experiment]))
    runs_before = len(client.search_runs([experiment]))
    assert models_before == 2
    (workdir / "optuna.db").unlink()
    counter = tmp_path / "count.txt"
    result = run_cli("resume", str(sweep), "--workdir", str(workdir), "--workers", "1",
                     env={"VIDEOSWEEP_FAULT": f"count:@{counter}"})
    assert result.returncode == 0, result.stderr
    assert trainings(counter) == []
    study = load_study(workdir)
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "COMPLETE"]
    assert len(client.search_logged_models([experiment])) == models_before
    assert len(client.search_runs([experiment])) == runs_before
    values = {r.data.tags["videosweep.trial_key"]: r.data.metrics["val_accuracy_best"] for r in
              client.search_runs([experiment], "tags.`videosweep.role` = 'trial'")}
    assert {t.user_attrs["trial_key"]: t.value for t in study.trials} == pytest.approx(values)


# ---------------------------------------------------------------- item 17: staging folders of killed trials


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_resume_removes_staging_folders_whose_process_is_gone(copied):
    from zoo.atomic import _HOST

    sweep, workdir = copied
    dead = workdir / "trials" / f".0123456789ab.{_dead_pid()}-{_HOST}.k2j4h5g6.partial"
    alive = workdir / "trials" / f".0123456789ac.{os.getpid()}-{_HOST}.a1b2c3d4.partial"
    elsewhere = workdir / "trials" / f".0123456789ad.{_dead_pid()}-another-host.a1b2c3d4.partial"
    for folder in (dead, alive, elsewhere):
        folder.mkdir()
        (folder / "results.json").write_text("{}")
    result = run_cli("resume", str(sweep), "--workdir", str(workdir))
    assert result.returncode == 0, result.stderr
    assert not dead.exists() and alive.is_dir() and elsewhere.is_dir()


# ---------------------------------------------------------------- item 16: a full disk while writing a trial


def test_a_full_disk_while_writing_a_trial_is_the_same_one_line_as_for_the_cache(tmp_path, cache_dir):
    full = tmp_path / "full"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], capture_output=True,
                             check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        result = run_cli("train", "--data", str(SEALS), "--out", str(full / "trial"), "--set",
                         "architecture=image_mlp_frozen", "--set", "backbone=mobilenet_v2", "--set", "weights=none",
                         "--set", "frame_size=32x32", "--set", "epochs=1", "--set", "learning_rates=[0.001]")
        errors = [line for line in result.stderr.splitlines() if line.startswith(("error:", "internal error:"))]
        assert result.returncode == 2, result.stderr[-2000:]
        assert len(errors) == 1 and errors[0].startswith(f"error: cannot write folder {full / 'trial'}: no space "
                                                         "left on device"), errors
        assert "Traceback" not in result.stderr and list(full.iterdir()) == []  # no half-written staging folder
    finally:
        subprocess.run(["umount", str(full)], check=False)


# ---------------------------------------------------------------- item 18: heartbeats that cannot be recorded


def test_a_heartbeat_that_keeps_failing_stops_the_trial_with_the_reason(tmp_path, monkeypatch):
    from runner.study.liveness import Heartbeat, HeartbeatLost
    from runner.study.claims import claim_waiting
    from runner.study.storage import open_storage

    monkeypatch.setenv("VIDEOSWEEP_DB_RETRY_SECONDS", "1")
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="h", storage=open_storage(url))
    study.enqueue_trial(params={}, user_attrs={"trial_key": "0123456789ab"})
    trial = claim_waiting(study)
    with sqlite3.connect(tmp_path / "o.db") as connection:
        connection.execute("DROP TABLE trial_heartbeats")  # every beat now fails, and will go on failing
    with Heartbeat(study, trial._trial_id, interval=0.1) as beat:
        deadline = time.time() + 30
        while beat.failure is None and time.time() < deadline:
            time.sleep(0.1)
        with pytest.raises(HeartbeatLost, match="heartbeat could not be recorded"):
            beat.check()


def test_export_names_an_unreachable_artefact_store_not_a_missing_artefact(copied, tmp_path):
    sweep, workdir = copied
    with sqlite3.connect(workdir / "mlflow.db") as connection:  # the artefacts now live on a server that is down
        connection.execute("UPDATE runs SET artifact_uri = 'http://127.0.0.1:9/artifacts'")
    result = run_cli("export", str(sweep), "--workdir", str(workdir), "--out", str(tmp_path / "e"),
                     "--no-register", "--allow-baseline", env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "cannot list trial" in result.stderr and "has no artefact" not in result.stderr
    assert not (tmp_path / "e").exists()


# ---------------------------------------------------------------- item 1: code in the model registry


def test_predict_never_runs_code_planted_beside_a_registered_model(copied, tmp_path):
    sweep, workdir = copied
    exported = run_cli("export", str(sweep), "--workdir", str(workdir), "--out", str(tmp_path / "export"),
                       "--allow-baseline")
    assert exported.returncode == 0, exported.stderr
    client, _ = mlflow_client(workdir)
    source = client.get_model_version_by_alias("t", "champion").source  # models:/<logged model id>
    location = client.get_logged_model(source.removeprefix("models:/")).artifact_location
    data = Path(location.removeprefix("file://")) / "data"
    assert (data / "model.keras").is_file(), "the registered model's files are in the artefact store"
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (data / "custom_objects.cloudpickle").write_bytes(pickle.dumps(Payload()))
    out = tmp_path / "p.csv"
    result = run_cli("predict", "models:/t@champion", "--sweep", str(sweep), "--workdir", str(workdir), "--data",
                     str(SEALS), "--out", str(out))
    assert not marker.exists(), "the planted pickle ran"
    assert result.returncode == 2, result.stderr[-2000:]
    assert "carries code or pickled objects" in result.stderr.splitlines()[-1] and not out.exists()


def test_mlflow_never_unpickles_in_our_processes():
    """Whatever the user's environment says, from the command line's first import on (`predict models:/...`
    reads the registry without the tracking module)."""
    probe = "import videosweep.cli, os; print(os.environ['MLFLOW_ALLOW_PICKLE_DESERIALIZATION'])"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}, check=True)
    assert result.stdout.strip() == "false"


# ---------------------------------------------------------------- item 5: credentials


def test_masking_hides_passwords_and_secret_parameters():
    from zoo.secrets import mask_text, mask_url

    assert mask_url(f"http://me:{SECRET}@host:5000/x") == "http://me:***@host:5000/x"
    assert mask_url(f"postgresql://me@db/optuna?sslmode=require&password={SECRET}") == \
        "postgresql://me@db/optuna?sslmode=require&password=***"
    for name in ("sslpassword", "token", "client_secret", "access_key"):
        assert SECRET not in mask_url(f"postgresql://db/x?{name}={SECRET}")
    assert mask_url("sqlite:////tmp/a b/optuna.db") == "sqlite:////tmp/a b/optuna.db"
    assert mask_text(f"cannot reach 'http://me:{SECRET}@h:1/': refused") == "cannot reach 'http://me:***@h:1/': refused"


def test_a_storage_password_in_a_query_parameter_is_never_printed(tmp_path):
    sweep = write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0]}])
    result = run_cli("run", str(sweep), "--workdir", str(tmp_path / "w"), "--storage",
                     f"postgresql://me@127.0.0.1:9/optuna?password={SECRET}",
                     env={"VIDEOSWEEP_DB_RETRY_SECONDS": "1"})
    assert result.returncode == 75 and "password=***" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def picky_server(tmp_path_factory):
    """A real `mlflow server` that answers only to the Host `localhost:PORT` (as docker-compose's answered only
    to its own name): http://127.0.0.1:PORT is refused with 403, http://localhost:PORT is served."""
    from tests.videosweep.test_ui import wait_for

    folder = tmp_path_factory.mktemp("server")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'm.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--allowed-hosts", f"localhost:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(f"http://localhost:{port}/health", 180)
        yield port
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)


def test_a_server_refusing_our_host_header_is_one_line_before_anything_starts(picky_server, tmp_path):
    sweep = write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0]}])
    result = run_cli("run", str(sweep), "--workdir", str(tmp_path / "w"), "--tracking-uri",
                     f"http://me:{SECRET}@127.0.0.1:{picky_server}")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(errors) == 1 and "HTTP 403" in errors[0] and "allowed-hosts" in errors[0], errors
    assert SECRET not in result.stdout + result.stderr and not (tmp_path / "w").exists()


def test_a_tracking_password_is_kept_out_of_output_study_mlflow_and_reports(picky_server, tmp_path, cache_dir):
    uri = f"http://me:{SECRET}@localhost:{picky_server}"
    sweep = write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0]}],
                        name="secret", tracking={"uri": uri})
    workdir = tmp_path / "w"
    result = run_cli("run", str(sweep), "--workdir", str(workdir), "--workers", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert SECRET not in result.stdout + result.stderr
    study = optuna.load_study(study_name="secret", storage=f"sqlite:///{workdir / 'optuna.db'}")
    assert SECRET not in json.dumps(study.user_attrs) and "me:***@" in study.user_attrs["sweep_yaml"]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("secret").experiment_id
    parent = client.search_runs([experiment], "tags.`videosweep.role` = 'sweep'")[0]
    assert SECRET not in json.dumps(parent.data.params) + json.dumps(parent.data.tags)
    assert SECRET not in Path(client.download_artifacts(parent.info.run_id, "sweep.yaml", str(tmp_path))).read_text()
    report = run_cli("report", str(sweep), "--workdir", str(workdir), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr[-2000:]
    for name in ("leaderboard.csv", "report.html", "leaderboard.md"):
        assert SECRET not in (tmp_path / "report" / name).read_text()
    links = pd.read_csv(tmp_path / "report" / "leaderboard.csv").get("run_link")
    assert links is None or all("me:***@" in link for link in links)


def _live_command_line(process) -> list[str] | None:
    """A process's command line; None for one that exited meanwhile (a zombie has no command line left to leak)."""
    import psutil

    try:
        return process.cmdline()
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return None


def test_ui_keeps_a_database_password_off_every_command_line(tmp_path, postgres_admin):
    import psutil

    from tests.runner.execution.test_scale_out import database_url, drop_database, new_database
    from tests.videosweep.test_ui import wait_for

    name = new_database()
    uri = database_url(name).replace("://postgres@", f"://postgres:{SECRET}@")  # trust auth ignores it
    sweep = write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0]}])
    port = _free_port()
    command = [*CLI, "ui", str(sweep), "--workdir",
               str(tmp_path / "w"), "--port", str(port)]
    ui = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True, env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    try:
        wait_for(f"http://127.0.0.1:{port}/health", 180)
        family = [psutil.Process(ui.pid), *psutil.Process(ui.pid).children(recursive=True)]
        command_lines = [" ".join(line) for line in map(_live_command_line, family) if line is not None]
        assert len(command_lines) > 1, "the MLflow UI runs in a child process"
        for line in command_lines:
            assert SECRET not in line, line
    finally:
        os.killpg(ui.pid, 15)
        output = ui.communicate(timeout=30)[0]
        drop_database(name)
    assert SECRET not in output


def test_two_runs_of_a_new_sweep_started_a_second_apart_both_finish_it(tmp_path, cache_dir):
    sweep = write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0, 8, 16]}],
                        name="twice")
    workdir = tmp_path / "work"
    command = [sys.executable, "-c", "from videosweep.cli import main; main()", "run", str(sweep), "--workdir",
               str(workdir), "--workers", "1"]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    second = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = [process.communicate(timeout=900) for process in (first, second)]
    for process, (out, err) in zip((first, second), results):
        assert process.returncode == 0, err[-2000:]
    study = load_study(workdir, "twice")
    complete = [t.user_attrs["trial_key"] for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == len(set(complete)) == 3 and len(study.trials) == 3


def test_each_scheduler_has_its_own_stop_file(tmp_path):
    """A second `run` of the sweep on this machine stops its own workers on Ctrl-C, never the first run's."""
    probe = ("import sys; from runner.execution.scheduler import Scheduler, SchedulerOptions; "
             "from runner.execution.worker import WorkerConfig; t = WorkerConfig('', '', sys.argv[1], 'sqlite://'); "
             "print(Scheduler(t, [], SchedulerOptions(), None, None, None).template.stop_file)")
    files = [subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                            check=True).stdout.strip() for _ in range(2)]
    assert files[0] != files[1] and all(Path(f).parent == tmp_path for f in files)
    from runner.execution.worker import WorkerConfig, stop_requested

    Path(files[1]).touch()  # the other run was interrupted
    first = WorkerConfig("", "", str(tmp_path), "sqlite://", stop_file=files[0])
    assert not stop_requested(first)
    Path(files[0]).touch()
    assert stop_requested(first)


def test_a_worker_joining_by_name_is_told_the_study_keeps_no_tracking_password(tmp_path, postgres_admin):
    from tests.runner.execution.test_scale_out import database_url, drop_database, new_database

    name = new_database()
    try:
        sweep = write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0]}],
                            name="joined", tracking={"uri": "http://me:***@mlflow:5000"})
        study = optuna.create_study(study_name="joined", storage=database_url(name))
        study.set_user_attr("sweep_yaml", sweep.read_text())  # as `run` stores it: masked
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        result = subprocess.run([sys.executable, "-c", "from videosweep.cli import main; main()", "worker", "--study",
                                 "joined", "--storage", database_url(name), "--workdir", str(tmp_path / "w")],
                                capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, check=False)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "keeps its tracking URI without the password" in result.stderr.splitlines()[-1]
    finally:
        drop_database(name)


def test_a_worker_joining_by_name_loads_no_file_the_shared_study_names(tmp_path):
    """Joining by study name, the sweep file comes from the shared study: a weights path there would make this
    machine load any file. The worker asks for its own sweep file instead, in one line."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    sweep = write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], "backbone": ["mobilenet_v2"],
                                    "weights": ["/home/victim/secret.weights.h5"], "frame_size": ["32x32"]}],
                        name="planted-files")
    optuna.create_study(study_name="planted-files", storage=url).set_user_attr("sweep_yaml", sweep.read_text())
    result = run_cli("worker", "--study", "planted-files", "--storage", url, "--workdir", str(tmp_path / "w"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: study 'planted-files' names local files (/home/victim/secret.weights.h5); a worker loads files "
        "named only by its own sweep file: give it the sweep file")
    assert not (tmp_path / "w").exists()


# ---------------------------------------------------------------- issue #30: reuse and warm start


@pytest.fixture(scope="module")
def planted_reuse(tmp_path_factory, cache_dir):
    """A grid sweep [0, 8] run on a tracking store where someone planted, for key 0, a finished run with a NaN
    metric (artefacts and all), and for key 8 a 'reused copy' whose tags point at a victim's private folder."""
    folder = tmp_path_factory.mktemp("planted")
    uri, client = new_store(folder / "store")
    victim = folder / "victim-private"
    victim.mkdir()
    (victim / "notes.txt").write_text("private")
    sweep, points = keyed_sweep(folder, [0, 8], "t", tracking={"uri": uri}, resources={"max_retries": 0})
    earlier = new_experiment(client, folder / "store", "earlier")
    plant(client, earlier, points[0][0], {"val_accuracy_best": float("nan")}, params=points[0][1])
    plant(client, earlier, points[8][0], {"val_accuracy_best": 0.99}, params=points[8][1],
          tags={"videosweep.reused_from": "0" * 32, "videosweep.reused_artifact_uri": victim.as_uri()})
    counter = folder / "count.txt"
    result = run_cli("run", str(sweep), "--workdir", str(folder / "work"),
                     env={"VIDEOSWEEP_FAULT": f"count:@{counter}"})
    return {"result": result, "workdir": folder / "work", "victim": victim, "client": client, "points": points,
            "trained": sorted(t["layer_1_size"] for t in trainings(counter))}


def test_a_planted_nan_run_is_trained_again_not_reused_as_a_failure(planted_reuse):
    """It was reused, the study recorded FAIL and the run said 'failed for good' with no traceback."""
    result = planted_reuse["result"]
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "failed for good" not in result.stdout and 0 in planted_reuse["trained"]
    trial = next(t for t in load_study(planted_reuse["workdir"]).trials
                 if t.user_attrs["trial_key"] == planted_reuse["points"][0][0])
    assert trial.state.name == "COMPLETE" and 0 <= trial.value <= 1 and "reused_from" not in trial.user_attrs


def test_a_planted_reuse_tag_is_never_followed_to_a_local_path_nor_copied(planted_reuse):
    """A copy's tags named a victim's folder, which the preflight then checked (and exited 2 on)."""
    result, victim = planted_reuse["result"], planted_reuse["victim"]
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert str(victim) not in result.stdout + result.stderr and planted_reuse["trained"] == [0, 8]
    client = planted_reuse["client"]
    mine = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert mine and all(victim.as_uri() not in json.dumps(run.data.tags) and "0" * 32 not in json.dumps(run.data.tags)
                        for run in mine)


def test_a_warm_start_skips_a_planted_nan_and_says_how_many(tmp_path, cache_dir):
    """A NaN value crashed every run (`internal error: ValueError: values should not contain NaN.`)."""
    uri, client = new_store(tmp_path / "store")
    sweep, points = keyed_sweep(tmp_path, [0], "warm", tracking={"uri": uri},
                                search={"strategy": "optuna", "trials": 1, "warm_start": ["donor"]})
    donor = new_experiment(client, tmp_path / "store", "donor")
    key, params = points[0]
    plant(client, donor, key, {"val_accuracy_best": float("nan")}, params=params)
    plant(client, donor, key, {"val_accuracy_best": 0.75}, params=params)  # the sampled point: reused, not trained
    counter = tmp_path / "count.txt"
    result = run_cli("run", str(sweep), "--workdir", str(tmp_path / "work"),
                     env={"VIDEOSWEEP_FAULT": f"count:@{counter}"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert ("1 warm-start trial(s) added from donor, 1 warm-start run(s) skipped: val_accuracy_best is not a "
            "finite number") in " ".join(result.stdout.split())
    assert trainings(counter) == []


# ---------------------------------------------------------------- #30: Keras's safe_mode, JAX's compilation cache


def test_a_keras_older_than_the_safe_mode_fixes_is_refused_and_the_install_floor_is_the_same():
    import tomllib

    from runner import backends

    assert "older than 3.14" in backends.keras_problem("3.13.2") and "pip install 'keras>=3.14'" in \
        backends.keras_problem("3.3.0")
    assert backends.keras_problem("3.14.0") is None and backends.keras_problem("4.0.1") is None
    assert backends.keras_problem(backends.version("keras")) is None  # this installation
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "keras>=3.14" in [d.split(";")[0].strip() for d in dependencies]


def test_the_jax_compilation_cache_is_private_and_one_others_can_write_is_refused(tmp_path):
    """JAX runs the executables in its compilation cache: whoever can write that folder can run code."""
    from runner import backends
    from zoo.errors import UserError

    require(backends.installed("jax"), "jax is not installed ([jax] extra)")
    created = backends.compilation_cache(tmp_path / "fresh")
    assert created.stat().st_mode & 0o777 == 0o700
    foreign = tmp_path / "foreign" / "jax-compilation"
    foreign.mkdir(parents=True, mode=0o700)
    if os.getuid() == 0:  # only root can give a folder away
        os.chown(foreign, 65534, 65534)
        with pytest.raises(UserError, match="belongs to another user"):
            backends.compilation_cache(tmp_path / "foreign")
    cache = tmp_path / "cache"
    (cache / "jax-compilation").mkdir(parents=True)
    os.chmod(cache / "jax-compilation", 0o777)
    sweep = write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0]}])
    result = run_cli("run", str(sweep), "--workdir", str(tmp_path / "w"), "--backend", "jax",
                     "--cache-dir", str(cache))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (f"error: JAX compilation cache {cache / 'jax-compilation'} is writable by others "
                                     f"(mode 777): whoever writes it runs code here; chmod 700 "
                                     f"{cache / 'jax-compilation'}")
    assert not (tmp_path / "w").exists()


def test_a_notification_carries_text_from_the_study_escaped_and_bounded_and_no_local_path(tmp_path):
    """Anyone who can write the shared study writes failure reasons and keys: a webhook gets them as one
    bounded line, chat markup (<!channel>) escaped; the report is named inside the workdir, not by its path."""
    from runner.execution import notify

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'shared.db'}", study_name="s")
    planted = "<!channel> <https://evil.example|click> & " + "x" * 5000 + "\nsecond line"
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={
        "trial_key": "<@U123>" + "k" * 500, "failure": planted, "traceback_path": "/elsewhere/" + "t" * 900}))
    payload = notify.summary("end", "s", {"complete": 0, "fail": 1}, ("<!here>", 0.5), "val_accuracy",
                             notify.recent_failures(study), "stopped: <!everyone>")
    sent = json.dumps(payload)
    assert "<" not in sent and ">" not in sent and "\\n" not in sent
    assert "&lt;!channel&gt;" in payload["text"] and "&amp;" in payload["text"]
    failure = payload["failures"][0]
    assert len(failure["reason"]) < 300 and len(failure["key"]) < 80 and len(failure["traceback"]) < 300
    assert len(payload["text"]) < 1000 and str(tmp_path) not in sent and payload["report"] == "report/report.html"
