"""A report of thousands of trials stays bounded: importances from a seeded sample, strip plots draw a sample of
dots, report.html lists the best HTML_ROWS (leaderboard.csv/.md every trial). Pure functions, no sweep."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reports.records import IMPORTANCE_TRIALS, importance_sample
from reports.report import HTML_ROWS, STRIP_POINTS, drawn_points, render_html


def test_importances_read_every_trial_up_to_the_limit_then_the_same_seeded_sample_in_order():
    few = pd.DataFrame({"x": range(IMPORTANCE_TRIALS)})
    assert importance_sample(few) is few
    many = pd.DataFrame({"x": range(5000)}, index=range(10, 5010))
    sample = importance_sample(many)
    assert len(sample) == IMPORTANCE_TRIALS and sample.x.is_unique
    assert set(sample.index) <= set(many.index) and sample.index.is_monotonic_increasing
    assert sample.equals(importance_sample(many))  # a rebuilt report estimates from the same trials
    assert len(importance_sample(many, limit=3)) == 3


def test_strip_plots_draw_every_point_up_to_the_limit_then_a_sample_of_distinct_points():
    rng = np.random.default_rng(0)
    few = np.arange(STRIP_POINTS, dtype=float)
    assert drawn_points(few, rng) is few
    many = np.arange(5000, dtype=float)
    drawn = drawn_points(many, rng)
    assert len(drawn) == STRIP_POINTS and len(set(drawn)) == STRIP_POINTS and set(drawn) <= set(many)


def board(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"rank": range(1, rows + 1), "trial_key": [f"k{i:05d}" for i in range(rows)],
                         "architecture": "image_mlp_frozen", "val_accuracy": 0.5, "val_margin": 0.0,
                         "test_accuracy": 0.5, "test_margin": 0.0, "val_loss": 0.69, "test_loss": 0.69})


def page_of(rows: int) -> str:
    outcomes = pd.DataFrame({"state": ["finished"], "trials": [rows], "reasons": [""]})
    return render_html("t", "now", {}, board(rows), outcomes, [])


def test_report_html_lists_the_best_rows_and_says_where_the_rest_are():
    page = page_of(HTML_ROWS + 50)
    assert "k00000" in page and f"k{HTML_ROWS - 1:05d}" in page and f"k{HTML_ROWS:05d}" not in page
    assert f"The best {HTML_ROWS} of {HTML_ROWS + 50} finished trials" in page
    small = page_of(HTML_ROWS)
    assert f"k{HTML_ROWS - 1:05d}" in small and "finished trials; leaderboard.csv" not in small
