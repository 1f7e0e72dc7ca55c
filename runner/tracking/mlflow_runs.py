"""What to record: one MLflow parent run per sweep, one child run per trial key, via `MlflowClient`.

Every call names its run id explicitly (the fluent API's global active run breaks across processes and
threads). A trial's run is found again by its trial-key tag, so a retried or resumed trial reuses its run;
runs left RUNNING by a dead process are closed as KILLED when the sweep starts again. Per-epoch metrics go in
one `log_batch` per epoch. Embedded default: SQLite in the workdir, artefacts under `<workdir>/mlartifacts`.
The runner writes MLflow only through `Tracker` (its methods, never a raw client call elsewhere), and opens
every client with `client`; reports/ still writes its report and export artefacts itself.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from runner.retry import retry, tracking_budget
from runner.spec.metrics import CONTINUED_METRIC, EPOCH_METRICS, final_metrics
from runner.tracking import provenance
from runner.workdir import CHECKPOINT_FOLDER
from zoo.baselines import SPLIT_NAMES
from zoo.errors import StoreUnreachable, UserError, one_line
from zoo.secrets import mask_text, mask_url

ROLE = "videosweep.role"
KEY_TAG = "videosweep.trial_key"  # a trial run's key (in the study it is the attribute queue.KEY_ATTR)
POINT_TAG = "videosweep.point_key"  # the point a seed repeat belongs to (training.repeats > 1): groups its runs
REPEAT_TAG = "videosweep.repeat"  # which seed repeat of its point a trial run is (0 is the point's own seed)
STATE = "videosweep.state"
SWEEP = "videosweep.sweep"
FAILURE_KIND_TAG = "videosweep.failure_kind"  # oom: the trial ran out of memory (runner.memory)
REUSED_TAG = "videosweep.reused_from"  # a copy of another sweep's run (runner.search.reuse): not trained, no artefacts
BASELINE_CLASS_TAG = "videosweep.baseline_majority_class"  # .<split>: the class a constant answer would name
LATENCY_DEVICE_TAG = "videosweep.latency_device"  # where a trial's latency_ms / throughput_fps were measured
STARTED_OVER_TAG = "videosweep.started_over"  # why a trial that had checkpointed trained from epoch 0
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
# MLflow's "View run at <uri>" lines would print a tracking URI's password (unpickling is off: runner/__init__).
os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # tqdm bars between our own lines
logging.getLogger("mlflow").setLevel(logging.ERROR)
logging.getLogger("alembic").setLevel(logging.ERROR)


def default_tracking_uri(workdir: Path) -> str:
    return f"sqlite:///{(workdir / 'mlflow.db').resolve()}"


def given_tracking_uri(flag: str | None, sweep_uri: str | None = None) -> str | None:
    """The tracking URI asked for: --tracking-uri, else $MLFLOW_TRACKING_URI, else the sweep file's tracking.uri;
    None when none is (a sweep then falls back to default_tracking_uri)."""
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or sweep_uri


def check_tracking_reachable(uri: str, workdir: Path) -> None:
    """Fail fast, before anything is written, when the tracking store cannot be reached or refuses us.

    A server's `/health` answers whatever the Host header (MLflow exempts it from --allowed-hosts), so the
    check calls the API the workers will call: a 401 or 403 is one clear line, not a failure in every trial.
    """
    if uri.startswith("sqlite:"):
        return  # the workdir (or the file's folder) is checked when it is created
    if not uri.startswith(("http://", "https://")):
        return  # other stores (a database URL, databricks) are checked when the client connects
    import requests

    base, auth = _api_base(uri)
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def search() -> None:
        response = requests.post(f"{base}/api/2.0/mlflow/experiments/search", json={"max_results": 1},
                                 auth=auth, headers=headers, timeout=(5, 30))  # a server that accepted the
        # connection is there: a slow answer (a loaded host, a cold server) is waited for, not taken for absence
        if response.status_code in (401, 403):
            detail = one_line(response.text)[:120]
            raise UserError(f"the MLflow tracking server {mask_url(uri)} refused us (HTTP {response.status_code}"
                            f"{': ' + detail if detail else ''}); check its --allowed-hosts and credentials")
        if response.status_code >= 500:
            raise requests.HTTPError(f"HTTP {response.status_code}")
        if response.status_code >= 400:
            raise UserError(f"the MLflow tracking server {mask_url(uri)} answered HTTP {response.status_code}")

    def give_up(err: BaseException) -> UserError:
        reason = str(err) if isinstance(err, requests.HTTPError) else type(err).__name__
        return UserError(f"cannot reach the MLflow tracking store {mask_url(uri)}: {reason}")

    retry(search, transient=lambda err: isinstance(err, requests.RequestException),
          budget_seconds=tracking_budget(), give_up=give_up)


def _api_base(uri: str) -> tuple[str, tuple[str, str] | None]:
    """The server's base URL without userinfo, and the basic-auth pair (from the URL or MLflow's variables)."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    base = urlunsplit(parts._replace(netloc=host, query="", fragment="")).rstrip("/")
    user = unquote(parts.username) if parts.username else os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = unquote(parts.password) if parts.password else os.environ.get("MLFLOW_TRACKING_PASSWORD")
    return base, (user, password or "") if user else None


@contextmanager
def tracking_errors(uri: str) -> Iterator[None]:
    """MLflow store trouble (its schema set-up, a database or server error) as one line naming the tracking
    store, never taken for the study's storage."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (MlflowException, SQLAlchemyError) as err:
        raise UserError(f"MLflow tracking store {mask_url(uri)}: {mask_text(one_line(str(err)))[:200]}") from None


def _quoted(value: str) -> str:
    """A string literal for an MLflow filter: MLflow has no escapes, so the quote the value lacks is used."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise UserError(f"{value[:40]!r} cannot be searched for in MLflow (it holds both kinds of quote)")


def typed_param(value: str | None) -> Any:
    """MLflow params are text; numbers become numbers again so that tables sort and plots place them."""
    if value is None or value == "None":
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested mappings as dotted keys, values as text (MLflow params are strings of at most 6000 chars)."""
    flat: dict[str, str] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            flat.update(flatten(value, f"{prefix}{key}."))
    else:
        flat[prefix.rstrip(".")] = (json.dumps(data) if isinstance(data, (list, dict)) else str(data))[:6000]
    return flat


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# Tag: results.json key. The device is tagged `device` when the run starts (runner/tracking/provenance.py), by the same
# function, in the same process.
BACKEND_TAGS = {"backend": "backend", "backend_version": "backend_version", "keras_version": "keras_version"}


# A dead tracking server is not waited on for long: MLflow's own HTTP retries are few, our retry policy decides.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def client(uri: str, seed: bool = False, cache_dir: str | Path | None = None) -> Any:
    """The one way to open an MlflowClient on `uri`: SQLite in WAL mode (with `seed`, a new store is copied from
    the cached empty schema), short HTTP retries."""
    from mlflow import MlflowClient

    if uri.startswith("sqlite:"):
        from runner.sqlite import sqlite_wal_on_connect
        from runner.tracking import embedded_store

        sqlite_wal_on_connect()
        if seed:
            embedded_store.seed(uri, cache_dir)
    for name, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    return MlflowClient(tracking_uri=uri)


def preload_store() -> None:
    """Import what a Tracker's first connection imports (MLflow and its SQL store: about a second on a CPU)."""
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import mlflow.tracking.client  # noqa: F401


def preload_model_logging() -> None:
    """What logging a trial's model computes once per process: MLflow maps every installed distribution to its
    modules to check the model's requirements (about 0.7 s)."""
    try:
        from mlflow.utils.requirements_utils import _init_packages_to_modules_map

        _init_packages_to_modules_map()
    except (ImportError, AttributeError):  # another MLflow: the first model logged pays it, as before
        pass


class Tracker:
    """MLflow access for one sweep: its experiment, parent run and trial runs."""

    def __init__(self, uri: str, workdir: Path, experiment: str, create: bool = True,
                 cache_dir: str | Path | None = None):
        self.uri, self.workdir, self.experiment_name = uri, workdir, experiment
        self.client = client(uri, seed=create, cache_dir=cache_dir)
        self.experiment_id = self._experiment(create)

    # ------------------------------------------------------------------ set-up

    def _experiment(self, create: bool) -> str:
        """The sweep's experiment id, created on first use; connection trouble is retried (runner/retry.py)."""
        return retry(lambda: self._find_or_create_experiment(create),
                     transient=lambda err: not isinstance(err, UserError), budget_seconds=tracking_budget(),
                     give_up=lambda err: StoreUnreachable(  # the preflight already refused a store down from the start
                         f"cannot reach the MLflow tracking store {mask_url(self.uri)}: "
                         f"{mask_text(one_line(str(err)))[:200] or type(err).__name__}"))

    def _find_or_create_experiment(self, create: bool) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            return found.experiment_id
        if not create:
            raise UserError(f"the MLflow store {mask_url(self.uri)} has no experiment {self.experiment_name!r} "
                            "(has the sweep been run?)")
        location = (self.workdir / "mlartifacts").resolve().as_uri() if self.uri.startswith("sqlite:") else None
        try:
            # The kind tag makes MLflow's UI open the experiment on its training-runs view.
            return self.client.create_experiment(self.experiment_name, artifact_location=location,
                                                 tags={"mlflow.experimentKind": "custom_model_development"})
        except MlflowException:  # created meanwhile by another process
            found = self.client.get_experiment_by_name(self.experiment_name)
            if found is not None:
                return found.experiment_id
            raise

    def _find(self, filter_string: str) -> Any | None:
        runs = self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=2,
                                       order_by=["attributes.start_time ASC"])
        return runs[0] if runs else None

    # ------------------------------------------------------------------ the sweep's parent run

    def sweep_run(self, sweep: Any, storage: str, dataset: Any) -> str:
        """The sweep's parent run, created once with the sweep file, its parameters, the dataset and its baselines
        (runner/spec/baselines.py)."""
        from mlflow.entities import Param, RunTag

        from runner.spec.baselines import parent_params, sweep_baselines

        existing = self._find(f"tags.`{ROLE}` = 'sweep'")
        if existing is not None:
            if existing.info.status != "RUNNING":
                self.client.update_run(existing.info.run_id, status="RUNNING")
            return existing.info.run_id
        run = self.client.create_run(self.experiment_id, run_name=sweep.name,
                                     tags={ROLE: "sweep", SWEEP: sweep.name, "strategy": sweep.search.strategy,
                                           "storage": storage, "host": socket.gethostname()})
        run_id = run.info.run_id
        # The tracking server is shared: the sweep's parameters and file both come from its one masked copy (no
        # URI password, no webhook path).
        shared = sweep.shareable()
        params = [Param(k, v) for k, v in flatten(shared).items()]
        params += [Param(k, v) for k, v in parent_params(sweep_baselines(sweep, dataset)).items()]
        for chunk in _chunks(params, 90):
            self.client.log_batch(run_id, params=chunk)
        self.client.log_text(run_id, yaml.safe_dump(shared, sort_keys=False), "sweep.yaml")
        self._log_dataset(run_id, dataset)
        self.client.log_batch(run_id, tags=[RunTag("dataset.fingerprint", dataset.fingerprint)])
        return run_id

    def _log_dataset(self, run_id: str, dataset: Any) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        counts = dataset.class_counts()
        entity = Dataset(name=dataset.name, digest=dataset.fingerprint, source_type="local",
                         source=json.dumps({"uri": str(dataset.root)}),
                         schema=json.dumps({"columns": ["video", "frame", "label", "split"]}),
                         profile=json.dumps({"frames": len(dataset.labels), "videos": len(dataset.videos),
                                             "class_counts": counts}))
        self.client.log_inputs(run_id, [DatasetInput(entity, tags=[InputTag("mlflow.data.context", "training")])])

    def update_sweep(self, run_id: str, counts: dict[str, int], best: tuple[str, float] | None) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        metrics = [Metric(f"trials_{state}", float(n), now, 0) for state, n in counts.items()]
        tags = []
        if best is not None:
            metrics.append(Metric("best_metric", float(best[1]), now, 0))
            tags.append(RunTag("best_trial_key", best[0]))
        self.client.log_batch(run_id, metrics=metrics, tags=tags)

    def log_provenance(self, run_id: str, source: str | None, log_diff: bool = False,
                       webhooks: tuple[str | None, ...] = ()) -> None:
        """The parent run's git tags, with `log_diff` the masked uncommitted diff when dirty (`webhooks`: URLs whose
        path is a secret, masked in it too), and its `environment/` artefacts (runner/tracking/provenance.py)."""
        tags = provenance.git_tags(source)
        if tags:
            self.set_tags(run_id, tags)
            if log_diff and tags[provenance.DIRTY_TAG] == "true":
                diff = provenance.git_diff(str(source), webhooks)
                if diff:
                    self.client.log_text(run_id, diff, provenance.DIFF_ARTIFACT)
        self.client.log_text(run_id, provenance.requirements_txt(), "environment/requirements.txt")
        self.client.log_text(run_id, json.dumps(provenance.environment(), indent=2, sort_keys=True),
                             "environment/environment.json")

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        """Final values (step 0), one batch."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(name, value, now, 0) for name, value in metrics.items()])

    def set_stop_reason(self, run_id: str, tag: str, reason: str | None) -> None:
        """The stop rule that ended the sweep under `tag`; none (it went on, --ignore-stop): an earlier one goes."""
        if reason:
            self.client.set_tag(run_id, tag, reason)
        elif tag in self.client.get_run(run_id).data.tags:
            self.client.delete_tag(run_id, tag)

    def finish_sweep(self, run_id: str, interrupted: bool) -> None:
        self.client.set_terminated(run_id, "KILLED" if interrupted else "FINISHED")

    # ------------------------------------------------------------------ trial runs

    def trial_run(self, parent_id: str, key: str, spec_flat: dict[str, Any], tags: dict[str, Any]) -> str:
        """The trial key's child run: reused if it exists (retry, resume), else created under the parent."""
        from mlflow.entities import Param, RunTag

        existing = self._find(f"tags.`{KEY_TAG}` = {_quoted(key)}")
        if existing is not None and REUSED_TAG in existing.data.tags:  # a copy is never trained or copied into
            self.client.delete_run(existing.info.run_id)  # (its epochs would mix with the new ones)
            existing = None
        all_tags = {STATE: "running", **{k: str(v) for k, v in tags.items()}}
        if existing is not None:
            run_id = existing.info.run_id
            self.client.update_run(run_id, status="RUNNING")
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in all_tags.items()])
            return run_id
        name = f"{spec_flat.get('architecture')}-{key}"
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={"mlflow.parentRunId": parent_id, ROLE: "trial", KEY_TAG: key, **all_tags})
        params = [Param(k, str(v)) for k, v in spec_flat.items()]
        self.client.log_batch(run.info.run_id, params=params)
        return run.info.run_id

    def copied_trial_run(self, parent_id: str, key: str, spec_flat: dict[str, Any], tags: dict[str, Any],
                         metrics: list[Any]) -> str:
        """A key's child run answered from another sweep's run (runner/search/reuse.py): its `metrics` (MLflow Metric
        entities, final and per epoch) copied in, FINISHED."""
        from mlflow.entities import RunTag

        run_id = self.trial_run(parent_id, key, spec_flat, tags)
        for chunk in _chunks(metrics, 900):
            self.client.log_batch(run_id, metrics=chunk)
        self.client.log_batch(run_id, tags=[RunTag(STATE, "finished")])
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def mark_started_over(self, run_id: str, reason: str) -> None:
        self.set_tags(run_id, {STARTED_OVER_TAG: reason[:5000]})

    def finished_trial(self, key: str) -> tuple[str, dict[str, Any]] | None:
        """(run id, results) of the key's run if it already FINISHED with its model, else None."""
        existing = self._find(f"tags.`{KEY_TAG}` = {_quoted(key)}")
        if existing is None or existing.info.status != "FINISHED" or existing.data.tags.get(STATE) != "finished" \
                or REUSED_TAG in existing.data.tags:  # a reused copy has no model of its own
            return None
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            path = self.client.download_artifacts(existing.info.run_id, "trial/results.json", folder)
            results = json.loads(Path(path).read_text())  # JSON only: nothing from the store is unpickled
        return existing.info.run_id, results

    def log_epoch(self, run_id: str, row: dict[str, Any]) -> None:
        self.log_epochs(run_id, [row])

    def log_epochs(self, run_id: str, rows: list[dict[str, Any]]) -> None:
        """Per-epoch metrics at their steps (MLflow takes at most 1000 values a batch)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(name, float(row[name]), now, int(row["step"])) for row in rows for name in EPOCH_METRICS
                   if name in row]
        for chunk in _chunks(metrics, 900):
            self.client.log_batch(run_id, metrics=chunk)

    def mark_continued(self, run_id: str, step: int) -> None:
        """Training carried on from a checkpoint with epoch step `step`: marked once per step."""
        if any(int(m.step) == step for m in self.client.get_metric_history(run_id, CONTINUED_METRIC)):
            return  # an earlier attempt continued from the same checkpoint and died before its next one
        self.client.log_metric(run_id, CONTINUED_METRIC, float(step), step=step)

    def last_step(self, run_id: str) -> int:
        """The last epoch step the run holds (-1: none), where a continued trial's epochs carry on."""
        history = self.client.get_metric_history(run_id, "val_accuracy")
        return max((int(m.step) for m in history), default=-1)

    def restart_trial_run(self, run_id: str | None, parent_id: str, key: str, spec_flat: dict[str, Any],
                          tags: dict[str, Any]) -> str:
        """A trial that starts over gets a fresh run: the old one (its epochs from the earlier attempt) is
        deleted, so the key still has one run and each step is logged once."""
        if run_id is not None:
            self.client.set_tag(run_id, STATE, "started over")
            self.client.set_terminated(run_id, "KILLED")
            self.client.delete_run(run_id)
        return self.trial_run(parent_id, key, spec_flat, tags)

    def finish_trial(self, run_id: str, results: dict[str, Any], trial_dir: Path, model: Any | None,
                     state: str = "finished") -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        metrics = [Metric(name, value, now, 0) for name, value in final_metrics(results).items()]
        # Where it ran, as the trial saw it (backend and versions).
        ran = {tag: results.get(key) for tag, key in BACKEND_TAGS.items() if results.get(key) is not None}
        tags = [RunTag(STATE, state), *(RunTag(k, str(v)) for k, v in ran.items())]
        if results.get("model_latency_device"):  # latency_ms and throughput_fps were measured there
            tags.append(RunTag(LATENCY_DEVICE_TAG, str(results["model_latency_device"])))
        if results.get("rung") is not None:
            tags.append(RunTag("videosweep.rung", str(results["rung"])))
        tags += [RunTag(f"{BASELINE_CLASS_TAG}.{split}", str(results[key])) for split in SPLIT_NAMES.values()
                 if (key := f"baseline_{split}_majority_class") in results]
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        for entry in sorted(Path(trial_dir).iterdir()):
            if entry.name == CHECKPOINT_FOLDER:  # a paused trial's checkpoint stays where it runs
                continue
            if entry.is_dir():
                self.client.log_artifacts(run_id, str(entry), artifact_path=f"trial/{entry.name}")
            else:
                self.client.log_artifact(run_id, str(entry), artifact_path="trial")
        if model is not None:
            self.log_model(run_id, model)
        self.client.set_terminated(run_id, "FINISHED")

    def log_model(self, run_id: str, model: Any, name: str = "model", registered_name: str | None = None,
                  metadata: dict[str, Any] | None = None) -> Any:
        """Log a Keras model with an input signature (optionally registered): on TensorFlow in MLflow's TensorFlow
        flavour, on other backends in its backend-neutral Keras flavour (an MLflow without one: the .keras file
        as an artefact, which `export` and `predict` read from the trial folder anyway)."""
        import mlflow
        import numpy as np
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        # Model.log resolves its client and the logged model's experiment from process-wide settings.
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_experiment(experiment_id=self.experiment_id)
        shape = tuple(-1 if d is None else d for d in model.input_shape)
        output = tuple(-1 if d is None else d for d in model.output_shape)
        signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float32"), shape)]),
                                   outputs=Schema([TensorSpec(np.dtype("float32"), output)]))
        from runner import backends

        backend = backends.active()
        flavour: Any = None
        if backend == "tensorflow":  # as before: models logged by earlier versions load the same way
            flavour, requirements = mlflow.tensorflow, ["tensorflow", "keras"]
        else:
            requirements = ["keras", backend]
            try:
                import mlflow.keras as flavour  # backend-neutral Keras 3 flavour (MLflow >= 2.11)
            except ImportError:
                return self._log_keras_file(run_id, model, name)  # no flavour loads without TensorFlow
        if flavour is mlflow.tensorflow:
            return flavour.log_model(model, name=name, run_id=run_id, signature=signature,
                                     pip_requirements=requirements, metadata=metadata,
                                     registered_model_name=registered_name)
        from mlflow.models import Model  # mlflow.keras.log_model takes no run_id: log as it does, into this run

        return Model.log(artifact_path=None, name=name, flavor=flavour, model=model, run_id=run_id,
                         signature=signature, pip_requirements=requirements, metadata=metadata,
                         registered_model_name=registered_name)

    def log_files(self, run_id: str, files: list[Path], folder: str) -> None:
        """Files a report or an export wrote, as the run's artefacts under `folder`."""
        for file in files:
            self.client.log_artifact(run_id, str(file), artifact_path=folder)

    def register_version(self, run_id: str, model_uri: str, model_id: str | None, alias: str,
                         tags: dict[str, str]) -> str:
        """A logged model as a new version of the registered model named after the sweep, given `alias`."""
        from mlflow.exceptions import MlflowException

        name = self.experiment_name
        try:
            self.client.create_registered_model(name, description=f"Best models of the videosweep sweep {name}")
        except MlflowException as err:
            if "ALREADY_EXISTS" not in str(err.error_code):
                raise
        version = self.client.create_model_version(name, model_uri, run_id=run_id, model_id=model_id,
                                                   tags=tags).version
        self.client.set_registered_model_alias(name, alias, str(version))
        return str(version)

    def _log_keras_file(self, run_id: str, model: Any, name: str) -> None:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            model.save(Path(folder) / "model.keras")
            self.client.log_artifact(run_id, str(Path(folder) / "model.keras"), artifact_path=name)

    def fail_trial(self, run_id: str, reason: str, traceback_path: Path | None, kind: str | None = None) -> None:
        """A failed trial's run: its reason, its traceback and its kind (`oom` when it ran out of memory)."""
        from mlflow.entities import RunTag

        tags = [RunTag(STATE, "failed"), RunTag("failure", reason[:5000])]
        self.client.log_batch(run_id, tags=tags + ([RunTag(FAILURE_KIND_TAG, kind)] if kind else []))
        if traceback_path is not None and traceback_path.is_file():
            self.client.log_artifact(run_id, str(traceback_path), artifact_path="failure")
        self.client.set_terminated(run_id, "FAILED")

    def preempt_trial(self, run_id: str, reason: str) -> None:
        """A trial stopped by a preemption: its run ends KILLED, to be continued (from its checkpoint) by resume."""
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(STATE, "preempted"), RunTag("preempted", reason[:5000])])
        self.client.set_terminated(run_id, "KILLED")

    def prune_trial(self, run_id: str, reason: str) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(STATE, "pruned"), RunTag("pruned", reason)])
        self.client.set_terminated(run_id, "KILLED")

    def close_dead_runs(self, settled_keys: Callable[[], set[str]]) -> int:
        """Trial runs left RUNNING by a dead process -> KILLED.

        `settled_keys` (keys running or finished in the study) is asked after the runs are listed: a worker
        claims in the study before it opens a run, so a live run's key is always in it.
        """
        closed = 0
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{ROLE}` = 'trial' and "
                                       "attributes.status = 'RUNNING'", max_results=5000)
        if not runs:
            return 0
        live_keys = settled_keys()
        for run in runs:
            if run.data.tags.get(KEY_TAG) not in live_keys:
                self.client.set_tag(run.info.run_id, STATE, "killed")
                self.client.set_terminated(run.info.run_id, "KILLED")
                closed += 1
        return closed
