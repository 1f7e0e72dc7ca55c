"""Preemption (SIGTERM: the machine is being taken away): training stops at its next batch boundary."""

from __future__ import annotations

import threading

requested = threading.Event()  # set by a worker's SIGTERM handler, read by training between batches


class Preempted(Exception):
    """Training stopped at a batch boundary because the machine is being taken away."""
