"""Test and debugging hooks: named faults a trial can be made to suffer, so fault tolerance is testable.

`VIDEOSWEEP_FAULT` holds `kind:match` pairs separated by commas; a trial whose canonical parameters contain
`match` (as `key=value`) suffers `kind`: raise, oom, segfault, sleep (seconds after `@`), or count (appends the
trial's parameters to the file after `@`, to count trainings). Unset in normal use: then nothing happens.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any


def _matches(spec: Any, match: str) -> bool:
    flat = spec.flat()
    key, _, value = match.partition("=")
    return key in flat and str(flat[key]) == value


def before_trial(spec: Any) -> None:
    faults = os.environ.get("VIDEOSWEEP_FAULT", "")
    for item in filter(None, (part.strip() for part in faults.split(","))):
        kind, _, rest = item.partition(":")
        match, _, argument = rest.partition("@")
        if match and not _matches(spec, match):
            continue
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
