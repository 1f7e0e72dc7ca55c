"""Interactive plots for report.html, drawn with plotly from the MLflow trial table: the Pareto front, the
optimisation history and parallel coordinates of the swept parameters (parameter importances are drawn once, in
the static part, so the report shows one set of numbers).

plotly.js is a partial build holding only the trace types drawn here (scatter, parcoords; reports/static/, rebuilt
by reports/static/build/build.sh) and is inlined once, so the page works offline; nothing points at a CDN.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd

from reports.pareto import on_front
from reports.plot_data import (Baseline, axis_encoding, best_so_far, integer_dtick, is_accuracy, span_with,
                               val_baselines)
from runner.spec.metrics import objective

PLOTLY_JS = Path(__file__).with_name("static") / "plotly-videosweep.min.js"
TRACE_TYPES = ("scatter", "parcoords")  # what the partial plotly.js holds: a figure of another type draws nothing
BEST_COLOUR, FRONT_COLOUR, OTHER_COLOUR, BASELINE_COLOUR = "#b2182b", "#b2182b", "#7f8c9b", "#555555"
# Parallel coordinates: the worst trials pale blue, the best dark red, so the best line stands out on white.
LINE_SCALE = [[0.0, "#c6dbef"], [0.5, "#4292c6"], [1.0, BEST_COLOUR]]


def _ran_order(finished: pd.DataFrame) -> pd.DataFrame:
    """Finished trials in the order they ran (the Optuna trial number where recorded, then the key)."""
    if "optuna_trial" in finished:
        return finished.sort_values(["optuna_trial", "trial_key"], na_position="last", kind="stable")
    return finished.sort_values("trial_key", kind="stable")


def _label(row: pd.Series) -> str:
    """A trial named first: its key and architecture."""
    return f"{row['trial_key']} {row.get('architecture', '')}".strip()


def _hover(rows: pd.DataFrame, goals: list[tuple[str, str]]) -> list[str]:
    """Hover text per trial: the trial first (key, architecture), then its values."""
    return ["<br>".join([f"<b>{html.escape(_label(row))}</b>",
                         *(f"{name}: {row[objective(name).final]:.4g}" for name, _ in goals)])
            for _, row in rows.iterrows()]


def _baseline_lines(figure: Any, baselines: list[Baseline], axis: str) -> None:
    """Each val majority baseline as a labelled dashed line along `axis` ('x' or 'y')."""
    for number, baseline in enumerate(baselines):
        line = {"line_dash": "dash", "line_color": BASELINE_COLOUR, "line_width": 1.5,
                "annotation_text": baseline.label, "annotation_font_color": BASELINE_COLOUR}
        if axis == "y":
            below = number == 0 and len(baselines) > 1  # the lowest labelled under its line, the others over
            figure.add_hline(y=baseline.value, annotation_position="bottom right" if below else "top right", **line)
        else:
            figure.add_vline(x=baseline.value, annotation_position="top left" if number else "bottom left", **line)


def _metric_axis(values: pd.Series, name: str, baselines: list[Baseline]) -> dict[str, Any]:
    """An axis of `name`; for an accuracy its range holds the val majority baseline, so noise is not separation."""
    axis: dict[str, Any] = {"title": {"text": name}}
    if is_accuracy(name):
        axis["range"] = list(span_with(values.to_numpy(dtype=float), [b.value for b in baselines]))
    return axis


def pareto_figure(finished: pd.DataFrame, goals: list[tuple[str, str]], baselines: list[Baseline]) -> Any:
    """The first two objectives, the trials on the front (over every objective) highlighted and joined."""
    import plotly.graph_objects as go

    (x_name, _), (y_name, _) = goals[:2]
    x_col, y_col = objective(x_name).final, objective(y_name).final
    rows = finished.dropna(subset=[objective(name).final for name, _ in goals])
    front = on_front(rows, goals).to_numpy()
    figure = go.Figure()
    for mask, name, colour in ((~front, "dominated", OTHER_COLOUR), (front, "on the front", FRONT_COLOUR)):
        part = rows[mask].sort_values(x_col)
        figure.add_scatter(x=part[x_col], y=part[y_col], name=f"{name} ({len(part)})", text=_hover(part, goals),
                           hovertemplate="%{text}<extra></extra>", mode="lines+markers" if name != "dominated"
                           else "markers", marker={"color": colour, "size": 9}, line={"color": colour, "width": 1})
    figure.update_layout(xaxis=_metric_axis(rows[x_col], x_name, baselines),
                         yaxis=_metric_axis(rows[y_col], y_name, baselines))
    for axis, name in (("x", x_name), ("y", y_name)):
        if is_accuracy(name):
            _baseline_lines(figure, baselines, axis)
    return figure


def history_figure(finished: pd.DataFrame, metric: str, direction: str, baselines: list[Baseline]) -> Any:
    """Each finished trial's metric in the order they ran, and the best so far as a step line."""
    import plotly.graph_objects as go

    column = objective(metric).final
    rows = _ran_order(finished.dropna(subset=[column]))
    numbers = rows["optuna_trial"] if "optuna_trial" in rows and rows["optuna_trial"].notna().all() else None
    x = list(range(len(rows))) if numbers is None else [int(n) for n in numbers]
    values = rows[column].to_numpy(dtype=float)
    figure = go.Figure()
    figure.add_scatter(x=x, y=values, mode="markers", name=metric, text=_hover(rows, [(metric, direction)]),
                       hovertemplate="trial #%{x}<br>%{text}<extra></extra>",
                       marker={"color": "#4292c6", "size": 8})
    figure.add_scatter(x=x, y=best_so_far(list(values), direction), mode="lines", name="best so far",
                       line={"color": BEST_COLOUR, "width": 2, "shape": "hv"}, hoverinfo="skip")
    figure.update_layout(xaxis={"title": {"text": "trial (in the order they ran)"}, "tickmode": "linear",
                                "tick0": 0, "dtick": integer_dtick(max(x) - min(x) + 1), "tickformat": "d"},
                         yaxis=_metric_axis(rows[column], metric, baselines))
    if is_accuracy(metric):
        _baseline_lines(figure, baselines, "y")
    return figure


def parallel_figure(finished: pd.DataFrame, params: list[str], metric: str, direction: str,
                    baselines: list[Baseline]) -> Any:
    """plotly's parcoords (brushing an axis filters the lines): the swept parameters in value order, then the
    metric; lines coloured by the metric, the best dark red and drawn last (on top)."""
    import plotly.graph_objects as go

    column = objective(metric).final
    rows = finished.dropna(subset=[column]).sort_values(column, ascending=direction == "maximize", kind="stable")
    dimensions = []
    for param in params:
        axis = axis_encoding(rows[param])
        dimensions.append({"label": param, "values": axis.values, "tickvals": axis.tickvals,
                           "ticktext": axis.ticktext})
    values = rows[column].to_numpy(dtype=float)
    low, high = span_with(values, [b.value for b in baselines] if is_accuracy(metric) else [], pad=0.0)
    dimensions.append({"label": metric, "values": values, "range": [low, high]})
    cmin = float(values.min())
    line = {"color": values, "colorscale": LINE_SCALE, "reversescale": direction != "maximize", "showscale": True,
            "cmin": cmin, "cmax": max(float(values.max()), cmin + 1e-9), "colorbar": {"title": {"text": metric}}}
    figure = go.Figure(go.Parcoords(line=line, dimensions=dimensions, domain={"x": [0.1, 0.86]},
                                    labelangle=0, labelside="top"))
    return figure.update_layout(margin={"l": 40, "r": 40, "t": 70, "b": 30})


def _figures(finished: pd.DataFrame, params: list[str], goals: list[tuple[str, str]]) -> list[tuple[str, Any, str]]:
    metric, direction = goals[0]
    names = [name for name, _ in goals]
    baselines = val_baselines(finished)
    said = "" if not baselines else " Dashed: the val majority baseline (always answering the majority class) " \
                                    "of the trials' windows."
    extra = "" if len(goals) < 3 else f" Only {names[0]} and {names[1]} are drawn; the front is over all of them."
    drawn = [
        ("Pareto front", pareto_figure(finished, goals, baselines),
         f"Every finished trial over {' and '.join(names[:2])}; red: no other trial is better on every objective. "
         f"Hover a point for its trial.{extra}{said}"),
        ("Optimisation history", history_figure(finished, metric, direction, baselines),
         f"{metric} of each finished trial in the order they ran, and the best so far (red step line).{said}"),
    ]
    if params:
        drawn.append(("Parallel coordinates of the swept parameters",
                      parallel_figure(finished, params, metric, direction, baselines),
                      f"One line per finished trial, coloured by {metric} (best dark red). Drag along an axis to "
                      "keep only the lines crossing that range; click the axis outside the range to clear it. "
                      "Categories and numbers run in value order; '-' is a parameter the trial's architecture "
                      "does not use."))
    return drawn


def plotly_js() -> str:
    """The partial plotly.js build, safe to inline in a <script> element."""
    return PLOTLY_JS.read_text(encoding="utf-8").replace("</script", "<\\/script")


def interactive_section(finished: pd.DataFrame, params: list[str], goals: list[tuple[str, str]]) -> str:
    """The report's interactive part: plotly.js inlined once, then one <div> per figure ('' without trials)."""
    columns = [objective(name).final for name, _ in goals]
    finished = finished.dropna(subset=columns)
    if finished.empty:
        return ""
    parts = []
    for index, (title, figure, caption) in enumerate(_figures(finished, params, goals)):
        figure.update_layout(template="none", height=460, legend={"orientation": "h", "y": -0.18})
        if not figure.layout.margin.l:
            figure.update_layout(margin={"l": 70, "r": 40, "t": 40, "b": 60})
        div = figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"interactive-{index}",
                             config={"displaylogo": False, "responsive": True})
        parts.append(f'<figure class="interactive"><h3>{html.escape(title)}</h3>{div}'
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return f'<h2>Interactive plots</h2><script type="text/javascript">{plotly_js()}</script>' + "".join(parts)
