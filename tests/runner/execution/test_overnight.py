"""Overnight operation end to end: honest exit codes, notifications to a local webhook, provenance, stop
rules, estimates, reuse of finished trial keys across sweeps of one tracking store, and warm start.

Two sweeps share one tracking store: `night-a` (in a dirty git repository; one trial fails for good; run with
--log-diff; its webhook's path and a token in the repository are secrets) and `night-b`, in the same repository
without --log-diff, which overlaps it (its two keys that finished in `night-a` are reused, the rest trained).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import ROOT, run_cli
from tests.runner.execution.test_overnight_units import Receiver
from tests.runner.execution.test_run import FEATURES, load_study, trainings

pytestmark = pytest.mark.slow
TRAINING = {"epochs": 1, "patience": 1, "learning_rates": [1e-3], "batch_size": 64}
WEBHOOK_SECRET = "services/T000/B000/WEBHOOKSECRETPATH"
TOKEN = "ghp_" + "N1ghtT0ken" * 4


def write(folder: Path, name: str, sizes: list[int], **extra) -> Path:
    data = {"name": name, "data": {"root": str(ROOT / "examples" / "seals")}, "training": TRAINING,
            "space": [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": sizes}],
            "resources": {"workers": 1, "max_retries": 0}, **extra}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def study_of(workdir: Path, name: str) -> optuna.Study:
    return load_study(workdir, name)


def runs_of(client: MlflowClient, name: str) -> tuple[object, list]:
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    parent = next(r for r in runs if r.data.tags.get("videosweep.role") == "sweep")
    return parent, [r for r in runs if r.data.tags.get("videosweep.role") == "trial"]


@pytest.fixture(scope="module")
def night(tmp_path_factory, cache_dir):
    folder = tmp_path_factory.mktemp("night")
    repo = folder / "repo"
    repo.mkdir()
    store = f"sqlite:///{folder / 'store' / 'mlflow.db'}"
    (folder / "store").mkdir()
    receiver = Receiver()
    hook = receiver.url.replace("/hook", f"/{WEBHOOK_SECRET}")
    a = write(repo, "night-a", [0, 8, 12], tracking={"uri": store}, notify={"url": hook, "on": ["end", "failure"]})
    (repo / "config").mkdir()
    (repo / "config" / "secrets.env").write_text("API_TOKEN=\n")
    (repo / "helpers.py").write_text("EPOCHS = 1\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "nightly"], check=True)
    subprocess.run([*git, "add", a.name, "config/secrets.env", "helpers.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "sweep a"], check=True)
    a.write_text(a.read_text() + f"# an uncommitted note; webhook {hook}\n")
    (repo / "config" / "secrets.env").write_text(f"API_TOKEN={TOKEN}\n")  # edited locally, tracked
    (repo / "helpers.py").write_text(f"EPOCHS = 1\nAPI_TOKEN = '{TOKEN}'\n")
    count_a, count_b = folder / "count-a.txt", folder / "count-b.txt"
    first = run_cli("run", str(a), "--workdir", str(folder / "wa"), "--log-diff",
                    env={"VIDEOSWEEP_FAULT": f"count:@{count_a},raise:layer_1_size=12"})
    b = write(repo, "night-b", [0, 8, 16, 24], tracking={"uri": store})  # in the dirty repository, no --log-diff
    planned = run_cli("plan", str(b), "--workdir", str(folder / "wb"), "--json")
    began = time.time()
    second = run_cli("run", str(b), "--workdir", str(folder / "wb"), env={"VIDEOSWEEP_FAULT": f"count:@{count_b}"})
    took = time.time() - began
    yield {"folder": folder, "repo": repo, "a": first, "b": second, "plan": planned, "took": took,
           "count_a": count_a, "count_b": count_b, "receiver": receiver, "store": store,
           "client": MlflowClient(store)}
    receiver.close()


def test_a_trial_that_fails_for_good_exits_1_naming_where_the_tracebacks_are(night):
    result = night["a"]
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    failures = night["folder"] / "wa" / "failures"
    assert last == f"1 trial(s) failed for good; tracebacks in {failures}/"
    assert len(list(failures.glob("*.txt"))) == 1
    assert night["b"].returncode == 0, night["b"].stderr[-2000:]


def test_the_webhook_hears_the_failure_and_the_end(night):
    deadline = time.time() + 30
    while time.time() < deadline and len(night["receiver"].bodies) < 2:
        time.sleep(0.2)
    by_event = {body["event"]: body for body in night["receiver"].bodies}
    assert set(by_event) == {"failure", "end"}
    end = by_event["end"]
    assert end["sweep"] == "night-a" and end["counts"]["complete"] == 2 and end["counts"]["fail"] == 1
    assert end["best"]["metric"] == "val_accuracy" and end["best"]["trial_key"]
    assert end["failures"][0]["reason"].startswith("RuntimeError: injected failure")
    assert "night-a ended" in end["text"] and "injected failure" in end["text"]
    assert "failed for good" in by_event["failure"]["text"]


def test_runs_carry_git_environment_host_and_device(night):
    client = night["client"]
    parent, children = runs_of(client, "night-a")
    commit = subprocess.run(["git", "-C", str(night["repo"]), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    for run in [parent, *children]:
        tags = run.data.tags
        assert tags["mlflow.source.git.commit"] == commit and tags["mlflow.source.git.branch"] == "nightly"
        assert tags["videosweep.git.dirty"] == "true"
    assert all(c.data.tags["host"] and c.data.tags["device"].startswith(("CPU", "GPU")) for c in children)
    folder = night["folder"] / "downloads"
    diff = Path(client.download_artifacts(parent.info.run_id, "git/uncommitted.diff", str(folder))).read_text()
    assert "+# an uncommitted note; webhook http://127.0.0.1:" in diff and "API_TOKEN = '***'" in diff
    assert "secrets.env" not in diff  # a file named like a secret is no part of the diff
    listed = {a.path for a in client.list_artifacts(parent.info.run_id, "environment")}
    assert listed == {"environment/requirements.txt", "environment/environment.json"}
    env = json.loads(Path(client.download_artifacts(parent.info.run_id, "environment/environment.json",
                                                    str(folder))).read_text())
    assert env["python"] and env["keras"] and env["backend"] == "tensorflow" and env["host"]
    requirements = Path(client.download_artifacts(parent.info.run_id, "environment/requirements.txt",
                                                  str(folder))).read_text()
    assert "optuna==" in requirements.lower() and "mlflow" in requirements.lower()


def test_no_secret_of_the_sweep_file_or_the_repository_reaches_mlflow_the_study_or_output(night):
    """The webhook's path (the parent run's parameters once held it) and a token in a locally edited tracked
    file (the diff once shipped it) appear in no file of the stores or workdirs, nor in any output; without
    --log-diff a dirty tree is a tag, not a diff."""
    client = night["client"]
    parent_a, _ = runs_of(client, "night-a")
    assert parent_a.data.params["notify.url"].endswith("/***")
    parent_b, _ = runs_of(client, "night-b")
    assert parent_b.data.tags["videosweep.git.dirty"] == "true"
    assert not client.list_artifacts(parent_b.info.run_id, "git")
    # grep, in its own process: a file of an SQLite database opened and closed here would drop this process's
    # SQLite locks on it (POSIX locks are per process), and the store could be corrupted by the next writer.
    leaks = subprocess.run(["grep", "-rlaF", "-e", WEBHOOK_SECRET, "-e", TOKEN, "--exclude-dir=repo",
                            str(night["folder"])], capture_output=True, text=True)
    assert leaks.returncode == 1 and not leaks.stdout, leaks.stdout + leaks.stderr  # 1: no file matches
    for result in (night["a"], night["b"], night["plan"]):
        assert WEBHOOK_SECRET not in result.stdout + result.stderr and TOKEN not in result.stdout + result.stderr


def test_keys_finished_in_another_sweep_are_reused_not_trained(night):
    plan = json.loads(night["plan"].stdout)
    assert plan["reused"] == 2 and plan["to_train"] == 2
    trained = sorted(t["layer_1_size"] for t in trainings(night["count_b"]))
    assert trained == [16, 24]  # 0 and 8 finished in night-a; 12 failed there and is not in night-b
    client = night["client"]
    _, originals = runs_of(client, "night-a")
    by_key = {r.data.tags["videosweep.trial_key"]: r for r in originals if r.info.status == "FINISHED"}
    _, copies = runs_of(client, "night-b")
    reused = [r for r in copies if "videosweep.reused_from" in r.data.tags]
    assert len(reused) == 2 and len(copies) == 4
    values = {t.user_attrs["trial_key"]: t for t in study_of(night["folder"] / "wb", "night-b").trials}
    for copy in reused:
        original = by_key[copy.data.tags["videosweep.trial_key"]]
        assert copy.data.tags["videosweep.reused_from"] == original.info.run_id
        assert copy.data.tags["videosweep.reused_artifact_uri"] == original.info.artifact_uri
        assert copy.info.status == "FINISHED" and copy.data.params == original.data.params
        assert copy.data.metrics["val_accuracy_best"] == original.data.metrics["val_accuracy_best"]
        assert not client.list_artifacts(copy.info.run_id)  # linked, not copied
        assert len(client.get_metric_history(copy.info.run_id, "val_accuracy")) == len(
            client.get_metric_history(original.info.run_id, "val_accuracy"))
        trial = values[copy.data.tags["videosweep.trial_key"]]
        assert trial.state.name == "COMPLETE" and trial.value == original.data.metrics["val_accuracy_best"]
        assert trial.user_attrs["reused_from"] == original.info.run_id


def test_a_reused_trial_exports_and_links_from_its_original_run(night):
    """A reused copy has no artefacts of its own: export, the report's links and its confusion matrix follow
    the copy to the run that trained it (in another sweep's experiment)."""
    from reports.records import read_sweep_runs
    from runner.tracking.mlflow_runs import Tracker

    client = night["client"]
    _, copies = runs_of(client, "night-b")
    copy = next(r for r in copies if "videosweep.reused_from" in r.data.tags)
    original = client.get_run(copy.data.tags["videosweep.reused_from"])
    key = copy.data.tags["videosweep.trial_key"]
    runs = read_sweep_runs(Tracker(night["store"], night["folder"] / "wb", "night-b", create=False))
    row = runs.trials.set_index("trial_key").loc[key]
    assert row.run_id == copy.info.run_id and row.artefacts_run_id == original.info.run_id
    assert runs.experiment_of(row.artefacts_run_id) == original.info.experiment_id
    assert runs.run_link(row.artefacts_run_id) == ""  # a SQLite store: no server to link to (a `videosweep ui` hint)
    assert original.info.experiment_id != copy.info.experiment_id
    from reports.report import best_confusion_figure

    assert runs.files_run(copy.info.run_id) == original.info.run_id
    reused_row = runs.trials[runs.trials.trial_key == key].iloc[0]
    assert best_confusion_figure(runs, reused_row) is not None  # the copy has no confusion matrix itself
    out = night["folder"] / "export-reused"
    result = run_cli("export", str(night["repo"] / "night-b.yaml"), "--workdir", str(night["folder"] / "wb"),
                     "--out", str(out), "--trial", key, "--no-register", "--allow-baseline")
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((out / "export.json").read_text())
    assert meta["run_id"] == copy.info.run_id and meta["artefacts_run_id"] == original.info.run_id
    assert f"trained in MLflow run `{original.info.run_id}`" in (out / "model_card.md").read_text()


def test_the_plan_estimate_is_within_2x_of_the_real_time(night):
    plan = json.loads(night["plan"].stdout)
    estimate, took = plan["estimate_seconds"], night["took"]
    print(f"estimated {estimate:.1f} s, took {took:.1f} s ({plan['estimate_basis']})")
    assert "finished trial(s) in this tracking store" in plan["estimate_basis"]
    assert estimate / 2 <= took <= estimate * 2, (estimate, took)


def test_no_reuse_trains_again_and_warm_start_informs_an_optuna_study(night, tmp_path):
    folder = night["folder"]
    c = write(folder, "night-c", [0], tracking={"uri": night["store"]})
    counter = tmp_path / "count.txt"
    result = run_cli("run", str(c), "--workdir", str(folder / "wc"), "--no-reuse",
                     env={"VIDEOSWEEP_FAULT": f"count:@{counter}"})
    assert result.returncode == 0 and len(trainings(counter)) == 1  # finished in night-a, trained anyway
    d = write(folder, "night-d", [0, 8, 16, 24], tracking={"uri": night["store"]},
              search={"strategy": "optuna", "trials": 1, "warm_start": ["night-a"]})
    result = run_cli("run", str(d), "--workdir", str(folder / "wd"), env={"VIDEOSWEEP_FAULT": f"count:@{counter}"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 warm-start trial(s) added from night-a" in result.stdout
    trials = study_of(folder / "wd", "night-d").trials
    warm = [t for t in trials if t.user_attrs.get("warm_start_from") == "night-a"]
    assert sorted(t.params["layer_1_size"] for t in warm) == [0, 8]
    keyed = [t for t in trials if t.user_attrs.get("trial_key")]
    assert len(keyed) == 1 and keyed[0].user_attrs.get("reused_from")  # every point finished: nothing trained
    assert len(trainings(counter)) == 1
    # The random strategy takes a warm start too (its sampler draws regardless; the study and report have them).
    from runner.spec.metrics import objective
    from runner.search.reuse import warm_start
    from runner.spec.sweep import load_sweep

    r = load_sweep(write(folder, "night-r", [0, 8, 16, 24], tracking={"uri": night["store"]},
                         search={"strategy": "random", "trials": 1, "warm_start": ["night-a"]}))
    study = optuna.create_study(direction="maximize")
    assert warm_start(study, r, night["store"], objective("val_accuracy").final).added == 2
    assert sorted(t.params["layer_1_size"] for t in study.trials) == [0, 8]
    assert all(t.user_attrs["warm_start_from"] == "night-a" and t.state.name == "COMPLETE" for t in study.trials)


def test_a_source_whose_artefacts_vanished_is_trained_again_and_said_so(night, tmp_path):
    """(Run after the tests that read night-b's artefacts.) A grid refuses such a source before it starts;
    a sampler's trial finds it only at run time: then it is trained, with a line saying why."""
    import shutil
    from urllib.parse import urlsplit

    client = night["client"]
    _, runs = runs_of(client, "night-b")
    source = next(r for r in runs if r.data.params["layer_1_size"] == "16")
    shutil.rmtree(Path(urlsplit(source.info.artifact_uri).path) / "trial")
    e = write(night["folder"], "night-e", [16], tracking={"uri": night["store"]},
              search={"strategy": "random", "trials": 1})
    counter = tmp_path / "count.txt"
    result = run_cli("run", str(e), "--workdir", str(tmp_path / "we"), env={"VIDEOSWEEP_FAULT": f"count:@{counter}"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"the artefacts of its earlier run {source.info.run_id} are gone" in result.stdout
    assert len(trainings(counter)) == 1
    _, copies = runs_of(client, "night-e")
    assert len(copies) == 1 and "videosweep.reused_from" not in copies[0].data.tags


def test_a_stop_rule_stops_handing_out_trials_and_resume_keeps_it_stopped(tmp_path, cache_dir):
    sweep = write(tmp_path, "night-stop", [0, 8, 16], search={"stop": {"target": 0.0}})
    workdir, counter = tmp_path / "work", tmp_path / "count.txt"
    env = {"VIDEOSWEEP_FAULT": f"count:@{counter}"}
    result = run_cli("run", str(sweep), "--workdir", str(workdir), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "stopped: target val_accuracy >= 0 reached by trial #0" in result.stdout
    assert len(trainings(counter)) == 1  # one worker: it checks the rule before each claim
    assert "target val_accuracy" in study_of(workdir, "night-stop").user_attrs["stop_reason"]
    status = run_cli("status", str(sweep), "--workdir", str(workdir))
    assert "stopped: target val_accuracy" in status.stdout
    parent, _ = runs_of(MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}"), "night-stop")
    assert parent.data.tags["videosweep.stop_reason"].startswith("target val_accuracy")
    report = run_cli("report", str(sweep), "--workdir", str(workdir))
    assert report.returncode == 0 and "stopped early" in report.stdout
    page = (workdir / "report" / "report.html").read_text()
    assert page.index("The sweep stopped early: target val_accuracy") < page.index("Leaderboard")
    again = run_cli("resume", str(sweep), "--workdir", str(workdir), env=env)
    assert again.returncode == 0 and "nothing to run: sweep stopped" in again.stdout
    assert len(trainings(counter)) == 1
    going_on = run_cli("resume", str(sweep), "--workdir", str(workdir), "--ignore-stop", env=env)
    assert going_on.returncode == 0, going_on.stderr[-2000:]
    assert len(trainings(counter)) == 3
    assert {t.state.name for t in study_of(workdir, "night-stop").trials} == {"COMPLETE"}


def test_a_trial_past_its_timeout_is_killed_and_its_stalled_worker_notified(tmp_path, cache_dir):
    """A trial that hangs (sleeps for 10 minutes) is killed at `--trial-timeout`, fails for good with the reason,
    and the notifier hears of the stalled worker."""
    receiver = Receiver()
    try:
        sweep = write(tmp_path, "night-stall", [8], notify={"url": receiver.url, "on": ["stalled"]})
        workdir = tmp_path / "work"
        started = time.time()
        result = run_cli("run", str(sweep), "--workdir", str(workdir), "--trial-timeout", "10",
                         env={"VIDEOSWEEP_FAULT": "sleep:layer_1_size=8@600"})
        assert result.returncode == 1, result.stderr[-2000:]  # a trial failed for good
        assert time.time() - started < 300  # killed, not slept out
        [trial] = study_of(workdir, "night-stall").trials
        assert trial.state.name == "FAIL" and "timed out after 10 s" in trial.user_attrs["failure"]
        assert [body["event"] for body in receiver.bodies] == ["stalled"]  # end and failure were not chosen
        assert "timed out after 10 s" in receiver.bodies[0]["text"]
        notes = list((workdir / "failures").glob("*.txt"))  # where the last line points, even for a killed worker
        assert len(notes) == 1 and "timed out after 10 s" in notes[0].read_text()
    finally:
        receiver.close()
