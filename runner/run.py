"""Running a sweep end to end: validate everything up front, prepare the study, schedule slots, show progress.

`run` and `resume` are the same operation: the study remembers what finished, so running again trains only
what is missing. Checks that can fail (the sweep file, the data, weights, the workdir, the storage) all run
before any process starts, so bad input never leaves a half-made sweep behind.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.trial import TrialState
from rich.console import Console
from rich.live import Live
from rich.table import Table

from runner import study as studies
from runner.scheduler import Scheduler, SchedulerOptions, SlotState, plan_slots
from runner.expand import expand_grid
from runner.search import make_pruner, make_sampler, make_search
from runner.sweep import Sweep, load_sweep
from runner.tracking import Tracker, check_tracking_reachable, default_tracking_uri
from runner.worker import TRACKING_READY, WorkerConfig
from zoo import atomic, load_dataset, validated_spec
from zoo.errors import UserError, one_line
from zoo.data import Dataset


@dataclass
class SweepContext:
    """A loaded sweep with its data, workdir and study, ready to plan or run."""

    sweep: Sweep
    source: str
    dataset: Dataset
    workdir: Path
    storage_url: str
    tracking_uri: str

    def open_study(self, create: bool = True) -> Any:
        storage = studies.open_storage(self.storage_url)
        if not create:
            return studies.existing_study(self.sweep.name, storage)
        study = studies.open_study(self.sweep.name, storage, self.sweep.search.direction,
                                   make_sampler(self.sweep), make_pruner(self.sweep))
        if "sweep_yaml" not in study.user_attrs:  # the sweep travels with its study
            study.set_user_attr("sweep_yaml", self.sweep.to_yaml())
            if self.tracking_uri.startswith(("http://", "https://")) and "@" not in self.tracking_uri:
                study.set_user_attr("tracking_uri", self.tracking_uri)  # workers joining by name find it
            study.set_user_attr("data_fingerprint", self.dataset.fingerprint)
        return study


def load_context(path: Path, workdir: Path | None, storage: str | None, create_workdir: bool,
                 tracking_uri: str | None = None, sweep: Sweep | None = None,
                 data_root: Path | None = None) -> SweepContext:
    """A sweep file's (or an already loaded sweep's) context; `data_root` points at this machine's copy."""
    sweep = sweep or load_sweep(path)
    if data_root is not None:
        sweep = sweep.model_copy(update={"data": sweep.data.model_copy(update={"root": data_root.expanduser()})})
    dataset = load_dataset(sweep.data.root, sweep.data.labels)
    workdir = (workdir or Path("runs") / sweep.name).expanduser()
    if create_workdir:
        atomic.writable_dir(workdir, "workdir")
    url = storage or studies.default_storage(workdir)
    return SweepContext(sweep, str(path), dataset, workdir, url, resolve_tracking_uri(sweep, workdir, tracking_uri))


def sweep_from_study(storage_url: str, name: str) -> Sweep:
    """The sweep file stored in its study on creation: how a worker joins by study name alone."""
    import yaml

    from runner.sweep import sweep_from_mapping

    study = studies.existing_study(name, studies.open_storage(storage_url))
    if study is None:
        raise UserError(f"no study {name!r} in {studies.mask_url(storage_url)}")
    text = study.user_attrs.get("sweep_yaml")
    if not text:
        raise UserError(f"study {name!r} was not created by videosweep (it holds no sweep file)")
    return sweep_from_mapping(yaml.safe_load(text), None)


def resolve_tracking_uri(sweep: Sweep, workdir: Path, tracking_uri: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the sweep file's tracking.uri, else SQLite in the workdir."""
    return (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or sweep.tracking.uri
            or default_tracking_uri(workdir))


def load_tracking_only(path: Path, workdir: Path | None, tracking_uri: str | None) -> tuple[Sweep, Path, str]:
    """What reports need: the sweep, its workdir and tracking URI; the data need not be on this machine."""
    sweep = load_sweep(path)
    workdir = (workdir or Path("runs") / sweep.name).expanduser()
    return sweep, workdir, resolve_tracking_uri(sweep, workdir, tracking_uri)


class Progress:
    """Live table on a terminal, plain log lines otherwise."""

    def __init__(self, console: Console, study: Any, metric: str, direction: str):
        self.console, self.study, self.metric, self.direction = console, study, metric, direction
        self.started = time.time()
        self.live: Live | None = None
        self.best: float | None = None
        self.done_times: list[float] = []

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            self.live = Live(self._table({}), console=self.console, refresh_per_second=2)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def _table(self, states: dict[str, SlotState]) -> Table:
        counts = studies.state_counts(self.study)
        elapsed = time.time() - self.started
        pending = counts.get("waiting", 0)
        eta = ""
        if self.done_times and pending:
            per_trial = elapsed / len(self.done_times)
            eta = f", about {per_trial * pending / max(1, len(states)):.0f} s left"
        best = "-" if self.best is None else f"{self.best:.4f}"
        table = Table(title=f"done {counts['complete']}  running {counts['running']}  failed {counts['fail']}  "
                            f"pruned {counts['pruned']}  pending {pending}  best {self.metric} {best}  "
                            f"({elapsed:.0f} s{eta})")
        for column in ("slot", "trial", "architecture", "epoch"):
            table.add_column(column)
        for name, state in states.items():
            table.add_row(name, "-" if state.trial is None else f"#{state.trial} {state.key}",
                          str(state.info.get("architecture", "")) if state.trial is not None else "",
                          "" if state.step is None else str(state.step + 1))
        return table

    def event(self, event: dict[str, Any], states: dict[str, SlotState]) -> None:
        if event["kind"] == "finish":
            self.done_times.append(time.time())
            value = event.get("value")
            if value is not None and (self.best is None or (value > self.best) == (self.direction == "maximize")):
                self.best = value
        if self.live is not None:
            self.live.update(self._table(states))
            return
        if event["kind"] == "start":
            self.console.print(f"\\[{event['slot']}] trial #{event['trial']} {event['key']} "
                               f"{event['architecture']} started")
        elif event["kind"] == "finish":
            extra = f" {self.metric}={event['value']:.4f}" if event.get("value") is not None else ""
            extra += f" ({event['reason']})" if event.get("reason") else ""
            self.console.print(f"\\[{event['slot']}] trial #{event['trial']} {event['key']} {event['state']}{extra}")


def best_trial(study: Any) -> tuple[str, float] | None:
    """(trial key, value) of the best finished trial, None before any finished."""
    try:
        best = studies.retrying(lambda: study.best_trial, "reading the best trial")
    except ValueError:
        return None
    return best.user_attrs.get(studies.KEY, str(best.number)), float(best.value)


SWEEP_UPDATE_SECONDS = 5.0  # the parent run's counts and best metric are refreshed at most this often


def preflight(ctx: SweepContext) -> None:
    """Everything that can be refused before a single file is written: the storage URL, an empty grid,
    missing or uncached weights, an unreachable tracking server."""
    studies.check_storage_url(ctx.storage_url)
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


def run_sweep(ctx: SweepContext, console: Console, gpus: str | None = None, trials_per_gpu: int | None = None,
              workers: int | None = None, max_retries: int | None = None, trial_timeout: float | None = None,
              trials_per_process: int | None = None, cache_dir: str | None = None,
              memory_limit_mb: float | None = None, retry_failed: bool = False) -> dict[str, int]:
    resources = ctx.sweep.resources
    retries = resources.max_retries if max_retries is None else max_retries
    slots = plan_slots(gpus or resources.gpus, trials_per_gpu or resources.trials_per_gpu,
                       workers or resources.workers)
    preflight(ctx)
    atomic.writable_dir(ctx.workdir, "workdir")  # only now, when nothing else can refuse the sweep
    with studies.storage_errors(ctx.storage_url):
        return _run_sweep(ctx, console, slots, retries, resources, trial_timeout, trials_per_process, cache_dir,
                          memory_limit_mb, retry_failed)


def _run_sweep(ctx: SweepContext, console: Console, slots: list[Any], retries: int, resources: Any,
               trial_timeout: float | None, trials_per_process: int | None, cache_dir: str | None,
               memory_limit_mb: float | None, retry_failed: bool) -> dict[str, int]:
    study = ctx.open_study()
    started_on = study.user_attrs.get("data_fingerprint")
    if started_on and started_on != ctx.dataset.fingerprint:
        raise UserError(f"the data at {ctx.dataset.root} is not what sweep {ctx.sweep.name} started on "
                        f"(fingerprint {ctx.dataset.fingerprint}, the study's {started_on}); trial keys would not "
                        "match: use the same frames and labels, or a new sweep name")
    search = make_search(ctx.sweep, study, ctx.dataset.fingerprint, ctx.workdir, retries)
    with studies.study_lock(study, ctx.workdir):
        dead = studies.fail_dead_trials(study)
    if retry_failed:  # e.g. after freeing disk space: trials whose retries were used up get another chance
        with studies.study_lock(study, ctx.workdir):
            studies.requeue_failed(study, max_retries=10**9)
    queued = search.prepare()
    console.print(f"sweep [bold]{ctx.sweep.name}[/]: {ctx.sweep.search.strategy} search, {len(slots)} slot(s) "
                  f"({', '.join(s.name for s in slots)}); study {studies.mask_url(ctx.storage_url)}; "
                  f"{queued} trial(s) queued" + (f", {len(dead)} abandoned trial(s) recovered" if dead else ""))
    template = WorkerConfig(sweep_yaml=ctx.sweep.to_yaml(), sweep_source=ctx.source, workdir=str(ctx.workdir),
                            storage_url=ctx.storage_url, cache_dir=cache_dir, max_retries=retries,
                            tracking_uri=ctx.tracking_uri)
    options = SchedulerOptions(trials_per_process=trials_per_process or resources.trials_per_process,
                               trial_timeout=trial_timeout or resources.trial_timeout,
                               memory_limit_mb=memory_limit_mb or resources.memory_limit_mb,
                               search_timeout=ctx.sweep.search.timeout)

    def fail_dead_worker_trials(pid: int, trial_number: int | None, reason: str) -> list[int]:
        failed = []
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number == trial_number or trial.user_attrs.get("pid") == pid:
                studies.fail_trial(study, trial._trial_id, reason)
                failed.append(trial.number)
        return failed

    def on_death(pid: int, trial_number: int | None, reason: str) -> None:
        # Storage calls here and in refill are idempotent: a dropped connection is waited out, then redone.
        failed = studies.retrying(lambda: fail_dead_worker_trials(pid, trial_number, reason),
                                  "failing a dead worker's trial")
        if progress.live is None:
            for number in failed:
                console.print(f"trial #{number} failed: {reason}")

    def refill_once() -> int:
        with studies.study_lock(study, ctx.workdir):
            studies.fail_dead_trials(study)
        return search.prepare()

    def refill() -> int:
        return studies.retrying(refill_once, "re-queueing trials")

    tracking: dict[str, Any] = {}

    def start_tracking() -> None:
        """The MLflow store and the parent run; runs while the workers import TensorFlow."""
        tracker = Tracker(ctx.tracking_uri, ctx.workdir, ctx.sweep.name)
        with studies.study_lock(study, ctx.workdir):  # one parent run, whichever machine starts first
            parent = tracker.sweep_run(ctx.sweep, ctx.sweep.to_yaml(), studies.mask_url(ctx.storage_url),
                                       ctx.dataset)
            tracker.close_dead_runs(lambda: {t.user_attrs.get(studies.KEY) for t in study.get_trials(
                deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE))})
        tracking.update(tracker=tracker, parent=parent)
        atomic.write_json(ctx.workdir / TRACKING_READY, {"parent_run_id": parent})

    (ctx.workdir / TRACKING_READY).unlink(missing_ok=True)
    if ctx.sweep.search.strategy == "grid" and studies.state_counts(study)["waiting"] == 0:
        start_tracking()
        tracker, parent_run = tracking["tracker"], tracking["parent"]
        counts = studies.state_counts(study)
        tracker.update_sweep(parent_run, counts, best_trial(study))
        tracker.finish_sweep(parent_run, interrupted=False)
        console.print(f"nothing to run: complete {counts['complete']}, failed {counts['fail']} (retries used up)")
        return counts

    last_update = [0.0]

    def tracked(call: Any, *args: Any) -> Any:
        """A call to the tracking store from this process; the store gone mid-sweep stops the sweep clearly."""
        try:
            return call(*args)
        except UserError:
            raise
        except Exception as err:  # connection refused, timeouts: the study keeps every trial regardless
            raise UserError(f"lost the MLflow tracking store {ctx.tracking_uri} mid-sweep "
                            f"({one_line(f'{type(err).__name__}: {err}')[:200]}); every trial is kept in the study: "
                            "`videosweep resume` finishes the sweep once the store answers again") from None

    def on_event(event: dict[str, Any], states: dict[str, SlotState]) -> None:
        progress.event(event, states)
        if event["kind"] == "finish" and tracking and time.time() - last_update[0] > SWEEP_UPDATE_SECONDS:
            last_update[0] = time.time()
            tracked(tracking["tracker"].update_sweep, tracking["parent"], studies.state_counts(study),
                    best_trial(study))

    with Progress(console, study, ctx.sweep.search.metric, ctx.sweep.search.direction) as progress:
        scheduler = Scheduler(template, slots, options, on_event, on_death, refill)
        scheduler.run(after_start=start_tracking)
        interrupted = scheduler.interrupts > 0
    counts = studies.state_counts(study)
    tracked(tracking["tracker"].update_sweep, tracking["parent"], counts, best_trial(study))
    if interrupted or not (counts["waiting"] or counts["running"]):  # else other machines are still at it
        tracked(tracking["tracker"].finish_sweep, tracking["parent"], interrupted)
    console.print(f"complete {counts['complete']}, failed {counts['fail']}, pruned {counts['pruned']}, "
                  f"waiting {counts['waiting']}" + ("; interrupted: `videosweep resume` finishes the sweep"
                                                    if interrupted else ""))
    if interrupted:
        sys.exit(130)
    return counts
