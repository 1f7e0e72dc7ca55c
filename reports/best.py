"""Choosing the best trial of a sweep from what MLflow holds (for `best`, `export` and `predict`)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

import zoo
from reports.records import MODEL_PARAMS, SweepRuns, point_summary, rank_trials
from runner.spec.metrics import objective
from zoo.baselines import from_entries
from zoo.errors import UserError


def best_trial(runs: SweepRuns, metric: str, sweep_name: str,
               goals: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The best finished trial (rank_trials; `goals`: the sweep's objectives): its key, run id, metric value,
    held-out test accuracy (shown, never used to choose) and the parameters its architecture uses (the others are
    left out, not shown as defaults). With seed repeats the figures are the point's means, with their spread, and
    the key and run are its repeat 0's."""
    ranked = rank_trials(runs.trials, metric, goals)
    if ranked.empty:
        raise UserError(f"sweep {sweep_name} has no finished trial yet")
    row = ranked.iloc[0]
    uses = zoo.get_architecture(str(row.architecture)).uses
    params = {k: row[k] for k in MODEL_PARAMS if k in uses and not pd.isna(row[k])}  # None, NaN and pd.NA
    baselines = from_entries(row)
    interval = val_interval(float(row.val_accuracy_best), baselines)
    return {"trial_key": row.trial_key, "run_id": row.run_id, "metric": metric,
            "value": float(row[objective(metric).final]), "val_accuracy": float(row.val_accuracy_best),
            "val_interval": interval, "val_margin": _number(row.val_margin),
            "beats_baseline": None if interval is None else interval[0] > baselines["val"]["majority_accuracy"],
            "test_accuracy": float(row.test_accuracy), "test_margin": _number(row.test_margin),
            "baselines": baselines, "params": params, **point_summary(row)}


def wilson_interval(accuracy: float, units: float, z: float = 1.959964) -> tuple[float, float]:
    """Wilson's 95% score interval of a proportion observed over `units` independent units (may be fractional:
    an effective count); unlike the normal approximation it stays inside [0, 1] and is sane for few units."""
    centre = (accuracy + z * z / (2 * units)) / (1 + z * z / units)
    half = z * math.sqrt(accuracy * (1 - accuracy) / units + z * z / (4 * units * units)) / (1 + z * z / units)
    return max(0.0, centre - half), min(1.0, centre + half)


def val_interval(accuracy: float, baselines: dict[str, dict[str, Any]]) -> list[float] | None:
    """The 95% interval of a trial's val accuracy on the validation split's effective number of videos-worth of
    windows (zoo/baselines.py); None where the trial recorded none or its accuracy is missing."""
    units = baselines.get("val", {}).get("effective_units")
    if not units or not math.isfinite(accuracy):
        return None
    return list(wilson_interval(accuracy, units))


def baseline_verdict(best: dict[str, Any]) -> str:
    """One line for people: the val majority baseline and whether the best trial's interval clears it."""
    val = best["baselines"]["val"]
    line = (f"val majority baseline {val['majority_accuracy']:.4f}"
            f"{f' ({cls})' if (cls := val['majority_class']) else ''}, chance {val['chance']:.4f}")
    if best["val_interval"] is None:
        return line
    low, high = best["val_interval"]
    verdict = "clears it" if best["beats_baseline"] else "does not clear it"
    return (f"{line}; val accuracy 95% interval [{low:.4f}, {high:.4f}] over {val['effective_units']:.3g} "
            f"effective video(s) {verdict}")


def _number(value: Any) -> float | None:
    """JSON has no NaN: a missing figure is null."""
    return None if pd.isna(value) else float(value)
