"""Successive halving over epochs: rungs, promotion, and the epoch budget a schedule saves.

Rungs count epochs of the whole training, all learning-rate rounds together (the `step` of fit_history.csv):
rung k's budget is `min_epochs * reduction_factor**k`, while below the full training of
`training.epochs * len(learning_rates)` epochs, which is the last rung (with one learning rate, the last rung
is `training.epochs`). A trial that reaches its rung's budget with training left is *paused*: its study trial
is COMPLETE with the value at that rung and the attributes `rung` and `paused`, and its checkpoint stays in
its trial folder. Promotion enqueues a new study trial for the same key with the next rung's budget; it
continues from the checkpoint, so a trial promoted to the top trains exactly as it would have without the
schedule (early stopping included). A trial whose training ends before its budget (early stopping in every
round) is finished, not paused. A key's value is its value at the highest rung it reached.

At each rung the best `max(1, n // reduction_factor)` of the n keys that trained at that rung go on, ranked
by the sweep metric, ties by the order the trials were first queued (grid order); with `training.repeats`, n
counts points, ranked by their repeats' mean, and a promoted point's repeats all go on. `successive_halving`
(grid) promotes a rung only once none of the sweep's trials is waiting or running (the others stop for good
and their checkpoints are removed); `asha` (random/optuna) promotes as soon as a key is in the top
`n // reduction_factor` of the n keys that have finished the rung so far (they keep their checkpoints).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from runner.spec.metrics import STUDY_RESULTS
from runner.spec.trial_spec import TrainingConfig
from runner.study import claims
from runner.study.claims import RUNG_ATTR, current_trials  # noqa: F401 - the rung a study trial trains to
from runner.workdir import remove_checkpoint, trial_folder

BUDGET_ATTR = "epoch_budget"  # its epoch budget (None without a schedule: the whole training)
PAUSED_ATTR = "paused"  # True when it stopped at its rung's budget with training left


def full_epochs(training: TrainingConfig | dict[str, Any]) -> int:
    """Epochs times learning-rate rounds: a trial's whole training (each round runs up to `epochs`), the one
    place this is counted (the last rung, Hyperband's `max_epochs`, plan's budget and estimate)."""
    epochs, rates = ((training["epochs"], training["learning_rates"]) if isinstance(training, dict)
                     else (training.epochs, training.learning_rates))
    return int(epochs) * len(rates)


def rung_budgets(schedule: Any, maximum: int) -> list[int]:
    """Epoch budgets of the rungs, the last one being the whole training (`maximum` epochs)."""
    budgets, budget = [], schedule.min_epochs
    while budget < maximum:
        budgets.append(budget)
        budget *= schedule.reduction_factor
    return [*budgets, maximum]


def budget_of(schedule: Any, params: dict[str, Any], rung: int) -> int:
    budgets = rung_budgets(schedule, full_epochs(params))
    return budgets[min(rung, len(budgets) - 1)]


def planned_epochs(schedule: Any, maxima: list[int]) -> dict[str, Any]:
    """Epochs a synchronous schedule trains at most (early stopping aside), with and without it, and how many
    trials each rung keeps."""
    without = sum(maxima)
    if schedule is None or not maxima:
        return {"without_schedule": without, "with_schedule": without, "rungs": []}
    eta = schedule.reduction_factor
    order = sorted(maxima, reverse=True)  # who is promoted is unknown: count the longest trainings (an upper bound)
    alive, trained, rungs = len(order), [0] * len(order), []
    level = 0
    while alive:
        budgets = [rung_budgets(schedule, m)[min(level, len(rung_budgets(schedule, m)) - 1)] for m in order[:alive]]
        for i, budget in enumerate(budgets):
            trained[i] = max(trained[i], budget)
        rungs.append({"rung": level, "trials": alive, "epochs": max(budgets)})
        still = [i for i in range(alive) if trained[i] < order[i]]
        if not still:
            break
        alive = min(len(still), max(1, alive // eta))
        level += 1
    return {"without_schedule": without, "with_schedule": sum(trained), "rungs": rungs}


def is_paused(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.COMPLETE and bool(trial.user_attrs.get(PAUSED_ATTR))


def remove_stopped_checkpoints(study: optuna.Study, workdir: Path) -> None:
    """Keys paused at a rung that nothing promotes any more (the search has ended) keep no checkpoint."""
    for key, trials in claims.trials_by_key(study).items():
        top = current_trials(trials)
        if all(is_paused(t) for t in top) and not any(t.state in (TrialState.WAITING, TrialState.RUNNING)
                                                       for t in trials):
            remove_checkpoint(trial_folder(workdir, key))


def _rung_results(study: optuna.Study, wanted: set[str] | None) -> tuple[dict[int, list[tuple[Any, ...]]], dict]:
    """Per rung: (value, first-queued number, key, trial) of every key that finished training at that rung."""
    by_key = claims.trials_by_key(study)
    per_rung: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for key, trials in by_key.items():
        if wanted is not None and key not in wanted:
            continue
        first = min(t.number for t in trials)
        for trial in trials:
            if trial.state == TrialState.COMPLETE and trial.value is not None and \
                    "duplicate_of" not in trial.user_attrs:  # a sampler's repeat (of trial 0, too) trains nothing
                per_rung[int(trial.user_attrs.get(RUNG_ATTR, 0))].append((trial.value, first, key, trial))
    return per_rung, by_key


def promote(study: optuna.Study, schedule: Any, direction: str, synchronous: bool,
            wanted: set[str] | None = None, workdir: Path | None = None) -> int:
    """Enqueue the next rung for every paused key that earned it; call under the study lock. Returns how many.

    Synchronous: nothing is promoted while any trial of the sweep is waiting or running (a rung completes
    first; the caller re-queues failures before this)."""
    if synchronous and study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)):
        return 0
    per_rung, by_key = _rung_results(study, wanted)
    promoted = 0
    sign = -1.0 if direction == "maximize" else 1.0
    for rung in sorted(per_rung):
        entries = {}
        for value, first, key, trial in per_rung[rung]:  # one entry per key (a retried rung counts once)
            entries.setdefault(key, (value, first, key, trial))
        ranked = ranked_points(list(entries.values()), sign)
        keep = len(ranked) // schedule.reduction_factor
        if synchronous:
            keep = max(1, keep)
        if synchronous and workdir is not None:  # the rest stop here for good: their checkpoints go
            for _, _, key, trial in (entry for group in ranked[keep:] for entry in group):
                if is_paused(trial) and not any(int(t.user_attrs.get(RUNG_ATTR, 0)) > rung for t in by_key[key]):
                    remove_checkpoint(trial_folder(workdir, key))
        for value, first, key, trial in (entry for group in ranked[:keep] for entry in group):
            if not is_paused(trial):
                continue
            higher = [t for t in by_key[key] if int(t.user_attrs.get(RUNG_ATTR, 0)) > rung]
            if higher:
                continue
            attrs = {k: v for k, v in trial.user_attrs.items() if k not in (
                PAUSED_ATTR, "failure", "traceback_path", "started_over", *STUDY_RESULTS)}
            budget = budget_of(schedule, trial.user_attrs["params"], rung + 1)
            # with its parameters as Optuna parameters too, so dashboards show every rung's trials with them
            claims.add_waiting(study, {**attrs, RUNG_ATTR: rung + 1, BUDGET_ATTR: budget, "attempt": 0,
                                      "promoted_from": trial.number}, trial.params, trial.distributions)
            promoted += 1
    return promoted


def ranked_points(entries: list[tuple[Any, ...]], sign: float) -> list[list[tuple[Any, ...]]]:
    """(value, first-queued number, key, trial) entries grouped by point (a point's seed repeats together), best
    point first by its repeats' mean value (`sign` -1 maximises), ties by the order its trials were first queued."""
    groups: dict[Any, list[tuple[Any, ...]]] = defaultdict(list)
    for entry in entries:
        groups[claims.point_of_trial(entry[3]) or entry[2]].append(entry)
    return sorted(groups.values(), key=lambda group: (sign * sum(e[0] for e in group) / len(group),
                                                      min(e[1] for e in group)))


def first_budget(sweep: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The schedule attributes of a trial queued for the first time."""
    if sweep.search.schedule is None:
        return {}
    return {RUNG_ATTR: 0, BUDGET_ATTR: budget_of(sweep.search.schedule, params, 0)}
