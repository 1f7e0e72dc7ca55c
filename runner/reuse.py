"""Never training the same trial twice, across sweeps of one tracking store; warm-starting a search.

A trial key hashes the canonical parameters, the training settings and the data fingerprint. A key that
finished in any sweep of the tracking store is not trained again: the new sweep's child run copies its
parameters and metrics (final and per epoch), links the original artefacts (their URI as a tag, nothing is
copied) and carries `videosweep.reused_from` = the original run id; the study records the trial as complete
with the reused value. `search.warm_start` adds other sweeps' finished trials to an optuna/random study
(Optuna's public `add_trial`) so its sampler starts informed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from runner.metrics import EPOCH_METRICS, FINAL_METRICS, STUDY_RESULTS
from runner.spec import with_unused
from runner.tracking import KEY_TAG, ROLE, STATE, SWEEP, typed_param
from zoo.errors import UserError

REUSED_TAG = "videosweep.reused_from"
ARTIFACT_TAG = "videosweep.reused_artifact_uri"
REUSED_ATTR = "reused_from"  # a study trial answered from another sweep's run (its MLflow run id)
WARM_ATTR = "warm_start_from"  # a study trial added from another sweep (not trained, not in the budget)
WARM_DONE_ATTR = "warm_started"
_FINISHED = f"tags.`{ROLE}` = 'trial' and attributes.status = 'FINISHED'"


# Parameters added later: runs from before them carry the default.
_DEFAULTS = {"precision": "float32"}


def store_exists(tracking_uri: str) -> bool:
    """Whether the tracking store may hold runs (a local SQLite file is never created just to look)."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).is_file()
    return True


def client(tracking_uri: str) -> Any:
    import os

    from mlflow import MlflowClient

    for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")):
        os.environ.setdefault(name, value)  # as runner.tracking.Tracker: a dead server is not waited on for long
    if tracking_uri.startswith("sqlite:"):
        from runner.storage import sqlite_wal_on_connect

        sqlite_wal_on_connect()
    return MlflowClient(tracking_uri=tracking_uri)


def _experiment_ids(mlflow: Any, exclude: str | None) -> list[str]:
    return [e.experiment_id for e in mlflow.search_experiments(max_results=50000) if e.name != exclude]


def finished_runs(mlflow: Any, exclude_sweep: str | None = None, key: str | None = None) -> list[Any]:
    """Finished trial runs of every sweep in the store (but `exclude_sweep`), of one key if given."""
    ids = _experiment_ids(mlflow, exclude_sweep)
    query = _FINISHED + (f" and tags.`{KEY_TAG}` = '{key}'" if key else "")
    runs: list[Any] = []
    for start in range(0, len(ids), 50):
        runs += mlflow.search_runs(ids[start:start + 50], filter_string=query, max_results=50000,
                                   order_by=["attributes.start_time ASC"])
    return runs


def sources(runs: list[Any], metric_final: str) -> dict[str, Any]:
    """The first finished run of each key that holds the sweep's metric (copies point at their original)."""
    found: dict[str, Any] = {}
    for run in runs:
        key = run.data.tags.get(KEY_TAG)
        if key and key not in found and metric_final in run.data.metrics:
            found[key] = run
    return found


def origin(run: Any) -> tuple[str, str]:
    """(original run id, original artifact URI) of a finished run, following a reused copy to its source."""
    tags = run.data.tags
    return tags.get(REUSED_TAG, run.info.run_id), tags.get(ARTIFACT_TAG, run.info.artifact_uri)


def artifacts_present(mlflow: Any, run: Any) -> bool:
    """Whether the original trial's artefacts are still there (a local folder, or listed by the server)."""
    run_id, uri = origin(run)
    if uri.startswith("file:") or "://" not in uri:
        folder = Path(unquote(urlsplit(uri).path)) if uri.startswith("file:") else Path(uri)
        return (folder / "trial").is_dir() and any((folder / "trial").iterdir())
    try:
        return bool(mlflow.list_artifacts(run_id))
    except Exception:  # noqa: BLE001 - unreachable or gone: train it
        return False


def find_source(mlflow: Any, sweep_name: str, key: str, metric_final: str) -> Any | None:
    return sources(finished_runs(mlflow, sweep_name, key), metric_final).get(key)


def copy_run(tracker: Any, parent_id: str, key: str, spec_flat: dict[str, Any], source: Any,
             tags: dict[str, Any]) -> str:
    """The new sweep's child run for a reused key: parameters, final metrics, per-epoch histories, a link to
    the original artefacts and `videosweep.reused_from`; FINISHED."""
    from mlflow.entities import Metric, RunTag

    original, uri = origin(source)
    client = tracker.client
    run_id = tracker.trial_run(parent_id, key, spec_flat, {**tags, REUSED_TAG: original, ARTIFACT_TAG: uri,
                                                           "reused_sweep": sweep_of(client, source)})
    now = int(time.time() * 1000)
    metrics = [Metric(name, value, now, 0) for name, value in source.data.metrics.items()
               if name not in EPOCH_METRICS]
    for name in EPOCH_METRICS:
        metrics += [Metric(name, m.value, m.timestamp, m.step) for m in client.get_metric_history(source.info.run_id,
                                                                                                   name)]
    for start in range(0, len(metrics), 900):
        client.log_batch(run_id, metrics=metrics[start:start + 900])
    client.log_batch(run_id, tags=[RunTag(STATE, "finished")])
    client.set_terminated(run_id, "FINISHED")
    return run_id


def sweep_of(mlflow: Any, run: Any) -> str:
    """The sweep (MLflow experiment) a run belongs to."""
    try:
        return str(mlflow.get_experiment(run.info.experiment_id).name)
    except Exception:  # noqa: BLE001 - only a label
        return run.data.tags.get(SWEEP, "?")


def study_attrs(source: Any) -> dict[str, Any]:
    """The results a finished study trial keeps (metrics.STUDY_RESULTS), from the source's metrics."""
    results = {FINAL_METRICS[name]: value for name, value in source.data.metrics.items() if name in FINAL_METRICS}
    return {name: results.get(name) for name in STUDY_RESULTS}


def reusable_keys(tracking_uri: str, sweep_name: str, keys: list[str], metric_final: str) -> dict[str, Any]:
    """Of `keys`, those that finished in another sweep of the store (key -> source run); {} with no store."""
    if not keys or not store_exists(tracking_uri):
        return {}
    found = sources(finished_runs(client(tracking_uri), sweep_name), metric_final)
    return {key: found[key] for key in keys if key in found}


def check_sources(tracking_uri: str, sweep_name: str, keys: list[str], metric_final: str) -> int:
    """Preflight: the number of keys that will be reused; exit 2 when a source's artefacts are gone."""
    found = reusable_keys(tracking_uri, sweep_name, keys, metric_final)
    mlflow = client(tracking_uri) if found else None
    for key, run in found.items():
        if not artifacts_present(mlflow, run):
            raise UserError(f"trial {key} would reuse run {origin(run)[0]} of sweep "
                            f"{sweep_of(mlflow, run)}, whose artefacts are gone ({origin(run)[1]}); "
                            "run with --no-reuse to train it again")
    return len(found)


# ---------------------------------------------------------------- warm start (optuna, random)


def _as_trial(sweep: Any, run: Any, metric_final: str, source: str) -> Any | None:
    """The run as a finished Optuna trial in this sweep's parameter space, None when it lies outside it."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from runner import subspace
    from runner.expand import judge
    from runner.sweep import Range

    params = with_unused({name: typed_param(value) for name, value in run.data.params.items()})
    for index, sub in enumerate(sweep.space):
        chosen: dict[str, Any] = {}
        dists: dict[str, Any] = {}
        if len(sweep.space) > 1:
            chosen[subspace.SUBSPACE] = index
            dists[subspace.SUBSPACE] = CategoricalDistribution(list(range(len(sweep.space))))
        fits = True
        for name, label, values in subspace.swept(sweep, index):
            value = params.get(name)
            if isinstance(values, Range):
                if not isinstance(value, (int, float)) or not values.low <= value <= values.high:
                    fits = False
                    break
                dists[label] = (IntDistribution(int(values.low), int(values.high), log=values.log,
                                                step=int(values.step or 1)) if values.integer
                                else FloatDistribution(values.low, values.high, log=values.log, step=values.step))
                chosen[label] = int(value) if values.integer else float(value)
            else:
                labels = [subspace.choice_label(v) for v in values]
                matches = [lab for lab in labels if str(lab) == str(value) or lab == value]
                if not matches:
                    fits = False
                    break
                dists[label] = CategoricalDistribution(labels)
                chosen[label] = matches[0]
        if not fits:
            continue
        try:
            spec, _ = judge(sweep, subspace.decode(sweep, index, chosen), "")
        except UserError:
            spec = None
        if spec is None or any(str(params.get(k, _DEFAULTS.get(k))) != str(v) for k, v in spec.flat().items()):
            continue
        return optuna.trial.create_trial(params=chosen, distributions=dists,
                                         value=float(run.data.metrics[metric_final]),
                                         user_attrs={WARM_ATTR: source,
                                                     "warm_start_run": run.info.run_id,
                                                     "params": spec.flat()})
    return None


def warm_start_runs(tracking_uri: str, names: list[str], metric_final: str) -> dict[str, list[Any]]:
    """Each named sweep's finished trial runs; one line (exit 2) for a sweep the store does not hold."""
    if not names:
        return {}
    mlflow = client(tracking_uri) if store_exists(tracking_uri) else None
    found: dict[str, list[Any]] = {}
    for name in names:
        experiment = mlflow.get_experiment_by_name(name) if mlflow is not None else None
        if experiment is None:
            raise UserError(f"search.warm_start: the tracking store holds no sweep {name!r} (set tracking.uri or "
                            "--tracking-uri to the store it ran in)")
        runs = mlflow.search_runs([experiment.experiment_id], filter_string=_FINISHED, max_results=50000)
        found[name] = [run for run in runs if metric_final in run.data.metrics]
    return found


def warm_start(study: Any, sweep: Any, tracking_uri: str, metric_final: str) -> int:
    """Add the warm-start sweeps' finished trials to a new optuna/random study (once). Returns how many."""
    from runner.storage import retrying

    if not sweep.search.warm_start or study.user_attrs.get(WARM_DONE_ATTR):
        return 0
    added = 0
    for name, runs in warm_start_runs(tracking_uri, list(sweep.search.warm_start), metric_final).items():
        for run in runs:
            trial = _as_trial(sweep, run, metric_final, name)
            if trial is not None:
                retrying(lambda: study.add_trial(trial), "adding a warm-start trial")
                added += 1
    study.set_user_attr(WARM_DONE_ATTR, added)
    return added
