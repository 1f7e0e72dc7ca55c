"""Out of memory: recognising a trial that died of it, and how (or whether) it is tried again.

A trial dies of memory in four ways: a Python `MemoryError`, a backend's allocator error (TensorFlow's
`ResourceExhaustedError`, JAX's `RESOURCE_EXHAUSTED`, PyTorch's `OutOfMemoryError`, all recognised by name so no
backend is imported here), the kernel's OOM killer (SIGKILL; counted in the cgroup's `memory.events`), or a
worker killed while its resident memory was past `resources.memory_limit_mb`. Such a failure is recorded as
`oom` with the peak memory seen, and is never retried the same way: `resources.on_oom: fail` leaves it failed,
`retry_smaller_batch` tries it again with half the batch (the trial key still names the point as the sweep
file gives it; the batch actually used is recorded beside it).
"""

from __future__ import annotations

import resource
import signal
import sys
from pathlib import Path
from typing import Any

OOM = "oom"  # the failure kind, in the study (failure_kind) and in MLflow (videosweep.failure_kind)
KIND_ATTR = "failure_kind"
PEAK_ATTR = "peak_memory_mb"
BATCH_ATTR = "batch_size"  # on a queued retry: the batch it trains with (half the one that ran out of memory)
POLICIES = ("fail", "retry_smaller_batch")
OOM_ATTRS = (KIND_ATTR, PEAK_ATTR, "oom_batch_size", "oom_retry_batch_size")  # of one attempt: not copied on
_BACKEND_ERRORS = ("ResourceExhaustedError", "OutOfMemoryError")
_BACKEND_MESSAGES = ("RESOURCE_EXHAUSTED", "out of memory", "Out of memory", "OOM when allocating")
_CGROUP_EVENTS = Path("/sys/fs/cgroup/memory.events")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether an exception raised by a trial means it ran out of memory (host or accelerator)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:  # a backend error may be wrapped (raise ... from err)
        seen.add(id(err))
        if isinstance(err, MemoryError) or type(err).__name__ in _BACKEND_ERRORS:
            return True
        if type(err).__name__ in ("XlaRuntimeError", "JaxRuntimeError", "RuntimeError", "InternalError") and any(
                text in str(err) for text in _BACKEND_MESSAGES):
            return True
        err = err.__cause__ or err.__context__
    return False


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed in this cgroup (None where it does not say)."""
    try:
        for line in _CGROUP_EVENTS.read_text().splitlines():
            name, _, count = line.partition(" ")
            if name == "oom_kill":
                return int(count)
    except (OSError, ValueError):
        pass
    return None


def killed_by_memory(exitcode: int | None, peak_mb: float, limit_mb: float | None,
                     kills_before: int | None, kills_now: int | None) -> bool:
    """Whether a worker that died with `exitcode` died of memory: SIGKILLed while the OOM killer's count rose,
    or while its resident memory was past the limit."""
    if exitcode != -signal.SIGKILL:
        return False
    if kills_before is not None and kills_now is not None and kills_now > kills_before:
        return True
    return limit_mb is not None and peak_mb > limit_mb


def oom_attrs(batch_size: int, policy: str, peak_mb: float | None) -> dict[str, Any]:
    """What the study records on a trial that ran out of memory, with the batch its retry uses (if any)."""
    attrs: dict[str, Any] = {KIND_ATTR: OOM, "oom_batch_size": batch_size}
    if peak_mb is not None:
        attrs[PEAK_ATTR] = round(peak_mb, 1)
    if policy == "retry_smaller_batch" and batch_size > 1:
        attrs["oom_retry_batch_size"] = batch_size // 2
    return attrs


def next_batch(last_failure: dict[str, Any]) -> int | None:
    """The batch size a retry of a key that ran out of memory trains with; None: it is not retried (`fail`, or
    the batch is down to 1). Only meaningful when the key's last failure is an `oom`."""
    size = last_failure.get("oom_retry_batch_size")
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 1 else None


def batch_of(attrs: dict[str, Any]) -> int:
    """The batch size a study trial trains with: a retry's smaller one, else its parameters' (else Keras's 32)."""
    size = attrs.get(BATCH_ATTR)
    if isinstance(size, int) and not isinstance(size, bool) and size >= 1:
        return size
    params = attrs.get("params")
    size = params.get("batch_size") if isinstance(params, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 1 else 32


def is_oom(attrs: dict[str, Any]) -> bool:
    return attrs.get(KIND_ATTR) == OOM
