"""The leaderboard: finished trials ranked, as a table people read (Markdown) and scripts read (CSV)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from reports.records import MODEL_PARAMS, POINT_COLUMNS, SweepRuns, rank_trials

COLUMNS = ("rank", "trial_key", *MODEL_PARAMS, "val_accuracy_best", "val_accuracy_best_std", "repeats", "val_margin",
           "baseline_val_majority_accuracy", "val_loss_best", "val_loss_best_std", "test_accuracy",
           "test_accuracy_std", "test_margin", "baseline_test_majority_accuracy", "test_loss",
           "best_round", "epochs", "rung", "duration_seconds", "param_count", "latency_ms", "throughput_fps",
           "deployed_param_count", "model_size_mb", "gpu", "run_id", "run_link", "repeat_keys")
# margin: the accuracy less what always answering the majority class scores on the trial's own windows
# training.repeats: a point's figures are its seed repeats' mean, `_std` their spread, `repeats` how many; its
# trial_key and run are repeat 0's (what export ships); those columns appear only when some point has repeats
RENAMED = {"val_accuracy_best": "val_accuracy", "val_loss_best": "val_loss",
           "baseline_val_majority_accuracy": "val_majority_accuracy",
           "baseline_test_majority_accuracy": "test_majority_accuracy", "val_accuracy_best_std": "val_accuracy_std",
           "val_loss_best_std": "val_loss_std"}
MARKDOWN_COLUMNS = ("rank", "trial_key", "architecture", "backbone", "pooling", "frame_size", "sequence_length",
                    "sequence_model", "layer_1_size", "layer_2_size", "val_accuracy", "val_accuracy_std", "repeats",
                    "val_margin", "test_accuracy", "test_accuracy_std", "test_margin", "val_loss", "best_round",
                    "epochs", "rung", "duration_seconds", "param_count", "latency_ms", "throughput_fps")


def leaderboard(runs: SweepRuns, metric: str, goals: list[tuple[str, str]] | None = None) -> pd.DataFrame:
    """One row per finished point (a trial, or its seed repeats' mean), best first (rank_trials), with the columns of
    COLUMNS (renamed as people say them)."""
    ranked = rank_trials(runs.trials, metric, goals)
    ranked["run_link"] = [runs.run_link(run_id) for run_id in ranked.artefacts_run_id]  # a reused trial's original
    shown = [c for c in COLUMNS if c not in POINT_COLUMNS or repeated(ranked)]
    table = ranked.reindex(columns=shown).rename(columns=RENAMED)
    for name in ("best_round", "epochs", "param_count", "deployed_param_count"):
        table[name] = table[name].astype("Int64")
    return table


def repeated(points: pd.DataFrame) -> bool:
    """Whether some point of the table is the mean of several seed repeats (training.repeats)."""
    return "repeats" in points and bool((points.repeats > 1).any())


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value).replace("|", "\\|")


def to_markdown(table: pd.DataFrame, title: str, note: str = "") -> str:
    columns = [c for c in MARKDOWN_COLUMNS if c in table and table[c].notna().any()]
    lines = [f"# {title}", "", *([note, ""] if note else []),
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for _, row in table.iterrows()]
    return "\n".join(lines) + "\n"
