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
import textwrap
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import pandas as pd

from reports.html import Figure, cell_text, figure_html, page, table_html
from reports.html import png as _png
from reports.leaderboard import NO_TRIAL, TEST_INTERVAL, VAL_INTERVAL, leaderboard, markdown_view, to_markdown
from reports.plot_data import (importance_reason, is_accuracy, missing_as_dash, natural_key, span_with,
                               tied_groups, val_baselines, varied_parameters)
from reports.records import (IMPORTANCE_TRIALS, MIN_TRIALS_FOR_IMPORTANCE, SweepRuns, baseline_text,
                             importance_sample, trial_baselines)
from reports.uncertainty import chance_banner, one_class_note
from runner.spec.metrics import CONTINUED_METRIC, objective
from runner.trial.plots import confusion_figure
from runner.search.stop import STOP_TAG
from zoo import atomic

REPORT_FILES = ("leaderboard.csv", "leaderboard.md", "report.html")
TIE_NOTE = ("Accuracies carry 95% intervals over each split's effective number of videos; ≈ marks a trial whose val "
            "accuracy cannot be told apart from the leader's (their difference's 95% interval holds 0).")
STRIP_POINTS = 300  # trials drawn as dots per box of a strip plot (a sample beyond it)
HTML_ROWS = 100  # leaderboard rows report.html lists; leaderboard.csv and .md hold every finished trial


def png(figure: plt.Figure) -> bytes:
    """The report's charts as 256-colour PNGs: the page stays small (see html.png)."""
    return _png(figure, palette=True)


def _baseline(axes: plt.Axes, frame: pd.DataFrame, metric: str, legend: bool = False) -> None:
    """For an accuracy: each val majority baseline as a labelled dashed line, inside the axis range, so noise near
    it does not look like separation."""
    baselines = val_baselines(frame) if is_accuracy(metric) else []
    for number, baseline in enumerate(baselines):
        axes.axhline(baseline.value, linestyle="--", color="#555555", linewidth=1.2, zorder=1,
                     label=baseline.label if legend else None)
        if not legend:
            axes.annotate(baseline.label, (1, baseline.value), xycoords=("axes fraction", "data"),
                          xytext=(-4, 3 if number == len(baselines) - 1 else -3), textcoords="offset points",
                          ha="right", va="bottom" if number == len(baselines) - 1 else "top", fontsize=7,
                          color="#555555")
    if baselines:
        axes.set_ylim(*span_with(list(axes.get_ylim()), [b.value for b in baselines], pad=0.0))


def drawn_points(points: np.ndarray, rng: np.random.Generator, limit: int = STRIP_POINTS) -> np.ndarray:
    """The points a strip plot draws over its box: all up to `limit`, else a seeded sample of `limit` (the box is
    still drawn from all of them; 5,000 dots are a smear, and a slow one)."""
    return points if len(points) <= limit else rng.choice(points, size=limit, replace=False)


def _strip_box(axes: plt.Axes, frame: pd.DataFrame, group: str, value: str) -> None:
    """Box per group with every trial drawn on top (jittered, seeded; beyond STRIP_POINTS a sample): small sweeps
    stay honest."""
    labels = sorted(frame[group].astype(str).unique(), key=natural_key)
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
    _strip_box(axes, missing_as_dash(finished, group), group, column)
    axes.set_ylabel(metric)
    _baseline(axes, finished, metric)
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
        _strip_box(axes, missing_as_dash(finished, param), param, column)
        axes.set_ylabel(metric)
        _baseline(axes, finished, metric)
    for axes in list(grid.flat)[len(shown):]:
        axes.set_visible(False)
    figure.tight_layout()
    return Figure(f"{metric} against each swept parameter", png(figure))


CURVE_STYLES = [(marker, dash) for dash in ("-", "--", "-.", ":") for marker in ("o", "s", "^", "D", "v", "X")]
CURVES = ("val_accuracy", "val_loss")


def curve_label(rows: list[pd.Series]) -> str:
    """One legend entry for trials whose curves coincide: '#2 = #3 (identical): arch key, arch key'."""
    def name(row: pd.Series) -> str:
        rung = f" (rung {int(row['rung'])})" if pd.notna(row.get("rung")) else ""  # halving: one curve, rung to rung
        return f"{row['architecture']} {row['trial_key']}{rung}"

    ranks = " = ".join(f"#{row['rank']}" for row in rows)
    text = f"{ranks} {name(rows[0])}" if len(rows) == 1 else \
        f"{ranks} (identical): {', '.join(name(row) for row in rows)}"
    return textwrap.fill(text, 80, subsequent_indent="    ")


def _draw_curves(axes: plt.Axes, rows: list[pd.Series], curves: list[dict[int, float]],
                 continued: list[set[int]]) -> bool:
    """One panel: each group of coinciding curves drawn once in its first trial's style (colour, marker, dash),
    rings where a trial continued from a checkpoint; whether any ring was drawn."""
    ringed = False
    for group in tied_groups([(curve,) for curve in curves]):
        first, points = group[0], curves[group[0]]
        if not points:
            continue
        marker, dash = CURVE_STYLES[first % len(CURVE_STYLES)]
        (line,) = axes.plot(list(points), list(points.values()), marker=marker, linestyle=dash, markersize=5,
                            color=f"C{first % 10}", label=curve_label([rows[i] for i in group]))
        marks = sorted(set().union(*(continued[i] for i in group)) & points.keys())
        ringed = ringed or bool(marks)
        axes.plot(marks, [points[s] for s in marks], linestyle="none", marker="o", markersize=11,
                  markerfacecolor="none", color=line.get_color())
    return ringed


def learning_curves_figure(runs: SweepRuns, top: pd.DataFrame) -> Figure | None:
    """Validation accuracy and loss per epoch (all rounds) of the top trials, from MLflow's metric history; each
    trial its own colour, marker and dash, and trials whose curves coincide on a panel drawn once there, named
    together in that panel's legend."""
    if top.empty:
        return None
    history = runs.tracker.client.get_metric_history
    rows = [row for _, row in top.iterrows()]
    continued = [{int(m.step) for m in history(row["run_id"], CONTINUED_METRIC)} for row in rows]
    figure, panels = plt.subplots(1, 2, figsize=(12, 4.2))
    any_continued = False
    for axes, name in zip(panels, CURVES):
        curves = [dict(sorted((int(m.step), m.value) for m in history(row["run_id"], name))) for row in rows]
        any_continued = _draw_curves(axes, rows, curves, continued) or any_continued
        axes.set(xlabel="epoch (all rounds)", ylabel=name)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    _baseline(panels[0], top, "val_accuracy", legend=True)
    if any_continued:
        panels[0].plot([], [], linestyle="none", marker="o", markerfacecolor="none", color="grey",
                       label="continued from a checkpoint at this epoch")
    for axes in panels:  # below each panel: long tied names never squeeze the plot
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.16), frameon=False)
    return Figure(f"Learning curves of the top {len(top)}", png(figure),
                  "Each trial has its own colour, marker and dash; trials whose curves coincide on a panel share one "
                  "line and one legend entry there.")


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


def _importance_inputs(finished: pd.DataFrame, params: list[str], column: str) -> tuple[pd.DataFrame, list[str]]:
    """The finished trials holding the metric, and the parameters that took two or more values among them."""
    rows = finished.dropna(subset=[column])
    return rows, varied_parameters(rows, params)


def why_no_importances(finished: pd.DataFrame, params: list[str], column: str) -> str | None:
    """Why the report shows no parameter importances (too few finished trials, nothing varied); None if it does."""
    rows, varied = _importance_inputs(finished, params, column)
    return importance_reason(len(rows), varied, MIN_TRIALS_FOR_IMPORTANCE)


def parameter_importances(finished: pd.DataFrame, params: list[str], column: str,
                          direction: str) -> dict[str, float]:
    """Optuna's fANOVA importances (normalised) of the parameters that took two or more values, over the finished
    trials; empty when why_no_importances gives a reason or fANOVA cannot fit. The report's only importances."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    rows, varied = _importance_inputs(finished, params, column)
    if importance_reason(len(rows), varied, MIN_TRIALS_FOR_IMPORTANCE) is not None:
        return {}
    rows = importance_sample(rows)
    text = {p: missing_as_dash(rows, p)[p].map(str) for p in varied}  # unused parameters become "-"
    distributions = {p: CategoricalDistribution(tuple(sorted(text[p].unique(), key=natural_key))) for p in varied}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction)
    for index, row in rows.iterrows():
        study.add_trial(optuna.trial.create_trial(params={p: text[p][index] for p in varied},
                                                  distributions=distributions, value=float(row[column])))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        return optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True)
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def importance_figure(importances: dict[str, float], reason: str | None = None) -> Figure:
    """The importances as bars, or, when there are none, the reason in their place."""
    title = "Parameter importances"
    if not importances:
        return Figure(title, b"", reason or "Not shown: fANOVA could not fit the finished trials (too few distinct "
                                            "ones).")
    names = list(importances)[::-1]
    figure, axes = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2))
    axes.barh(names, [importances[n] for n in names])
    axes.set(xlabel="importance (fANOVA, normalised)")
    return Figure(title, png(figure), "How much of the metric's variance each parameter explains across finished "
                                      "trials (fANOVA; only parameters that took two or more values; beyond "
                                      f"{IMPORTANCE_TRIALS} trials, a seeded sample of them).")


def baseline_cards(baselines: dict[str, dict[str, Any]], board: pd.DataFrame | None = None) -> dict[str, str]:
    """Header cards: what always answering the majority class scores on the best trial's windows, and chance;
    with the leaderboard, the leader's val accuracy interval and how many trials are tied with it."""
    cards = {}
    if board is not None and not board.empty:
        leader = board.iloc[0]
        if pd.notna(leader["val_accuracy_low"]):
            cards["best val accuracy, 95% interval"] = (f"[{leader['val_accuracy_low']:.4f}, "
                                                        f"{leader['val_accuracy_high']:.4f}]")
            tied = int(board["tied_with_leader"].fillna(False).astype(bool).iloc[1:].sum())
            cards["trials tied with the best (≈)"] = str(tied)
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


BANNER_STYLE = ("background:#fdecea;border:2px solid #b3261e;color:#5f1410;border-radius:8px;"
                "padding:.9rem 1.2rem;margin:0 0 1rem;font-size:1.05rem")


def _rows_left_out(rows: int) -> str:
    """The line under a leaderboard cut at HTML_ROWS ('' when it lists every trial)."""
    if rows <= HTML_ROWS:
        return ""
    return (f"<p>The best {HTML_ROWS} of {rows} finished trials; leaderboard.csv and leaderboard.md beside this "
            "report list every one.</p>")


def render_html(title: str, generated: str, cards: dict[str, str], board: pd.DataFrame, outcomes: pd.DataFrame,
                figures: list[Figure], notice: str = "", interactive: str = "", banner: str = "",
                links: str = "") -> str:
    """The page; `banner` (chance_banner) is the first thing in its body. The table shows each accuracy with its
    95% interval and the tie mark beside the rank (the CSV keeps the raw columns); `links` says where the runs are."""
    first = ["rank", "tie", "trial_key", "architecture", "val_accuracy", VAL_INTERVAL, "val_margin", "test_accuracy",
             TEST_INTERVAL, "test_margin", "val_loss", "test_loss"]
    raw = ["tied_with_leader", "val_accuracy_low", "val_accuracy_high", "test_accuracy_low", "test_accuracy_high"]
    view = markdown_view(board).drop(columns=raw)
    ordered = first + [c for c in view.columns if c not in first]
    shown = view[[c for c in ordered if view[c].map(cell_text).ne("").any()]]  # no column left empty
    card_html = "".join(f'<div class="card"><b>{html.escape(v)}</b>{html.escape(k)}</div>' for k, v in cards.items())
    warning = (f'<div class="banner" role="alert" style="{BANNER_STYLE}"><b>{html.escape(banner)}</b></div>'
               if banner else "")
    body = ((f"<p><b>{html.escape(notice)}</b></p>" if notice else "") +
            f'<div class="cards">{card_html}</div><h2>Leaderboard</h2>'
            + (f'<p class="meta">{html.escape(links)}</p>' if links else "")
            + f"{table_html(shown.head(HTML_ROWS)) if len(shown) else f'<p>{NO_TRIAL}</p>'}"
            f"{_rows_left_out(len(shown))}{interactive}"
            f"<h2>Plots</h2>{''.join(figure_html(f) for f in figures)}"
            f"<h2>Trials by outcome</h2>{table_html(outcomes)}")
    return page(title, f"generated {generated} from MLflow", body, warning)


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
    figures.append(importance_figure(importances, why_no_importances(finished, params, column)))
    outcomes = outcome_table(runs)
    best = board.iloc[0] if not board.empty else None
    cards = {"finished trials": str(len(board)), "trials in all": str(len(runs.trials)),
             f"best {metric}": "-" if best is None else cell_text(float(best[metric if metric in board else column])),
             "best trial": "-" if best is None else f"{best['architecture']} {best['trial_key']}"}
    baselines = {} if best is None else trial_baselines(runs, best["run_id"])
    cards.update(baseline_cards(baselines, board))
    note = " ".join(filter(None, [
        "" if best is None else f"Baselines on the best trial's windows: {baseline_text(baselines)}.",
        one_class_note(baselines), "" if best is None else TIE_NOTE, runs.link_hint()]))
    banner = chance_banner(board, runs.trials.state.value_counts().to_dict())
    stopped = runs.parent.data.tags.get(STOP_TAG) if runs.parent is not None else None
    notice = f"The sweep stopped early: {stopped}" if stopped else ""
    interactive = interactive_section(finished, params, front_goals(goals or [(metric, direction)]))
    page = render_html(f"Sweep {name}", generated, cards, board, outcomes, [f for f in figures if f is not None],
                       notice, interactive, banner, runs.link_hint())
    with atomic.atomic_dir(out, overwrite=overwrite, marker=atomic.REPORT_MARKER, what="report folder") as staging:
        atomic.write_text(staging / "leaderboard.csv", board.to_csv(index=False))
        markdown = to_markdown(board, f"Leaderboard of sweep {name} by {metric}", note, banner)
        atomic.write_text(staging / "leaderboard.md", markdown)
        atomic.write_text(staging / "report.html", page)
    if log_to_mlflow and runs.parent is not None:
        runs.tracker.log_files(runs.parent.info.run_id, [out / file for file in REPORT_FILES], "report")
    return {"out": str(out), "finished": len(board), "trials": len(runs.trials), "importances": importances,
            "stopped": stopped, "banner": banner,
            "best": None if best is None else {"trial_key": best["trial_key"], metric: best.get(metric)}}
