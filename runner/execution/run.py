"""Running a sweep end to end: validate everything up front, prepare the study, schedule slots, report progress.

`run` and `resume` are the same operation: the study remembers what finished, so running again trains only
what is missing. Checks that can fail (the sweep file, the data, weights, the workdir, the storage) all run
before any process starts, so bad input never leaves a half-made sweep behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock
from optuna.trial import TrialState

from runner import backends, memory
from runner.execution import notify
from runner.execution.context import SweepContext
from runner.execution.estimate import SLOTS_TAG, SWEEP_SECONDS_METRIC
from runner.execution.events import Event, TrialFinished, TrialNote
from runner.execution.scheduler import (HeadStart, Scheduler, SchedulerOptions, SlotState, Work, dismiss,
                                        head_start, plan_slots)
from runner.execution.worker import TRACKING_READY, ProcessSetup, WorkerConfig
from runner.search import reuse, stop
from runner.search.base import make_search
from runner.search.expand import expand_grid, imagenet_weights_needed
from runner.spec.metrics import objective
from runner.spec.sweep import ResourcesConfig, Sweep, merged_resources
from runner.study import claims, liveness, storage
from runner.study import optuna_internals as internals
from runner.tracking.mlflow_runs import Tracker, check_tracking_reachable, tracking_errors
from zoo import atomic, validated_spec, weights
from zoo.errors import StoreUnreachable, UserError, one_line


def best_trial(study: Any) -> tuple[str, float] | None:
    """(trial key, value) of the best finished trial, None before any finished."""
    if len(study.directions) > 1:  # several objectives: the best by the first (the front is the report's)
        sign = 1 if study.directions[0].name == "MAXIMIZE" else -1
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
        if not done:
            return None
        best = max(done, key=lambda t: sign * t.values[0])
        return best.user_attrs.get(claims.KEY_ATTR, str(best.number)), float(best.values[0])
    try:
        best = study.best_trial
    except ValueError:
        return None
    return best.user_attrs.get(claims.KEY_ATTR, str(best.number)), float(best.value)


def preflight(ctx: SweepContext, options: RunOptions | None = None,
              downloads: weights.DownloadReporter | None = None) -> list[str]:
    """Everything that can be refused before a single file is written: the storage URL, an empty grid,
    missing weights, an unreachable tracking server or notify URL, a JAX compilation cache others can write, a
    stop rule on a metric the study does not record, a warm start from an unknown sweep, a reuse source whose
    artefacts are gone. ImageNet weights not yet cached are fetched here, once per machine, before any worker
    starts (offline: refused). Returns lines to show (what the look for reuse sources left unread)."""
    storage.check_storage_url(ctx.storage_url)
    stop.watched(ctx.sweep)
    notify_url = (options.notify_url if options else None) or ctx.sweep.notify.url
    if notify_url:
        notify.check_url(notify_url)
    if options is not None and backends.chosen(options.resources.backend) == "jax":
        backends.compilation_cache(options.cache_dir)  # runs native code: refused here if others can write it
    weights.fetch(imagenet_weights_needed(ctx.sweep), downloads)
    final = objective(ctx.sweep.search.metric).final
    if ctx.sweep.search.strategy == "grid":
        expansion = expand_grid(ctx.sweep, ctx.dataset.fingerprint)
        if not expansion.trials:
            reasons = "; ".join(f"{reason} ({n})" for reason, n in expansion.dropped.most_common(3))
            raise UserError(f"sweep {ctx.sweep.name} has no trial to run: every combination was dropped: {reasons}")
        seen = set()
        for spec in expansion.trials:
            key = (spec.model.backbone, spec.model.weights, spec.model.frame_size, spec.model.model_weights_path)
            if key not in seen:
                seen.add(key)
                validated_spec(spec.model)
    check_tracking_reachable(ctx.tracking_uri, ctx.workdir)
    reuse.warm_start_runs(ctx.tracking_uri, list(ctx.sweep.search.warm_start), final)
    if ctx.sweep.search.strategy == "grid" and (options is None or options.reuse):
        with storage.storage_errors(ctx.storage_url):
            study = ctx.open_study(create=False) if ctx.has_study() else None
            done = {key for key, trials in claims.trials_by_key(study).items()
                    if any(t.state == TrialState.COMPLETE for t in trials)} if study is not None else set()
        return reuse.check_sources(ctx.tracking_uri, ctx.sweep.name, [k for k in expansion.keys if k not in done],
                                   final)
    return []


@dataclass(frozen=True)
class RunOptions:
    """How to run a sweep here: its resources merged with the command line's, plus per-run choices."""

    resources: ResourcesConfig
    cache_dir: str | None = None
    retry_failed: bool = False  # failed trials whose retries were used up get another chance
    notify_url: str | None = None  # --notify (else the sweep's notify.url)
    ignore_stop: bool = False  # --ignore-stop: go on after a stop rule stopped the sweep, rules off
    reuse: bool = True  # --no-reuse: train keys that finished in other sweeps of the tracking store again
    log_diff: bool = False  # --log-diff or tracking.log_diff: the masked uncommitted diff goes to MLflow

    @classmethod
    def build(cls, sweep: Sweep, cache_dir: Path | None = None, retry_failed: bool = False,
              notify_url: str | None = None, ignore_stop: bool = False, reuse: bool = True,
              log_diff: bool = False, **overrides: Any) -> RunOptions:
        return cls(merged_resources(sweep, overrides), str(cache_dir) if cache_dir else None, retry_failed,
                   notify_url, ignore_stop, reuse, log_diff or sweep.tracking.log_diff)


@dataclass(frozen=True)
class SweepOutcome:
    """How a run ended: trial counts by state, and whether the user interrupted it."""

    counts: dict[str, int]
    interrupted: bool = False
    preempted: bool = False  # the interruption was a SIGTERM (the machine is being taken away)
    nothing_to_run: bool = False
    stopped: str | None = None  # why a stop rule stopped the sweep
    failed_for_good: int = 0  # trial keys whose every attempt failed (no retry left)
    failures_dir: str = ""  # where their tracebacks are

    @property
    def failed(self) -> int:
        return self.counts.get("fail", 0)

    @property
    def exit_code(self) -> int:
        """143 preempted (128 + SIGTERM, as a process ended by SIGTERM reports), 130 interrupted, 1 some trials
        failed for good, else 0 (bad input, 2, never gets this far)."""
        return 143 if self.preempted else 130 if self.interrupted else 1 if self.failed_for_good else 0


class SweepDisplay(Protocol):
    """How a running sweep shows itself to people (the CLI's live table, or plain lines)."""

    def message(self, text: str) -> None: ...

    def live(self, counts: Callable[[], dict[str, int]]) -> AbstractContextManager[Any]: ...

    def event(self, event: Event, slots: dict[str, SlotState]) -> None: ...

    def downloads(self) -> weights.DownloadReporter: ...


SWEEP_UPDATE_SECONDS = 5.0  # the parent run's counts and best metric are refreshed at most this often


@dataclass
class SweepTracking:
    """The sweep's MLflow side: the parent run (created while the workers start), kept up to date."""

    ctx: SweepContext
    study: Any
    cache_dir: str | None = None  # where the embedded store's empty schema is kept (runner/tracking/embedded_store.py)
    tracker: Tracker | None = None
    parent: str | None = None
    last_update: float = field(default=0.0)
    slots: int = 1
    started: float = field(default_factory=time.time)
    log_diff: bool = False
    webhooks: tuple[str | None, ...] = ()  # masked in the diff: their path is their secret

    def start(self) -> None:
        ctx = self.ctx
        with tracking_errors(ctx.tracking_uri):  # MLflow's errors are MLflow's, even inside the study's block
            with stores_lock(ctx.workdir):  # a second `run` starting now must not set up MLflow's schema too
                self.tracker = Tracker(ctx.tracking_uri, ctx.workdir, ctx.sweep.name, cache_dir=self.cache_dir)
            with claims.study_lock(self.study, ctx.workdir):  # one parent run, whichever machine starts first
                self.parent = self.tracker.sweep_run(ctx.sweep, storage.mask_url(ctx.storage_url), ctx.dataset)
                self.tracker.close_dead_runs(self._settled_keys)
            # the workers wait for the parent run only: they go on while its provenance is written
            atomic.write_json(ctx.workdir / TRACKING_READY, {"parent_run_id": self.parent})
            self.tracker.log_provenance(self.parent, ctx.source, self.log_diff, self.webhooks)
            self.tracker.set_tags(self.parent, {SLOTS_TAG: self.slots})

    def _settled_keys(self) -> set[str]:
        settled = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE))
        return {t.user_attrs.get(claims.KEY_ATTR) for t in settled}

    @contextmanager
    def _store_lost_is_one_line(self) -> Iterator[None]:
        """The tracking store gone mid-sweep stops the sweep with one line; the study keeps every trial."""
        try:
            yield
        except UserError:
            raise
        except Exception as err:  # connection refused, timeouts
            raise StoreUnreachable(f"lost the MLflow tracking store {storage.mask_url(self.ctx.tracking_uri)} mid-sweep "
                                   f"({one_line(f'{type(err).__name__}: {err}')[:200]}); every trial is kept in the "
                                   "study: `videosweep resume` finishes the sweep once the store answers again") from None

    def update(self, throttled: bool = False) -> None:
        """The parent run's trial counts and best metric (at most every SWEEP_UPDATE_SECONDS if throttled)."""
        if self.tracker is None or (throttled and time.time() - self.last_update < SWEEP_UPDATE_SECONDS):
            return
        self.last_update = time.time()
        with self._store_lost_is_one_line():
            self.tracker.update_sweep(self.parent, claims.state_counts(self.study), best_trial(self.study))

    def finish(self, interrupted: bool, stopped: str | None = None) -> None:
        with self._store_lost_is_one_line():
            self._finish(interrupted, stopped)

    def _finish(self, interrupted: bool, stopped: str | None) -> None:
        if self.tracker is not None:
            self.tracker.set_stop_reason(self.parent, stop.STOP_TAG, stopped)
            trained = sum(t.duration.total_seconds() for t in self.study.get_trials(  # slot time of trials
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED))
                if t.duration and t.datetime_start
                and t.datetime_start.timestamp() >= self.started and not t.user_attrs.get(reuse.REUSED_ATTR))
            if trained:  # what `plan` estimates from: this run's wall time against its trials' slot time
                self.tracker.log_metrics(self.parent, {
                    SWEEP_SECONDS_METRIC: time.time() - _process_start(self.started), "trained_seconds": trained})
            self.tracker.finish_sweep(self.parent, interrupted)


def run_sweep(ctx: SweepContext, options: RunOptions, display: SweepDisplay) -> SweepOutcome:
    """Run (or resume) the sweep on this machine's slots until nothing is left for them, a stop rule stops it
    or the user does."""
    started = time.time()
    resources = options.resources
    backend = backends.chosen(resources.backend)
    backends.activate(backend, "KERAS_BACKEND" if resources.backend is None else "backend")
    slots = plan_slots(resources.gpus, resources.trials_per_gpu, resources.workers)
    head = head_start(slots, ProcessSetup(backend, trials_per_gpu=resources.trials_per_gpu,
                                          cache_dir=options.cache_dir))
    try:
        return _run_sweep(ctx, options, display, started, slots, head)
    finally:
        dismiss(head)  # the standby workers no slot adopted (the sweep was refused, or had nothing to run)


def _run_sweep(ctx: SweepContext, options: RunOptions, display: SweepDisplay, started: float, slots: list[Any],
               head: HeadStart) -> SweepOutcome:
    notes = preflight(ctx, options, display.downloads())
    atomic.writable_dir(ctx.workdir, "workdir")  # only now, when nothing else can refuse the sweep
    notifier = notify.Notifier(options.notify_url or ctx.sweep.notify.url, ctx.sweep.notify.on, display.message)
    atomic.remove_abandoned_staging(ctx.workdir / "trials")  # left by a trial killed while writing (kill -9)
    with storage.storage_errors(ctx.storage_url):
        with stores_lock(ctx.workdir):  # two `run`s of a new sweep must not both create its tables
            study = _checked_study(ctx)
        if options.ignore_stop:
            stop.clear(study)
        elif stop.stop_reason(study):
            counts = claims.state_counts(study)
            return SweepOutcome(counts, nothing_to_run=True, stopped=stop.stop_reason(study),
                                **_failures(ctx, study))
        warmed = reuse.warm_start(study, ctx.sweep, ctx.tracking_uri, objective(ctx.sweep.search.metric).final)
        search = make_search(ctx.sweep, study, ctx.dataset.fingerprint, ctx.workdir, options.resources.max_retries)
        # queue upkeep reaches the database around Optuna (the lock): a step cut short is redone (idempotent)
        recovered = storage.retrying(lambda: _recover(ctx, study, options), "recovering abandoned trials")
        queued = storage.retrying(search.prepare, "queueing trials")
        forked = "; forked from the resident pool" if head.pools else ""
        display.message(f"sweep {ctx.sweep.name}: {ctx.sweep.search.strategy} search, {len(slots)} slot(s) "
                        f"({', '.join(s.name for s in slots)}{forked}); study {storage.mask_url(ctx.storage_url)}; "
                        f"{queued} trial(s) queued" + (f", {recovered} abandoned trial(s) recovered" if recovered
                                                       else "") + (f", {warmed.describe()}" if warmed.describe()
                                                                   else ""))
        for note in notes:
            display.message(note)
        tracking = SweepTracking(ctx, study, options.cache_dir, slots=len(slots), started=started,
                                 log_diff=options.log_diff, webhooks=(options.notify_url, ctx.sweep.notify.url))
        (ctx.workdir / TRACKING_READY).unlink(missing_ok=True)
        counts = claims.state_counts(study)
        if ctx.sweep.search.strategy == "grid" and not (counts["waiting"] or counts["running"]):  # (trials running
            # elsewhere are waited for: their worker may die and leave them to this machine)
            tracking.start()
            tracking.update()
            tracking.finish(interrupted=False)
            return SweepOutcome(claims.state_counts(study), nothing_to_run=True, **_failures(ctx, study))
        interrupted, preempted = _schedule(ctx, study, search, slots, options, tracking, display, notifier, head)
        tracking.update()
        counts = claims.state_counts(study)
        stopped = stop.stop_reason(study)
        outcome = SweepOutcome(counts, interrupted, preempted, stopped=stopped, **_failures(ctx, study))
        if interrupted or stopped or not (counts["waiting"] or counts["running"]):  # else others are at it
            tracking.finish(interrupted, stopped)
            detail = "interrupted" if interrupted else f"stopped: {stopped}" if stopped else ""
            notifier.send("end", notify.summary("end", ctx.sweep.name, counts, best_trial(study),
                                                ctx.sweep.search.metric, notify.recent_failures(study),
                                                detail))
        notifier.flush()
        return outcome


def _process_start(default: float) -> float:
    """When this command started (its imports included): a sweep's wall time as its user sees it."""
    try:
        import psutil

        return min(default, psutil.Process().create_time())
    except Exception:  # noqa: BLE001 - a sandbox may hide the process table
        return default


def _failures(ctx: SweepContext, study: Any) -> dict[str, Any]:
    """Trial keys whose every attempt failed (no retry left), and where their tracebacks are."""
    keys = claims.trials_by_key(study)
    failed = sum(1 for trials in keys.values() if trials and all(t.state == TrialState.FAIL for t in trials))
    return {"failed_for_good": failed, "failures_dir": str(ctx.workdir / "failures")}


def _failed_for_good(study: Any, key: str, max_retries: int) -> bool:
    trials = claims.trials_by_key(study).get(key, [])
    return bool(trials) and claims.next_attempt(claims.current_trials(trials), max_retries) is None \
        and all(t.state == TrialState.FAIL for t in claims.current_trials(trials))


def stores_lock(workdir: Path) -> FileLock:
    """This machine's lock on creating the sweep's stores (study and MLflow): SQLite files and schema
    migrations made by two processes at once fail (another machine's are retried by the storage layer)."""
    return FileLock(str(workdir / ".stores.lock"), timeout=claims.LOCK_WAIT_SECONDS)


def _checked_study(ctx: SweepContext) -> Any:
    """The sweep's study, refusing data other than what it started on (trial keys would not match)."""
    study = ctx.open_study()
    started_on = study.user_attrs.get("data_fingerprint")
    if started_on and started_on != ctx.dataset.fingerprint:
        raise UserError(f"the data at {ctx.dataset.root} is not what sweep {ctx.sweep.name} started on "
                        f"(fingerprint {ctx.dataset.fingerprint}, the study's {started_on}); trial keys would not "
                        "match: use the same frames and labels, or a new sweep name")
    return study


def _recover(ctx: SweepContext, study: Any, options: RunOptions) -> int:
    """Fail trials whose worker died (they are re-queued by `prepare`); with --retry-failed, give trials whose
    retries were used up (e.g. before disk space was freed) another chance. Returns the trials recovered."""
    with claims.study_lock(study, ctx.workdir):
        dead = liveness.fail_dead_trials(study)
        if options.retry_failed:
            claims.requeue_failed(study, max_retries=10**9)
    return len(dead)


def _schedule(ctx: SweepContext, study: Any, search: Any, slots: list[Any], options: RunOptions,
              tracking: SweepTracking, display: SweepDisplay, notifier: notify.Notifier | None = None,
              head: HeadStart | None = None) -> tuple[bool, bool]:
    """Run the workers over the slots; (interrupted, by a SIGTERM) when the user or the machine stopped it."""
    resources = options.resources
    notifier = notifier or notify.Notifier(None, (), display.message)
    timeout = ctx.sweep.search.timeout
    template = WorkerConfig(sweep_yaml=ctx.sweep.to_yaml(), sweep_source=ctx.source, workdir=str(ctx.workdir),
                            storage_url=ctx.storage_url, cache_dir=options.cache_dir,
                            max_retries=resources.max_retries, on_oom=resources.on_oom, tracking_uri=ctx.tracking_uri,
                            reuse=options.reuse, ignore_stop=options.ignore_stop,
                            deadline=tracking.started + timeout if timeout else None,
                            backend=backends.chosen(resources.backend), trials_per_gpu=resources.trials_per_gpu)

    def tell(event: str, key: str, detail: str) -> None:
        if notifier.wants(event):
            notifier.send(event, notify.summary(event, ctx.sweep.name, claims.state_counts(study), best_trial(study),
                                                ctx.sweep.search.metric, notify.recent_failures(study),
                                                detail))

    def after_failure(key: str) -> None:
        if notifier.wants("failure") and _failed_for_good(study, key, resources.max_retries):
            tell("failure", key, f"trial {key} failed for good")
    scheduler_options = SchedulerOptions(trials_per_process=resources.trials_per_process,
                                         trial_timeout=resources.trial_timeout,
                                         memory_limit_mb=resources.memory_limit_mb,
                                         preempt_grace_seconds=resources.preempt_grace_seconds)

    def on_death(pid: int, trial_number: int | None, reason: str, oom_peak_mb: float | None = None) -> None:
        failed = _fail_worker_trials(study, pid, trial_number, reason,
                                     None if oom_peak_mb is None else (resources.on_oom, oom_peak_mb))
        atomic.remove_abandoned_staging(ctx.workdir / "trials")  # what it was writing when it died (chaos found one)
        for number in failed:
            display.message(f"trial #{number} failed: {reason}")
            if reason == "scheduler stopped" or liveness.not_the_trials_fault(reason):
                continue
            key = str(study.get_trials(deepcopy=False)[number].user_attrs.get(claims.KEY_ATTR, number))
            note = ctx.workdir / "failures" / f"{key}-trial{number}.txt"
            if not note.exists():  # no Python traceback survives a killed worker: the reason stands in for it
                atomic.write_text(note, f"trial #{number} {key}: {reason} (the worker process was lost; "
                                        "no Python traceback)\n")
            tell("stalled", key, f"trial #{number} {key}: {reason}")
            after_failure(key)

    waited_on = [0]  # trials running elsewhere last said, so the wait is announced once

    def refill() -> Work:
        def once() -> Work:
            with claims.study_lock(study, ctx.workdir):
                dead = liveness.fail_dead_trials(study)
            for _ in dead:
                tell("stalled", "", f"{len(dead)} trial(s) lost their worker ({liveness.DEAD_WORKER})")
                break
            return work_left(study, ctx.sweep, search, template.deadline, options.ignore_stop)

        # the lock and the liveness check reach the database around Optuna: the whole step is redone (idempotent)
        work = storage.retrying(once, "re-queueing trials")
        if not work.queued and work.running_elsewhere != waited_on[0]:
            display.message(f"waiting for {work.running_elsewhere} trial(s) running in other workers: one whose "
                            f"worker stops sending heartbeats for {liveness.grace_seconds():g} s is queued again "
                            "and run here (Ctrl-C leaves them to their workers)")
        waited_on[0] = work.running_elsewhere
        return work

    def on_event(event: Event, states: dict[str, SlotState]) -> None:
        if isinstance(event, TrialNote):
            display.message(f"trial #{event.trial} ({event.key}) {event.text}")
            return
        display.event(event, states)
        if isinstance(event, TrialFinished):
            tracking.update(throttled=True)
            if event.state == "failed":
                after_failure(event.key)

    with display.live(lambda: claims.state_counts(study)):
        scheduler = Scheduler(template, slots, scheduler_options, on_event, on_death, refill, head)
        scheduler.run(after_start=tracking.start)
    return scheduler.interrupts > 0, scheduler.preempted_at is not None


def work_left(study: Any, sweep: Any, search: Any, deadline: float | None, ignore_stop: bool) -> Work:
    """What the workers could still do once they have all left (call after failing dead trials): the trials the
    search queues now plus those already WAITING (a worker whose claim was cut off by a lost connection leaves
    one behind), and the trials still RUNNING in other processes, which come back queued if their worker dies;
    nothing once the sweep is stopped or past its time budget (workers would be started only to leave again)."""
    if stop.evaluate(study, sweep, deadline, rules_on=not ignore_stop):
        return Work(0)
    added = search.prepare()
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return Work(added + len(waiting), len(running))


def _fail_worker_trials(study: Any, pid: int, trial_number: int | None, reason: str,
                        oom: tuple[str, float] | None = None) -> list[int]:
    """Fail the RUNNING trials of a worker that died (by its trial number, or by its pid when its last events
    were lost with it); `oom` = (resources.on_oom, peak MB) when it was killed for its memory."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.number == trial_number or trial.user_attrs.get("pid") == pid:
            claimed_id = internals.trial_id(trial)
            if oom is not None:
                for name, value in memory.oom_attrs(memory.batch_of(trial.user_attrs), *oom).items():
                    internals.storage(study).set_trial_user_attr(claimed_id, name, value)
            liveness.fail_trial(study, claimed_id, reason)
            failed.append(trial.number)
    return failed
