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
import sys
import time
import traceback
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner import preemption
from runner.execution.attempt import emit, run_claim
from runner.execution.events import WorkerExited, WorkerGaveUp, WorkerReady
from runner.study.storage import retrying
from zoo.errors import StoreUnreachable, UserError, one_line
from zoo.secrets import mask_text


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
    on_oom: str = "fail"  # resources.on_oom: a trial that ran out of memory fails, or retries with half the batch
    cpu_threads: int | None = None
    tracking_uri: str | None = None
    parent_run_id: str | None = None
    memory_limit_mb: float | None = None
    stop_file: str | None = None  # its scheduler's own: another `run` of the sweep on this machine has another
    events: Any = field(default=None, repr=False)  # this worker's end of its event pipe to the scheduler, or None
    reuse: bool = True  # answer keys that finished in another sweep of the tracking store from their run
    ignore_stop: bool = False  # stop rules off (`--ignore-stop`); the time budget still applies
    deadline: float | None = None  # epoch seconds after which no trial is handed out (search.timeout)
    backend: str = "tensorflow"  # Keras backend (runner.backends), set before Keras is imported
    trials_per_gpu: int = 1  # trials sharing this slot's GPU: each gets its share of the GPU's memory

    @property
    def setup(self) -> ProcessSetup:
        return ProcessSetup(self.backend, self.gpu, self.trials_per_gpu, self.cpu_threads, self.cache_dir)


@dataclass(frozen=True)
class ProcessSetup:
    """What a worker process is set up for before its backend is imported: its slot's device share, its backend."""

    backend: str = "tensorflow"
    gpu: str | None = None
    trials_per_gpu: int = 1
    cpu_threads: int | None = None
    cache_dir: str | None = None


_configured: ProcessSetup | None = None  # what this process was set up for (a standby worker is set up early)


def configure_process(setup: ProcessSetup) -> None:
    """Pin the process to its GPU (or none), its CPU share and its Keras backend before the backend is imported."""
    from runner import backends

    global _configured
    if _configured == setup:
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the scheduler decides
    signal.signal(signal.SIGTERM, lambda *_: preemption.requested.set())  # preempted: stop at the next batch
    _import_backend(setup)
    backends.configure(setup.backend, setup.cpu_threads, setup.cache_dir)
    _configured = setup


def _import_backend(setup: ProcessSetup) -> None:
    """The slot's environment, then its backend and Keras, without what a worker never uses."""
    from runner import backends

    os.environ.update(backends.slot_environment(setup.backend, setup.gpu, setup.trials_per_gpu, setup.cpu_threads))
    with backends.without_unused_imports(setup.backend):
        if setup.backend == "tensorflow":
            from zoo.stdio import import_tensorflow

            import_tensorflow()
        else:
            __import__(setup.backend)
        import keras  # noqa: F401 - with the backend, inside the block: Keras's own optional imports are skipped


def preload(setup: ProcessSetup, everything: bool = False) -> None:
    """What a trial imports, without starting the backend's runtime (no device opened, no thread pool sized): a
    worker pool server calls it once (`everything`: also what a trial needs only at its end, about 1.5 s per
    worker) and forks workers that each configure their own runtime."""
    _import_backend(setup)
    import runner.search.base  # noqa: F401 - and what `work` imports before its first claim
    import runner.search.optuna_search  # noqa: F401
    import runner.study.storage  # noqa: F401
    import runner.trial.training  # noqa: F401
    import zoo.architectures  # noqa: F401
    from runner.tracking.mlflow_runs import preload_model_logging, preload_store

    preload_store()
    if everything:
        import runner.trial.plots  # noqa: F401 - matplotlib

        preload_model_logging()


def worker_main(config: WorkerConfig) -> None:
    """Process entry point: run the loop, then leave at once (TensorFlow's interpreter teardown takes seconds,
    and everything the worker owes is already in the study, MLflow and its event pipe)."""
    code = 0
    try:
        work(config)
    except UserError as err:  # e.g. the database stayed unreachable: the scheduler says why, in one line
        message = mask_text(one_line(str(err)))
        if config.events is None:
            print(f"error: {message}", file=sys.stderr)
        emit(config, WorkerGaveUp(config.slot, message=message, temporary=isinstance(err, StoreUnreachable)))
        code = GAVE_UP_EXIT
    except BaseException:  # noqa: BLE001 - reported through the exit code and stderr
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def standby_main(setup: ProcessSetup, orders: Any, events: Any) -> None:
    """A worker started before its sweep is ready (while `run` checks the sweep and opens its stores): it sets up
    its process and imports what a trial needs, then waits for its full config on `orders` (None, or the
    scheduler gone: it leaves) and works as `worker_main`, its events on `events`."""
    try:
        _prepare(setup)
        config = orders.recv()
    except (EOFError, OSError, KeyboardInterrupt):
        os._exit(0)
    orders.close()
    if config is None:
        os._exit(0)
    config.events = events
    worker_main(config)


def _prepare(setup: ProcessSetup) -> None:
    """A standby's head start; silent when it fails (e.g. a refused JAX cache): the adopted worker sets itself up
    again and reports the error, as a freshly spawned one would (and a refused sweep dismisses it anyway)."""
    try:
        configure_process(setup)
        preload(setup)  # what the first trial would otherwise import after its claim
    except Exception:  # noqa: BLE001 - see the docstring
        pass


GAVE_UP_EXIT = 3  # the worker gave up on an unreachable shared store: the scheduler stops rather than respawn
TRACKING_READY = ".tracking.json"  # written by `run` once the sweep's MLflow parent run exists
TRACKING_WAIT_SECONDS = 300


def connect_tracker(config: WorkerConfig, sweep: Any) -> Any:
    """The worker's MLflow access, once the parent run exists (the scheduler creates it while workers start)."""
    from runner.tracking.mlflow_runs import Tracker

    parent = config.parent_run_id
    ready = Path(config.workdir) / TRACKING_READY
    deadline = time.time() + TRACKING_WAIT_SECONDS
    while parent is None:
        if ready.is_file():
            parent = json.loads(ready.read_text())["parent_run_id"]
            break
        if time.time() > deadline:
            raise RuntimeError(f"the sweep's MLflow parent run did not appear in {TRACKING_WAIT_SECONDS} s")
        time.sleep(0.05)  # the first trial waits on this: a stat every 50 ms costs nothing
    config.parent_run_id = parent
    return Tracker(config.tracking_uri, Path(config.workdir), sweep.name)


def features_to_load(trial: Any, dataset: Any, root: Path, files: Collection[tuple[str, str]]) -> Any:
    """(model spec, its features' cache entry, or None when it loads no features) of a waiting trial; None when the
    trial is not looked into: no parameters, parameters the claim will refuse (e.g. weights not cached), or a file
    the sweep file does not name (`files`: the claim refuses it, and its cache key would hash that file)."""
    from runner.spec.trial_spec import TrialSpec, unlisted_files
    from zoo import get_architecture
    from zoo.cache import features_path

    params = trial.user_attrs.get("params")
    if not params:
        return None
    try:
        trial_spec = TrialSpec.from_flat(dict(params))
        if unlisted_files(trial_spec, files):
            return None
        spec = trial_spec.model
        if get_architecture(spec.architecture).inputs != "features":
            return spec, None
        return spec, features_path(dataset, spec, root)
    except Exception:  # noqa: BLE001 - see the docstring
        return None


def feature_rank(dataset: Any, cache_dir: str | None, files: Collection[tuple[str, str]] = frozenset()) -> Any:
    """Rank waiting trials: features cached (or not needed) first, then ones this slot would extract, and
    last those whose backbone another slot is extracting right now (taking them would only wait on its lock);
    a trial not looked into (`features_to_load`) gets no preference."""
    from zoo.cache import cache_root, entry_state

    root = cache_root(cache_dir)
    memo: dict[str, int] = {}

    def rank(trial: Any) -> int:
        entry = features_to_load(trial, dataset, root, files)
        if entry is None:
            return 1
        path = entry[1]
        if path is None:
            return 0
        key = str(path)
        if key not in memo or memo[key] != 0:
            memo[key] = {"cached": 0, "missing": 1, "computing": 2}[entry_state(path)]
        return memo[key]

    return rank


def prefetch_features(study: Any, dataset: Any, cache_dir: str | None, files: Collection[tuple[str, str]],
                      rank: Any) -> None:
    """Extract the features of the trial this worker would claim first, if they are missing: what the trial would
    do first, done while the worker would otherwise wait (for `run` to create the sweep's MLflow run). Under the
    cache's lock, as a trial computes them; a trial not looked into (`features_to_load`) is left alone, and whatever
    goes wrong is left for the trial to meet and report."""
    from optuna.trial import TrialState

    from zoo.cache import cache_root, entry_state, load_features

    try:
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        first = min(waiting, key=lambda t: (rank(t), t.number), default=None)  # as the claim orders them
        entry = None if first is None else features_to_load(first, dataset, cache_root(cache_dir), files)
        if entry is not None and entry[1] is not None and entry_state(entry[1]) == "missing":
            load_features(dataset, entry[0], Path(cache_dir) if cache_dir else None)  # as the trial calls it
    except Exception:  # noqa: BLE001 - see the docstring
        pass


def _resident_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def stop_requested(config: WorkerConfig) -> bool:
    """The scheduler asks its workers to stop taking trials by creating its stop file (first Ctrl-C)."""
    return config.stop_file is not None and Path(config.stop_file).exists()


def work(config: WorkerConfig) -> int:
    """Claim and run trials until none are left or `max_trials` ran. Returns how many ran here."""
    configure_process(config.setup)
    import yaml

    from runner.search import stop
    from runner.search.base import make_search
    from runner.search.optuna_search import make_pruner, make_sampler
    from runner.spec.sweep import sweep_from_mapping
    from runner.study.storage import open_storage, open_study
    from zoo import load_dataset

    sweep = sweep_from_mapping(yaml.safe_load(config.sweep_yaml), config.sweep_source)
    dataset = load_dataset(sweep.data.root, sweep.data.labels, config.cache_dir)
    storage = open_storage(config.storage_url)
    study = open_study(sweep.name, storage, sweep.search.study_direction(), make_sampler(sweep), make_pruner(sweep))
    files = sweep.named_files()
    rank = feature_rank(dataset, config.cache_dir, files)
    search = make_search(sweep, study, dataset.fingerprint, Path(config.workdir), config.max_retries, rank=rank,
                         stopping=lambda: stop_requested(config))
    tracker = None
    ran, reason = 0, "recycle"
    emit(config, WorkerReady(config.slot, pid=os.getpid()))
    if config.tracking_uri is not None and not (Path(config.workdir) / TRACKING_READY).is_file():
        prefetch_features(study, dataset, config.cache_dir, files, rank)  # while `run` creates the MLflow run
    while config.max_trials is None or ran < config.max_trials:
        if stop_requested(config) or preemption.requested.is_set():
            reason = "stop"
            break
        if stop.evaluate(study, sweep, config.deadline, rules_on=not config.ignore_stop):
            reason = "stop"  # a stop rule or the time budget: running trials finish, no new one starts
            break
        if tracker is None and config.tracking_uri is not None:
            tracker = connect_tracker(config, sweep)  # before a claim: a store that is down leaves no trial RUNNING
        claim = retrying(search.next_trial, "claiming a trial")
        if claim is None:
            reason = "empty"
            break
        outcome, value = run_claim(claim, config, sweep, dataset, tracker)
        search.finish(claim, outcome, value)
        ran += 1
        if outcome == "preempted":
            reason = "stop"
            break
        if outcome == "failed":
            reason = "failed"  # a failed trial may have left the process in a bad state: recycle it
            break
        if config.memory_limit_mb and _resident_mb() > config.memory_limit_mb:
            reason = "memory"  # TensorFlow never hands memory back: a fresh process does
            break
    emit(config, WorkerExited(config.slot, ran=ran, reason=reason))
    return ran
