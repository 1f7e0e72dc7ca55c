"""The grid: every point exactly once, successive-halving rungs promoted where the last trial of a rung ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from runner.search import halving
from runner.search.expand import Expansion, expand_grid
from runner.spec.sweep import Sweep
from runner.study import claims, liveness
from runner.study.claims import Claim, claim_for

RUNG_WAIT_SECONDS = 1.0  # a successive-halving worker waits this long between looks at the rung's end


class GridSearch:
    """Every grid point exactly once: enqueued under a lock by whoever starts first, claimed atomically."""

    def __init__(self, sweep: Sweep, study: optuna.Study, fingerprint: str, workdir: Path, max_retries: int,
                 rank: Any = None, stopping: Callable[[], bool] = lambda: False):
        self.sweep, self.study, self.fingerprint = sweep, study, fingerprint
        self.workdir, self.max_retries = workdir, max_retries
        self.rank = rank  # prefers some waiting trials over others (e.g. those whose features are cached)
        self.stopping = stopping  # the worker's scheduler asked it to take no more trials (first Ctrl-C)
        self._expansion: Expansion | None = None

    @property
    def expansion(self) -> Expansion:
        if self._expansion is None:
            self._expansion = expand_grid(self.sweep, self.fingerprint)
        return self._expansion

    def prepare(self) -> int:
        with claims.study_lock(self.study, self.workdir):
            added = claims.enqueue_missing(self.study, self.expansion.keys, self.expansion.trials,
                                          lambda spec: halving.first_budget(self.sweep, spec.flat()),
                                          self.expansion.point_keys)
            added += claims.requeue_failed(self.study, self.max_retries, set(self.expansion.keys))
            if self.sweep.search.schedule is not None and not added:  # a rung is complete: promote its best
                added += halving.promote(self.study, self.sweep.search.schedule, self.sweep.search.direction,
                                          synchronous=True, wanted=set(self.expansion.keys),
                                          workdir=self.workdir)
            return added

    def next_trial(self) -> Claim | None:
        while True:
            claim = claim_for(self.sweep, self.study, self.fingerprint, self.rank)
            if claim is not None or self.sweep.search.schedule is None:
                return claim
            # Successive halving: once the rung's last trials end, promote here (no worker leaves and restarts)
            with claims.study_lock(self.study, self.workdir):
                liveness.fail_dead_trials(self.study)
                if self.prepare_locked():
                    continue
            # a WAITING trial here is one whose claim a lost connection cut off: it is still ours to take
            unfinished = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
            if not unfinished or self.stopping():
                return None
            time.sleep(RUNG_WAIT_SECONDS)

    def prepare_locked(self) -> int:
        """Re-queue failures and promote a completed rung (the caller holds the study lock)."""
        added = claims.requeue_failed(self.study, self.max_retries, set(self.expansion.keys))
        if not added:
            added = halving.promote(self.study, self.sweep.search.schedule, self.sweep.search.direction,
                                     synchronous=True, wanted=set(self.expansion.keys), workdir=self.workdir)
        return added

    def finish(self, claim: Claim, state: str, value: float | None) -> None:
        """Nothing to learn: the grid is fixed."""
