"""Choosing the best trial of a sweep from what MLflow holds (for `best`, `export` and `predict`)."""

from __future__ import annotations

from typing import Any

import pandas as pd

import zoo
from reports.records import MODEL_PARAMS, SweepRuns, rank_trials
from runner.metrics import objective
from zoo.baselines import from_entries
from zoo.errors import UserError


def best_trial(runs: SweepRuns, metric: str, sweep_name: str,
               goals: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The best finished trial (rank_trials; `goals`: the sweep's objectives): its key, run id, metric value,
    held-out test accuracy (shown, never used to choose) and the parameters its architecture uses (the others are
    left out, not shown as defaults)."""
    ranked = rank_trials(runs.trials, metric, goals)
    if ranked.empty:
        raise UserError(f"sweep {sweep_name} has no finished trial yet")
    row = ranked.iloc[0]
    uses = zoo.get_architecture(str(row.architecture)).uses
    params = {k: row[k] for k in MODEL_PARAMS if k in uses and not pd.isna(row[k])}  # None, NaN and pd.NA
    return {"trial_key": row.trial_key, "run_id": row.run_id, "metric": metric,
            "value": float(row[objective(metric).final]), "val_accuracy": float(row.val_accuracy_best),
            "val_margin": _number(row.val_margin), "test_accuracy": float(row.test_accuracy),
            "test_margin": _number(row.test_margin), "baselines": from_entries(row), "params": params}


def _number(value: Any) -> float | None:
    """JSON has no NaN: a missing figure is null."""
    return None if pd.isna(value) else float(value)
