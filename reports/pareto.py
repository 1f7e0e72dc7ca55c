"""Deployment-aware choice from what MLflow holds: the Pareto front of a sweep's objectives, and the most
accurate trial within a latency or parameter budget. Pure functions over the trial table of reports.records.

A multi-objective sweep's front is over its `search.objectives`; a single-metric sweep's front pairs its metric
with latency_ms (minimised), since every trial records latency.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from runner.spec.metrics import DEFAULT_COST, OBJECTIVES, objective
from zoo.errors import UserError


def front_goals(goals: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The objectives a front is drawn over: the sweep's, or its one metric and latency_ms."""
    if len(goals) > 1:
        return goals
    metric, direction = goals[0]
    cost = DEFAULT_COST if metric != DEFAULT_COST else "val_accuracy"
    return [(metric, direction), (cost, OBJECTIVES[cost].direction)]


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Mask of the rows no other row dominates; every column is to be minimised."""
    keep = np.ones(len(points), dtype=bool)
    for i, point in enumerate(points):
        dominated = np.all(points <= point, axis=1) & np.any(points < point, axis=1)
        keep[i] = not dominated.any()
    return keep


def _objective_table(trials: pd.DataFrame, goals: list[tuple[str, str]]) -> pd.DataFrame:
    """Finished points (a point's seed repeats as their mean, records.point_rows) with every objective recorded: key,
    run id and one column per objective (as named)."""
    from reports.records import point_rows

    columns = [objective(name).final for name, _ in goals]
    finished = point_rows(trials[trials.status == "FINISHED"].dropna(subset=columns))
    return pd.DataFrame({"trial_key": finished.trial_key, "run_id": finished.run_id,
                         **{name: finished[column].astype(float) for (name, _), column in zip(goals, columns)}})


def _front_mask(table: pd.DataFrame, goals: list[tuple[str, str]]) -> np.ndarray:
    signs = np.array([-1.0 if direction == "maximize" else 1.0 for _, direction in goals])
    return non_dominated(table[[name for name, _ in goals]].to_numpy(dtype=float) * signs)


def on_front(trials: pd.DataFrame, goals: list[tuple[str, str]]) -> pd.Series:
    """Per row of `trials`: whether it is on the Pareto front of the finished trials over `goals`."""
    table = _objective_table(trials, goals)
    front = table.index[_front_mask(table, goals)] if len(table) else table.index
    return pd.Series(trials.index.isin(front), index=trials.index)


def pareto_front(trials: pd.DataFrame, goals: list[tuple[str, str]]) -> pd.DataFrame:
    """Exactly the finished trials that no other finished trial dominates, best first by the first objective:
    `run_id`, `trial_key` and one column per objective (named as the sweep file names it)."""
    table = _objective_table(trials, goals)
    if table.empty:
        return table.reset_index(drop=True)
    front = table[_front_mask(table, goals)]
    first, direction = goals[0]
    return front.sort_values([first, "trial_key"], ascending=[direction != "maximize", True]).reset_index(drop=True)


def check_budget(max_latency_ms: float | None, max_params: float | None) -> None:
    for flag, value in (("--max-latency-ms", max_latency_ms), ("--max-params", max_params)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise UserError(f"{flag} must be a positive number, not {value:g}")


def within_budget(trials: pd.DataFrame, metric: str, max_latency_ms: float | None = None,
                  max_params: float | None = None) -> pd.Series:
    """The finished trial best on `metric` (ties as rank_trials breaks them) whose end-to-end latency and
    parameter count fit the budget; a one-line UserError (exit 2) when none does."""
    from reports.records import rank_trials

    budget: list[str] = []
    check_budget(max_latency_ms, max_params)
    ranked = rank_trials(trials, metric)
    if max_latency_ms is not None:
        ranked = ranked[ranked[objective("latency_ms").final] <= max_latency_ms]
        budget.append(f"latency <= {max_latency_ms:g} ms")
    if max_params is not None:
        ranked = ranked[ranked[objective("param_count").final] <= max_params]
        budget.append(f"parameters <= {max_params:,.0f}")
    if ranked.empty:
        fastest = trials[objective("latency_ms").final].min() if "latency_ms" in trials else math.nan
        hint = f" (the fastest finished trial takes {fastest:.2f} ms)" if fastest == fastest else ""
        raise UserError(f"no finished trial meets the budget {' and '.join(budget)}{hint}")
    return ranked.iloc[0]


def front_records(front: pd.DataFrame) -> list[dict[str, Any]]:
    """The front as JSON-ready rows."""
    return [{k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in row.items()}
            for row in front.to_dict(orient="records")]
