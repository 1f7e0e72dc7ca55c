"""What workers tell the scheduler, as typed messages over each worker's own pipe.

The study and MLflow hold the record; these events only drive the scheduler's bookkeeping (which slot runs
which trial, since when) and the progress display.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class WorkerEvent:
    slot: str
    time: float = field(default_factory=time.time, kw_only=True)


@dataclass(frozen=True)
class WorkerReady(WorkerEvent):
    pid: int


@dataclass(frozen=True)
class TrialStarted(WorkerEvent):
    trial: int
    key: str
    architecture: str


@dataclass(frozen=True)
class EpochEnded(WorkerEvent):
    trial: int
    step: int
    val_accuracy: float


@dataclass(frozen=True)
class TrialFinished(WorkerEvent):
    trial: int
    key: str
    state: str  # complete | pruned | failed
    value: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class TrialNote(WorkerEvent):
    """Something people should know about a running trial (e.g. it starts over without its checkpoint)."""

    trial: int
    key: str
    text: str


@dataclass(frozen=True)
class WorkerExited(WorkerEvent):
    ran: int
    reason: str  # empty (nothing left) | stop (asked to) | recycle | failed | memory


@dataclass(frozen=True)
class WorkerGaveUp(WorkerEvent):
    """A worker stopped on an error of its own making no trial's fault: a shared store (the study database, the
    tracking server) that stayed unreachable (`temporary`), or bad input; why, in one line."""

    message: str
    temporary: bool = True


Event = Union[WorkerReady, TrialStarted, EpochEnded, TrialFinished, TrialNote, WorkerExited, WorkerGaveUp]
