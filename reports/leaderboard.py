"""The leaderboard: finished trials ranked, as a table people read (Markdown) and scripts read (CSV)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from reports.records import MODEL_PARAMS, POINT_COLUMNS, SweepRuns, rank_trials
from reports.uncertainty import accuracy_interval, clears_baseline, tie_column, tie_mark

COLUMNS = ("rank", "trial_key", "tied_with_leader", *MODEL_PARAMS, "val_accuracy_best", "val_accuracy_best_std",
           "repeats", "val_accuracy_low", "val_accuracy_high", "val_beats_baseline", "val_margin",
           "baseline_val_majority_accuracy", "baseline_val_effective_units", "val_loss_best", "val_loss_best_std",
           "test_accuracy", "test_accuracy_std", "test_accuracy_low", "test_accuracy_high", "test_margin",
           "baseline_test_majority_accuracy", "baseline_test_effective_units", "test_loss",
           "best_round", "epochs", "rung", "duration_seconds", "param_count", "latency_ms", "throughput_fps",
           "deployed_param_count", "model_size_mb", "gpu", "run_id", "run_link", "repeat_keys")
# margin: the accuracy less what always answering the majority class scores on the trial's own windows;
# _low/_high: its 95% interval over the split's effective number of videos (reports/uncertainty.py)
# training.repeats: a point's figures are its seed repeats' mean, `_std` their spread, `repeats` how many; its
# trial_key and run are repeat 0's (what export ships); those columns appear only when some point has repeats
RENAMED = {"val_accuracy_best": "val_accuracy", "val_loss_best": "val_loss",
           "baseline_val_majority_accuracy": "val_majority_accuracy",
           "baseline_test_majority_accuracy": "test_majority_accuracy",
           "baseline_val_effective_units": "val_effective_units",
           "baseline_test_effective_units": "test_effective_units", "val_accuracy_best_std": "val_accuracy_std",
           "val_loss_best_std": "val_loss_std"}
NO_TRIAL = "No finished trial to rank."
VAL_INTERVAL, TEST_INTERVAL = "val 95% interval", "test 95% interval (held out)"
MARKDOWN_COLUMNS = ("rank", "tie", "trial_key", "architecture", "backbone", "pooling", "frame_size",
                    "sequence_length", "sequence_model", "layer_1_size", "layer_2_size", "val_accuracy",
                    "val_accuracy_std", "repeats", VAL_INTERVAL, "val_margin", "test_accuracy", "test_accuracy_std",
                    TEST_INTERVAL, "test_margin", "val_loss", "best_round", "epochs", "rung", "duration_seconds",
                    "param_count", "latency_ms", "throughput_fps")


def leaderboard(runs: SweepRuns, metric: str, goals: list[tuple[str, str]] | None = None) -> pd.DataFrame:
    """One row per finished point (a trial, or its seed repeats' mean), best first (rank_trials), with the columns of
    COLUMNS (renamed as people say them)."""
    ranked = rank_trials(runs.trials, metric, goals)
    ranked["run_link"] = [runs.run_link(run_id) for run_id in ranked.artefacts_run_id]  # a reused trial's original
    shown = [c for c in COLUMNS if c not in POINT_COLUMNS or repeated(ranked)]
    table = with_intervals(ranked).reindex(columns=shown).rename(columns=RENAMED)
    for name in ("best_round", "epochs", "param_count", "deployed_param_count"):
        table[name] = table[name].astype("Int64")
    return table


def with_intervals(ranked: pd.DataFrame) -> pd.DataFrame:
    """Each trial's val and (held-out) test accuracy intervals over its own splits' effective units, whether its
    val interval clears its val majority baseline, and whether it is tied with the leader (row 0)."""
    ranked = ranked.reindex(columns=list(dict.fromkeys([*ranked.columns, *COLUMNS])))
    for split, accuracy in (("val", "val_accuracy_best"), ("test", "test_accuracy")):
        units = ranked[f"baseline_{split}_effective_units"]
        intervals = [accuracy_interval(value, count) for value, count in zip(ranked[accuracy], units)]
        ranked[f"{split}_accuracy_low"] = [math.nan if i is None else i[0] for i in intervals]
        ranked[f"{split}_accuracy_high"] = [math.nan if i is None else i[1] for i in intervals]
    ranked["val_beats_baseline"] = pd.array([
        clears_baseline(None if math.isnan(low) else (low, high), majority) for low, high, majority
        in zip(ranked.val_accuracy_low, ranked.val_accuracy_high, ranked.baseline_val_majority_accuracy)],
        dtype="boolean")
    ranked["tied_with_leader"] = tie_column(ranked.val_accuracy_best, ranked.val_accuracy_low,
                                            ranked.val_accuracy_high)
    return ranked


def _interval_text(low: Any, high: Any) -> str:
    return "" if pd.isna(low) or pd.isna(high) else f"[{low:.4f}, {high:.4f}]"


def markdown_view(table: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard as people read it: intervals as [low, high] and the tie mark beside the rank (blank where a
    table lacks those columns)."""
    raw = ["tied_with_leader", "val_accuracy_low", "val_accuracy_high", "test_accuracy_low", "test_accuracy_high"]
    table = table.reindex(columns=list(dict.fromkeys([*table.columns, *raw])))
    return table.assign(**{
        "tie": [tie_mark(rank, tied) for rank, tied in zip(table["rank"], table["tied_with_leader"])],
        VAL_INTERVAL: [_interval_text(*pair) for pair in zip(table.val_accuracy_low, table.val_accuracy_high)],
        TEST_INTERVAL: [_interval_text(*pair) for pair in zip(table.test_accuracy_low, table.test_accuracy_high)]})


def repeated(points: pd.DataFrame) -> bool:
    """Whether some point of the table is the mean of several seed repeats (training.repeats)."""
    return "repeats" in points and bool((points.repeats > 1).any())


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value).replace("|", "\\|")


def to_markdown(table: pd.DataFrame, title: str, note: str = "", banner: str = "") -> str:
    """The leaderboard in Markdown; a banner (reports/uncertainty.chance_banner) comes first, in bold; a run column
    links each trial to its page where the tracking store is a server."""
    table = markdown_view(table)
    columns = [c for c in MARKDOWN_COLUMNS if c in table and table[c].map(_cell).ne("").any()]
    lines = [f"# {title}", "", *([f"**{banner}**", ""] if banner else []), *([note, ""] if note else [])]
    if table.empty:
        return "\n".join([*lines, NO_TRIAL]) + "\n"
    linked = "run_link" in table and table.run_link.fillna("").astype(bool).any()  # a tracking server's pages
    lines += ["| " + " | ".join(columns) + " |" + (" run |" if linked else ""),
              "|" + "---|" * (len(columns) + linked)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" + (f" {_run_cell(row)} |" if linked else "")
              for _, row in table.iterrows()]
    return "\n".join(lines) + "\n"


def _run_cell(row: pd.Series) -> str:
    """The run id, linked to its page on the tracking server when there is one."""
    run = str(row.get("run_id") or "")[:8]
    return f"[{run}]({row['run_link']})" if row.get("run_link") else run
