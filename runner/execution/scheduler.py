"""Where and how trials run: one long-lived worker process per slot (a GPU, or a share of the CPU cores).

Slots pull trials from the study as soon as they are free. The scheduler watches its workers: a worker that
dies (signal, out of memory) has its trial failed with the reason and is replaced; one that ran
`trials_per_process` trials, failed a trial or passed its memory limit leaves and is replaced; a trial over
`trial_timeout` is killed. The first Ctrl-C stops handing out trials, the second stops the running ones; either
way the study is left for `videosweep resume`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable, NamedTuple

import psutil

from runner import memory
from runner.execution.events import EpochEnded, Event, TrialFinished, TrialStarted, WorkerExited, WorkerGaveUp
from runner.execution.pool import PoolClient, code_fingerprint, pool_started
from runner.execution.worker import GAVE_UP_EXIT, ProcessSetup, WorkerConfig, standby_main, worker_main
from runner.study.liveness import INTERRUPTED, PREEMPTED
from zoo.errors import StoreUnreachable, UserError

POLL_SECONDS = 0.2
ELSEWHERE_POLL_SECONDS = 2.0  # how often an idle scheduler looks at another machine's running trials


@dataclass(frozen=True)
class Slot:
    name: str
    gpu: str | None  # the CUDA_VISIBLE_DEVICES value, None for CPU
    cpu_threads: int | None = None


def detect_gpus() -> list[str]:
    """GPU indices from nvidia-smi (no TensorFlow import in the scheduler); VIDEOSWEEP_FAKE_GPUS=N for tests."""
    fake = os.environ.get("VIDEOSWEEP_FAKE_GPUS")
    if fake is not None:
        return [str(i) for i in range(int(fake))]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]


def plan_slots(gpus: str, trials_per_gpu: int, workers: int | None) -> list[Slot]:
    """Slots for `--gpus auto|none|0,1,3`: one per (GPU, index < trials_per_gpu), else CPU slots."""
    available = detect_gpus()
    if gpus == "auto":
        chosen = available
    elif gpus in ("none", ""):
        chosen = []
    else:
        chosen = [part.strip() for part in gpus.split(",") if part.strip()]
        missing = [g for g in chosen if g not in available]
        if missing:
            found = ", ".join(available) if available else "none"
            raise UserError(f"--gpus names GPU {', '.join(missing)} which is not there (GPUs found: {found})")
    cores = os.cpu_count() or 1
    if chosen:  # each GPU slot gets its share of the cores too (input pipeline, decoding, host-side ops)
        share = max(1, cores // (len(chosen) * trials_per_gpu))
        return [Slot(f"gpu{g}.{i}", g, share) for g in chosen for i in range(trials_per_gpu)]
    count = workers or max(1, cores // 2)
    return [Slot(f"cpu{i}", None, max(1, cores // count)) for i in range(count)]


@dataclass
class SlotState:
    slot: Slot
    process: Any = None
    trial: int | None = None
    key: str | None = None
    started: float = 0.0
    step: int | None = None
    ran: int = 0
    finished: bool = False  # its worker found nothing left to do
    reader: Connection | None = None  # this worker's own event pipe: a dying worker cannot block the others
    architecture: str = ""
    gave_up: WorkerGaveUp | None = None  # why its worker stopped on an unreachable shared store
    peak_mb: float = 0.0  # its worker's peak resident memory during the current trial (sampled)
    oom_kills: int | None = None  # the cgroup's OOM-killer count when the current trial started


@dataclass
class SchedulerOptions:
    trials_per_process: int = 50
    trial_timeout: float | None = None
    memory_limit_mb: float | None = None
    preempt_grace_seconds: float = 60.0  # after a SIGTERM, how long workers have to stop before they are killed


class Work(NamedTuple):
    """What is left for the workers once they have all left: trials they can take now, and trials running in
    another machine's workers (the scheduler waits for those: if their worker dies, they come back queued)."""

    queued: int
    running_elsewhere: int = 0


@dataclass
class Standby:
    """A slot's worker started before the sweep was ready to run, waiting for its config (`worker.standby_main`)."""

    process: Any
    events: Connection  # the scheduler's reading end of the worker's event pipe
    orders: Connection  # where its WorkerConfig goes (None: leave)


@dataclass
class HeadStart:
    """Workers ready before the scheduler needs them: a standby process per slot (adopted once) or, where a resident
    pool serves the slot's setup, its server (every worker of the slot is forked from it)."""

    standby: dict[str, Standby] = field(default_factory=dict)
    pools: dict[str, PoolClient] = field(default_factory=dict)


def head_start(slots: list[Slot], setup: ProcessSetup) -> HeadStart:
    """Connect to the pool servers for the slots' setups; start standby workers for the other slots."""
    pools = connect_slots(slots, setup)
    return HeadStart(start_standby([slot for slot in slots if slot.name not in pools], setup), pools)


def start_standby(slots: list[Slot], setup: ProcessSetup) -> dict[str, Standby]:
    """One worker per slot, started now so that its backend import overlaps `run`'s checks and store opening
    (about 5-10 s of TensorFlow on a CPU); the scheduler adopts them, `dismiss` sends away the rest."""
    context = mp.get_context("spawn")
    standby = {}
    for slot in slots:
        events_reader, events_writer = context.Pipe(duplex=False)
        orders_reader, orders_writer = context.Pipe(duplex=False)
        process = context.Process(target=standby_main, name=f"videosweep-{slot.name}",
                                  args=(slot_setup(setup, slot), orders_reader, events_writer))
        process.start()
        events_writer.close()  # the child holds the only ends it uses: EOF here means it is gone
        orders_reader.close()
        standby[slot.name] = Standby(process, events_reader, orders_writer)
    return standby


def slot_setup(setup: ProcessSetup, slot: Slot) -> ProcessSetup:
    return replace(setup, gpu=slot.gpu, cpu_threads=slot.cpu_threads)


def connect_slots(slots: list[Slot], setup: ProcessSetup) -> dict[str, PoolClient]:
    """Slot name -> a connection to the resident pool server for its setup, for slots that have one."""
    if not pool_started():
        return {}
    fingerprint = code_fingerprint()
    clients: dict[ProcessSetup, PoolClient | None] = {}
    for slot in slots:
        own = slot_setup(setup, slot)
        if own not in clients:
            clients[own] = PoolClient.connect(own, fingerprint)
    return {slot.name: client for slot in slots if (client := clients[slot_setup(setup, slot)]) is not None}


def dismiss(head: HeadStart) -> None:
    """Send away the standby workers nobody adopted (the sweep was refused, or had nothing to run) and leave the
    pool servers (which stop what they still run for this scheduler)."""
    standby = head.standby
    for waiting in standby.values():
        try:
            waiting.orders.send(None)
        except OSError:
            pass
        waiting.orders.close()
    for waiting in standby.values():
        waiting.process.join(0.5)
        if waiting.process.is_alive():  # still importing its backend (it reads None only then): nothing to lose
            waiting.process.kill()
            waiting.process.join()
        waiting.events.close()
    standby.clear()
    for client in set(head.pools.values()):
        client.close()
    head.pools.clear()


class Scheduler:
    """Runs worker processes over the slots until the study has nothing left for them."""

    def __init__(self, template: WorkerConfig, slots: list[Slot], options: SchedulerOptions,
                 on_event: Callable[[Event, dict[str, SlotState]], None],
                 on_worker_death: Callable[[int, int | None, str, float | None], None],
                 refill: Callable[[], Work], head: HeadStart | None = None):
        self.template, self.options = template, options
        self.head = head or HeadStart()  # standby workers are adopted (and removed) by `_spawn`
        self.states = {slot.name: SlotState(slot) for slot in slots}
        self.on_event, self.on_worker_death, self.refill = on_event, on_worker_death, refill
        self.context = mp.get_context("spawn")
        self.interrupts = 0
        self.preempted_at: float | None = None  # monotonic time of the SIGTERM that preempted the sweep
        # Its own stop file: a second `run` of the sweep on this machine must not stop this one's workers.
        self.stop_file = Path(template.workdir) / f".stop.{os.getpid()}"
        self.template = replace(template, stop_file=str(self.stop_file))

    def _spawn(self, state: SlotState) -> None:
        config = replace(self.template, slot=state.slot.name, gpu=state.slot.gpu, cpu_threads=state.slot.cpu_threads,
                         max_trials=self.options.trials_per_process, memory_limit_mb=self.options.memory_limit_mb)
        state.trial, state.key, state.step, state.finished = None, None, None, False
        if self._adopt(state, config) or self._fork(state, config):
            return
        reader, writer = self.context.Pipe(duplex=False)
        state.process = self.context.Process(target=worker_main, args=(replace(config, events=writer),),
                                             name=f"videosweep-{state.slot.name}")
        state.process.start()
        writer.close()  # the child holds the only writing end: EOF here means the worker is gone
        state.reader = reader

    def _adopt(self, state: SlotState, config: WorkerConfig) -> bool:
        """Hand `config` to the slot's standby worker, if it has one still alive."""
        standby = self.head.standby.pop(state.slot.name, None)
        if standby is None:
            return False
        try:
            if not standby.process.is_alive():
                raise OSError("gone")
            standby.orders.send(config)
        except OSError:
            dismiss(HeadStart({state.slot.name: standby}))
            return False
        standby.orders.close()
        state.process, state.reader = standby.process, standby.events
        return True

    def _fork(self, state: SlotState, config: WorkerConfig) -> bool:
        """Fork the slot's worker from its resident pool server, if it has one that still answers."""
        pool = self.head.pools.get(state.slot.name)
        if pool is None:
            return False
        reader, writer = self.context.Pipe(duplex=False)
        try:
            state.process = pool.fork(config, writer)
        except OSError:  # the server left (stopped, or idle too long): spawn as without one
            self.head.pools = {name: client for name, client in self.head.pools.items() if client is not pool}
            reader.close()
            return False
        finally:
            writer.close()  # the worker holds the only writing end: EOF here means it is gone
        state.reader = reader
        return True

    def _handle(self, event: Event) -> None:
        state = self.states[event.slot]
        if isinstance(event, TrialStarted):
            state.trial, state.key, state.started, state.step = event.trial, event.key, event.time, None
            state.architecture = event.architecture
            state.peak_mb, state.oom_kills = 0.0, memory.oom_kills()
        elif isinstance(event, EpochEnded):
            state.step = event.step
        elif isinstance(event, TrialFinished):
            state.trial, state.key, state.ran = None, None, state.ran + 1
        elif isinstance(event, WorkerExited):
            state.finished = event.reason in ("empty", "stop")
        elif isinstance(event, WorkerGaveUp):
            state.gave_up = event
        self.on_event(event, self.states)

    def _drain(self, timeout: float) -> None:
        readers = {state.reader: state for state in self.states.values() if state.reader is not None}
        for reader in wait(list(readers), timeout) if readers else []:
            while True:
                try:
                    if not reader.poll():
                        break
                    self._handle(reader.recv())
                except (EOFError, OSError):
                    reader.close()
                    readers[reader].reader = None
                    break
        if not readers:
            time.sleep(timeout)

    def _kill(self, state: SlotState, reason: str) -> None:
        if state.process is not None and state.process.is_alive():
            os.kill(state.process.pid, signal.SIGKILL)
            state.process.join(10)
            self.on_worker_death(state.process.pid, state.trial, reason, None)
            state.trial = None

    def _check(self, state: SlotState) -> None:
        process = state.process
        if process is None:
            return
        timeout = self.options.trial_timeout
        if state.trial is not None and timeout and time.time() - state.started > timeout:
            self._kill(state, f"trial timed out after {timeout:g} s")
        if process.is_alive():
            return
        process.join()
        self._drain(0)  # the worker's last events may still be queued
        code = process.exitcode
        if code == GAVE_UP_EXIT:  # retrying the store did not help; respawning would not either
            gave_up = state.gave_up or WorkerGaveUp(
                state.slot.name, "a worker could not reach a shared store (study database or tracking server)")
            error = StoreUnreachable if gave_up.temporary else UserError
            raise error(f"{gave_up.message}; stopped cleanly: `videosweep resume` finishes the sweep")
        if code:  # its last events may be lost with it: the study knows its trials by the worker's pid
            reason = f"worker died with signal {signal.Signals(-code).name}" if code < 0 else \
                f"worker exited with code {code}"
            oom = memory.killed_by_memory(code, state.peak_mb, self.options.memory_limit_mb, state.oom_kills,
                                          memory.oom_kills())
            if oom:
                reason = f"out of memory: the worker was killed (SIGKILL) at {state.peak_mb:.0f} MB resident"
            self.on_worker_death(process.pid, state.trial, reason, state.peak_mb if oom else None)
        state.trial = None
        state.process = None

    def _supervise(self) -> None:
        """One round of watching the workers: their events, memory, deaths and replacements."""
        self._drain(POLL_SECONDS)
        if self.preempted_at is not None and time.monotonic() > self.preempted_at + self.options.preempt_grace_seconds:
            for state in self.states.values():  # the machine goes soon: what has not stopped is stopped
                self._kill(state, f"{PREEMPTED} (killed: not stopped within "
                                  f"{self.options.preempt_grace_seconds:g} s of the SIGTERM)")
        for state in self.states.values():
            self._sample_memory(state)
            self._check(state)
            if state.process is None and not self.interrupts and not state.finished:
                self._spawn(state)  # recycled, or replacing a dead worker

    def _sample_memory(self, state: SlotState) -> None:
        """The worker's resident memory now, kept as the trial's peak: what a SIGKILL is judged by."""
        if state.process is None or state.trial is None or not state.process.is_alive():
            return
        try:
            resident = psutil.Process(state.process.pid).memory_info().rss / (1024 * 1024)
        except psutil.Error:  # it is exiting: its peak so far stands
            return
        state.peak_mb = max(state.peak_mb, resident)

    def _preempt(self) -> None:
        """SIGTERM (SLURM, Kubernetes, a spot instance): every worker stops at its next batch, records its trial as
        preempted and leaves; the sweep ends within `preempt_grace_seconds`. A second SIGTERM changes nothing."""
        if self.preempted_at is not None:
            return
        self.preempted_at = time.monotonic()
        self.interrupts += 1
        self.stop_file.touch()
        for state in self.states.values():
            if state.process is not None and state.process.is_alive():
                os.kill(state.process.pid, signal.SIGTERM)

    def _pause(self, seconds: float) -> None:
        """Wait with no worker running, ending early at a Ctrl-C."""
        deadline = time.monotonic() + seconds
        while not self.interrupts and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)

    def _interrupt(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGTERM:
            self._preempt()
            return
        self.interrupts += 1
        self.stop_file.touch()
        if self.interrupts >= 2:
            for state in self.states.values():
                self._kill(state, INTERRUPTED)

    def run(self, after_start: Callable[[], None] | None = None) -> None:
        """Spawn every slot, run `after_start` while the workers import TensorFlow, then supervise."""
        self.stop_file.unlink(missing_ok=True)
        previous = {sig: signal.signal(sig, self._interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for state in self.states.values():
                self._spawn(state)
            if after_start is not None:
                after_start()
            while True:
                if any(state.process is not None for state in self.states.values()):
                    self._supervise()
                    continue
                if self.interrupts:
                    break
                work = self.refill()
                if work.queued > 0:  # failed trials re-queued for a retry, or a rung promoted: go round again
                    for state in self.states.values():
                        self._spawn(state)
                elif work.running_elsewhere > 0:  # they may still fail and be re-queued: nobody else may be
                    self._pause(ELSEWHERE_POLL_SECONDS)  # left to run them
                else:
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for state in self.states.values():
                if state.process is not None and state.process.is_alive():
                    self._kill(state, "scheduler stopped")
            self.stop_file.unlink(missing_ok=True)
