"""Pure report pieces on hand-made tables: mixed architectures leave parameters missing (NaN) for some rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reports.report import parameter_importances


def test_importances_cope_with_parameters_an_architecture_does_not_use():
    rng = np.random.default_rng(0)
    # layer_1_size drives the metric (0.30 .. 0.94); the other architecture sits near the middle with tiny noise
    rows = [{"architecture": "c3dsmall", "backbone": np.nan, "layer_1_size": pd.NA, "val": rng.uniform(0.55, 0.57)}
            for _ in range(4)]
    rows += [{"architecture": "image_mlp_frozen", "backbone": "mobilenet_v2", "layer_1_size": size,
              "val": 0.3 + size / 100} for size in (0, 8, 16, 32, 64)]
    finished = pd.DataFrame(rows).astype({"layer_1_size": "Int64"})
    importances = parameter_importances(finished, ["architecture", "backbone", "layer_1_size"], "val", "maximize")
    assert set(importances) == {"architecture", "backbone", "layer_1_size"}
    assert abs(sum(importances.values()) - 1) < 1e-6
    assert max(importances, key=importances.get) == "layer_1_size"  # the parameter that drives the metric
    assert importances["layer_1_size"] > 0.5, importances


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

    from reports.best import baseline_verdict, best_trial, wilson_interval
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
