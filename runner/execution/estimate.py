"""How long the trials still to run will take, from trials that finished in the same tracking store.

Each trial to run is matched to finished trial runs (originals, not reused copies) of the most specific group
that has any: same architecture, backbone, frame size and sequence length; else same architecture and
backbone; else same architecture; else any. Their median seconds per epoch-budget (epochs x learning-rate
rounds) is scaled by the new trial's budget. Trials are spread over the slots, and a sweep's fixed cost
(worker start-up, the parent run) is taken from earlier sweeps' parent runs. Without history, a stated rough
model is used instead.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from runner.search.halving import full_epochs
from runner.tracking.mlflow_runs import ROLE

# The rough model without history: a CPU slot, tiny frames; seconds per trial and per epoch-round.
ROUGH_TRIAL_SECONDS, ROUGH_EPOCH_SECONDS, ROUGH_SWEEP_SECONDS = 15.0, 5.0, 20.0
ROUGH_MODEL = (f"a rough model of {ROUGH_TRIAL_SECONDS:g} s per trial + "
               f"{ROUGH_EPOCH_SECONDS:g} s per epoch and learning rate + {ROUGH_SWEEP_SECONDS:g} s start-up, "
               "per slot")
SWEEP_SECONDS_METRIC = "sweep_seconds"  # a parent run's wall time, logged when a run of it ends
SLOTS_TAG = "slots"
LEVELS = (("architecture", "backbone", "frame_size", "sequence_length"), ("architecture", "backbone"),
          ("architecture",), ())
LEVEL_WORDS = ("the same architecture, backbone, frame size and sequence length", "the same architecture and "
               "backbone", "the same architecture", "any architecture")


def _budget(params: dict[str, Any]) -> float:
    """A trial's whole training in epochs (schedule.full_epochs), from its parameters as the spec or MLflow
    (as text) holds them: what a trial's time scales with."""
    rates = params.get("learning_rates")
    if isinstance(rates, str):
        rates = [part for part in rates.strip("[]()").split(",") if part.strip()]
    return max(1.0, float(full_epochs({"epochs": float(params.get("epochs") or 20), "learning_rates": rates or [1]})))


def _group(params: dict[str, Any], level: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(str(params.get(name)) for name in level)


def history(client: Any) -> tuple[list[tuple[dict[str, Any], float]], list[float]]:
    """(params, seconds) of every trained, finished trial run in the store, and each sweep's fixed cost."""
    from runner.search.reuse import REUSED_TAG, finished_runs

    trials = []
    for run in finished_runs(client).runs:
        if REUSED_TAG in run.data.tags or not run.info.end_time or not run.info.start_time:
            continue
        trials.append((dict(run.data.params), (run.info.end_time - run.info.start_time) / 1000))
    fixed = []
    ids = [e.experiment_id for e in client.search_experiments(max_results=50000)]
    for start in range(0, len(ids), 50):
        for parent in client.search_runs(ids[start:start + 50], filter_string=f"tags.`{ROLE}` = 'sweep'",
                                         max_results=50000):
            wall = parent.data.metrics.get(SWEEP_SECONDS_METRIC)
            trained = parent.data.metrics.get("trained_seconds")
            slots = float(parent.data.tags.get(SLOTS_TAG) or 1)
            if wall is not None and trained is not None:
                fixed.append(max(0.0, wall - trained / slots))
    return trials, fixed


def estimate(specs: list[Any], slots: int, client: Any | None) -> dict[str, Any]:
    """{seconds, basis, per_trial} for training `specs` (TrialSpecs) on `slots` slots."""
    slots = max(1, slots)
    if not specs:
        return {"seconds": 0.0, "basis": "nothing to train", "per_trial": []}
    trials, fixed = history(client) if client is not None else ([], [])
    if not trials:
        per_trial = [ROUGH_TRIAL_SECONDS + ROUGH_EPOCH_SECONDS * _budget(s.flat()) for s in specs]
        return {"seconds": _spread(per_trial, slots) + ROUGH_SWEEP_SECONDS,
                "basis": f"no finished trials in this tracking store, so {ROUGH_MODEL}",
                "per_trial": per_trial}
    rates: list[dict[tuple[str, ...], list[float]]] = [{} for _ in LEVELS]
    for params, seconds in trials:
        for index, level in enumerate(LEVELS):
            rates[index].setdefault(_group(params, level), []).append(seconds / _budget(params))
    per_trial, used = [], [0] * len(LEVELS)
    for spec in specs:
        flat = spec.flat()
        for index, level in enumerate(LEVELS):
            found = rates[index].get(_group(flat, level))
            if found:
                per_trial.append(statistics.median(found) * _budget(flat))
                used[index] += 1
                break
    overhead = statistics.median(fixed) if fixed else ROUGH_SWEEP_SECONDS
    basis = "; ".join(f"{n} trial(s) from finished trials of {LEVEL_WORDS[i]}" for i, n in enumerate(used) if n)
    basis = (f"{len(trials)} finished trial(s) in this tracking store: {basis}, scaled by epochs x learning "
             f"rates, over {slots} slot(s), plus {overhead:.0f} s start-up "
             f"({'measured' if fixed else 'assumed'})")
    return {"seconds": _spread(per_trial, slots) + overhead, "basis": basis, "per_trial": per_trial}


def _spread(seconds: list[float], slots: int) -> float:
    """Wall time of trials handed to `slots` slots as each frees up (longest first)."""
    loads = [0.0] * slots
    for value in sorted(seconds, reverse=True):
        loads[loads.index(min(loads))] += value
    return max(loads) if loads else 0.0


def describe(seconds: float) -> str:
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
