"""`status` on a large sweep lists what needs eyes (unfinished trials) and the latest ones, in trial order."""

from __future__ import annotations

from runner.execution.overview import STATUS_ROWS, shown_rows


def rows(states: list[str]) -> list[dict]:
    return [{"number": number, "state": state} for number, state in enumerate(states)]


def test_a_small_sweep_lists_every_trial():
    all_rows = rows(["complete"] * 5 + ["fail", "running"])
    assert shown_rows(all_rows, limit=7) == (all_rows, 0)
    assert shown_rows(all_rows, limit=None) == (all_rows, 0)


def test_a_large_sweep_keeps_unfinished_trials_then_the_latest_finished_ones_in_order():
    states = ["complete"] * 10
    states[2], states[5], states[7] = "fail", "running", "waiting"
    shown, left_out = shown_rows(rows(states), limit=5)
    assert [row["number"] for row in shown] == [2, 5, 7, 8, 9]
    assert left_out == 5


def test_more_unfinished_trials_than_the_limit_keeps_the_latest_of_them():
    shown, left_out = shown_rows(rows(["fail"] * 6 + ["complete"] * 3), limit=4)
    assert [row["number"] for row in shown] == [2, 3, 4, 5]
    assert left_out == 5


def test_the_default_limit_bounds_five_thousand_trials():
    shown, left_out = shown_rows(rows(["complete"] * 5000))
    assert len(shown) == STATUS_ROWS and left_out == 5000 - STATUS_ROWS
    assert shown[-1]["number"] == 4999
