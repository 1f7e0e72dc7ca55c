"""Standby workers (started while `run` checks the sweep): adopted by the scheduler in a real sweep (test_run's
sweeps all go through them), sent away when nobody adopts them, and gone by themselves when `run` is."""

from __future__ import annotations

import time

from runner.execution.scheduler import HeadStart, dismiss, plan_slots, start_standby
from runner.execution.worker import ProcessSetup


def test_standby_workers_nobody_adopts_are_sent_away_and_none_outlives_its_scheduler(cache_dir):
    slots = plan_slots("", 1, 2)
    setup = ProcessSetup("jax", cache_dir=str(cache_dir))  # the quicker import: the test is about the processes
    standby = start_standby(slots, setup)
    processes = [waiting.process for waiting in standby.values()]
    assert sorted(standby) == [slot.name for slot in slots] and all(p.is_alive() for p in processes)
    head = HeadStart(standby)
    dismiss(head)
    assert head.standby == {} and not any(p.is_alive() for p in processes)

    orphaned = start_standby(slots[:1], setup)["cpu0"]
    orphaned.orders.close()  # the scheduler is gone without a word (kill -9 of `run`): EOF on its orders
    deadline = time.monotonic() + 120
    while orphaned.process.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not orphaned.process.is_alive() and orphaned.process.exitcode == 0
