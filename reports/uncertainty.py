"""How sure an accuracy is: one place for the 95% intervals, ties with the leader and the chance banner.

The leaderboard, the report, `best` and `export` all decide with these helpers, so they never disagree. An
accuracy over a split is a proportion of windows, but windows of one video are correlated, so every interval
rests on the split's effective number of videos (Kish's count, recorded per trial by zoo/baselines.py), never on
its number of windows.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import pandas as pd

Z95 = 1.959964  # the standard normal quantile of a two-sided 95% interval
ONE_CLASS = 1.0 - 1e-9  # a majority share this high: the split holds a single class


def _finite(value: Any) -> float | None:
    """A real number, or None for None, pd.NA, NaN, infinities and anything not a number (text included)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def wilson_interval(accuracy: float, units: float, z: float = Z95) -> tuple[float, float]:
    """Wilson's 95% score interval of a proportion observed over `units` independent units (may be fractional:
    an effective count); unlike the normal approximation it stays inside [0, 1] and is sane for few units.
    `units` must be positive (accuracy_interval checks it)."""
    centre = (accuracy + z * z / (2 * units)) / (1 + z * z / units)
    half = z * math.sqrt(accuracy * (1 - accuracy) / units + z * z / (4 * units * units)) / (1 + z * z / units)
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_interval(accuracy: Any, units: Any) -> tuple[float, float] | None:
    """The 95% interval of an accuracy over `units` effective videos; None where either is missing, the
    accuracy lies outside [0, 1] or there are no units (a split without windows): nothing to say, nothing divided
    by zero."""
    accuracy, units = _finite(accuracy), _finite(units)
    if accuracy is None or units is None or units <= 0 or not 0.0 <= accuracy <= 1.0:
        return None
    return wilson_interval(accuracy, units)


def val_interval(accuracy: float, baselines: dict[str, dict[str, Any]]) -> list[float] | None:
    """The 95% interval of a trial's val accuracy on the validation split's effective number of videos-worth of
    windows (zoo/baselines.py); None where the trial recorded none or its accuracy is missing."""
    interval = accuracy_interval(accuracy, baselines.get("val", {}).get("effective_units"))
    return None if interval is None else list(interval)


def clears_baseline(interval: Any, majority_accuracy: Any) -> bool | None:
    """Whether an accuracy beats always answering the majority class: its interval's lower end lies above the
    majority baseline of the same windows. None where either is unknown. A split holding a single class has a
    baseline of 1.0, which nothing clears."""
    majority = _finite(majority_accuracy)
    if interval is None or majority is None:
        return None
    return bool(interval[0] > majority)


def difference_interval(first: tuple[float, float, float], second: tuple[float, float, float]) -> tuple[float, float]:
    """The 95% interval of first - second, each (accuracy, low, high) with its own Wilson interval: Newcombe's
    hybrid score interval (his method 10, 1998), for two independent proportions."""
    (p1, low1, high1), (p2, low2, high2) = first, second
    difference = p1 - p2
    return difference - math.hypot(p1 - low1, high2 - p2), difference + math.hypot(high1 - p1, p2 - low2)


def tied_with_leader(leader: tuple[float, float, float] | None,
                     other: tuple[float, float, float] | None) -> bool | None:
    """Whether two val accuracies, each (accuracy, low, high), cannot be told apart: the 95% interval of their
    difference (difference_interval) holds 0. It treats the two as independent samples although trials are scored
    on the same videos, which makes that interval wider: it calls more trials tied, never fewer. (Unlike asking
    whether the two intervals overlap, it is a real 95% test.) None where either is unknown."""
    if leader is None or other is None:
        return None
    lower, upper = difference_interval(leader, other)
    return bool(lower <= 0.0 <= upper)


def tie_column(accuracies: pd.Series, lows: pd.Series, highs: pd.Series) -> pd.Series:
    """tied_with_leader per row of a table ranked best first (the leader is row 0, tied with itself): boolean,
    missing where a trial or the leader has no interval."""
    rows = [None if _finite(low) is None else (float(acc), float(low), float(high))
            for acc, low, high in zip(accuracies, lows, highs)]
    leader = rows[0] if rows else None
    return pd.Series([tied_with_leader(leader, row) for row in rows], index=accuracies.index, dtype="boolean")


def tie_mark(rank: Any, tied: Any) -> str:
    """What people see: 'leader' on the first row, '≈ tied' on a trial that cannot be told apart from it."""
    if rank == 1:
        return "leader"
    return "" if pd.isna(tied) else "≈ tied" if bool(tied) else ""


def single_class_splits(baselines: dict[str, dict[str, Any]]) -> dict[str, str | None]:
    """Splits whose windows hold one class only (majority share 1.0), with that class: there a constant answer is
    always right, so no accuracy can show that a model learned."""
    return {split: value.get("majority_class") for split, value in baselines.items()
            if (share := _finite(value.get("majority_accuracy"))) is not None and share >= ONE_CLASS}


def one_class_note(baselines: dict[str, dict[str, Any]]) -> str:
    """A sentence for each split of one class ('' when none): what its accuracies then mean."""
    return " ".join(f"The {split} split{' (held out)' if split == 'test' else ''} holds only class "
                    f"{label or '?'}: a model that always answers it scores 1.0 there, so its accuracy shows only how "
                    "often a model answers that class." for split, label in single_class_splits(baselines).items())


def chance_banner(board: pd.DataFrame, states: dict[str, int]) -> str:
    """The warning a report opens with, or '' when none is due: no trial finished (`states`: trials per state),
    or no finished trial's val interval clears its own val majority baseline (the leaderboard's
    val_beats_baseline column, from clears_baseline). Trials that recorded no baseline decide nothing."""
    if board.empty:
        counted = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
        total = sum(states.values())
        return (f"No trial finished: none of the {total} trial(s) of this sweep has a result ({counted}), so there "
                "is nothing to rank, compare or export.")
    decided = board["val_beats_baseline"].dropna() if "val_beats_baseline" in board else pd.Series(dtype=bool)
    if decided.empty or decided.astype(bool).any():
        return ""
    line = (f"No trial beats always answering the majority class: none of the {len(decided)} finished trial(s) "
            "has a 95% val-accuracy interval above its val majority baseline, so the differences between them "
            "are noise and the leader is not a model that learned.")
    one_class = board["val_majority_accuracy"].dropna() >= ONE_CLASS if "val_majority_accuracy" in board else []
    if len(one_class) and one_class.all():
        return line + (" The validation split holds a single class: always answering it scores 1.0, so no "
                       "accuracy on it can show learning; it needs videos of every class.")
    units = pd.to_numeric(board.get("val_effective_units", pd.Series(dtype=float)), errors="coerce").max()
    if pd.notna(units):
        line += (f" The validation split counts {units:.3g} effective video(s) (correlated windows of one video "
                 "count once); more validation videos give narrower intervals.")
    return line
