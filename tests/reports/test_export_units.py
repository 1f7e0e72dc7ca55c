"""Pure pieces of export and links: the one beats-the-baseline decision, the model card's epoch line, run links that
follow the tracking store, and tables that link only where a server serves the runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from reports.best import baseline_check
from reports.export import baseline_warning, epochs_line
from reports.html import table_html
from reports.leaderboard import to_markdown
from reports.records import run_url, server_base, ui_command

RUN = "0123456789abcdef0123456789abcdef"


def trial_row(accuracy: float, units: float | None, majority: float = 0.5) -> dict:
    """A trial's row as the reports read it from MLflow: its val accuracy and its recorded val baseline."""
    return {"val_accuracy_best": accuracy, "baseline_val_majority_accuracy": majority,
            "baseline_val_majority_class": "noseal", "baseline_val_effective_units": units, "baseline_chance": 0.5}


def test_a_trial_beats_the_baseline_only_when_its_whole_interval_clears_it():
    interval, beats = baseline_check(trial_row(0.95, 40.0))
    assert beats is True and 0.5 < interval[0] < 0.95 < interval[1] <= 1.0
    assert baseline_warning(trial_row(0.95, 40.0)) == ""
    # the same accuracy on one effective video: the interval is wide, and reaches below the baseline
    interval, beats = baseline_check(trial_row(0.95, 1.0))
    assert beats is False and interval[0] < 0.5
    warning = baseline_warning(trial_row(0.95, 1.0))
    assert warning.startswith("its val accuracy 0.9500 has a 95% interval [") and "over 1 effective video(s)" in warning
    assert warning.endswith("does not clear the val majority baseline 0.5000 (noseal)")
    # at the baseline, however many videos: never
    assert baseline_check(trial_row(0.5, 10_000.0))[1] is False
    # a below-baseline accuracy with a tight interval does not beat it either
    assert baseline_check(trial_row(0.3, 500.0))[1] is False


def test_a_trial_with_no_recorded_baseline_is_not_judged():
    assert baseline_check({"val_accuracy_best": 0.9}) == (None, None)
    assert baseline_check(trial_row(0.9, None)) == (None, None)  # no effective count: no interval
    assert baseline_check(trial_row(float("nan"), 10.0)) == (None, None)
    assert baseline_warning({"val_accuracy_best": 0.9}) == ""


def test_the_epoch_line_tells_all_epochs_from_the_per_round_limit():
    results = {"fit_num_epochs": 6, "fit_stopped_epoch1": 4, "fit_stopped_epoch2": 2, "fit_best_round": 1,
               "patience": 2}
    line = epochs_line(results, [1e-3, 1e-4], 5)
    assert line.startswith("Trained 6 epochs in all (learning rate 0.001: 4, learning rate 0.0001: 2; each round "
                           "at most 5")
    assert "best of round 1" in line


@pytest.mark.parametrize("uri, base", [
    ("http://mlflow.example:5000", "http://mlflow.example:5000"),
    ("https://mlflow.example/prefix/", "https://mlflow.example/prefix"),
    ("http://me:secret@mlflow.example:5000", "http://me:***@mlflow.example:5000"),
    ("sqlite:////tmp/runs/mlflow.db", None),
    ("postgresql://me:secret@db/mlflow", None),
    ("file:///tmp/mlruns", None),
    ("/tmp/mlruns", None),
])
def test_run_links_follow_the_tracking_store(uri, base):
    assert server_base(uri) == base
    link = run_url(uri, "7", RUN)
    assert link == ("" if base is None else f"{base}/#/experiments/7/runs/{RUN}")
    assert "secret" not in link


def test_the_ui_hint_names_the_sweep_file_and_a_workdir_that_is_not_the_default():
    assert ui_command(Path("sweeps/seals-demo.yaml"), Path("runs/seals-demo"), "seals-demo") == \
        "videosweep ui sweeps/seals-demo.yaml"
    assert ui_command(Path("my sweep.yaml"), Path("/data/w"), "s") == "videosweep ui 'my sweep.yaml' --workdir /data/w"
    assert ui_command(None, Path("runs/s"), "s") == "videosweep ui <sweep.yaml>"


def test_tables_link_runs_only_where_a_server_serves_them():
    board = pd.DataFrame({"rank": [1, 2], "trial_key": ["aaa", "bbb"], "val_accuracy": [0.9, 0.8],
                         "run_id": [RUN, RUN.replace("0", "f")],
                         "run_link": [run_url("http://h:5000", "3", RUN), run_url("http://h:5000", "3", "x")]})
    markdown = to_markdown(board, "t")
    assert f"| [01234567](http://h:5000/#/experiments/3/runs/{RUN}) |" in markdown
    assert markdown.splitlines()[2].endswith(" run |") and markdown.splitlines()[3].endswith("---|---|")
    assert f'<a href="http://h:5000/#/experiments/3/runs/{RUN}">01234567</a>' in table_html(board)
    local = board.assign(run_link=[run_url("sqlite:///m.db", "3", r) for r in board.run_id])
    assert " run |" not in to_markdown(local, "t") and "](" not in to_markdown(local, "t")
    assert "<a " not in table_html(local) and f">{RUN}<" in table_html(local)  # the whole id, to look up
