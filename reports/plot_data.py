"""What the report's plots say, apart from drawing it: axis orders, ranges that hold the baseline, tied curves,
which parameters an importance may rank; pure functions, so tests check a plot's claims without drawing it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

MISSING = "-"  # a parameter a trial's architecture does not use
BASELINE_COLUMNS = ("baseline_val_majority_accuracy", "val_majority_accuracy")  # trial table, leaderboard
TIE_TOLERANCE = 1e-6  # curves closer than this at every epoch are drawn as one


def natural_key(text: Any) -> tuple[int, float, str]:
    """Numbers in numeric order before words (8 before 16, 32 before 64), words alphabetically, '-' last."""
    text = str(text)
    if text == MISSING:
        return 2, 0.0, ""
    try:
        return 0, float(text), ""
    except ValueError:
        return 1, 0.0, text


def is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def missing_as_dash(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Parameters an architecture does not use are missing; plots show them as '-'."""
    values = frame[column].astype(object)
    return frame.assign(**{column: values.where(frame[column].notna(), MISSING)})


@dataclass(frozen=True)
class Axis:
    """One parallel-coordinates axis: a position per trial and the ticks that name the positions."""

    values: list[float]
    tickvals: list[float]
    ticktext: list[str]


def axis_encoding(values: pd.Series) -> Axis:
    """Numeric parameters on a numeric axis ticked at the values taken; anything else (words, or numbers some trials
    lack) as categories at 0, 1, ... in natural order (numbers numerically, then words, '-' last)."""
    present = [v for v in values if not is_missing(v)]
    if len(present) == len(values) and all(_is_number(v) for v in present):
        numbers = [float(v) for v in present]
        ticks = sorted(set(numbers))
        return Axis(numbers, ticks, [_number_text(t) for t in ticks])
    texts = [MISSING if is_missing(v) else _number_text(v) if _is_number(v) else str(v) for v in values]
    labels = sorted(set(texts), key=natural_key)
    position = {label: float(index) for index, label in enumerate(labels)}
    return Axis([position[t] for t in texts], list(position.values()), labels)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _number_text(value: Any) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() else f"{number:g}"


def integer_dtick(count: int, most: int = 20) -> int:
    """A whole-number tick step for `count` trials: 1, 2, 5, 10, 20, 50, ..., the first giving at most `most` ticks."""
    step = 1
    while math.ceil(count / step) > most:
        step = step * 5 // 2 if str(step).startswith("2") else step * 2
    return step


def best_so_far(values: list[float], direction: str) -> list[float]:
    """The best value up to each trial (missing values keep the best before them)."""
    best, out = math.nan, []
    for value in values:
        if not math.isnan(value) and (math.isnan(best) or (value > best if direction == "maximize" else value < best)):
            best = value
        out.append(best)
    return out


def coincide(a: dict[int, float], b: dict[int, float]) -> bool:
    """Two curves (epoch -> value) with the same epochs and values within TIE_TOLERANCE at each."""
    return a.keys() == b.keys() and all(abs(a[step] - b[step]) <= TIE_TOLERANCE for step in a)


def tied_groups(curves: list[tuple[dict[int, float], ...]]) -> list[list[int]]:
    """Indices of `curves` grouped where every series of one (e.g. val_accuracy and val_loss) coincides with the
    group's first; groups in order of their first member, members in input order."""
    groups: list[list[int]] = []
    for index, series in enumerate(curves):
        home = next((g for g in groups if all(coincide(a, b) for a, b in zip(curves[g[0]], series))), None)
        if home is None:
            groups.append([index])
        else:
            home.append(index)
    return groups


def varied_parameters(finished: pd.DataFrame, params: list[str] | tuple[str, ...]) -> list[str]:
    """The parameters (in the order given) that took two or more different non-missing values among `finished`:
    one that only ever took one value (or was missing where an architecture does not use it) explains nothing."""
    return [name for name in params
            if name in finished and finished[name].dropna().astype(str).nunique() >= 2]


def importance_reason(finished_count: int, varied: list[str], minimum: int) -> str | None:
    """Why parameter importances are not shown (None when they are)."""
    if finished_count < minimum:
        return (f"Not shown: {finished_count} finished trial{'s' if finished_count != 1 else ''}, fewer than the "
                f"{minimum} an importance needs to mean anything.")
    if not varied:
        return "Not shown: no parameter took two or more values among the finished trials."
    return None


def is_accuracy(metric: str) -> bool:
    return "accuracy" in metric


@dataclass(frozen=True)
class Baseline:
    """A validation majority-class baseline a plot draws, and its label."""

    value: float
    label: str


def val_baselines(frame: pd.DataFrame) -> list[Baseline]:
    """The validation majority-class baselines to draw, lowest first: one per distinct value among the rows (trials
    of different window lengths see different windows, so each is compared with its own), labelled with how many
    trials it belongs to when there are several; none when none was recorded."""
    column = next((c for c in BASELINE_COLUMNS if c in frame and frame[c].notna().any()), None)
    if column is None:
        return []
    counts = frame[column].dropna().astype(float).round(6).value_counts().sort_index()
    total = int(counts.sum())
    return [Baseline(float(value), f"val majority baseline {value:.4f}" +
                     (f" ({count} of {total} trials)" if len(counts) > 1 else ""))
            for value, count in counts.items()]


def span_with(values: list[float] | np.ndarray, extras: list[float], pad: float = 0.05) -> tuple[float, float]:
    """An axis range holding every value and the `extras` (baselines), padded by `pad` of its width each side."""
    points = [float(v) for v in values if not math.isnan(float(v))] + [float(e) for e in extras]
    if not points:
        return 0.0, 1.0
    low, high = min(points), max(points)
    margin = (high - low) * pad if high > low else max(abs(high) * 0.05, 0.01)  # one value: a visible band round it
    return low - margin, high + margin
