"""How a running sweep shows itself: a live table of slots and counts on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.progress import (BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn,
                           TransferSpeedColumn)
from rich.table import Table

from runner.execution.events import EpochEnded, Event, TrialFinished, TrialStarted
from runner.spec.metrics import objective
from runner.execution.scheduler import SlotState


class SweepProgress:
    """The CLI's `SweepDisplay` (runner/execution/run.py): messages, a live table, and a line per trial event."""

    def __init__(self, console: Console, metric: str):
        self.console, self.metric, self.objective = console, metric, objective(metric)
        self.started = time.time()
        self.live_view: Live | None = None
        self.counts: Callable[[], dict[str, int]] = dict
        self.best: float | None = None
        self.done = 0

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def downloads(self) -> DownloadProgress:
        return DownloadProgress(self.console)

    @contextmanager
    def live(self, counts: Callable[[], dict[str, int]]) -> Iterator[None]:
        self.counts = counts
        if not self.console.is_terminal:
            yield
            return
        with Live(self._table({}), console=self.console, refresh_per_second=2) as view:
            self.live_view = view
            try:
                yield
            finally:
                self.live_view = None

    def event(self, event: Event, slots: dict[str, SlotState]) -> None:
        if isinstance(event, TrialFinished):
            self.done += 1
            if event.value is not None and self.objective.better(event.value, self.best):
                self.best = event.value
        if self.live_view is not None:
            self.live_view.update(self._table(slots))
        elif isinstance(event, TrialStarted):
            self.message(f"[{event.slot}] trial #{event.trial} {event.key} {event.architecture} started")
        elif isinstance(event, EpochEnded):  # a log of an overnight sweep shows it is alive, epoch by epoch
            self.message(f"[{event.slot}] trial #{event.trial} epoch {event.step + 1} "
                         f"val_accuracy={event.val_accuracy:.4f}")
        elif isinstance(event, TrialFinished):
            extra = f" {self.metric}={event.value:.4f}" if event.value is not None else ""
            extra += f" ({event.reason})" if event.reason else ""
            self.message(f"[{event.slot}] trial #{event.trial} {event.key} {event.state}{extra}")

    def _table(self, slots: dict[str, SlotState]) -> Table:
        counts: dict[str, Any] = self.counts()
        elapsed = time.time() - self.started
        pending = counts.get("waiting", 0)
        eta = ""
        if self.done and pending:
            eta = f", about {elapsed / self.done * pending / max(1, len(slots)):.0f} s left"
        best = "-" if self.best is None else f"{self.best:.4f}"
        table = Table(title=f"finished {counts.get('complete', 0)}  running {counts.get('running', 0)}  "
                            f"failed {counts.get('fail', 0)}  pruned {counts.get('pruned', 0)}  pending {pending}  "
                            f"best {self.metric} {best}  ({elapsed:.0f} s{eta})")
        for column in ("slot", "trial", "architecture", "epoch"):
            table.add_column(column)
        for name, state in slots.items():
            running = state.trial is not None
            table.add_row(name, f"#{state.trial} {state.key}" if running else "-",
                          state.architecture if running else "", "" if state.step is None else str(state.step + 1))
        return table


class DownloadProgress:
    """zoo.weights' DownloadReporter: a rich bar per file on a terminal, one line per file otherwise."""

    def __init__(self, console: Console):
        self.console = console
        self.bar: Progress | None = None
        self.task: TaskID | None = None

    def start(self, name: str, total: int | None) -> None:
        if not self.console.is_terminal:
            return
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                            TimeRemainingColumn(), console=self.console, transient=True)
        self.bar.start()
        self.task = self.bar.add_task(f"fetching {name}", total=total)

    def advance(self, size: int) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.advance(self.task, size)

    def abort(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = self.task = None

    def done(self, name: str, size: int, check: str) -> None:
        self.abort()
        self.console.print(f"fetched {name} ({size / 2**20:,.1f} MiB; {check})", highlight=False, markup=False)
