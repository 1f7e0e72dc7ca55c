"""training.repeats in the reports: a point's seed repeats become one row (mean, spread, n), ranking and the Pareto
front use the mean, and a sweep without repeats reads exactly as before (pure functions on hand-made tables)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from reports.leaderboard import repeated
from reports.pareto import pareto_front
from reports.records import point_rows, point_summary, rank_trials

# point a: one lucky repeat (0.9) and one bad one (0.3), mean 0.6; point b: steady 0.7; point c: trained once
ROWS = [("a0", "a0", 0, 0.9, 0.40), ("a1", "a0", 1, 0.3, 0.80), ("b0", "b0", 0, 0.7, 0.50),
        ("b1", "b0", 1, 0.7, 0.52), ("c0", "c0", 0, 0.65, 0.45)]


def table(rows=ROWS, status="FINISHED") -> pd.DataFrame:
    return pd.DataFrame([{"trial_key": key, "point_key": point, "repeat": repeat, "status": status,
                          "run_id": f"run-{key}", "val_accuracy_best": acc, "val_loss_best": loss,
                          "test_accuracy": 0.5 + repeat / 10, "latency_ms": 2.0 + repeat, "param_count": 10,
                          "epochs": 3 + repeat} for key, point, repeat, acc, loss in rows])


def test_a_point_is_the_mean_of_its_repeats_with_spread_count_and_keys():
    points = point_rows(table()).set_index("point_key")
    assert list(points.index) == ["a0", "b0", "c0"]  # in the order the points first came
    a = points.loc["a0"]
    assert a.val_accuracy_best == pytest.approx(0.6) and a.val_loss_best == pytest.approx(0.6)
    assert a.val_accuracy_best_std == pytest.approx(math.sqrt(0.18))  # sample std of 0.9 and 0.3
    assert a.test_accuracy == pytest.approx(0.55) and a.latency_ms == pytest.approx(2.5)
    assert a.repeats == 2 and a.repeat_keys == "a0 a1"
    assert a.trial_key == "a0" and a.run_id == "run-a0" and a.epochs == 3  # repeat 0's run: what export ships
    c = points.loc["c0"]
    assert c.repeats == 1 and math.isnan(c.val_accuracy_best_std) and pd.isna(c.repeat_keys)


def test_the_representative_is_repeat_zero_whatever_order_the_runs_come_in():
    shuffled = table()[::-1]
    a = point_rows(shuffled).set_index("point_key").loc["a0"]
    assert a.trial_key == "a0" and a.val_accuracy_best == pytest.approx(0.6)
    only_second = point_rows(table([("a1", "a0", 1, 0.3, 0.8), ("a2", "a0", 2, 0.5, 0.6)]))
    assert list(only_second.trial_key) == ["a1"]  # repeat 0 failed: its lowest finished repeat


def test_ranking_uses_the_mean_not_the_luckiest_repeat():
    ranked = rank_trials(table(), "val_accuracy")
    assert list(ranked.point_key) == ["b0", "c0", "a0"]  # 0.70, 0.65, 0.60: a0's 0.9 alone would have won
    assert list(ranked["rank"]) == [1, 2, 3]
    assert list(rank_trials(table(), "val_loss").point_key) == ["c0", "b0", "a0"]  # 0.45, 0.51, 0.60


def test_without_repeats_every_trial_is_its_own_point_and_its_figures_are_untouched():
    once = table([row for row in ROWS if row[2] == 0])
    points = point_rows(once)
    pd.testing.assert_frame_equal(points[once.columns], once)
    assert (points.repeats == 1).all() and not repeated(points)
    assert repeated(point_rows(table()))
    legacy = once.drop(columns=["point_key", "repeat"])  # runs of an older videosweep: no point tag at all
    assert list(rank_trials(legacy, "val_accuracy").trial_key) == ["a0", "b0", "c0"]  # 0.9, 0.7, 0.65


def test_unfinished_repeats_do_not_count_towards_the_mean():
    trials = pd.concat([table(), table([("b2", "b0", 2, 0.0, 9.9)], status="FAILED")], ignore_index=True)
    b = rank_trials(trials, "val_accuracy").set_index("point_key").loc["b0"]
    assert b.val_accuracy_best == pytest.approx(0.7) and b.repeats == 2


def test_the_pareto_front_is_over_point_means():
    goals = [("val_accuracy", "maximize"), ("latency_ms", "minimize")]
    front = pareto_front(table(), goals)
    # by means: b0 (0.70, 2.5 ms), c0 (0.65, 2.0 ms), a0 (0.60, 2.5 ms) is dominated by b0; a0's repeat 0 alone
    # (0.9, 2.0 ms) would have dominated everything
    assert list(front.trial_key) == ["b0", "c0"]


def test_best_lists_a_points_repeats_and_nothing_for_a_point_trained_once():
    ranked = rank_trials(table(), "val_accuracy").set_index("trial_key", drop=False)
    summary = point_summary(ranked.loc["a0"])
    assert summary["point_key"] == "a0" and summary["repeats"] == 2 and summary["repeat_keys"] == ["a0", "a1"]
    assert summary["val_accuracy_std"] == pytest.approx(math.sqrt(0.18)) and summary["test_accuracy_std"] > 0
    assert point_summary(ranked.loc["c0"]) == {}
