"""Test and debugging hooks: named faults a trial can be made to suffer, so fault tolerance is testable.

`VIDEOSWEEP_FAULT` holds `kind:match` pairs separated by commas; a trial whose canonical parameters contain
`match` (as `key=value`, several joined by `&`) suffers `kind`: raise, oom, segfault, sleep (seconds after `@`), count (appends the
trial's parameters to the file after `@`, to count trainings), epochs (appends the parameters and the epoch
after every epoch to the file after `@`), batches (the same after every batch, with the batch), kill (SIGKILL after the
epoch after `@`, unless continued past it), term (SIGTERM, a preemption, after `@E.B`: batch B of the epoch after E
epochs, unless continued past it), nap (seconds after `@` after every epoch), or stall (seconds after `@`, between
the claim and the trial's MLflow run). Unset in normal use: then nothing happens.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _matches(spec: Any, match: str) -> bool:
    """Whether every `key=value` of `match` (joined by `&`) holds for the trial."""
    flat = spec.flat()
    for condition in match.split("&"):
        key, _, value = condition.partition("=")
        if key not in flat or str(flat[key]) != value:
            return False
    return True


def _faults(spec: Any) -> Iterator[tuple[str, str, str]]:
    """The (kind, match, argument) triples of VIDEOSWEEP_FAULT that apply to this trial."""
    faults = os.environ.get("VIDEOSWEEP_FAULT", "")
    for item in filter(None, (part.strip() for part in faults.split(","))):
        kind, _, rest = item.partition(":")
        match, _, argument = rest.partition("@")
        if not match or _matches(spec, match):
            yield kind, match, argument


def after_claim(spec: Any) -> None:
    """Right after a worker claims the trial, before its MLflow run: `stall` plays a slow tracking server."""
    for kind, match, argument in _faults(spec):
        if kind == "stall":
            time.sleep(float(argument or 60))


def before_trial(spec: Any) -> None:
    for kind, match, argument in _faults(spec):
        if kind == "raise":
            raise RuntimeError(f"injected failure for {match}")
        if kind == "oom":  # a real failed allocation, as a too-large batch or model gives
            import numpy as np

            np.ones((1 << 46,), dtype=np.uint8)
        if kind == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        if kind == "sleep":
            time.sleep(float(argument or 3600))
        if kind == "count":
            with open(Path(argument), "a") as handle:
                handle.write(json.dumps(spec.flat(), sort_keys=True) + "\n")


def after_epoch(spec: Any, epochs: int, resumed_from: int) -> None:
    """After an epoch's checkpoint: `kill` (epochs after `@`) plays a `kill -9` of the worker there, once: a
    trial continued from a checkpoint past that epoch is spared."""
    for kind, match, argument in _faults(spec):
        if kind == "kill" and epochs == int(argument or 1) and resumed_from < epochs:
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "nap":  # a slow epoch: time for a signal to arrive mid-trial
            time.sleep(float(argument or 1))
        if kind == "epochs":  # every epoch trained, redone ones included: what faults cost
            with open(Path(argument), "a") as handle:
                handle.write(json.dumps({"params": spec.flat(), "epoch": epochs}, sort_keys=True) + "\n")


def after_batch(spec: Any, epochs: int, batch: int, resumed: tuple[int, int]) -> None:
    """After batch `batch` (from 1) of the epoch after `epochs`: `term` plays a preemption there, once (a trial
    continued from a checkpoint at or past it, `resumed` as (epochs, batch), is spared); `batches` counts."""
    if not os.environ.get("VIDEOSWEEP_FAULT"):
        return
    for kind, match, argument in _faults(spec):
        if kind == "term":
            at = tuple(int(part) for part in argument.split("."))
            if (epochs, batch) == at and resumed < at:
                os.kill(os.getpid(), signal.SIGTERM)
        if kind == "batches":
            with open(Path(argument), "a") as handle:
                handle.write(json.dumps({"params": spec.flat(), "epoch": epochs + 1, "batch": batch},
                                        sort_keys=True) + "\n")
