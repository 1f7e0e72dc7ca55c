"""The sweep report: leaderboard.csv/.md and one self-contained report.html, built only from MLflow.

Plots are drawn here from the runs' params, final metrics, metric histories and the best trial's confusion
matrix artefact; parameter importances come from Optuna's fANOVA evaluator fed with the finished trials.
The files are logged to the sweep's parent run. Rebuilding with nothing new changes only the timestamps.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import tempfile
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from reports.html import Figure, cell_text, figure_html, page, png, table_html
from reports.leaderboard import leaderboard, to_markdown
from reports.records import (IMPORTANCE_TRIALS, MIN_TRIALS_FOR_IMPORTANCE, SweepRuns, baseline_text, importance_sample,
                             trial_baselines)
from runner.spec.metrics import CONTINUED_METRIC, objective
from runner.trial.plots import confusion_figure
from runner.search.stop import STOP_TAG
from zoo import atomic

REPORT_FILES = ("leaderboard.csv", "leaderboard.md", "report.html")
STRIP_POINTS = 300  # trials drawn as dots per box of a strip plot (a sample beyond it)
HTML_ROWS = 100  # leaderboard rows report.html lists; leaderboard.csv and .md hold every finished trial


def _missing_as_dash(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Parameters an architecture does not use are missing; plots show them as '-'."""
    values = frame[column].astype(object)
    return frame.assign(**{column: values.where(frame[column].notna(), "-")})


def _natural(text: str) -> tuple[int, float, str]:
    """Numbers in numeric order before words (8 before 16), words alphabetically."""
    try:
        return 0, float(text), ""
    except ValueError:
        return 1, 0.0, text


def drawn_points(points: np.ndarray, rng: np.random.Generator, limit: int = STRIP_POINTS) -> np.ndarray:
    """The points a strip plot draws over its box: all up to `limit`, else a seeded sample of `limit` (the box is
    still drawn from all of them; 5,000 dots are a smear, and a slow one)."""
    return points if len(points) <= limit else rng.choice(points, size=limit, replace=False)


def _strip_box(axes: plt.Axes, frame: pd.DataFrame, group: str, value: str) -> None:
    """Box per group with every trial drawn on top (jittered, seeded; beyond STRIP_POINTS a sample): small sweeps
    stay honest."""
    labels = sorted(frame[group].astype(str).unique(), key=_natural)
    values = [frame.loc[frame[group].astype(str) == label, value].to_numpy() for label in labels]
    axes.boxplot(values, tick_labels=labels, showfliers=False, widths=0.5)
    jitter = np.random.default_rng(0)
    for position, points in enumerate(values, start=1):
        points = drawn_points(points, jitter)
        axes.scatter(position + jitter.uniform(-0.12, 0.12, len(points)), points, s=18, alpha=0.7, zorder=3)
    axes.set(xlabel=group, ylabel=value)
    plt.setp(axes.get_xticklabels(), rotation=20, ha="right")


def by_group_figure(finished: pd.DataFrame, group: str, column: str, metric: str) -> Figure | None:
    if group not in finished or finished[group].isna().all():
        return None
    figure, axes = plt.subplots(figsize=(max(4.0, 1.1 * finished[group].nunique() + 2), 3.4))
    _strip_box(axes, _missing_as_dash(finished, group), group, column)
    axes.set_ylabel(metric)
    return Figure(f"{metric} by {group}", png(figure))


def parameter_figure(finished: pd.DataFrame, params: list[str], column: str, metric: str) -> Figure | None:
    """The metric against each swept parameter, one panel each."""
    shown = [p for p in params if p not in ("architecture", "backbone")]
    if not shown:
        return None
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    figure, grid = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for axes, param in zip(grid.flat, shown):
        _strip_box(axes, _missing_as_dash(finished, param), param, column)
        axes.set_ylabel(metric)
    for axes in list(grid.flat)[len(shown):]:
        axes.set_visible(False)
    figure.tight_layout()
    return Figure(f"{metric} against each swept parameter", png(figure))


def learning_curves_figure(runs: SweepRuns, top: pd.DataFrame) -> Figure | None:
    """Validation accuracy and loss per epoch (all rounds) of the top trials, from MLflow's metric history."""
    if top.empty:
        return None
    figure, (acc_axes, loss_axes) = plt.subplots(1, 2, figsize=(11, 3.8))
    any_continued = False
    for _, row in top.iterrows():
        label = f"#{row['rank']} {row['architecture']} {row['trial_key']}"
        if pd.notna(row.get("rung")):  # successive halving: continued from rung to rung on one curve
            label += f" (rung {int(row['rung'])})"
        continued = {int(m.step) for m in runs.tracker.client.get_metric_history(row["run_id"], CONTINUED_METRIC)}
        for axes, name in ((acc_axes, "val_accuracy"), (loss_axes, "val_loss")):
            history = runs.tracker.client.get_metric_history(row["run_id"], name)
            points = dict(sorted((int(m.step), m.value) for m in history))
            if points:
                (line,) = axes.plot(list(points), list(points.values()), marker=".", label=label)
                marks = sorted(continued & points.keys())
                any_continued = any_continued or bool(marks)
                axes.plot(marks, [points[s] for s in marks], linestyle="none", marker="o", markersize=9,
                          markerfacecolor="none", color=line.get_color())
            axes.set(xlabel="epoch (all rounds)", ylabel=name)
    if any_continued:
        acc_axes.plot([], [], linestyle="none", marker="o", markerfacecolor="none", color="grey",
                      label="continued from a checkpoint at this epoch")
    acc_axes.legend(fontsize=7)
    return Figure(f"Learning curves of the top {len(top)}", png(figure))


def best_confusion_figure(runs: SweepRuns, best: pd.Series) -> Figure | None:
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = runs.tracker.client.download_artifacts(runs.files_run(best["run_id"]),
                                                          "trial/confusion_matrix.csv", folder)
        except Exception:  # an older run without the artefact: the report still builds
            return None
        matrix = pd.read_csv(path, index_col=0)
    figure = confusion_figure(matrix.to_numpy(), [str(c) for c in matrix.columns],
                              f"Best trial {best['trial_key']} (test)")
    return Figure("Confusion matrix of the best trial", png(figure))


def parameter_importances(finished: pd.DataFrame, params: list[str], column: str,
                          direction: str) -> dict[str, float]:
    """Optuna's fANOVA importances of the swept parameters (empty when too few trials to say)."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    if len(finished) < MIN_TRIALS_FOR_IMPORTANCE or not params:
        return {}
    finished = importance_sample(finished)
    text = {p: _missing_as_dash(finished, p)[p].map(str) for p in params}  # unused parameters become "-"
    choices = {p: tuple(sorted(text[p].unique())) for p in params}
    study = optuna.create_study(direction=direction)
    for index, row in finished.iterrows():
        values = {p: text[p][index] for p in params}
        study.add_trial(optuna.trial.create_trial(
            params=values, distributions={p: CategoricalDistribution(choices[p]) for p in params},
            value=float(row[column])))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        return optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True)
    except (RuntimeError, ValueError):
        return {}


def importance_figure(importances: dict[str, float]) -> Figure | None:
    if not importances:
        return None
    names = list(importances)[::-1]
    figure, axes = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2))
    axes.barh(names, [importances[n] for n in names])
    axes.set(xlabel="importance (fANOVA, normalised)")
    return Figure("Parameter importances", png(figure),
                  "How much of the metric's variance each parameter explains across finished trials (beyond "
                  f"{IMPORTANCE_TRIALS}, a seeded sample of them).")


def baseline_cards(baselines: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Header cards: what always answering the majority class scores on the best trial's windows, and chance."""
    cards = {}
    for split, label in (("val", "val majority baseline"), ("test", "test majority baseline (held out)")):
        if split in baselines:
            value = baselines[split]
            cards[label] = cell_text(value["majority_accuracy"]) + (
                f" ({value['majority_class']})" if value["majority_class"] else "")
    if baselines:
        cards["chance"] = cell_text(next(iter(baselines.values()))["chance"])
    return cards


def outcome_table(runs: SweepRuns) -> pd.DataFrame:
    """Trials by state with the most common reasons for failed and pruned ones."""
    trials = runs.trials.assign(reason=runs.trials.reason.fillna("").str.slice(0, 160))
    rows = []
    for state, group in trials.groupby("state", sort=True):
        reasons = group.reason[group.reason != ""].value_counts()
        rows.append({"state": state, "trials": len(group),
                     "reasons": "; ".join(f"{reason} ({n})" for reason, n in reasons.items())})
    return pd.DataFrame(rows, columns=["state", "trials", "reasons"])


def _rows_left_out(rows: int) -> str:
    """The line under a leaderboard cut at HTML_ROWS ('' when it lists every trial)."""
    if rows <= HTML_ROWS:
        return ""
    return (f"<p>The best {HTML_ROWS} of {rows} finished trials; leaderboard.csv and leaderboard.md beside this "
            "report list every one.</p>")


def render_html(title: str, generated: str, cards: dict[str, str], board: pd.DataFrame, outcomes: pd.DataFrame,
                figures: list[Figure], notice: str = "", interactive: str = "") -> str:
    first = ["rank", "trial_key", "architecture", "val_accuracy", "val_margin", "test_accuracy", "test_margin",
             "val_loss", "test_loss"]
    shown = board[first + [c for c in board.columns if c not in first]].dropna(axis=1, how="all")
    card_html = "".join(f'<div class="card"><b>{html.escape(v)}</b>{html.escape(k)}</div>' for k, v in cards.items())
    body = ((f"<p><b>{html.escape(notice)}</b></p>" if notice else "") +
            f'<div class="cards">{card_html}</div><h2>Leaderboard</h2>{table_html(shown.head(HTML_ROWS))}'
            f"{_rows_left_out(len(shown))}{interactive}"
            f"<h2>Plots</h2>{''.join(figure_html(f) for f in figures)}"
            f"<h2>Trials by outcome</h2>{table_html(outcomes)}")
    return page(title, f"generated {generated} from MLflow", body)


# ---------------------------------------------------------------- the whole report


def build_report(runs: SweepRuns, out: Path, metric: str, top_k: int = 5, log_to_mlflow: bool = True,
                 overwrite: bool = False, goals: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Write leaderboard.csv, leaderboard.md and report.html into `out`; return a summary for the CLI.

    `goals` are the sweep's objectives (default: `metric`); the interactive Pareto front pairs a single one with
    latency_ms."""
    from reports.interactive import interactive_section
    from reports.pareto import front_goals

    atomic.check_replaceable(out, overwrite, atomic.REPORT_MARKER, "report folder")  # before the slow part
    column, direction = objective(metric).final, objective(metric).direction
    name = runs.tracker.experiment_name
    board = leaderboard(runs, metric, goals)
    finished = runs.finished
    params = runs.swept_parameters()
    generated = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    figures: list[Figure | None] = [
        by_group_figure(finished, "architecture", column, metric),
        by_group_figure(finished, "backbone", column, metric),
        parameter_figure(finished, params, column, metric),
        learning_curves_figure(runs, board.head(top_k).rename(columns={"val_accuracy": "val_accuracy_best"})),
    ]
    if not board.empty:
        figures.append(best_confusion_figure(runs, board.iloc[0]))
    importances = parameter_importances(finished, params, column, direction)
    figures.append(importance_figure(importances))
    outcomes = outcome_table(runs)
    best = board.iloc[0] if not board.empty else None
    cards = {"finished trials": str(len(board)), "trials in all": str(len(runs.trials)),
             f"best {metric}": "-" if best is None else cell_text(float(best[metric if metric in board else column])),
             "best trial": "-" if best is None else f"{best['architecture']} {best['trial_key']}"}
    baselines = {} if best is None else trial_baselines(runs, best["run_id"])
    cards.update(baseline_cards(baselines))
    note = "" if best is None else f"Baselines on the best trial's windows: {baseline_text(baselines)}."
    stopped = runs.parent.data.tags.get(STOP_TAG) if runs.parent is not None else None
    notice = f"The sweep stopped early: {stopped}" if stopped else ""
    interactive = interactive_section(finished, params, front_goals(goals or [(metric, direction)]))
    page = render_html(f"Sweep {name}", generated, cards, board, outcomes, [f for f in figures if f is not None],
                       notice, interactive)
    with atomic.atomic_dir(out, overwrite=overwrite, marker=atomic.REPORT_MARKER, what="report folder") as staging:
        atomic.write_text(staging / "leaderboard.csv", board.to_csv(index=False))
        markdown = to_markdown(board, f"Leaderboard of sweep {name} by {metric}", note)
        atomic.write_text(staging / "leaderboard.md", markdown)
        atomic.write_text(staging / "report.html", page)
    if log_to_mlflow and runs.parent is not None:
        runs.tracker.log_files(runs.parent.info.run_id, [out / file for file in REPORT_FILES], "report")
    return {"out": str(out), "finished": len(board), "trials": len(runs.trials), "importances": importances,
            "stopped": stopped,
            "best": None if best is None else {"trial_key": best["trial_key"], metric: best.get(metric)}}
