"""Stop rules: when a sweep stops handing out new trials (running ones finish).

`search.stop.target` stops once a finished trial reaches a value, `search.stop.patience_trials` once that many
finished trials in a row bring no improvement, `search.timeout` once a run has used its time budget. The
decision is recorded in the study (the user attribute `stop_reason`), so every worker on every machine sees it,
and `resume` does not restart a stopped sweep unless told to (`--ignore-stop`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from runner.spec.metrics import OBJECTIVES, STUDY_RESULTS, Objective
from zoo.errors import UserError

STOP_ATTR = "stop_reason"
STOP_TAG = "videosweep.stop_reason"  # on the sweep's parent run in MLflow
# Metrics the study records for every finished trial (the sweep's own metric is also the trial's value).
RECORDED = {name: o.result_key for name, o in OBJECTIVES.items() if o.result_key in STUDY_RESULTS}


def watched(sweep: Any) -> Objective:
    """The objective the stop rules watch; a one-line UserError for a metric the study does not record."""
    name = sweep.search.stop.metric or sweep.search.metric
    if name != sweep.search.metric and name not in RECORDED:
        recorded = sorted({sweep.search.metric, *RECORDED})
        raise UserError(f"search.stop.metric: the sweep does not record {name!r}; a stop rule can watch "
                        f"{', '.join(recorded)}")
    return OBJECTIVES[name]


def has_rules(sweep: Any) -> bool:
    return sweep.search.stop.target is not None or sweep.search.stop.patience_trials is not None


def _value(trial: FrozenTrial, sweep: Any, metric: Objective) -> float | None:
    if metric.name == sweep.search.metric:
        return trial.values[0] if trial.values else None  # the first objective of a multi-objective study
    value = trial.user_attrs.get(RECORDED[metric.name])
    return float(value) if isinstance(value, (int, float)) else None


def point_values(finished: list[FrozenTrial], sweep: Any, metric: Objective) -> Iterator[tuple[FrozenTrial, float]]:
    """(the trial that completed it, its value) of each point in the order its last seed repeat finished: the mean
    of its `training.repeats` repeats (with one repeat, each finished trial and its own value)."""
    from runner.study.claims import point_of_trial

    repeats = getattr(sweep.training, "repeats", 1)
    values: dict[str, list[float]] = defaultdict(list)
    for trial in finished:
        value = _value(trial, sweep, metric)
        if value is None:
            continue
        seen = values[point_of_trial(trial) or str(trial.number)]
        seen.append(value)
        if len(seen) == repeats:
            yield trial, sum(seen) / repeats


def decide(sweep: Any, trials: list[FrozenTrial], deadline: float | None = None, now: float | None = None,
           rules_on: bool = True) -> str | None:
    """Why the sweep should stop now, from its finished trials (in the order they finished), or None."""
    from runner.study.claims import KEY_ATTR, point_of_trial

    rules = sweep.search.stop
    if deadline is not None and (now or time.time()) >= deadline:
        return f"time budget used (search.timeout {sweep.search.timeout:g} s)"
    if not rules_on or not has_rules(sweep):
        return None
    metric = watched(sweep)
    finished = sorted((t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get(KEY_ATTR)
                       and "duplicate_of" not in t.user_attrs),
                      key=lambda t: (t.datetime_complete is None, t.datetime_complete, t.number))
    best, since = None, 0
    for trial, value in point_values(finished, sweep, metric):
        if rules.target is not None and (value >= rules.target if metric.direction == "maximize"
                                         else value <= rules.target):
            sign = ">=" if metric.direction == "maximize" else "<="
            repeats = getattr(sweep.training, "repeats", 1)
            who = (f"point {point_of_trial(trial)} (mean of {repeats} seed repeats, " if repeats > 1
                   else f"trial #{trial.number} {trial.user_attrs.get(KEY_ATTR)} (")
            return f"target {metric.name} {sign} {rules.target:g} reached by {who}{value:.4f})"
        if metric.better(value, best):
            best, since = value, 0
        else:
            since += 1
        if rules.patience_trials is not None and since >= rules.patience_trials:
            return (f"no better {metric.name} in {rules.patience_trials} finished trial(s) in a row "
                    f"(best {best:.4f})")
    return None


def stop_reason(study: Any) -> str | None:
    """The recorded stop decision ('' after `--ignore-stop` cleared it), None while the sweep may go on."""
    reason = study.user_attrs.get(STOP_ATTR)
    return reason or None


def evaluate(study: Any, sweep: Any, deadline: float | None = None, rules_on: bool = True) -> str | None:
    """The stop decision: already recorded, or decided now from the study (and then recorded for all).
    `rules_on=False` (after `--ignore-stop`) leaves only the time budget."""
    reason = stop_reason(study)
    if reason:
        return reason
    if deadline is None and not (rules_on and has_rules(sweep)):
        return None
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    reason = decide(sweep, trials, deadline, rules_on=rules_on)
    if reason:
        study.set_user_attr(STOP_ATTR, reason)
    return reason


def clear(study: Any) -> None:
    """`--ignore-stop`: forget the recorded decision (Optuna cannot delete an attribute; '' means none)."""
    if stop_reason(study):
        study.set_user_attr(STOP_ATTR, "")
