"""A worker: a long-lived process that claims trials from the study, trains them and reports back.

One worker runs per slot (a GPU index or a CPU share). It imports TensorFlow once and runs up to
`trials_per_process` trials before the scheduler recycles it. While a trial runs, a thread sends heartbeats to
the study; per-epoch values go to the pruner and, as events, to the scheduler's progress display. Whatever a
trial raises is recorded on its Optuna trial (reason + saved traceback) and the worker goes on or exits.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import UserError, one_line


@dataclass
class WorkerConfig:
    """Everything a worker process needs; plain data so it crosses a process boundary."""

    sweep_yaml: str
    sweep_source: str
    workdir: str
    storage_url: str
    cache_dir: str | None = None
    slot: str = "cpu0"
    gpu: str | None = None
    max_trials: int | None = None
    max_retries: int = 1
    cpu_threads: int | None = None
    tracking_uri: str | None = None
    parent_run_id: str | None = None
    memory_limit_mb: float | None = None
    events: Any = field(default=None, repr=False)  # this worker's end of its event pipe to the scheduler, or None


def _emit(config: WorkerConfig, kind: str, **data: Any) -> None:
    if config.events is not None:
        try:
            config.events.send({"kind": kind, "slot": config.slot, "time": time.time(), **data})
        except (BrokenPipeError, OSError):  # the scheduler is gone; the study still records everything
            config.events = None


def configure_process(config: WorkerConfig) -> None:
    """Pin the process to its GPU (or none) and its CPU share before TensorFlow is imported."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the scheduler decides
    os.environ["CUDA_VISIBLE_DEVICES"] = config.gpu if config.gpu is not None else ""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if config.cpu_threads:
        os.environ["OMP_NUM_THREADS"] = str(config.cpu_threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = "1"
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(config.cpu_threads)
    from zoo.stdio import import_tensorflow

    tf: Any = import_tensorflow()  # its logger is set to ERROR: every trial retraces, warnings would be noise
    if config.cpu_threads:
        tf.config.threading.set_intra_op_parallelism_threads(config.cpu_threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    for device in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(device, True)


class Heartbeat:
    """Records the trial's heartbeat in the study until stopped (lets others detect a dead worker)."""

    def __init__(self, storage: Any, trial_id: int, interval: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(storage, trial_id, interval), daemon=True)

    def _beat(self, storage: Any, trial_id: int, interval: float) -> None:
        while True:  # the first beat at once: the claim's own beat may already be seconds old
            try:
                storage.record_heartbeat(trial_id)
            except Exception:  # a busy database must not kill the trial; the next beat retries
                pass
            if self._stop.wait(interval):
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _metric(results: dict[str, Any], metric: str) -> float:
    return float({"val_accuracy": results["fit_val_acc"], "val_loss": results["fit_val_loss"],
                  "test_accuracy": results["fit_test_acc"], "train_accuracy": results["fit_train_acc"]}[metric])


def _save_traceback(workdir: Path, key: str, number: int, text: str) -> Path:
    from zoo import atomic

    path = workdir / "failures" / f"{key}-trial{number}.txt"
    atomic.write_text(path, text)
    return path


def run_claim(claim: Any, config: WorkerConfig, sweep: Any, dataset: Any,
              tracker: Any = None) -> tuple[str, float | None]:
    """Train one claimed trial and tell the study how it ended: 'complete', 'pruned' or 'failed'.

    The heartbeat covers the whole claim, not only training: creating the MLflow run and logging the model
    can take longer than the grace period on a loaded tracking server, and a silent trial is re-queued.
    """
    from runner.study import heartbeat_seconds

    with Heartbeat(claim.trial.study._storage, claim.trial._trial_id, heartbeat_seconds()):
        return _train_and_tell(claim, config, sweep, dataset, tracker)


def _set_attrs(trial: Any, **attrs: Any) -> None:
    """Trial attributes, written again if the database drops the connection (each write is idempotent)."""
    from runner.study import retrying

    def write() -> None:
        for name, value in attrs.items():
            trial.set_user_attr(name, value)

    retrying(write, f"recording trial #{trial.number}")


def _train_and_tell(claim: Any, config: WorkerConfig, sweep: Any, dataset: Any,
                    tracker: Any = None) -> tuple[str, float | None]:
    import optuna

    from runner import hooks
    from runner.study import retrying
    from runner.trial import run_trial

    hooks.after_claim(claim.spec)
    study, trial = claim.trial.study, claim.trial
    workdir = Path(config.workdir)
    out = workdir / "trials" / claim.key
    _set_attrs(trial, slot=config.slot, gpu=config.gpu or "cpu", host=socket.gethostname(), pid=os.getpid(),
               attempt=claim.attempt, cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    run_id = None
    _emit(config, "start", trial=trial.number, key=claim.key, architecture=claim.spec.model.architecture)
    metric = sweep.search.metric
    epoch_metric = {"val_accuracy": "val_accuracy", "val_loss": "val_loss"}.get(metric, "val_accuracy")

    def on_epoch(step: int, row: dict[str, Any]) -> None:
        _emit(config, "epoch", trial=trial.number, step=step, round=row["round"], epoch=row["epoch"],
              val_accuracy=row["val_accuracy"])
        if tracker is not None:
            tracker.log_epoch(run_id, row)
        retrying(lambda: trial.report(float(row[epoch_metric]), step), f"reporting trial {claim.key}")
        if retrying(trial.should_prune, f"asking the pruner about trial {claim.key}"):
            raise optuna.TrialPruned(f"pruned at epoch {step + 1}")

    try:
        if tracker is not None:
            run_id = tracker.trial_run(config.parent_run_id, claim.key, claim.spec.flat(), {
                "optuna_trial": trial.number, "slot": config.slot, "gpu": config.gpu or "cpu",
                "host": socket.gethostname(), "retry": claim.attempt})
            _set_attrs(trial, mlflow_run_id=run_id)
        trained: list[Any] = []
        if (out / "results.json").is_file():  # finished before a crash, but never told: do not retrain
            results = json.loads((out / "results.json").read_text())
        else:
            hooks.before_trial(claim.spec)
            results = run_trial(claim.spec, dataset, out, cache_dir=config.cache_dir, on_epoch=on_epoch,
                                overwrite=True, extra_results={"trial_key": claim.key, "optuna_trial": trial.number},
                                on_model=trained.append)
        _set_attrs(trial, **{name: results.get(name) for name in (
            "fit_val_acc", "fit_test_acc", "fit_val_loss", "fit_best_round", "model_param_count",
            "fit_dt_train_duration_seconds")})
        value = _metric(results, metric)
        if tracker is not None:
            if not trained:
                import keras

                trained.append(keras.models.load_model(out / "model_best.keras"))
            tracker.finish_trial(run_id, results, out, trained[0])
        # skip_if_finished: had this worker been declared dead meanwhile, its trial is already FAIL and
        # re-queued; the copy then reuses results.json on this machine instead of crashing this worker
        retrying(lambda: study.tell(trial, value, skip_if_finished=True), f"recording trial {claim.key}")
        _emit(config, "finish", trial=trial.number, key=claim.key, state="complete", value=value)
        return "complete", value
    except optuna.TrialPruned as pruned:
        _set_attrs(trial, pruned=str(pruned))
        if tracker is not None:
            tracker.prune_trial(run_id, str(pruned))
        retrying(lambda: study.tell(trial, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True),
                 f"recording trial {claim.key}")
        _emit(config, "finish", trial=trial.number, key=claim.key, state="pruned")
        return "pruned", None
    except Exception as err:  # the trial failed; the sweep goes on
        reason = one_line(f"{type(err).__name__}: {err}")[:500]
        path = _save_traceback(workdir, claim.key, trial.number, traceback.format_exc())
        _set_attrs(trial, failure=reason, traceback_path=str(path))
        if tracker is not None and run_id is not None:
            try:
                tracker.fail_trial(run_id, reason, path)
            except Exception:  # the tracking store may be what failed; the study still records the failure
                pass
        retrying(lambda: study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True),
                 f"recording trial {claim.key}")
        _emit(config, "finish", trial=trial.number, key=claim.key, state="failed", reason=reason)
        return "failed", None


def worker_main(config: WorkerConfig) -> None:
    """Process entry point: run the loop, then leave at once (TensorFlow's interpreter teardown takes seconds,
    and everything the worker owes is already in the study, MLflow and its event pipe)."""
    code = 0
    try:
        work(config)
    except UserError as err:  # e.g. the database stayed unreachable: one line, not a traceback
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        code = STORAGE_LOST_EXIT
    except BaseException:  # noqa: BLE001 - reported through the exit code and stderr
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


STORAGE_LOST_EXIT = 3  # the worker gave up on an unreachable database: the scheduler stops rather than respawn
TRACKING_READY = ".tracking.json"  # written by `run` once the sweep's MLflow parent run exists
TRACKING_WAIT_SECONDS = 300


def connect_tracker(config: WorkerConfig, sweep: Any) -> Any:
    """The worker's MLflow access, once the parent run exists (the scheduler creates it while workers start)."""
    from runner.tracking import Tracker

    parent = config.parent_run_id
    ready = Path(config.workdir) / TRACKING_READY
    deadline = time.time() + TRACKING_WAIT_SECONDS
    while parent is None:
        if ready.is_file():
            parent = json.loads(ready.read_text())["parent_run_id"]
            break
        if time.time() > deadline:
            raise RuntimeError(f"the sweep's MLflow parent run did not appear in {TRACKING_WAIT_SECONDS} s")
        time.sleep(0.2)
    config.parent_run_id = parent
    return Tracker(config.tracking_uri, Path(config.workdir), sweep.name)


def feature_rank(dataset: Any, cache_dir: str | None) -> Any:
    """Rank waiting trials: features cached (or not needed) first, then ones this slot would extract, and
    last those whose backbone another slot is extracting right now (taking them would only wait on its lock)."""
    from runner.spec import TrialSpec
    from zoo import get_architecture
    from zoo.cache import cache_root, entry_state, features_path

    root = cache_root(cache_dir)
    memo: dict[str, int] = {}

    def rank(trial: Any) -> int:
        params = trial.user_attrs.get("params")
        if not params:
            return 1
        spec = TrialSpec.from_flat(params).model
        if get_architecture(spec.architecture).inputs != "features":
            return 0
        try:
            path = features_path(dataset, spec, root)
        except Exception:  # e.g. weights not cached: the trial will fail with the reason; no preference
            return 1
        key = str(path)
        if key not in memo or memo[key] != 0:
            memo[key] = {"cached": 0, "missing": 1, "computing": 2}[entry_state(path)]
        return memo[key]

    return rank


def _resident_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _stopping(config: WorkerConfig) -> bool:
    """The scheduler asks workers to stop taking trials by creating this file (first Ctrl-C)."""
    return (Path(config.workdir) / ".stop").exists()


def work(config: WorkerConfig) -> int:
    """Claim and run trials until none are left or `max_trials` ran. Returns how many ran here."""
    configure_process(config)
    from runner.search import make_search
    from runner.study import open_storage, open_study, retrying
    from runner.sweep import sweep_from_mapping
    from zoo import load_dataset

    import yaml

    sweep = sweep_from_mapping(yaml.safe_load(config.sweep_yaml), config.sweep_source)
    dataset = load_dataset(sweep.data.root, sweep.data.labels, config.cache_dir)
    storage = open_storage(config.storage_url)
    from runner.search import make_pruner, make_sampler

    study = open_study(sweep.name, storage, sweep.search.direction, make_sampler(sweep), make_pruner(sweep))
    search = make_search(sweep, study, dataset.fingerprint, Path(config.workdir), config.max_retries,
                         rank=feature_rank(dataset, config.cache_dir))
    tracker = None
    ran, reason = 0, "recycle"
    _emit(config, "ready", pid=os.getpid())
    while config.max_trials is None or ran < config.max_trials:
        if _stopping(config):
            reason = "stop"
            break
        claim = retrying(search.next_trial, "claiming a trial")
        if claim is None:
            reason = "empty"
            break
        if tracker is None and config.tracking_uri is not None:
            tracker = connect_tracker(config, sweep)
        outcome, value = run_claim(claim, config, sweep, dataset, tracker)
        search.finish(claim, outcome, value)
        ran += 1
        if outcome == "failed":
            reason = "failed"  # a failed trial may have left the process in a bad state: recycle it
            break
        if config.memory_limit_mb and _resident_mb() > config.memory_limit_mb:
            reason = "memory"  # TensorFlow never hands memory back: a fresh process does
            break
    _emit(config, "exit", ran=ran, reason=reason)
    return ran
