"""Reuse and warm start read a shared, untrusted tracking store: what anyone who can write it may plant there
(NaN metrics, copies whose tags name other runs and local paths, many runs and sweeps), on a real MLflow store."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from runner.search import reuse
from runner.tracking import mlflow_runs
from runner.search.reuse import REUSED_TAG
from runner.tracking.mlflow_runs import KEY_TAG, ROLE, STATE

KEYS = [f"{n:012x}" for n in range(1, 7)]


def plant(client: MlflowClient, experiment: str, key: str, metrics: dict[str, float], tags: dict | None = None,
          params: dict | None = None, artefacts: bool = True) -> str:
    """A finished trial run, written straight to the store with MLflow's own client (as anyone could)."""
    run_id = client.create_run(experiment, tags={ROLE: "trial", KEY_TAG: key, STATE: "finished",
                                                 **(tags or {})}).info.run_id
    for name, value in metrics.items():
        client.log_metric(run_id, name, value)
    for name, value in (params or {}).items():
        client.log_param(run_id, name, value)
    if artefacts:
        client.log_text(run_id, "{}", "trial/results.json")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def new_store(folder: Path) -> tuple[str, MlflowClient]:
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    return uri, mlflow_runs.client(uri)


def new_experiment(client: MlflowClient, folder: Path, name: str) -> str:
    return client.create_experiment(name, artifact_location=(folder / name).as_uri())


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    return (folder, *new_store(folder))


def test_a_source_is_an_original_whose_metrics_are_all_finite(store):
    folder, _, client = store
    experiment = new_experiment(client, folder, "sources")
    plant(client, experiment, KEYS[0], {"val_accuracy_best": math.nan})
    plant(client, experiment, KEYS[1], {"val_accuracy_best": 0.9, "val_loss_best": math.inf})
    copy = plant(client, experiment, KEYS[2], {"val_accuracy_best": 0.9}, tags={REUSED_TAG: "someone-else"})
    good = plant(client, experiment, KEYS[3], {"val_accuracy_best": 0.5})
    runs = client.search_runs([experiment])
    found = reuse.sources(runs, "val_accuracy_best")
    assert {key: run.info.run_id for key, run in found.items()} == {KEYS[3]: good}
    assert copy not in {run.info.run_id for run in found.values()}


def test_artefacts_are_asked_of_the_store_by_run_id_never_a_tag(store):
    """A tag naming a local folder (someone else's, full of files) is never looked at, and never copied."""
    folder, _, client = store
    victim = folder / "victim"
    (victim / "trial").mkdir(parents=True)
    (victim / "trial" / "secret.txt").write_text("private")
    experiment = new_experiment(client, folder, "uris")
    without = plant(client, experiment, KEYS[0], {"val_accuracy_best": 0.5}, artefacts=False,
                    tags={reuse.ARTIFACT_TAG: victim.as_uri()})
    assert not reuse.artifacts_present(client, client.get_run(without))
    kept = plant(client, experiment, KEYS[1], {"val_accuracy_best": 0.5},
                 tags={reuse.ARTIFACT_TAG: (folder / "nothing-here").as_uri()})
    assert reuse.artifacts_present(client, client.get_run(kept))


def test_a_reused_copy_is_never_a_finished_trial_and_is_never_trained_into(tmp_path):
    """A copy has no artefacts of its own: the key's run is not 'finished with its model' (which made
    `resume --no-reuse --retry-failed` fail downloading results.json), and training it starts a fresh run."""
    from runner.tracking.mlflow_runs import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path, "t")
    parent = tracker.client.create_run(tracker.experiment_id).info.run_id
    copy = plant(tracker.client, tracker.experiment_id, KEYS[0], {"val_accuracy_best": math.nan},
                 tags={REUSED_TAG: "elsewhere", reuse.ARTIFACT_TAG: "file:///nowhere"}, artefacts=False)
    assert tracker.finished_trial(KEYS[0]) is None
    fresh = tracker.trial_run(parent, KEYS[0], {"layer_1_size": 0}, {})
    assert fresh != copy and tracker.client.get_run(copy).info.lifecycle_stage == "deleted"
    assert REUSED_TAG not in tracker.client.get_run(fresh).data.tags


def test_a_copy_names_its_source_as_the_store_has_it_not_as_its_tags_say(tmp_path, store):
    from runner.tracking.mlflow_runs import Tracker

    folder, uri, client = store
    experiment = new_experiment(client, folder, "planted-tags")
    source = plant(client, experiment, KEYS[4], {"val_accuracy_best": 0.5},
                   tags={reuse.ARTIFACT_TAG: "file:///home/victim/private-project", "videosweep.sweep": "forged"})
    tracker = Tracker(uri, tmp_path, "mine")
    parent = tracker.client.create_run(tracker.experiment_id).info.run_id
    copy = reuse.copy_run(tracker, parent, KEYS[4], {}, client.get_run(source), {})
    tags = tracker.client.get_run(copy).data.tags
    assert tags[REUSED_TAG] == source and tags[reuse.ARTIFACT_TAG] == client.get_run(source).info.artifact_uri
    assert tags["reused_sweep"] == "planted-tags"


def keyed_sweep(folder: Path, sizes: list[int], name: str, **extra) -> tuple[Path, dict[int, tuple[str, dict]]]:
    """A sweep file over `layer_1_size` in `sizes`, and each size's trial key and parameters (as a trial run logs
    them)."""
    from runner.search.expand import expand_grid
    from runner.spec.sweep import load_sweep
    from tests.conftest import SEALS
    from tests.runner.execution.test_run import FEATURES, write_sweep
    from zoo import load_dataset

    space = [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": sizes}]
    grid = expand_grid(load_sweep(write_sweep(folder, space, name=f"{name}-grid")), load_dataset(SEALS).fingerprint)
    points = {spec.used_flat()["layer_1_size"]: (key, {k: str(v) for k, v in spec.used_flat().items()})
              for key, spec in zip(grid.keys, grid.trials)}
    return write_sweep(folder, space, name=name, **extra), points


def test_warm_start_skips_non_finite_values_and_counts_them(tmp_path, store):
    folder, uri, client = store
    experiment = new_experiment(client, folder, "donor-nan")
    from runner.spec.sweep import load_sweep

    path, points = keyed_sweep(tmp_path, [0], "warm", search={"strategy": "optuna", "trials": 1,
                                                              "warm_start": ["donor-nan"]})
    sweep, (key, params) = load_sweep(path), points[0]
    plant(client, experiment, key, {"val_accuracy_best": math.nan}, params=params)
    plant(client, experiment, key, {"val_accuracy_best": math.inf}, params=params)
    plant(client, experiment, key, {"val_accuracy_best": 0.75}, params=params)
    study = optuna.create_study(direction="maximize")
    done = reuse.warm_start(study, sweep, uri, "val_accuracy_best")
    assert (done.added, done.not_finite) == (1, 2) and [t.value for t in study.trials] == [0.75]
    assert done.describe() == ("1 warm-start trial(s) added from donor-nan, 2 warm-start run(s) skipped: "
                               "val_accuracy_best is not a finite number")


def test_what_is_read_is_capped_and_said(tmp_path, monkeypatch):
    """Planted sweeps and runs cost a bounded read: at most MAX_SWEEPS sweeps, MAX_RUNS runs (MAX_RUNS_PER_KEY
    for one key), each cut named."""
    folder = tmp_path / "crowded"
    uri, client = new_store(folder)
    monkeypatch.setattr(reuse, "MAX_SWEEPS", 2)
    monkeypatch.setattr(reuse, "MAX_RUNS", 3)
    monkeypatch.setattr(reuse, "MAX_RUNS_PER_KEY", 2)
    experiments = [new_experiment(client, folder, f"crowd-{n}") for n in range(2)]
    for n in range(4):
        plant(client, experiments[0], KEYS[0], {"val_accuracy_best": 0.5 + n / 10}, artefacts=False)
    found = reuse.finished_runs(client)
    assert len(found.runs) == 3 and found.capped == [
        "only the 2 most recently updated sweeps of the tracking store were looked in",  # Default, crowd-0, crowd-1
        "only 3 finished run(s) of other sweeps were read"]
    source, capped = reuse.find_source(client, "crowd-1", KEYS[0], ["val_accuracy_best"])
    assert source is not None and capped[-1] == f"only 2 finished run(s) of trial {KEYS[0]} were read"
    assert reuse.reusable_keys(uri, "crowd-1", [KEYS[0]], "val_accuracy_best")[1][-1] == \
        "reuse: only 3 finished run(s) of other sweeps were read"
    warm = reuse.warm_start_runs(uri, ["crowd-0"], "val_accuracy_best")["crowd-0"]
    assert len(warm.runs) == 3 and warm.capped == ["only the 3 most recent finished runs of crowd-0 were read"]
    assert reuse.check_sources(uri, "crowd-1", [KEYS[1]], "val_accuracy_best") == \
        ["reuse: only the 2 most recently updated sweeps of the tracking store were looked in",
         "reuse: only 3 finished run(s) of other sweeps were read"]
