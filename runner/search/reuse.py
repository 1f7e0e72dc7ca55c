"""Never training the same trial twice, across sweeps of one tracking store; warm-starting a search.

A trial key hashes the canonical parameters, the training settings and the data fingerprint. A key that
finished in any sweep of the tracking store is not trained again: the new sweep's child run copies its
parameters and metrics (final and per epoch), links the original artefacts (their URI as a tag, nothing is
copied) and carries `videosweep.reused_from` = the original run id; the study records the trial as complete
with the reused value. `search.warm_start` adds other sweeps' finished trials to an optuna/random study
(Optuna's public `add_trial`) so its sampler starts informed.

The tracking store is shared and not trusted: a source is an original run (never a reused copy, whose tags
anyone could have written) found by its key, its artefacts are looked up by its run id, a run with a
non-finite metric is neither reused nor a warm start, and what is read is capped (MAX_SWEEPS, MAX_RUNS,
MAX_RUNS_PER_KEY), with a line saying so when a cap cut the reading short.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.spec.metrics import EPOCH_METRICS, FINAL_METRICS, STUDY_RESULTS
from runner.spec.trial_spec import with_unused
from runner.tracking import mlflow_runs
from runner.tracking.mlflow_runs import KEY_TAG, REUSED_TAG, ROLE, typed_param
from zoo.errors import UserError

ARTIFACT_TAG = "videosweep.reused_artifact_uri"
REUSED_ATTR = "reused_from"  # a study trial answered from another sweep's run (its MLflow run id)
WARM_ATTR = "warm_start_from"  # a study trial added from another sweep (not trained, not in the budget)
WARM_DONE_ATTR = "warm_started"
_FINISHED = f"tags.`{ROLE}` = 'trial' and attributes.status = 'FINISHED'"


# Parameters added later: runs from before them carry the default.
_DEFAULTS = {"precision": "float32"}

# What one look at the (shared, untrusted) store reads at most: anyone can plant runs and sweeps there.
MAX_SWEEPS = 500  # sweeps looked in, the most recently updated first
MAX_RUNS = 5000  # finished trial runs read for a whole sweep's keys, or from one warm-start sweep
MAX_RUNS_PER_KEY = 20  # earlier runs of one key looked at when a worker claims it


@dataclass
class Found:
    """Runs read from the tracking store, and what was left unread (one phrase per cap hit; empty: none)."""

    runs: list[Any] = field(default_factory=list)
    capped: list[str] = field(default_factory=list)


def store_exists(tracking_uri: str) -> bool:
    """Whether the tracking store may hold runs (a local SQLite file is never created just to look)."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).is_file()
    return True


def _experiment_ids(client: Any, exclude: str | None) -> tuple[list[str], list[str]]:
    """Ids of the store's sweeps (but `exclude`), at most MAX_SWEEPS; and a phrase when there were more."""
    found = client.search_experiments(max_results=MAX_SWEEPS + 1, order_by=["last_update_time DESC"])
    capped = [f"only the {MAX_SWEEPS} most recently updated sweeps of the tracking store were looked in"] \
        if len(found) > MAX_SWEEPS else []
    return [e.experiment_id for e in found[:MAX_SWEEPS] if e.name != exclude], capped


def finished_runs(client: Any, exclude_sweep: str | None = None, key: str | None = None) -> Found:
    """Finished trial runs of the store's sweeps (but `exclude_sweep`), of one key if given: at most MAX_RUNS
    (MAX_RUNS_PER_KEY for one key), the oldest first within each batch of 50 sweeps."""
    ids, capped = _experiment_ids(client, exclude_sweep)
    query = _FINISHED + (f" and tags.`{KEY_TAG}` = '{key}'" if key else "")
    limit = MAX_RUNS_PER_KEY if key else MAX_RUNS
    runs: list[Any] = []
    for start in range(0, len(ids), 50):
        runs += client.search_runs(ids[start:start + 50], filter_string=query, max_results=limit + 1 - len(runs),
                                   order_by=["attributes.start_time ASC"])
        if len(runs) > limit:
            capped.append(f"only {limit} finished run(s) " + (f"of trial {key}" if key else "of other sweeps")
                          + " were read")
            break
    return Found(runs[:limit], capped)


def finite_value(value: float) -> bool:
    """Not NaN and not infinite (MLflow's SQL stores keep an infinity as the largest float)."""
    return math.isfinite(value) and abs(value) < sys.float_info.max


def finite(run: Any) -> bool:
    """Whether every metric the run holds is a finite number (NaN or infinity: planted or broken, never reused)."""
    return all(finite_value(value) for value in run.data.metrics.values())


def usable(run: Any, finals: list[str]) -> bool:
    """Whether a run can stand for its key: an original (not a reused copy), holding every metric in `finals`,
    all of its metrics finite."""
    return REUSED_TAG not in run.data.tags and all(name in run.data.metrics for name in finals) and finite(run)


def sources(runs: list[Any], metric_final: str) -> dict[str, Any]:
    """The first usable run of each key (originals only: a copy's tags would name another run)."""
    found: dict[str, Any] = {}
    for run in runs:
        key = run.data.tags.get(KEY_TAG)
        if key and key not in found and usable(run, [metric_final]):
            found[key] = run
    return found


def artifacts_present(client: Any, run: Any) -> bool:
    """Whether the original trial's artefacts are still there, asked of the store by the run's id."""
    try:
        return bool(client.list_artifacts(run.info.run_id, "trial"))
    except Exception:  # noqa: BLE001 - unreachable or gone: train it
        return False


def find_source(client: Any, sweep_name: str, key: str, finals: list[str]) -> tuple[Any | None, list[str]]:
    """The first usable earlier run of `key` in another sweep (holding every metric in `finals`), and what was
    left unread."""
    found = finished_runs(client, sweep_name, key)
    return next((run for run in found.runs if usable(run, finals)), None), found.capped


def copy_run(tracker: Any, parent_id: str, key: str, spec_flat: dict[str, Any], source: Any,
             tags: dict[str, Any]) -> str:
    """The new sweep's child run for a reused key: parameters, final metrics, per-epoch histories, a link to
    the original artefacts and `videosweep.reused_from`; FINISHED."""
    from mlflow.entities import Metric

    client = tracker.client
    now = int(time.time() * 1000)
    metrics = [Metric(name, value, now, 0) for name, value in source.data.metrics.items()
               if name not in EPOCH_METRICS]
    for name in EPOCH_METRICS:
        metrics += [Metric(name, m.value, m.timestamp, m.step) for m in client.get_metric_history(source.info.run_id,
                                                                                                   name)]
    # Only what the store says of the source run itself (its id, artefact URI and sweep), never its tags.
    return tracker.copied_trial_run(parent_id, key, spec_flat, {**tags, REUSED_TAG: source.info.run_id,
                                                                ARTIFACT_TAG: source.info.artifact_uri,
                                                                "reused_sweep": sweep_of(client, source)}, metrics)


def sweep_of(client: Any, run: Any) -> str:
    """The sweep (MLflow experiment) a run belongs to."""
    try:
        return str(client.get_experiment(run.info.experiment_id).name)
    except Exception:  # noqa: BLE001 - only a label
        return "?"


def study_attrs(source: Any) -> dict[str, Any]:
    """The results a finished study trial keeps (metrics.STUDY_RESULTS), from the source's metrics."""
    results = {FINAL_METRICS[name]: value for name, value in source.data.metrics.items() if name in FINAL_METRICS}
    return {name: results.get(name) for name in STUDY_RESULTS}


def reusable_keys(tracking_uri: str, sweep_name: str, keys: list[str],
                  metric_final: str) -> tuple[dict[str, Any], list[str]]:
    """Of `keys`, those that finished in another sweep of the store (key -> source run; {} without a store),
    and lines saying what was left unread."""
    if not keys or not store_exists(tracking_uri):
        return {}, []
    read = finished_runs(mlflow_runs.client(tracking_uri), sweep_name)
    found = sources(read.runs, metric_final)
    return {key: found[key] for key in keys if key in found}, [f"reuse: {phrase}" for phrase in read.capped]


def check_sources(tracking_uri: str, sweep_name: str, keys: list[str], metric_final: str) -> list[str]:
    """Preflight: exit 2 when a source's artefacts are gone; else lines saying what was left unread."""
    found, capped = reusable_keys(tracking_uri, sweep_name, keys, metric_final)
    client = mlflow_runs.client(tracking_uri) if found else None
    for key, run in found.items():
        if not artifacts_present(client, run):
            raise UserError(f"trial {key} would reuse run {run.info.run_id} of sweep {sweep_of(client, run)}, "
                            f"whose artefacts are gone ({run.info.artifact_uri}); run with --no-reuse to train "
                            "it again")
    return capped


# ---------------------------------------------------------------- warm start (optuna, random)


def _as_trial(sweep: Any, run: Any, metric_final: str, source: str) -> Any | None:
    """The run as a finished Optuna trial in this sweep's parameter space, None when it lies outside it."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from runner.search import subspace
    from runner.search.expand import judge
    from runner.spec.sweep import Range

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


def warm_start_runs(tracking_uri: str, names: list[str], metric_final: str) -> dict[str, Found]:
    """Each named sweep's finished trial runs holding the metric (at most MAX_RUNS, the most recent); one line
    (exit 2) for a sweep the store does not hold."""
    if not names:
        return {}
    client = mlflow_runs.client(tracking_uri) if store_exists(tracking_uri) else None
    found: dict[str, Found] = {}
    for name in names:
        experiment = client.get_experiment_by_name(name) if client is not None else None
        if experiment is None:
            raise UserError(f"search.warm_start: the tracking store holds no sweep {name!r} (set mlflow_runs.uri or "
                            "--tracking-uri to the store it ran in)")
        runs = client.search_runs([experiment.experiment_id], filter_string=_FINISHED, max_results=MAX_RUNS + 1,
                                  order_by=["attributes.start_time DESC"])
        capped = [f"only the {MAX_RUNS} most recent finished runs of {name} were read"] if len(runs) > MAX_RUNS \
            else []
        found[name] = Found([run for run in runs[:MAX_RUNS] if metric_final in run.data.metrics], capped)
    return found


@dataclass
class WarmStart:
    """What a warm start added to the study, what it skipped and what it left unread."""

    metric: str
    sources: list[str] = field(default_factory=list)
    added: int = 0
    not_finite: int = 0  # runs whose value is NaN or infinite: Optuna takes none (planted or broken)
    capped: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """A phrase for the sweep's opening line; empty when there is nothing to say."""
        parts = [f"{self.added} warm-start trial(s) added from {', '.join(self.sources)}"] if self.added else []
        if self.not_finite:
            parts.append(f"{self.not_finite} warm-start run(s) skipped: {self.metric} is not a finite number")
        return ", ".join(parts + [f"warm start: {phrase}" for phrase in self.capped])


def warm_start(study: Any, sweep: Any, tracking_uri: str, metric_final: str) -> WarmStart:
    """Add the warm-start sweeps' finished trials to a new optuna/random study (once)."""
    from runner.study.storage import retrying

    done = WarmStart(metric_final, list(sweep.search.warm_start))
    if not sweep.search.warm_start or study.user_attrs.get(WARM_DONE_ATTR):
        return done
    for name, found in warm_start_runs(tracking_uri, done.sources, metric_final).items():
        done.capped += found.capped
        for run in found.runs:
            if not finite_value(run.data.metrics[metric_final]):
                done.not_finite += 1
                continue
            trial = _as_trial(sweep, run, metric_final, name)
            if trial is not None:
                retrying(lambda: study.add_trial(trial), "adding a warm-start trial")
                done.added += 1
    study.set_user_attr(WARM_DONE_ATTR, done.added)
    return done
