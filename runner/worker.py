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
import time
import traceback
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner import hooks, liveness, memory, preemption
from runner import optuna_internals as internals
from runner.events import (EpochEnded, Event, TrialFinished, TrialNote, TrialStarted, WorkerExited, WorkerGaveUp,
                           WorkerReady)
from runner.liveness import Heartbeat
from runner.metrics import STUDY_RESULTS, objective
from runner.queue import Claim
from runner.storage import retrying
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


def _emit(config: WorkerConfig, event: Event) -> None:
    if config.events is not None:
        try:
            config.events.send(event)
        except (BrokenPipeError, OSError):  # the scheduler is gone; the study still records everything
            config.events = None


def configure_process(config: WorkerConfig) -> None:
    """Pin the process to its GPU (or none), its CPU share and its Keras backend before the backend is imported."""
    from runner import backends

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the scheduler decides
    signal.signal(signal.SIGTERM, lambda *_: preemption.requested.set())  # preempted: stop at the next batch
    os.environ.update(backends.slot_environment(config.backend, config.gpu, config.trials_per_gpu,
                                                config.cpu_threads))
    backends.configure(config.backend, config.cpu_threads, config.cache_dir)


def _backend_tags(backend: str) -> dict[str, str]:
    from runner import backends

    return {"backend": backend, "backend_version": backends.version(backend) or "unknown"}


def _save_traceback(workdir: Path, key: str, number: int, text: str) -> Path:
    from zoo import atomic

    path = workdir / "failures" / f"{key}-trial{number}.txt"
    atomic.write_text(path, text)
    return path


def run_claim(claim: Claim, config: WorkerConfig, sweep: Any, dataset: Any,
              tracker: Any = None) -> tuple[str, float | None]:
    """Train one claimed trial and tell the study how it ended: 'complete', 'pruned' or 'failed'.

    The heartbeat covers the whole claim, not only training: creating the MLflow run and logging the model
    can take longer than the grace period on a loaded tracking server, and a silent trial is re-queued.
    """
    with Heartbeat(claim.trial.study, internals.trial_id(claim.trial)) as heartbeat:
        return ClaimRun(claim, config, sweep, dataset, tracker, heartbeat).run()


class ClaimRun:
    """One claimed trial, from its start to the study's record of how it ended."""

    def __init__(self, claim: Claim, config: WorkerConfig, sweep: Any, dataset: Any, tracker: Any,
                 heartbeat: Heartbeat | None = None) -> None:
        self.claim, self.config, self.sweep, self.dataset, self.tracker = claim, config, sweep, dataset, tracker
        self.heartbeat = heartbeat
        self.trial, self.study = claim.trial, claim.trial.study
        self.objective = objective(sweep.search.metric)  # the first objective: progress, stop rules, pruner
        self.objectives = [objective(name) for name, _ in sweep.search.goals()]
        self.out = Path(config.workdir) / "trials" / claim.key
        self.run_id: str | None = None
        self.model_logged = False  # the key's run already finished with its model (resume after a lost study)
        self.logged = -1  # the last epoch step MLflow holds for this trial's run
        self.started_over = ""
        self.epochs_seen = False  # this attempt has trained an epoch (the first one says if it continued)

    def run(self) -> tuple[str, float | None]:
        import optuna

        hooks.after_claim(self.claim.spec)
        self._record_start()
        try:
            reused = self._reuse()
            if reused is not None:
                return reused
            return self._complete(*self._train())
        except optuna.TrialPruned as pruned:
            return self._pruned(str(pruned))
        except preemption.Preempted as preempted:
            return self._preempted(str(preempted))
        except Exception as err:  # the trial failed; the sweep goes on
            return self._failed(err)

    def _set_attrs(self, **attrs: Any) -> None:
        """Trial attributes (the storage writes each again if the database drops the connection)."""
        for name, value in attrs.items():
            self.trial.set_user_attr(name, value)

    def _tell(self, **outcome: Any) -> None:
        # skip_if_finished: had this worker been declared dead meanwhile, its trial is already FAIL and
        # re-queued; the copy then reuses results.json on this machine instead of crashing this worker
        self.study.tell(self.trial, skip_if_finished=True, **outcome)

    def _finished(self, state: str, value: float | None = None, reason: str = "") -> tuple[str, float | None]:
        _emit(self.config, TrialFinished(self.config.slot, trial=self.trial.number, key=self.claim.key,
                                         state=state, value=value, reason=reason))
        return state, value

    def _record_start(self) -> None:
        config = self.config
        self._set_attrs(slot=config.slot, gpu=config.gpu or "cpu", host=socket.gethostname(), pid=os.getpid(),
                        attempt=self.claim.attempt, cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES", ""))
        _emit(config, TrialStarted(config.slot, trial=self.trial.number, key=self.claim.key,
                                   architecture=self.claim.spec.model.architecture))

    def _check_heartbeat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.check()

    def _on_epoch(self, step: int, row: dict[str, Any]) -> None:
        import optuna

        _emit(self.config, EpochEnded(self.config.slot, trial=self.trial.number, step=step,
                                      val_accuracy=row["val_accuracy"]))
        if not self.epochs_seen and step > 0 and self.tracker is not None:  # this attempt continued a checkpoint
            self.tracker.mark_continued(self.run_id, step)
        self.epochs_seen = True
        self._check_heartbeat()
        if len(self.objectives) > 1:  # Optuna neither records nor prunes per-step values of several objectives
            return
        self.trial.report(float(row[self.objective.per_epoch]), step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {step + 1}")

    def _reuse(self) -> tuple[str, float | None] | None:
        """A key that finished in another sweep of the tracking store: its run copied, nothing trained."""
        from runner import provenance, reuse

        if not self.config.reuse or self.tracker is None:
            return None
        client, final = self.tracker.client, self.objective.final
        source, capped = retrying(lambda: reuse.find_source(client, self.sweep.name, self.claim.key,
                                                            [o.final for o in self.objectives]),
                                  f"looking for an earlier run of trial {self.claim.key}")
        for phrase in capped:
            self._note(f"reuse: {phrase}")
        if source is None:
            return None
        if not reuse.artifacts_present(client, source):
            self._note(f"is trained again: the artefacts of its earlier run {source.info.run_id} are gone "
                       f"({source.info.artifact_uri})")
            return None
        tags = {"optuna_trial": self.trial.number, "slot": self.config.slot,
                **provenance.trial_tags(self.config.sweep_source, self.config.backend)}
        self.run_id = reuse.copy_run(self.tracker, self.config.parent_run_id, self.claim.key,
                                     self.claim.spec.used_flat(), source, tags)
        value = float(source.data.metrics[final])
        values = [float(source.data.metrics[o.final]) for o in self.objectives]
        self._set_attrs(mlflow_run_id=self.run_id, **{reuse.REUSED_ATTR: source.info.run_id},
                        **reuse.study_attrs(source))
        self._tell(values=value if len(values) == 1 else values)
        _emit(self.config, TrialFinished(self.config.slot, trial=self.trial.number, key=self.claim.key,
                                         state="complete", value=value, reason=f"reused run {source.info.run_id}"))
        return "complete", value

    def _note(self, text: str) -> None:
        _emit(self.config, TrialNote(self.config.slot, trial=self.trial.number, key=self.claim.key, text=text))

    def _tags(self) -> dict[str, Any]:
        """The trial run's tags: where it runs (slot, host, backend, code version) and its rung."""
        from runner.provenance import trial_tags

        config, claim = self.config, self.claim
        tags = {"optuna_trial": self.trial.number, "slot": config.slot, "gpu": config.gpu or "cpu",
                "host": socket.gethostname(), "retry": claim.attempt, **_backend_tags(config.backend),
                **trial_tags(config.sweep_source, config.backend)}
        if claim.epoch_budget is not None:
            tags.update({"videosweep.rung": claim.attrs.get("rung", 0), "epoch_budget": claim.epoch_budget})
        if claim.batch_size is not None:  # the key's parameters say the sweep file's batch; this one trained
            tags["videosweep.batch_size_used"] = (f"{claim.batch_size} (the sweep's {claim.spec.training.batch_size} "
                                                  "ran out of memory)")
        return tags

    def _finished_results(self) -> dict[str, Any] | None:
        """results.json of this claim's budget, if the trial finished it before a crash but was never told."""
        path = self.out / "results.json"
        if not path.is_file():
            return None
        results = json.loads(path.read_text())
        return results if results.get("epoch_budget") == self.claim.epoch_budget else None

    def _start_over(self, reason: str) -> None:
        """Training starts from epoch 0 although an earlier attempt had checkpointed: the study, MLflow (a fresh
        run: the old one's epochs would be mixed with the new ones) and the sweep's output say why."""
        self.started_over = reason
        self._set_attrs(started_over=reason)
        self._note(f"starts over: {reason}")
        self._fresh_run(reason)
        if self.tracker is not None and self.run_id is not None:
            self.tracker.mark_started_over(self.run_id, reason)

    def _fresh_run(self, reason: str) -> None:
        from runner.tracking import STARTED_OVER_TAG

        if self.tracker is None or self.logged < 0:
            return
        self.run_id = self.tracker.restart_trial_run(self.run_id, self.config.parent_run_id, self.claim.key,
                                                     self.claim.spec.used_flat(),
                                                     {**self._tags(), STARTED_OVER_TAG: reason})
        self._set_attrs(mlflow_run_id=self.run_id)
        self.logged = -1

    def _on_rows(self, history: list[dict[str, Any]]) -> None:
        """Epochs now durable (checkpointed): to MLflow once each, and the checkpoint's place to the study."""
        new = [row for row in history if int(row["step"]) > self.logged]
        if self.tracker is not None and new:
            self.tracker.log_epochs(self.run_id, new)
        if new:
            self.logged = int(new[-1]["step"])
        if history:
            self._set_attrs(checkpoint={"host": socket.gethostname(), "epochs": len(history)})

    def _train(self) -> tuple[dict[str, Any], Any]:
        """The trial's results and its trained model (None when results.json was already there)."""
        from runner.checkpoints import FOLDER, LATEST
        from runner.trial import run_trial

        config, claim = self.config, self.claim
        self.logged, self.started_over = -1, ""
        if self.tracker is not None:
            finished = self.tracker.finished_trial(claim.key)
            if finished is not None:  # trained and logged before the study lost its record: never log it again
                self.run_id, results = finished
                self.model_logged = True
                self._set_attrs(mlflow_run_id=self.run_id)
                return results, None
            self.run_id = self.tracker.trial_run(config.parent_run_id, claim.key, claim.spec.used_flat(), self._tags())
            self._set_attrs(mlflow_run_id=self.run_id)
            self.logged = self.tracker.last_step(self.run_id)
        finished = self._finished_results()
        if finished is not None:  # finished before a crash, but never told: do not retrain
            return finished, None
        hooks.before_trial(claim.spec.with_batch_size(claim.batch_size))
        earlier = claim.attrs.get("checkpoint")
        if not (self.out / FOLDER / LATEST).is_file():
            if isinstance(earlier, dict):  # re-queued onto a machine without the earlier attempt's checkpoint
                self._start_over(f"the checkpoint of {earlier.get('epochs')} epoch(s) on host "
                                 f"{earlier.get('host')} is not on {socket.gethostname()}")
            else:
                self._fresh_run("no checkpoint")
        trained: list[Any] = []
        results = run_trial(claim.spec, self.dataset, self.out, cache_dir=config.cache_dir, on_epoch=self._on_epoch,
                            overwrite=True, extra_results={"trial_key": claim.key, "optuna_trial": self.trial.number,
                                                           "rung": claim.attrs.get("rung"),
                                                           "started_over": self.started_over or None},
                            on_model=trained.append, checkpoints=True,
                            checkpoint_seconds=self.sweep.training.checkpoint_seconds,
                            epoch_budget=claim.epoch_budget, on_rows=self._on_rows, on_start_over=self._start_over,
                            batch_size=claim.batch_size)
        return results, trained[0] if trained else None

    def _complete(self, results: dict[str, Any], model: Any) -> tuple[str, float | None]:
        paused = bool(results.get("paused"))
        self._set_attrs(**{name: results.get(name) for name in STUDY_RESULTS}, paused=paused,
                        epochs_trained=results.get("fit_num_epochs"))
        value = self.objective.value(results)
        if self.tracker is not None and not self.model_logged:
            if paused:  # its model is logged when it finishes (a paused trial's folder keeps its checkpoint)
                model = None
            elif model is None:
                import keras

                model = keras.models.load_model(self.out / "model_best.keras", safe_mode=True)
            self.tracker.finish_trial(self.run_id, results, self.out, model, state="paused" if paused else "finished")
        self._check_heartbeat()
        values = [o.value(results) for o in self.objectives]  # several objectives: Optuna's front
        self._tell(values=value if len(values) == 1 else values)
        return self._finished("complete", value)

    def _pruned(self, reason: str) -> tuple[str, float | None]:
        import optuna

        self._set_attrs(pruned=reason)
        _remove_checkpoint(self.out)
        if self.tracker is not None:
            self.tracker.prune_trial(self.run_id, reason)
        self._tell(state=optuna.trial.TrialState.PRUNED)
        return self._finished("pruned")

    def _preempted(self, where: str) -> tuple[str, float | None]:
        """Stopped for a preemption: not the trial's fault (no retry used); it continues from its checkpoint."""
        import optuna

        if self.tracker is not None and self.run_id is not None:
            self.tracker.preempt_trial(self.run_id, f"{liveness.PREEMPTED}; {where}")
        self._set_attrs(failure=liveness.PREEMPTED, preempted_at=where)
        self._tell(state=optuna.trial.TrialState.FAIL)
        return self._finished("preempted", reason=liveness.PREEMPTED)

    def _failed(self, err: Exception) -> tuple[str, float | None]:
        import optuna

        reason = mask_text(one_line(f"{type(err).__name__}: {err}"))[:500]
        oom: dict[str, Any] = {}
        if memory.is_out_of_memory(err):  # never retried the same way: failed, or retried with half the batch
            batch = self.claim.batch_size or self.claim.spec.training.batch_size
            oom = memory.oom_attrs(batch, self.config.on_oom, memory.peak_rss_mb())
            reason = f"out of memory at batch size {batch} (peak {oom[memory.PEAK_ATTR]:g} MB): {reason}"[:500]
        path = _save_traceback(Path(self.config.workdir), self.claim.key, self.trial.number, traceback.format_exc())
        if self.tracker is not None and self.run_id is not None:
            try:
                self.tracker.fail_trial(self.run_id, reason, path, kind=oom.get(memory.KIND_ATTR))
            except Exception as tracking_err:  # noqa: BLE001 - the tracking store may be what failed: say so
                reason += mask_text(one_line(f"; MLflow did not record this failure: {type(tracking_err).__name__}: "
                                             f"{tracking_err}"))[:300]
        self._set_attrs(failure=reason, traceback_path=str(path), **oom)
        self._tell(state=optuna.trial.TrialState.FAIL)
        return self._finished("failed", reason=reason)


def _remove_checkpoint(out: Path) -> None:
    """A pruned trial never continues: its checkpoint goes, and its folder if nothing else is in it."""
    from runner.workdir import remove_checkpoint

    remove_checkpoint(out)
    try:
        out.rmdir()
    except OSError:
        pass


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
        _emit(config, WorkerGaveUp(config.slot, message=message, temporary=isinstance(err, StoreUnreachable)))
        code = GAVE_UP_EXIT
    except BaseException:  # noqa: BLE001 - reported through the exit code and stderr
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


GAVE_UP_EXIT = 3  # the worker gave up on an unreachable shared store: the scheduler stops rather than respawn
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


def feature_rank(dataset: Any, cache_dir: str | None, files: Collection[tuple[str, str]] = frozenset()) -> Any:
    """Rank waiting trials: features cached (or not needed) first, then ones this slot would extract, and
    last those whose backbone another slot is extracting right now (taking them would only wait on its lock).
    A trial that would load a file the sweep file does not name (`files`) is not looked into (the claim refuses
    it): its cache key would hash that file."""
    from runner.spec import TrialSpec, unlisted_files
    from zoo import get_architecture
    from zoo.cache import cache_root, entry_state, features_path

    root = cache_root(cache_dir)
    memo: dict[str, int] = {}

    def rank(trial: Any) -> int:
        params = trial.user_attrs.get("params")
        if not params:
            return 1
        try:
            trial_spec = TrialSpec.from_flat(dict(params))
            if unlisted_files(trial_spec, files):
                return 1
            spec = trial_spec.model
            if get_architecture(spec.architecture).inputs != "features":
                return 0
            path = features_path(dataset, spec, root)
        except Exception:  # e.g. weights not cached, or parameters the claim will refuse: no preference
            return 1
        key = str(path)
        if key not in memo or memo[key] != 0:
            memo[key] = {"cached": 0, "missing": 1, "computing": 2}[entry_state(path)]
        return memo[key]

    return rank


def _resident_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def stop_requested(config: WorkerConfig) -> bool:
    """The scheduler asks its workers to stop taking trials by creating its stop file (first Ctrl-C)."""
    return config.stop_file is not None and Path(config.stop_file).exists()


def work(config: WorkerConfig) -> int:
    """Claim and run trials until none are left or `max_trials` ran. Returns how many ran here."""
    configure_process(config)
    from runner import stop
    from runner.search import make_pruner, make_sampler, make_search
    from runner.storage import open_storage, open_study
    from runner.sweep import sweep_from_mapping
    from zoo import load_dataset

    import yaml

    sweep = sweep_from_mapping(yaml.safe_load(config.sweep_yaml), config.sweep_source)
    dataset = load_dataset(sweep.data.root, sweep.data.labels, config.cache_dir)
    storage = open_storage(config.storage_url)
    study = open_study(sweep.name, storage, sweep.search.study_direction(), make_sampler(sweep), make_pruner(sweep))
    search = make_search(sweep, study, dataset.fingerprint, Path(config.workdir), config.max_retries,
                         rank=feature_rank(dataset, config.cache_dir, sweep.named_files()),
                         stopping=lambda: stop_requested(config))
    tracker = None
    ran, reason = 0, "recycle"
    _emit(config, WorkerReady(config.slot, pid=os.getpid()))
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
    _emit(config, WorkerExited(config.slot, ran=ran, reason=reason))
    return ran
