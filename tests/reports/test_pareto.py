"""Deployment-aware selection: latency recorded per trial, a multi-objective Optuna study (NSGA-II), the Pareto
front from MLflow (`best --pareto`) and export within a latency or parameter budget."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient

from reports.pareto import front_goals, non_dominated, pareto_front
from tests.conftest import run_cli
from tests.runner.execution.test_run import FEATURES, write_sweep

OBJECTIVES = [{"metric": "val_accuracy", "direction": "maximize"}, {"metric": "latency_ms", "direction": "minimize"}]
SPACE = [
    {"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0, 8]},
    {"architecture": ["video_lrcnn_frozen"], **FEATURES, "sequence_length": [3], "sequence_model": ["GRU"],
     "layer_1_size": [8]},
]


def test_non_dominated_is_exactly_the_front():
    points = np.array([[1, 5], [2, 2], [5, 1], [3, 3], [2, 2], [6, 6]], dtype=float)  # minimise both
    assert non_dominated(points).tolist() == [True, True, True, False, True, False]
    table = pd.DataFrame({"trial_key": list("abcd"), "run_id": list("1234"), "status": ["FINISHED"] * 3 + ["FAILED"],
                          "val_accuracy_best": [0.9, 0.8, 0.7, 1.0], "latency_ms": [5.0, 1.0, 2.0, 0.1]})
    front = pareto_front(table, front_goals([("val_accuracy", "maximize")]))  # one metric: paired with latency
    assert front.trial_key.tolist() == ["a", "b"] and list(front.columns) == ["trial_key", "run_id", "val_accuracy",
                                                                               "latency_ms"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, cache_dir):
    """One NSGA-II sweep of 3 trials over val_accuracy and latency_ms, shared by the end-to-end checks."""
    folder = tmp_path_factory.mktemp("pareto")
    path = write_sweep(folder, SPACE, name="par", search={"strategy": "optuna", "sampler": "nsga2", "trials": 3,
                                                          "objectives": OBJECTIVES})
    workdir = folder / "work"
    result = run_cli("run", str(path), "--workdir", str(workdir))
    assert result.returncode == 0, result.stderr
    return path, workdir


@pytest.mark.slow
def test_multi_objective_study_latency_in_mlflow_front_and_budgeted_export(sweep, tmp_path):
    path, workdir = sweep
    study = optuna.load_study(study_name="par", storage=f"sqlite:///{workdir / 'optuna.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(len(t.values) == 2 and t.values[1] > 0 for t in complete)

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("par").experiment_id
    runs = [r for r in client.search_runs([experiment], "tags.`videosweep.role` = 'trial'")
            if r.info.status == "FINISHED"]
    for run in runs:  # recorded and positive, never a value (machines vary)
        for name in ("latency_ms", "throughput_fps", "deployed_param_count", "model_size_mb", "param_count"):
            assert run.data.metrics[name] > 0, name
        assert run.data.tags["videosweep.latency_device"]

    result = run_cli("best", str(path), "--workdir", str(workdir), "--pareto", "--json")
    assert result.returncode == 0, result.stderr
    front = json.loads(result.stdout)["front"]
    points = {r.info.run_id: (r.data.metrics["val_accuracy_best"], r.data.metrics["latency_ms"]) for r in runs}
    expected = {rid for rid, (acc, lat) in points.items()
                if not any(a >= acc and b <= lat and (a > acc or b < lat) for a, b in points.values())}
    assert {row["run_id"] for row in front} == expected
    assert all(set(row) == {"trial_key", "run_id", "val_accuracy", "latency_ms"} for row in front)
    best = run_cli("best", str(path), "--workdir", str(workdir), "--json")
    assert best.returncode == 0 and json.loads(best.stdout)["run_id"] in expected  # best is on the front

    slowest = max(lat for _, lat in points.values())
    out = tmp_path / "export"
    result = run_cli("export", str(path), "--workdir", str(workdir), "--out", str(out), "--no-register",
                     "--max-latency-ms", str(slowest * 2), "--allow-baseline")
    assert result.returncode == 0, result.stderr
    meta = json.loads((out / "export.json").read_text())
    best_acc = max(acc for acc, _ in points.values())
    assert points[meta["run_id"]][0] == best_acc and meta["trial_key"] and meta["selection"]["max_latency_ms"]

    fastest = min(lat for _, lat in points.values())
    for args in (["--max-latency-ms", str(fastest / 1000)], ["--max-latency-ms", "-1"], ["--max-params", "1"]):
        result = run_cli("export", str(path), "--workdir", str(workdir), "--out", str(tmp_path / "none"), *args)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)


@pytest.mark.slow
def test_report_has_offline_interactive_plots_and_renders(sweep, tmp_path):
    import re

    from tests.browser import ARTIFACTS, CHROMIUM, chromium

    path, workdir = sweep
    out = tmp_path / "report"
    result = run_cli("report", str(path), "--workdir", str(workdir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    page = (out / "report.html").read_text()
    titles = re.findall(r'<figure class="interactive"><h3>(.*?)</h3>', page)
    assert titles[:3] == ["Pareto front", "Optimisation history", "Parallel coordinates of the swept parameters"]
    assert page.count("<script") - page.count('<script type="application/json"') >= 1
    assert not re.search(r"<script[^>]*\ssrc=", page)  # plotly.js inlined once, never fetched
    assert page.count("Plotly.newPlot") == len(titles)
    assert "latency_ms" in (out / "leaderboard.md").read_text()
    if CHROMIUM is None:
        pytest.skip("headless Chromium not installed: rendering not checked")
    dom = chromium("--dump-dom", (out / "report.html").as_uri(), profile=tmp_path / "p1").stdout
    assert dom.count('class="main-svg"') >= len(titles)  # plotly drew every figure offline
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-interactive.png"
    assert chromium(f"--screenshot={shot}", (out / "report.html").as_uri(), profile=tmp_path / "p2").returncode == 0
