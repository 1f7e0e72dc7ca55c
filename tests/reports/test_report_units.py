"""Pure report pieces on hand-made tables: mixed architectures leave parameters missing (NaN) for some rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reports.report import parameter_importances


def importance_table(image_trials: int = 16) -> pd.DataFrame:
    """Finished trials of two architectures: layer_1_size drives the metric (0.30 .. 0.94) on the image model; the
    C3D trials (no backbone, no layer_1_size) sit near the middle with tiny noise; backbone takes one value."""
    rng = np.random.default_rng(0)
    rows = [{"architecture": "c3dsmall", "backbone": np.nan, "layer_1_size": pd.NA, "val": rng.uniform(0.55, 0.57)}
            for _ in range(4)]
    sizes = [(0, 8, 16, 32, 64)[i % 5] for i in range(image_trials)]
    rows += [{"architecture": "image_mlp_frozen", "backbone": "mobilenet_v2", "layer_1_size": size,
              "val": 0.3 + size / 100 + rng.uniform(0, 0.001)} for size in sizes]
    return pd.DataFrame(rows).astype({"layer_1_size": "Int64"})


def test_importances_rank_only_varied_parameters_and_hide_below_the_minimum_with_the_reason():
    from reports.records import MIN_TRIALS_FOR_IMPORTANCE
    from reports.report import importance_figure, why_no_importances

    assert MIN_TRIALS_FOR_IMPORTANCE == 20
    params = ["architecture", "backbone", "layer_1_size", "pooling"]
    finished = importance_table(16).assign(pooling="avg")  # 20 trials
    importances = parameter_importances(finished, params, "val", "maximize")
    # backbone took one value (missing elsewhere) and pooling one value everywhere: neither is ranked
    assert set(importances) == {"architecture", "layer_1_size"}
    assert abs(sum(importances.values()) - 1) < 1e-6
    assert max(importances, key=importances.get) == "layer_1_size"  # the parameter that drives the metric
    assert importances["layer_1_size"] > 0.5, importances
    assert why_no_importances(finished, params, "val") is None
    shown = importance_figure(importances)
    assert shown.png.startswith(b"\x89PNG") and "two or more values" in shown.caption
    fewer = importance_table(15)  # 19 trials: hidden, and the page says why
    assert parameter_importances(fewer, params, "val", "maximize") == {}
    reason = why_no_importances(fewer, params, "val")
    assert reason == "Not shown: 19 finished trials, fewer than the 20 an importance needs to mean anything."
    hidden = importance_figure({}, reason)
    assert hidden.png == b"" and hidden.caption == reason
    missing_metric = finished.assign(val=[np.nan] + list(finished.val[1:]))  # a trial without the metric: 19
    assert why_no_importances(missing_metric, params, "val").startswith("Not shown: 19 finished trials")
    flat = finished.assign(layer_1_size=8, architecture="image_mlp_frozen")
    assert why_no_importances(flat, params, "val") == ("Not shown: no parameter took two or more values among the "
                                                       "finished trials.")


def test_varied_parameters_count_only_non_missing_values():
    from reports.plot_data import varied_parameters

    finished = pd.DataFrame({"backbone": ["mobilenet_v2", None, None], "weights": ["none", "none", "none"],
                             "layer_1_size": pd.array([0, 64, pd.NA], dtype="Int64"), "unused": [None] * 3,
                             "sequence_model": ["GRU", "LSTM", np.nan]})
    assert varied_parameters(finished, ["backbone", "weights", "layer_1_size", "unused", "sequence_model",
                                        "absent"]) == ["layer_1_size", "sequence_model"]


def test_axes_run_in_value_order_numbers_numerically_words_then_missing():
    from reports.plot_data import axis_encoding, natural_key

    numeric = axis_encoding(pd.Series([0, 64, 32, 64, 8]))
    assert numeric.tickvals == [0.0, 8.0, 32.0, 64.0] and numeric.ticktext == ["0", "8", "32", "64"]
    assert numeric.values == [0.0, 64.0, 32.0, 64.0, 8.0]  # each trial at its own value on a numeric axis
    assert axis_encoding(pd.Series([0.5, 0.2])).ticktext == ["0.2", "0.5"]
    # a number some trials lack becomes categories: numbers in numeric order, '-' (not used) last
    mixed = axis_encoding(pd.Series([64, None, 8, 16], dtype="Int64"))
    assert mixed.ticktext == ["8", "16", "64", "-"] and mixed.values == [2.0, 3.0, 0.0, 1.0]
    words = axis_encoding(pd.Series(["video_lrcnn_frozen", "c3dsmall", "image_mlp_frozen", "c3dsmall"]))
    assert words.ticktext == ["c3dsmall", "image_mlp_frozen", "video_lrcnn_frozen"]
    assert words.values == [2.0, 0.0, 1.0, 0.0] and words.tickvals == [0.0, 1.0, 2.0]
    assert sorted(["64", "-", "GRU", "8", "32"], key=natural_key) == ["8", "32", "64", "GRU", "-"]


def test_tied_curves_are_grouped_and_named_together():
    from reports.plot_data import tied_groups
    from reports.report import curve_label

    a = {0: 0.523, 1: 0.523}
    near = {0: 0.523 + 1e-8, 1: 0.523}
    other = {0: 0.523, 1: 0.53}
    shorter = {0: 0.523}
    assert tied_groups([(a,), (other,), (near,), (shorter,), (dict(a),)]) == [[0, 2, 4], [1], [3]]
    # with two series (accuracy and loss) a tie needs both to coincide
    loss_a, loss_b = {0: 0.69, 1: 0.68}, {0: 0.69, 1: 0.60}
    assert tied_groups([(a, loss_a), (a, loss_b), (near, loss_a)]) == [[0, 2], [1]]
    assert tied_groups([]) == []
    rows = [pd.Series({"rank": rank, "architecture": "image_mlp_frozen", "trial_key": key, "rung": rung})
            for rank, key, rung in ((2, "2b2ee8fad994", None), (3, "219dc404be20", 1))]
    assert curve_label(rows[:1]) == "#2 image_mlp_frozen 2b2ee8fad994"
    assert curve_label(rows).replace("\n   ", "") == (
        "#2 = #3 (identical): image_mlp_frozen 2b2ee8fad994, image_mlp_frozen 219dc404be20 (rung 1)")


def test_whole_number_ticks_best_so_far_and_ranges_that_hold_the_baseline():
    import math

    from reports.plot_data import Baseline, best_so_far, integer_dtick, span_with, val_baselines

    assert [integer_dtick(n) for n in (1, 6, 20, 21, 41, 101, 5000)] == [1, 1, 1, 2, 5, 10, 500]
    assert best_so_far([0.5, 0.4, math.nan, 0.7, 0.6], "maximize") == [0.5, 0.5, 0.5, 0.7, 0.7]
    assert best_so_far([0.69, 0.70, 0.65], "minimize") == [0.69, 0.69, 0.65]
    assert math.isnan(best_so_far([math.nan, 0.3], "maximize")[0])
    low, high = span_with([0.60, 0.62], [0.523])
    assert low < 0.523 and high > 0.62
    assert span_with([0.51, 0.52], [0.523, 0.5], pad=0.0) == (0.5, 0.523)
    low, high = span_with([0.523], [0.523])  # one value: still a visible band
    assert low < 0.523 < high
    # trials of different window lengths: each baseline drawn, saying how many trials it belongs to
    mixed = val_baselines(pd.DataFrame({"baseline_val_majority_accuracy": [0.53, 0.52, np.nan, 0.53]}))
    assert mixed == [Baseline(0.52, "val majority baseline 0.5200 (1 of 3 trials)"),
                     Baseline(0.53, "val majority baseline 0.5300 (2 of 3 trials)")]
    assert val_baselines(pd.DataFrame({"val_majority_accuracy": [0.52, 0.52]})) == [
        Baseline(0.52, "val majority baseline 0.5200")]
    assert val_baselines(pd.DataFrame({"baseline_val_majority_accuracy": [np.nan]})) == []


def baseline_of_plots():
    from reports.plot_data import Baseline

    return [Baseline(0.53, "val majority baseline 0.5300")]


def plotted_trials() -> pd.DataFrame:
    """Finished trials as the interactive plots read them: b and c tie at the top, d is the worst."""
    return pd.DataFrame({
        "trial_key": ["a", "b", "c", "d"], "run_id": ["r1", "r2", "r3", "r4"], "status": "FINISHED",
        "architecture": ["image_mlp_frozen", "image_mlp_frozen", "c3dsmall", "image_mlp_frozen"],
        "layer_1_size": pd.array([0, 64, pd.NA, 32], dtype="Int64"), "optuna_trial": [0, 1, 2, 3],
        "val_accuracy_best": [0.55, 0.60, 0.60, 0.50], "latency_ms": [2.0, 3.0, 1.0, 0.5],
        "baseline_val_majority_accuracy": [0.523, 0.523, 0.53, 0.523]})


def test_parallel_coordinates_filter_in_value_order_with_the_best_in_a_visible_colour():
    from matplotlib.colors import to_rgb

    from reports.interactive import LINE_SCALE, parallel_figure

    figure = parallel_figure(plotted_trials(), ["architecture", "layer_1_size"], "val_accuracy", "maximize",
                             baseline_of_plots())
    (trace,) = figure.data
    assert trace.type == "parcoords"  # brushing an axis filters: plotly's own parcoords, not drawn lines
    arch, size, metric = trace.dimensions
    assert list(arch.ticktext) == ["c3dsmall", "image_mlp_frozen"]
    assert list(size.ticktext) == ["0", "32", "64", "-"]  # numbers in numeric order, then not used
    # rows run worst first so the best are drawn last, on top
    assert list(metric["values"]) == [0.50, 0.55, 0.60, 0.60] and list(trace.line.color) == [0.50, 0.55, 0.60, 0.60]
    assert metric.range[0] <= 0.50 and metric.range[1] >= 0.60
    loss = parallel_figure(plotted_trials().assign(val_loss_best=[0.3, 0.2, 0.6, 0.1]), ["architecture"],
                           "val_loss", "minimize", baseline_of_plots())
    assert list(loss.data[0].line.color) == [0.6, 0.3, 0.2, 0.1] and loss.data[0].line.reversescale  # best on top
    assert loss.data[0].dimensions[-1].range == (0.1, 0.6)  # no accuracy baseline on a loss axis
    best = to_rgb(LINE_SCALE[-1][1])
    assert LINE_SCALE[-1][0] == 1.0 and not trace.line.reversescale and sum(best) / 3 < 0.5  # dark, not near-white
    # an accuracy axis holds the baseline even when every trial sits below it
    low = parallel_figure(plotted_trials().assign(val_accuracy_best=[0.40, 0.41, 0.41, 0.42]), ["architecture"],
                          "val_accuracy", "maximize", baseline_of_plots())
    assert low.data[0].dimensions[-1].range[1] >= 0.53


def test_history_draws_best_so_far_on_whole_trial_numbers_and_pareto_hover_names_the_trial_first():
    from reports.interactive import history_figure, pareto_figure

    history = history_figure(plotted_trials(), "val_accuracy", "maximize", baseline_of_plots())
    trials, best = history.data
    assert list(trials.x) == [0, 1, 2, 3] and list(best.y) == [0.55, 0.60, 0.60, 0.60]
    assert best.name == "best so far" and best.mode == "lines"
    assert history.layout.xaxis.dtick == 1 and history.layout.xaxis.tickformat == "d"
    assert history.layout.yaxis.range[0] <= 0.50 and history.layout.yaxis.range[1] >= 0.60
    assert [shape.y0 for shape in history.layout.shapes] == [0.53]  # the baseline, labelled
    gaps = history_figure(plotted_trials().assign(optuna_trial=[0, 5, 12, 30], val_loss_best=[0.7, 0.6, 0.65, 0.5]),
                         "val_loss", "minimize", baseline_of_plots())
    assert list(gaps.data[0].x) == [0, 5, 12, 30] and gaps.layout.xaxis.dtick == 2  # 31 trial numbers: every 2nd
    assert list(gaps.data[1].y) == [0.7, 0.6, 0.6, 0.5]
    assert not gaps.layout.shapes  # no majority baseline on a loss axis
    assert "val majority baseline 0.5300" in [a.text for a in history.layout.annotations]
    goals = [("val_accuracy", "maximize"), ("latency_ms", "minimize")]
    pareto = pareto_figure(plotted_trials(), goals, baseline_of_plots())
    dominated, front = pareto.data
    # c (as accurate as b, faster) dominates a and b; d is the fastest: the front is c and d, named first on hover
    assert list(front.text) == ["<b>d image_mlp_frozen</b><br>val_accuracy: 0.5<br>latency_ms: 0.5",
                                "<b>c c3dsmall</b><br>val_accuracy: 0.6<br>latency_ms: 1"]
    assert front.name == "on the front (2)" and dominated.name == "dominated (2)"
    assert [t.split("<br>")[0] for t in dominated.text] == ["<b>a image_mlp_frozen</b>", "<b>b image_mlp_frozen</b>"]
    assert pareto.layout.xaxis.range[1] >= 0.60 and [s.x0 for s in pareto.layout.shapes] == [0.53]


def test_the_inlined_plotly_is_the_partial_build_of_the_python_packages_version():
    from plotly.offline import get_plotlyjs_version

    from reports.interactive import PLOTLY_JS, TRACE_TYPES, _figures, interactive_section, plotly_js

    script = plotly_js()
    assert script.startswith(f"/*! plotly.js v{get_plotlyjs_version()}, partial build for videosweep")
    assert "</script" not in script and len(script) < 1_300_000  # the full plotly.js is 4.8 MB
    for trace in TRACE_TYPES:
        assert f'name:"{trace}"' in script
    for absent in ("bar", "scattergl", "choroplethmap", "scatter3d"):
        assert f'moduleType:"trace",name:"{absent}"' not in script and f'name:"{absent}",' not in script
    assert (PLOTLY_JS.parent / "LICENSE-plotly.js.txt").read_text().startswith("MIT License")
    params, goals = ["architecture", "layer_1_size"], [("val_accuracy", "maximize"), ("latency_ms", "minimize")]
    page = interactive_section(plotted_trials(), params, goals)
    assert page.count(script[:200]) == 1 and page.count("Plotly.newPlot") == 3
    drawn = {trace.type for _, figure, _ in _figures(plotted_trials(), params, goals) for trace in figure.data}
    assert drawn == set(TRACE_TYPES)  # nothing the partial build cannot draw, nothing in it unused
    assert interactive_section(plotted_trials().iloc[:0], [], [("val_accuracy", "maximize")]) == ""


def test_a_trial_read_back_from_the_store_must_make_its_key_and_name_only_the_sweep_files():
    import pytest

    from reports.export import stored_spec
    from runner.spec.trial_spec import TrialSpec
    from zoo.errors import UserError

    params = {"architecture": "image_mlp_frozen", "backbone": "mobilenet_v2", "frame_size": "32x32",
              "weights": "/tmp/planted.weights.h5"}
    key = TrialSpec.from_flat(params).key("data")
    named = frozenset({("weights", "/tmp/planted.weights.h5")})
    assert stored_spec({**params, "data_root": "/x"}, key, "data", named).model.weights == "/tmp/planted.weights.h5"
    with pytest.raises(UserError, match="not the parameters of trial"):
        stored_spec({**params, "weights": "/etc/other.h5"}, key, "data", named)
    with pytest.raises(UserError, match="not the parameters of trial"):
        stored_spec(params, key, None, named)  # no data fingerprint recorded: nothing ties them to the key
    with pytest.raises(UserError, match="would load weights /tmp/planted.weights.h5, a file your sweep file does "
                                        "not name"):
        stored_spec(params, key, "data", frozenset())


def test_a_registered_model_is_copied_only_from_inside_the_store_artefact_root(tmp_path):
    import pytest

    from reports.predict import _check_location, local_artifact_root
    from zoo.errors import UserError

    root = local_artifact_root(f"sqlite:///{tmp_path / 'w' / 'mlflow.db'}", None)
    assert root == (tmp_path / "w" / "mlartifacts").resolve()
    assert local_artifact_root(f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "w") == root
    assert local_artifact_root("http://mlflow:5000", None) is None
    (tmp_path / "w" / "mlartifacts" / "1").mkdir(parents=True)
    (tmp_path / "w" / "mlartifacts" / "escape").symlink_to(tmp_path)
    _check_location("models:/t@champion", (root / "1" / "models" / "m-1").as_uri(), root)
    _check_location("models:/t@champion", "mlflow-artifacts:/1/models/m-1/artifacts", None)  # the server's own
    for planted in (tmp_path.as_uri(), str(tmp_path / "secrets"), f"{root.as_uri()}/../../secrets",
                    (root / "escape" / "secrets").as_uri()):
        with pytest.raises(UserError, match="outside the store's artefact root"):
            _check_location("models:/t@champion", planted, root)
    with pytest.raises(UserError, match="outside the store"):
        _check_location("models:/t@champion", "file:///home/someone", None)


def trial_table(rows: list[tuple], units: float = 1.0) -> pd.DataFrame:
    """Finished trials from (key, val_accuracy, val_loss, latency_ms, param_count, test_accuracy) rows, each
    with the majority-class baselines of the bundled seals data's 1-frame windows (val 91/174, test 152/285; one
    video per split, so one effective unit unless `units` says otherwise)."""
    from reports.records import with_margins

    return with_margins(pd.DataFrame([
        {"trial_key": key, "run_id": f"r{key}", "status": "FINISHED", "val_accuracy_best": acc,
         "val_loss_best": loss, "latency_ms": latency, "param_count": params, "deployed_param_count": params * 10,
         "test_accuracy": test, "baseline_val_majority_accuracy": 91 / 174, "baseline_val_majority_class": "noseal",
         "baseline_test_majority_accuracy": 152 / 285, "baseline_test_majority_class": "noseal",
         "baseline_val_effective_units": units, "baseline_chance": 0.5}
        for key, acc, loss, latency, params, test in rows]))


def test_a_tie_on_the_metric_breaks_on_val_loss_latency_parameters_and_key_never_on_test_accuracy():
    from reports.records import rank_trials

    def order(rows: list[tuple], metric: str = "val_accuracy") -> list[str]:
        return rank_trials(trial_table(rows), metric).trial_key.tolist()

    # every later trial has the higher test accuracy: a ranking that read it would reverse each pair
    assert order([("a", 0.52, 0.690, 9.0, 900, 0.40), ("b", 0.52, 0.693, 1.0, 100, 0.90)]) == ["a", "b"]
    assert order([("a", 0.52, 0.69, 2.0, 900, 0.40), ("b", 0.52, 0.69, 3.0, 100, 0.90)]) == ["a", "b"]
    assert order([("a", 0.52, 0.69, 2.0, 100, 0.40), ("b", 0.52, 0.69, 2.0, 900, 0.90)]) == ["a", "b"]
    assert order([("a", 0.52, 0.69, 2.0, 100, 0.40), ("b", 0.52, 0.69, 2.0, 100, 0.90)]) == ["a", "b"]
    assert order([("b", 0.52, 0.69, 2.0, 100, 0.40), ("a", 0.52, 0.69, 2.0, 100, 0.90)]) == ["a", "b"]
    # the metric itself still comes first, and val_loss as the metric is not its own tie-break (latency is)
    assert order([("a", 0.50, 0.60, 1.0, 100, 0.9), ("b", 0.60, 0.70, 9.0, 900, 0.1)]) == ["b", "a"]
    assert order([("a", 0.9, 0.69, 5.0, 100, 0.9), ("b", 0.1, 0.69, 4.0, 900, 0.1)], "val_loss") == ["b", "a"]


def test_the_best_of_a_multi_objective_sweep_is_on_its_front_and_test_metrics_choose_nothing():
    import pytest

    from reports.best import best_trial
    from reports.pareto import front_goals, pareto_front
    from reports.records import MODEL_PARAMS, SweepRuns
    from runner.spec.metrics import objective
    from zoo.errors import UserError

    goals = [("val_accuracy", "maximize"), ("param_count", "minimize")]
    # a has the lower val_loss but b, as accurate, is smaller: a is dominated on the sweep's objectives
    trials = trial_table([("a", 0.52, 0.690, 1.0, 900, 0.9), ("b", 0.52, 0.693, 2.0, 100, 0.1),
                          ("c", 0.40, 0.600, 0.5, 50, 0.9)])
    trials = trials.reindex(columns=[*trials.columns, *MODEL_PARAMS]).assign(architecture="image_mlp_frozen")
    runs = SweepRuns(tracker=None, parent=None, trials=trials)
    front = pareto_front(trials, goals).trial_key.tolist()
    assert sorted(front) == ["b", "c"]
    best = best_trial(runs, "val_accuracy", "s", goals)
    assert best["trial_key"] == "b"
    assert best["val_margin"] == pytest.approx(0.52 - 91 / 174)
    assert best["test_margin"] == pytest.approx(0.1 - 152 / 285)
    assert best["baselines"]["val"] == {"majority_accuracy": pytest.approx(91 / 174), "majority_class": "noseal",
                                        "chance": 0.5, "effective_units": 1.0}
    # a single-metric sweep breaks the same tie on val_loss, then latency; its front pairs it with latency
    assert best_trial(runs, "val_accuracy", "s")["trial_key"] == "a"
    assert "a" in pareto_front(trials, front_goals([("val_accuracy", "maximize")])).trial_key.tolist()
    for name in ("test_accuracy", "test_loss"):
        with pytest.raises(UserError, match="held-out test split"):
            objective(name)


def test_wilson_interval_and_whether_the_best_clears_the_majority_baseline():
    import pytest

    from reports.best import baseline_verdict, best_trial
    from reports.uncertainty import wilson_interval
    from reports.records import MODEL_PARAMS, SweepRuns

    assert wilson_interval(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)  # the textbook values
    assert wilson_interval(1.0, 4)[0] == pytest.approx(4 / (4 + 1.959964**2))
    assert wilson_interval(0.0, 1.0)[0] == 0.0 and wilson_interval(1.0, 1.0)[1] == 1.0

    def best(accuracy: float, units: float) -> dict:
        trials = trial_table([("a", accuracy, 0.3, 1.0, 100, 0.9)], units)
        trials = trials.reindex(columns=[*trials.columns, *MODEL_PARAMS]).assign(architecture="image_mlp_frozen")
        return best_trial(SweepRuns(tracker=None, parent=None, trials=trials), "val_accuracy", "s")

    # 0.95 on one validation video proves nothing; on 40 videos' worth of windows it clears 91/174
    assert best(0.95, 1.0)["beats_baseline"] is False
    assert best(0.95, 40.0)["beats_baseline"] is True
    assert best(0.60, 40.0)["beats_baseline"] is False  # 0.60's lower bound (0.445) is under 0.523
    assert best(0.95, 40.0)["val_interval"] == pytest.approx(list(wilson_interval(0.95, 40.0)))
    assert baseline_verdict(best(0.95, 1.0)).endswith("over 1 effective video(s) does not clear it")
    assert "val majority baseline 0.5230 (noseal), chance 0.5000" in baseline_verdict(best(0.95, 40.0))


def test_an_accuracy_interval_says_nothing_rather_than_divide_by_zero_or_read_nonsense():
    import math

    import pytest

    from reports.uncertainty import Z95, accuracy_interval

    for accuracy, units in ((0.5, 0), (0.5, 0.0), (0.5, -3.0), (math.nan, 4.0), (0.5, math.nan), (None, 4.0),
                            (0.5, None), (pd.NA, 4.0), (1.5, 4.0), (-0.1, 4.0), ("0.5", 4.0), (0.5, math.inf)):
        assert accuracy_interval(accuracy, units) is None, (accuracy, units)
    # accuracy 0 and 1 are proper intervals: they touch their end and stay inside [0, 1]
    assert accuracy_interval(1.0, 1.0) == pytest.approx((1 / (1 + Z95**2), 1.0))
    assert accuracy_interval(0.0, 1.0) == pytest.approx((0.0, Z95**2 / (1 + Z95**2)))
    low, high = accuracy_interval(0.0, 0.25)  # a fraction of a unit: wide, still sane
    assert low == 0.0 and 0.9 < high <= 1.0
    assert accuracy_interval(np.float64(0.5), np.int64(100)) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    narrower = accuracy_interval(0.7, 400.0)
    wider = accuracy_interval(0.7, 4.0)
    assert wider[0] < narrower[0] < 0.7 < narrower[1] < wider[1]  # more videos, a narrower interval


def test_clearing_the_baseline_needs_the_whole_interval_above_it_and_one_class_splits_cannot_be_cleared():
    from reports.uncertainty import accuracy_interval, clears_baseline, one_class_note, single_class_splits

    assert clears_baseline((0.60, 0.70), 0.55) is True
    assert clears_baseline((0.55, 0.70), 0.55) is False  # touching is not clearing
    assert clears_baseline((0.50, 0.70), 0.55) is False
    assert clears_baseline(None, 0.55) is None and clears_baseline((0.6, 0.7), None) is None
    assert clears_baseline((0.6, 0.7), float("nan")) is None
    # a validation split of one class: always answering it scores 1.0, and a perfect model does no better
    assert clears_baseline(accuracy_interval(1.0, 1e6), 1.0) is False
    baselines = {"val": {"majority_accuracy": 1.0, "majority_class": "noseal"},
                 "test": {"majority_accuracy": 152 / 285, "majority_class": "noseal"}}
    assert single_class_splits(baselines) == {"val": "noseal"}
    assert single_class_splits({}) == {} and single_class_splits({"val": {"majority_accuracy": None}}) == {}
    assert one_class_note(baselines) == ("The val split holds only class noseal: a model that always answers it "
                                         "scores 1.0 there, so its accuracy shows only how often a model answers "
                                         "that class.")
    assert one_class_note({"test": {"majority_accuracy": 1.0}}).startswith("The test split (held out) holds only "
                                                                           "class ?:")
    assert one_class_note({}) == "" and one_class_note({"val": baselines["test"]}) == ""


def test_ties_with_the_leader_use_newcombes_interval_of_the_difference():
    import pytest

    from reports.uncertainty import difference_interval, tie_column, tie_mark, tied_with_leader, wilson_interval

    def trial(hits: int, units: float) -> tuple[float, float, float]:
        return (hits / units, *wilson_interval(hits / units, units))

    # Newcombe (1998), example (a), method 10: 56/70 - 48/80 has the 95% interval 0.0524 to 0.3339
    assert difference_interval(trial(56, 70), trial(48, 80)) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    assert tied_with_leader(trial(56, 70), trial(48, 80)) is False
    assert tied_with_leader(trial(9, 20), trial(8, 20)) is True
    # the same two accuracies on one effective video each are indistinguishable; on 400 they are not
    assert tied_with_leader((0.9, *wilson_interval(0.9, 1)), (0.5, *wilson_interval(0.5, 1))) is True
    assert tied_with_leader((0.9, *wilson_interval(0.9, 400)), (0.5, *wilson_interval(0.5, 400))) is False
    # overlapping intervals are not a tie when the difference is clear: stricter than eyeballing the overlap
    leader, other = trial(62, 100), trial(48, 100)
    assert leader[1] < other[2] and tied_with_leader(leader, other) is False
    assert tied_with_leader(trial(40, 40), trial(0, 40)) is False and tied_with_leader(trial(4, 4), trial(4, 4))
    assert tied_with_leader(None, trial(1, 2)) is None and tied_with_leader(trial(1, 2), None) is None

    nan = float("nan")
    accuracies = pd.Series([0.90, 0.88, 0.70, 0.50])
    lows, highs = pd.Series([0.85, 0.83, nan, 0.45]), pd.Series([0.94, 0.92, nan, 0.55])
    assert tie_column(accuracies, lows, highs).tolist() == [True, True, pd.NA, False]
    assert tie_column(accuracies, lows.shift(1), highs.shift(1)).isna().all()  # a leader without an interval
    assert tie_column(pd.Series(dtype=float), pd.Series(dtype=float), pd.Series(dtype=float)).empty
    assert [tie_mark(r, t) for r, t in ((1, True), (1, pd.NA), (2, True), (3, pd.NA), (4, False))] == [
        "leader", "leader", "≈ tied", "", ""]


def test_the_chance_banner_speaks_only_when_nothing_clears_the_baseline_and_says_why():
    from reports.uncertainty import chance_banner

    def board(beats: list, majority: float = 91 / 174, units: float = 1.0) -> pd.DataFrame:
        return pd.DataFrame({"val_beats_baseline": pd.array(beats, dtype="boolean"),
                             "val_majority_accuracy": majority, "val_effective_units": units})

    assert chance_banner(board([False, True]), {"finished": 2}) == ""
    assert chance_banner(board([pd.NA, pd.NA]), {"finished": 2}) == ""  # no baseline recorded: nothing to say
    text = chance_banner(board([False, False, pd.NA]), {"finished": 3})
    assert text.startswith("No trial beats always answering the majority class: none of the 2 finished trial(s)")
    assert "counts 1 effective video(s)" in text and "single class" not in text
    one_class = chance_banner(board([False], majority=1.0, units=3.0), {"finished": 1})
    assert "The validation split holds a single class" in one_class and "effective video" not in one_class
    failed = chance_banner(board([]), {"failed": 3, "pruned": 1})
    assert failed == ("No trial finished: none of the 4 trial(s) of this sweep has a result (3 failed, 1 pruned), "
                      "so there is nothing to rank, compare or export.")


def test_leaderboard_intervals_ties_banner_and_best_agree_on_one_crafted_sweep():
    """Four trials on 40 effective validation videos: a and b cannot be told apart, c can (and is under the
    baseline); d recorded no baseline. The Markdown, the HTML page and best --json all say the same."""
    import re

    import pytest

    from reports.best import baseline_verdict, best_trial
    from reports.leaderboard import COLUMNS, RENAMED, to_markdown, with_intervals
    from reports.records import MODEL_PARAMS, SweepRuns, rank_trials
    from reports.report import render_html
    from reports.uncertainty import accuracy_interval, chance_banner

    trials = trial_table([("a", 0.90, 0.30, 1.0, 100, 0.70), ("b", 0.85, 0.35, 1.0, 100, 0.99),
                          ("c", 0.40, 0.70, 1.0, 100, 0.50), ("d", 0.30, 0.70, 1.0, 100, 0.50)], units=40.0)
    trials["baseline_test_effective_units"] = 30.0
    trials.loc[trials.trial_key == "d", ["baseline_val_effective_units", "baseline_val_majority_accuracy"]] = None
    trials = trials.reindex(columns=[*trials.columns, *MODEL_PARAMS]).assign(architecture="image_mlp_frozen")
    board = with_intervals(rank_trials(trials, "val_accuracy")).reindex(columns=list(COLUMNS)).rename(
        columns=RENAMED)
    assert board.trial_key.tolist() == ["a", "b", "c", "d"]
    assert board.tied_with_leader.tolist() == [True, True, False, pd.NA]
    assert board.val_beats_baseline.tolist() == [True, True, False, pd.NA]
    for split, accuracy, units in (("val", "val_accuracy", 40.0), ("test", "test_accuracy", 30.0)):
        expected = [accuracy_interval(a, units) for a in board[accuracy]]
        assert board[f"{split}_accuracy_low"].iloc[:3].tolist() == pytest.approx([e[0] for e in expected[:3]])
        assert board[f"{split}_accuracy_high"].iloc[:3].tolist() == pytest.approx([e[1] for e in expected[:3]])
    assert board.val_accuracy_low.isna().iloc[3] and board.test_accuracy_low.notna().iloc[3]
    assert chance_banner(board, {"finished": 4}) == ""
    markdown = to_markdown(board, "t", banner="")
    header, _, *rows = [line for line in markdown.splitlines() if line.startswith("|")]
    names = [c.strip() for c in header.strip("|").split("|")]
    assert names[:3] == ["rank", "tie", "trial_key"] and "test 95% interval (held out)" in names
    cells = [dict(zip(names, (c.strip() for c in row.strip("|").split("|")))) for row in rows]
    assert [c["tie"] for c in cells] == ["leader", "≈ tied", "", ""]
    low, high = accuracy_interval(0.9, 40.0)
    assert cells[0]["val 95% interval"] == f"[{low:.4f}, {high:.4f}]" and cells[3]["val 95% interval"] == ""

    best = best_trial(SweepRuns(tracker=None, parent=None, trials=trials), "val_accuracy", "s")
    assert best["trial_key"] == "a" and best["tied_with"] == ["b"] and best["beats_baseline"] is True
    assert best["val_interval"] == pytest.approx([board.val_accuracy_low[0], board.val_accuracy_high[0]])
    assert best["test_interval"] == pytest.approx([board.test_accuracy_low[0], board.test_accuracy_high[0]])
    assert "clears it" in baseline_verdict(best)

    page = render_html("t", "now", {}, board, pd.DataFrame(), [])
    assert 'class="banner"' not in page and "≈ tied" in page and "test 95% interval (held out)" in page
    assert "tied_with_leader" not in page and "val_accuracy_low" not in page  # shown as a mark and [low, high]
    # the same sweep at chance: every trial's interval dips under the baseline
    chance = trials.assign(val_accuracy_best=[0.55, 0.54, 0.40, 0.30], baseline_val_effective_units=1.0)
    board = with_intervals(rank_trials(chance, "val_accuracy")).reindex(columns=list(COLUMNS)).rename(
        columns=RENAMED)
    banner = chance_banner(board, {"finished": 4})
    assert banner.startswith("No trial beats always answering the majority class")
    assert best_trial(SweepRuns(None, None, chance), "val_accuracy", "s")["beats_baseline"] is False
    assert to_markdown(board, "t", "a note", banner).splitlines()[2] == f"**{banner}**"
    page = render_html("t", "now", {}, board, pd.DataFrame(), [], banner=banner)
    assert re.search(r"<body><div class=\"banner\" role=\"alert\"[^>]*><b>No trial beats", page)


def test_a_validation_split_of_one_class_is_said_so_not_divided_by():
    from reports.best import baseline_verdict, best_trial
    from reports.leaderboard import COLUMNS, RENAMED, with_intervals
    from reports.records import MODEL_PARAMS, SweepRuns, rank_trials
    from reports.uncertainty import chance_banner

    trials = trial_table([("a", 1.0, 0.01, 1.0, 100, 0.9), ("b", 0.0, 2.0, 1.0, 100, 0.1)], units=3.0)
    trials["baseline_val_majority_accuracy"] = 1.0  # every validation window is noseal
    trials["val_margin"] = trials.val_accuracy_best - 1.0
    trials = trials.reindex(columns=[*trials.columns, *MODEL_PARAMS]).assign(architecture="image_mlp_frozen")
    best = best_trial(SweepRuns(None, None, trials), "val_accuracy", "s")
    assert best["beats_baseline"] is False and best["val_margin"] == 0.0
    assert best["test_interval"] is None  # the test split recorded no effective units: no interval, no crash
    assert baseline_verdict(best).endswith("(the validation split holds a single class: no accuracy on it can "
                                           "show learning)")
    board = with_intervals(rank_trials(trials, "val_accuracy")).reindex(columns=list(COLUMNS)).rename(
        columns=RENAMED)
    assert board.val_beats_baseline.tolist() == [False, False] and board.tied_with_leader.tolist() == [True, False]
    assert "validation split holds a single class" in chance_banner(board, {"finished": 2})
