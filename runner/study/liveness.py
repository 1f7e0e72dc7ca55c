"""Liveness: running trials send heartbeats; trials whose worker is gone are failed with the reason.

A worker on another machine can only be judged by its heartbeats (grace period); one on this machine also by
its process (a missing, zombie or reused PID means it is gone now, not after the grace period).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from runner.study import optuna_internals as internals

GRACE_SECONDS = 20  # default; VIDEOSWEEP_HEARTBEAT_GRACE_SECONDS for slow networks or heavily loaded hosts
INTERRUPTED = "interrupted by the user"  # not the trial's fault: does not use up a retry
PREEMPTED = "preempted (SIGTERM): continues from its last checkpoint"  # nor is this
DEAD_WORKER = "worker stopped sending heartbeats"

def not_the_trials_fault(failure: object) -> bool:
    """Whether a failure reason is an interruption or a preemption, which uses up no retry."""
    return isinstance(failure, str) and failure.startswith((INTERRUPTED, PREEMPTED))


def grace_seconds() -> float:
    """How long a RUNNING trial may go without a heartbeat before another process declares its worker dead."""
    return float(os.environ.get("VIDEOSWEEP_HEARTBEAT_GRACE_SECONDS", GRACE_SECONDS))


def heartbeat_seconds() -> float:
    """Four beats per grace period: one late beat (a busy database, a starved thread) is not a death."""
    return grace_seconds() / 4


class HeartbeatLost(RuntimeError):
    """The trial's heartbeat could not be recorded: other processes will judge its worker dead."""


class Heartbeat:
    """Records a claimed trial's heartbeat in the study until stopped (lets others detect a dead worker).

    A database that is briefly unreachable is retried at the next beat; an error that is not transient, or
    one that outlasts the database retry budget, is kept as `failure` and raised by `check()`: the trial
    stops with the reason instead of silently running on while another machine re-runs it.
    """

    def __init__(self, study: optuna.Study, claimed_id: int, interval: float | None = None) -> None:
        self._stop = threading.Event()
        self.failure: str | None = None
        self._thread = threading.Thread(target=self._beat, daemon=True, args=(
            internals.storage(study), claimed_id, heartbeat_seconds() if interval is None else interval))

    def _beat(self, storage: Any, claimed_id: int, interval: float) -> None:
        from runner.retry import database_budget
        from runner.study.storage import unreachable

        last_beat = time.monotonic()
        while True:  # the first beat at once: the claim's own beat may already be seconds old
            try:
                storage.record_heartbeat(claimed_id)
                last_beat = time.monotonic()
            except Exception as err:  # noqa: BLE001 - transient ones are retried at the next beat
                if not unreachable(err) or time.monotonic() - last_beat > database_budget():
                    self.failure = f"heartbeat could not be recorded: {type(err).__name__}: {err}"
                    return
            if self._stop.wait(interval):
                return

    def check(self) -> None:
        """Raise HeartbeatLost if heartbeats stopped for good (called between epochs and before the result)."""
        if self.failure is not None:
            raise HeartbeatLost(self.failure)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def fail_dead_trials(study: optuna.Study, reason: str = DEAD_WORKER) -> list[int]:
    """Fail RUNNING trials whose worker is gone: stale heartbeat, or none ever sent after the grace period."""
    from runner.study.storage import retrying  # (the storage module builds on this one)

    stale = set(internals.stale_trial_ids(study))
    cutoff = dt.datetime.now() - dt.timedelta(seconds=grace_seconds())
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        claimed_id = internals.trial_id(trial)
        if _local_worker_gone(trial):
            stale.add(claimed_id)
        elif trial.datetime_start and trial.datetime_start < cutoff and not retrying(
                lambda: internals.has_heartbeat(study, claimed_id), "reading heartbeats"):  # noqa: B023
            stale.add(claimed_id)
    return [claimed_id for claimed_id in stale if fail_trial(study, claimed_id, reason)]


def _local_worker_gone(trial: FrozenTrial) -> bool:
    """A trial run on this host by a process that no longer exists is dead now, not after the grace period.

    A zombie counts as gone (a container's PID 1 may never reap it), and so does a process started after the
    trial did (its PID was reused).
    """
    import psutil

    pid = trial.user_attrs.get("pid")
    if trial.user_attrs.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        started = trial.datetime_start.timestamp() if trial.datetime_start else None
        return started is not None and process.create_time() > started + 1
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def fail_trial(study: optuna.Study, claimed_id: int, reason: str) -> bool:
    """Mark a trial FAIL with its reason (its worker died under it); False if it had already finished."""
    storage = internals.storage(study)
    try:
        storage.set_trial_user_attr(claimed_id, "failure", reason)
        return bool(storage.set_trial_state_values(claimed_id, state=TrialState.FAIL))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
