"""Choosing the best trial of a sweep from what MLflow holds (for `best`, `export` and `predict`)."""

from __future__ import annotations

from typing import Any

import pandas as pd

import zoo
from reports.leaderboard import with_intervals
from reports.records import MODEL_PARAMS, SweepRuns, point_summary, rank_trials
from reports.uncertainty import accuracy_interval, clears_baseline, single_class_splits, val_interval
from reports.uncertainty import wilson_interval  # noqa: F401 - its old home: callers may still import it here
from runner.spec.metrics import objective
from zoo.baselines import from_entries
from zoo.errors import UserError


def best_trial(runs: SweepRuns, metric: str, sweep_name: str,
               goals: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The best finished trial (rank_trials; `goals`: the sweep's objectives): its key, run id, metric value,
    held-out test accuracy (shown, never used to choose) and the parameters its architecture uses (the others are
    left out, not shown as defaults). `tied_with`: the other trials whose val accuracy cannot be told apart from
    its own (reports/uncertainty.tied_with_leader), as the leaderboard marks them. With seed repeats the figures are
    the point's means, with their spread, and the key and run are its repeat 0's."""
    ranked = with_intervals(rank_trials(runs.trials, metric, goals))
    if ranked.empty:
        raise UserError(f"sweep {sweep_name} has no finished trial yet")
    row = ranked.iloc[0]
    uses = zoo.get_architecture(str(row.architecture)).uses
    params = {k: row[k] for k in MODEL_PARAMS if k in uses and not pd.isna(row[k])}  # None, NaN and pd.NA
    baselines = from_entries(row)
    interval, beats = baseline_check(row)
    test_interval = accuracy_interval(row.test_accuracy, baselines.get("test", {}).get("effective_units"))
    tied = ranked.trial_key[ranked.tied_with_leader.fillna(False).astype(bool) & (ranked["rank"] > 1)]
    return {"trial_key": row.trial_key, "run_id": row.run_id, "metric": metric,
            "value": float(row[objective(metric).final]), "val_accuracy": float(row.val_accuracy_best),
            "val_interval": interval, "val_margin": _number(row.val_margin), "beats_baseline": beats,
            "tied_with": tied.tolist(),
            "run_link": runs.run_link(str(row.get("artefacts_run_id") or row.run_id)) or None,
            "test_accuracy": float(row.test_accuracy),
            "test_interval": None if test_interval is None else list(test_interval),
            "test_margin": _number(row.test_margin), "baselines": baselines, "params": params, **point_summary(row)}


def baseline_check(row: Any) -> tuple[list[float] | None, bool | None]:
    """The one decision whether a trial beats the baseline (`best`, `export`): its val accuracy's 95% interval
    (val_interval) lies wholly above the val majority baseline of its own windows. `row`: a trial's row of the
    reports (or any mapping with its metrics); (None, None) where it recorded no baseline, so none can be judged."""
    baselines = from_entries(row)
    accuracy = row.get("val_accuracy_best")
    if "val" not in baselines or not isinstance(accuracy, (int, float)):
        return None, None
    interval = val_interval(float(accuracy), baselines)
    return interval, clears_baseline(interval, baselines["val"]["majority_accuracy"])


def baseline_verdict(best: dict[str, Any]) -> str:
    """One line for people: the val majority baseline and whether the best trial's interval clears it."""
    val = best["baselines"]["val"]
    line = (f"val majority baseline {val['majority_accuracy']:.4f}"
            f"{f' ({cls})' if (cls := val['majority_class']) else ''}, chance {val['chance']:.4f}")
    if best["val_interval"] is None:
        return line
    low, high = best["val_interval"]
    verdict = "clears it" if best["beats_baseline"] else "does not clear it"
    line = (f"{line}; val accuracy 95% interval [{low:.4f}, {high:.4f}] over {val['effective_units']:.3g} "
            f"effective video(s) {verdict}")
    if "val" in single_class_splits(best["baselines"]):
        line += " (the validation split holds a single class: no accuracy on it can show learning)"
    return line


def _number(value: Any) -> float | None:
    """JSON has no NaN: a missing figure is null."""
    return None if pd.isna(value) else float(value)
