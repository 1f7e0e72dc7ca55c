"""Interactive plots for report.html, drawn by Optuna's own plotly visualisations: the Pareto front, parallel
coordinates of the swept parameters, the optimisation history and the parameter importances.

Reports read only MLflow, so the Optuna study those functions need is rebuilt in memory from the MLflow trial
table (`optuna.create_study` + `add_trial`, one objective value per sweep objective). plotly.js comes from the
installed plotly package and is inlined once, so the page works offline; nothing points at a CDN.
"""

from __future__ import annotations

import html
import warnings
from typing import Any

import pandas as pd

from reports.records import MIN_TRIALS_FOR_IMPORTANCE, importance_sample
from runner.spec.metrics import objective


def _text(value: Any) -> str:
    return "-" if value is None or value is pd.NA or (isinstance(value, float) and value != value) else str(value)


def rebuild_study(finished: pd.DataFrame, params: list[str], goals: list[tuple[str, str]]) -> Any:
    """An in-memory Optuna study holding the finished trials (in the order they ran) and their objectives."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    columns = [objective(name).final for name, _ in goals]
    rows = finished.dropna(subset=columns)
    if "optuna_trial" in rows:
        rows = rows.sort_values(["optuna_trial", "trial_key"], na_position="last", kind="stable")
    choices = {p: tuple(sorted({_text(v) for v in rows[p]})) for p in params}
    study = optuna.create_study(directions=[direction for _, direction in goals])
    for _, row in rows.iterrows():
        study.add_trial(optuna.trial.create_trial(
            params={p: _text(row[p]) for p in params},
            distributions={p: CategoricalDistribution(choices[p]) for p in params},
            values=[float(row[c]) for c in columns],
            user_attrs={"trial_key": str(row["trial_key"]), "run_id": str(row["run_id"])}))
    return study


def _figures(study: Any, goals: list[tuple[str, str]], params: list[str],
             sampled: Any = None) -> list[tuple[str, Any, str]]:
    """The figures over `study`; importances over `sampled` (records.importance_sample's trials), else `study`."""
    from optuna import visualization as vis

    names = [name for name, _ in goals]
    first = names[0]
    target = {"target": lambda t: t.values[0], "target_name": first}
    drawn: list[tuple[str, Any, str]] = [
        ("Pareto front", vis.plot_pareto_front(study, target_names=names),
         f"Every finished trial over {' and '.join(names)}; the non-dominated ones are highlighted "
         "(hover for the trial)."),
        ("Optimisation history", vis.plot_optimization_history(study, **target),
         f"{first} of each finished trial in the order they ran, and the best so far."),
    ]
    if params:
        drawn.append(("Parallel coordinates of the swept parameters",
                      vis.plot_parallel_coordinate(study, params=params, **target),
                      f"One line per trial, coloured by {first}; drag along an axis to filter."))
    if params and len(study.trials) >= MIN_TRIALS_FOR_IMPORTANCE:
        try:
            from optuna.importance import FanovaImportanceEvaluator

            ranked = study if sampled is None else sampled
            drawn.append(("Parameter importances (interactive)",
                          vis.plot_param_importances(ranked, evaluator=FanovaImportanceEvaluator(seed=0), **target),
                          f"fANOVA importance of each swept parameter for {first}"
                          f"{'' if sampled is None else f' (a seeded sample of {len(sampled.trials)} trials)'}."))
        except (RuntimeError, ValueError, ZeroDivisionError):
            pass  # too few distinct trials to say
    return drawn


def interactive_section(finished: pd.DataFrame, params: list[str], goals: list[tuple[str, str]]) -> str:
    """The report's interactive part: plotly.js inlined once, then one <div> per figure ('' without trials)."""
    import plotly.offline

    if finished.empty:
        return ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks some plots experimental
        study = rebuild_study(finished, params, goals)
        if not study.trials:
            return ""
        parts = []
        sample = importance_sample(finished)
        sampled = rebuild_study(sample, params, goals) if len(sample) < len(finished) else None
        for index, (title, figure, caption) in enumerate(_figures(study, goals, params, sampled)):
            figure.update_layout(height=460, margin={"l": 60, "r": 30, "t": 50, "b": 50})
            div = figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"interactive-{index}",
                                 config={"displaylogo": False, "responsive": True})
            parts.append(f'<figure class="interactive"><h3>{html.escape(title)}</h3>{div}'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    script = plotly.offline.get_plotlyjs().replace("</script", "<\\/script")
    return (f'<h2>Interactive plots</h2><script type="text/javascript">{script}</script>' + "".join(parts))
