"""Overnight operation, the parts that need no training: stop decisions on a real Optuna study, notifications
to a real local HTTP receiver, git provenance of a real repository, the estimate's arithmetic."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import optuna
import pytest
import yaml

from runner.execution import estimate, notify
from runner.tracking import provenance
from runner.search import stop
from runner.spec.trial_spec import TrialSpec
from runner.spec.sweep import sweep_from_mapping
from zoo.errors import UserError


def make_sweep(**search) -> object:
    return sweep_from_mapping({"name": "u", "data": {"root": "."}, "search": search,
                               "space": [{"architecture": ["image_mlp_frozen"], "backbone": ["mobilenet_v2"]}]}, "t")


def finished(values: list[float], attrs: dict | None = None) -> list:
    study = optuna.create_study(direction="maximize")
    for number, value in enumerate(values):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"trial_key": f"k{number}",
                                                                            **(attrs or {})}))
    return study.get_trials()


def test_target_and_patience_decide_on_finished_trials_in_order():
    assert stop.decide(make_sweep(stop={"target": 0.9}), finished([0.5, 0.8])) is None
    reason = stop.decide(make_sweep(stop={"target": 0.9}), finished([0.5, 0.95, 0.6]))
    assert reason and "target val_accuracy >= 0.9" in reason and "k1" in reason
    patience = make_sweep(stop={"patience_trials": 2})
    assert stop.decide(patience, finished([0.5, 0.6, 0.6])) is None  # one without improvement
    assert "2 finished trial(s) in a row" in stop.decide(patience, finished([0.5, 0.6, 0.6, 0.55]))
    assert stop.decide(patience, finished([0.5, 0.4, 0.6, 0.5, 0.7])) is None  # improvements reset the count
    minimize = make_sweep(metric="val_loss", direction="minimize", stop={"target": 0.2})
    assert "<= 0.2" in stop.decide(minimize, finished([0.5, 0.1]))
    assert stop.decide(make_sweep(), finished([1.0])) is None  # no rules, no stop
    assert "time budget" in stop.decide(make_sweep(timeout=5), [], deadline=time.time() - 1)


def test_a_rule_may_watch_another_recorded_metric_but_not_an_unrecorded_one():
    sweep = make_sweep(stop={"target": 0.3, "metric": "val_loss"})
    assert stop.decide(sweep, finished([0.99], {"fit_val_loss": 0.5})) is None
    assert "val_loss <= 0.3" in stop.decide(sweep, finished([0.1], {"fit_val_loss": 0.2}))
    with pytest.raises(UserError, match="does not record 'f1'"):
        stop.watched(make_sweep(stop={"target": 0.7, "metric": "f1"}))


@pytest.mark.parametrize("search", [{"metric": "test_accuracy"}, {"stop": {"target": 0.7, "metric": "test_loss"}},
                                    {"objectives": [{"metric": "val_accuracy", "direction": "maximize"},
                                                    {"metric": "test_accuracy", "direction": "maximize"}]}])
def test_nothing_that_chooses_may_read_the_test_split(search):
    with pytest.raises(UserError, match="held-out test split.*never chooses"):
        make_sweep(**search)


def test_the_decision_is_recorded_in_the_study_and_cleared_by_ignore_stop():
    study = optuna.create_study(direction="maximize")
    sweep = make_sweep(stop={"target": 0.5})
    assert stop.evaluate(study, sweep) is None and stop.stop_reason(study) is None
    study.add_trial(optuna.trial.create_trial(value=0.6, user_attrs={"trial_key": "abc"}))
    assert "abc" in stop.evaluate(study, sweep)
    assert "abc" in study.user_attrs[stop.STOP_ATTR]
    stop.clear(study)
    assert stop.stop_reason(study) is None
    assert stop.evaluate(study, sweep, rules_on=False) is None  # --ignore-stop: rules off


class Receiver:
    """A local webhook on 127.0.0.1 recording each JSON body it is sent."""

    def __init__(self, status: int = 200):
        self.bodies: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                owner.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def test_a_notification_is_json_with_a_chat_text_and_only_for_chosen_events(receiver, tmp_path):
    logged: list[str] = []
    notifier = notify.Notifier(receiver.url, ("end",), logged.append)
    failures = [{"trial": 3, "key": "k3", "reason": "RuntimeError: boom", "traceback": "/x/failures/k3.txt"}]
    payload = notify.summary("end", "night", {"complete": 3, "fail": 1, "waiting": 0}, ("k1", 0.75),
                             "val_accuracy", failures)
    notifier.send("failure", payload)  # not chosen
    notifier.send("end", payload)
    notifier.flush()
    assert len(receiver.bodies) == 1 and not logged
    body = receiver.bodies[0]
    assert body["event"] == "end" and body["sweep"] == "night" and body["counts"]["fail"] == 1
    assert body["best"] == {"trial_key": "k1", "metric": "val_accuracy", "value": 0.75}
    assert "night" in body["text"] and "0.7500" in body["text"] and "boom" in body["text"]
    assert body["failures"][0]["traceback"].endswith("k3.txt") and body["report"].endswith("report.html")


def test_a_failing_notification_is_one_masked_line_and_does_not_block(tmp_path):
    refusing = Receiver(status=500)
    logged: list[str] = []
    url = refusing.url.replace("http://", "http://bot:s3cret@") + "/services/T0/B0/w3bh00k"  # Slack's form
    notifier = notify.Notifier(url, ("end",), logged.append)
    began = time.time()
    notifier.send("end", {"text": "x"})
    sent_in = time.time() - began
    notifier.flush()
    refusing.close()
    assert sent_in < notify.SEND_TIMEOUT_SECONDS  # the caller never waits for the POST
    assert len(logged) == 1 and "HTTP 500" in logged[0] and "***" in logged[0]
    assert "s3cret" not in logged[0] and "w3bh00k" not in logged[0]


def test_a_redirect_is_not_followed(receiver):
    """A 307 would have the summary posted again, whole, to wherever the first endpoint points."""
    class Redirecting(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(307)
            self.send_header("Location", receiver.url)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    logged: list[str] = []
    notifier = notify.Notifier(f"http://127.0.0.1:{server.server_address[1]}/services/T0/B0/w3bh00k", ("end",),
                               logged.append)
    notifier.send("end", {"text": "x"})
    notifier.flush()
    server.shutdown()
    server.server_close()
    assert receiver.bodies == [] and not notifier.sent
    assert len(logged) == 1 and "HTTP 307 (redirects are not followed)" in logged[0] and "w3bh00k" not in logged[0]


def test_one_deadline_covers_the_whole_post_not_each_read():
    """An endpoint that answers a byte at a time never trips a timeout per read; the deadline cuts it off."""
    listener = socket.create_server(("127.0.0.1", 0))

    def dribble() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                time.sleep(0.2)
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return

    threading.Thread(target=dribble, daemon=True).start()
    logged: list[str] = []
    notifier = notify.Notifier(f"http://127.0.0.1:{listener.getsockname()[1]}/hook", ("end",), logged.append,
                               deadline_seconds=1.0)
    began = time.time()
    notifier.send("end", {"text": "x"})
    notifier.flush()
    took = time.time() - began
    listener.close()
    assert not notifier.sent and len(logged) == 1 and "no answer within 1 s" in logged[0]
    assert took < 2.5  # the dribble alone would take 8 s


def test_the_preflight_refuses_a_non_http_or_unreachable_url(receiver):
    notify.check_url(receiver.url)
    with pytest.raises(UserError, match="not an http"):
        notify.check_url("ftp://example.org/hook")
    with pytest.raises(UserError, match="unreachable") as err:
        notify.check_url("http://bot:s3cret@127.0.0.1:9/hooks/w3bh00k")
    assert "s3cret" not in str(err.value) and "w3bh00k" not in str(err.value)


def test_the_study_and_mlflow_keep_no_webhook_secret():
    """A webhook's secret is its path: the sweep file as the study and MLflow keep it has only the host, and a
    worker that joins by study name reads no webhook from it (it notifies with its own --notify)."""
    from runner.spec.sweep import sweep_from_mapping

    data = {"name": "n", "data": {"root": "."}, "space": [{"architecture": ["c3dsmall"]}],
            "notify": {"url": "https://hooks.slack.com/services/T0/B0/w3bh00k", "on": ["end"]}}
    shared = sweep_from_mapping(data, None).shareable_yaml()
    assert "w3bh00k" not in shared and "https://hooks.slack.com/***" in shared
    joined = sweep_from_mapping(yaml.safe_load(shared), None).without_masked_urls()
    assert joined.notify.url is None and joined.notify.on == ("end",)
    from runner.tracking.mlflow_runs import flatten

    data["tracking"] = {"uri": "http://me:hunter2@mlflow:5000"}
    params = flatten(sweep_from_mapping(data, None).shareable())  # the parent run's parameters
    assert params["notify.url"] == "https://hooks.slack.com/***"
    assert params["tracking.uri"] == "http://me:***@mlflow:5000"
    assert not any("w3bh00k" in value or "hunter2" in value for value in params.values())


def test_git_provenance_of_a_dirty_repository_and_none_outside_one(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "night"], check=True)
    (repo / "sweep.yaml").write_text("name: a\n")
    subprocess.run([*git, "add", "sweep.yaml"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    tags = provenance.git_tags(str(repo / "sweep.yaml"))
    assert tags == {provenance.COMMIT_TAG: commit, provenance.BRANCH_TAG: "night", provenance.DIRTY_TAG: "false"}
    (repo / "sweep.yaml").write_text("name: b\n")
    provenance.git_state.cache_clear()
    assert provenance.git_tags(str(repo / "sweep.yaml"))[provenance.DIRTY_TAG] == "true"
    assert "+name: b" in provenance.git_diff(str(repo / "sweep.yaml"))
    outside = tmp_path / "plain"
    outside.mkdir()
    assert provenance.git_tags(str(outside / "sweep.yaml")) == {} and provenance.git_tags(None) == {}


def test_the_diff_covers_source_and_config_only_and_is_masked(tmp_path):
    """What a reader needs (the code and config that shaped the run), never a file named like a secret, and no
    credential inside what it does keep."""
    repo = tmp_path / "repo"
    (repo / "config").mkdir(parents=True)
    hook = "https://hooks.slack.com/services/T000/B000/WEBHOOKSECRETPATH"
    files = {"sweep.yaml": "name: a\n", "train.py": "EPOCHS = 1\n", "config/secrets.env": "API_TOKEN=\n",
             "notes.txt": "n\n"}
    for name, text in files.items():
        (repo / name).write_text(text)
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    token = "ghp_" + "A1b2C3d4" * 5
    (repo / "sweep.yaml").write_text(f"name: a\nnotify: {{url: {hook}}}\n")
    (repo / "train.py").write_text(f"EPOCHS = 2\nAPI_TOKEN = \"{token}\"\nprint('{token}')\n")
    (repo / "config" / "secrets.env").write_text(f"API_TOKEN={token}\n")
    (repo / "notes.txt").write_text("uncommitted notes\n")
    diff = provenance.git_diff(str(repo / "sweep.yaml"), (hook,))
    assert "+EPOCHS = 2" in diff and "+notify: {url: https://hooks.slack.com/***}" in diff
    assert 'API_TOKEN = "***"' in diff and "print('***')" in diff
    assert "secrets.env" not in diff and "notes.txt" not in diff
    assert token not in diff and "WEBHOOKSECRETPATH" not in diff


def test_environment_names_python_keras_backend_and_host():
    env = provenance.environment()
    assert env["python"].count(".") == 2 and env["keras"] and env["backend"] and env["host"]
    assert "keras==" in provenance.requirements_txt().lower()


def test_the_rough_model_and_spreading_over_slots():
    spec = TrialSpec.from_flat({"architecture": "image_mlp_frozen", "backbone": "mobilenet_v2", "epochs": 2,
                                "learning_rates": [1e-3, 1e-4]})
    one = estimate.estimate([spec], 1, None)
    assert "rough model" in one["basis"]
    assert one["seconds"] == pytest.approx(estimate.ROUGH_TRIAL_SECONDS + 4 * estimate.ROUGH_EPOCH_SECONDS
                                           + estimate.ROUGH_SWEEP_SECONDS)
    assert estimate._spread([10, 10, 10, 10], 2) == 20 and estimate._spread([30, 10, 10], 2) == 30
    assert estimate.estimate([], 1, None)["seconds"] == 0


@pytest.mark.parametrize("command", ["run", "resume", "worker"])
def test_run_resume_and_worker_all_refuse_a_bad_notify_url(tmp_path, command):
    from tests.conftest import SEALS, run_cli

    sweep = tmp_path / "s.yaml"
    sweep.write_text(json.dumps({"name": "n", "data": {"root": str(SEALS)}, "space": [
        {"architecture": ["image_mlp_frozen"], "backbone": ["mobilenet_v2"], "weights": ["none"],
         "frame_size": ["32x32"]}]}))
    extra = ["--storage", f"sqlite:///{tmp_path / 'shared.db'}"] if command == "worker" else []
    result = run_cli(command, str(sweep), "--workdir", str(tmp_path / "work"), *extra, "--notify", "ftp://x/y")
    assert result.returncode == 2 and "error: notify URL ftp://x/*** is not an http" in result.stderr, result.stderr
    assert not (tmp_path / "work").exists()


def test_a_sweeps_baselines_cover_every_window_length_its_space_gives(seals):
    from runner.spec.baselines import baseline_lines, baselines_json, parent_params, sweep_baselines, window_lengths
    from zoo.data import load_dataset

    space = [{"architecture": ["image_mlp_frozen", "video_lrcnn_frozen"], "backbone": ["mobilenet_v2"],
              "sequence_length": [3, 5]},
             {"architecture": ["video_lrcnn_frozen"], "backbone": ["mobilenet_v2"],
              "sequence_length": {"low": 4, "high": 8, "step": 4}}]
    sweep = sweep_from_mapping({"name": "u", "data": {"root": "."}, "search": {"strategy": "random", "trials": 2},
                                "space": space}, "t")
    assert window_lengths(sweep) == [1, 3, 4, 5, 8]
    dataset = load_dataset(seals)
    params = parent_params(sweep_baselines(sweep, dataset))
    assert params["baseline.L1.val.majority_class"] == "noseal" and params["baseline.chance"] == "0.5"
    assert float(params["baseline.L1.test.majority_accuracy"]) == pytest.approx(152 / 285)
    assert int(params["baseline.L5.test.windows"]) < int(params["baseline.L1.test.windows"])
    lines = baseline_lines(baselines_json(sweep, dataset))
    assert len(lines) == 5 and "val 0.5230 (noseal, 174 windows)" in lines[0]
