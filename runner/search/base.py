"""What to try next: grid, Optuna samplers and Keras Tuner behind one small interface.

`prepare` runs once where a sweep starts (enqueue grid points, re-queue failures); `next_trial` runs in every
worker and atomically hands out one claimed trial or None when nothing is left. The objective and pruning
flow through the Optuna trial the claim carries, whatever chose its parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import optuna

from runner.search.grid import GridSearch
from runner.search.optuna_search import OptunaSearch
from runner.spec.sweep import Sweep
from runner.study.claims import Claim


class Search(Protocol):
    def prepare(self) -> int: ...

    def next_trial(self) -> Claim | None: ...

    def finish(self, claim: Claim, state: str, value: float | None) -> None: ...


def make_search(sweep: Sweep, study: optuna.Study, fingerprint: str, workdir: Path, max_retries: int,
                rank: Any = None, stopping: Callable[[], bool] = lambda: False) -> Search:
    """`stopping` ends a wait for a successive-halving rung (the first Ctrl-C); the other searches never wait."""
    if sweep.search.strategy == "grid":
        return GridSearch(sweep, study, fingerprint, workdir, max_retries, rank, stopping)
    if sweep.search.strategy in ("random", "optuna"):
        return OptunaSearch(sweep, study, fingerprint, workdir, max_retries)
    from runner.search.keras_tuner import KerasTunerSearch  # Keras Tuner is imported only by its users

    return KerasTunerSearch(sweep, study, fingerprint, workdir, max_retries)
