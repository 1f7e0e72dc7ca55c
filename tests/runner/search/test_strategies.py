"""What to try next, without training: Keras Tuner's random and Bayesian oracles and Optuna's CMA-ES sampler with
successive halving behind our Search interface, on a real SQLite study, real oracles, samplers and pruners. Each
claim is answered as a worker would (per-epoch reports to the pruner, then the result); the workers' side runs end
to end in tests/runner/execution/test_run.py (Hyperband) and tests/runner/search/test_search.py (QMC with Hyperband pruning)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import optuna

from runner.search.optuna_search import OptunaSearch, make_pruner, make_sampler
from runner.study.storage import open_storage, open_study
from runner.spec.sweep import sweep_from_mapping
from runner.search.keras_tuner import KT_ATTR, KerasTunerSearch
from tests.conftest import SEALS

SIZES = [0, 8, 16, 32]


def drive(search: KerasTunerSearch, study, metric) -> list:
    """What workers do with each claim, less the training: tell the study the metric, then the search."""
    claims = []
    while (claim := search.next_trial()) is not None:
        value = metric(claim.spec)
        study.tell(claim.trial, value)
        search.finish(claim, "complete", value)
        claims.append(claim)
    return claims


@pytest.mark.parametrize("oracle", ["random", "bayesian"])
def test_an_oracle_hands_out_distinct_points_until_its_budget_is_spent(tmp_path: Path, oracle: str):
    sweep = sweep_from_mapping({
        "name": "kt", "data": {"root": str(SEALS)},
        "search": {"strategy": "keras_tuner", "oracle": oracle, "trials": 5, "seed": 3},
        "space": [{"architecture": ["image_mlp_frozen"], "backbone": ["mobilenet_v2"], "weights": ["none"],
                   "frame_size": ["32x32"], "layer_1_size": SIZES, "dropout": [0.0, 0.2]}]}, None)
    study = open_study("kt", open_storage(f"sqlite:///{tmp_path / 'o.db'}"), "maximize")
    search = KerasTunerSearch(sweep, study, "fingerprint", tmp_path, max_retries=0)
    search.prepare()
    claims = drive(search, study, lambda spec: spec.model.layer_1_size / 32 - spec.model.dropout)
    keys = [c.key for c in claims]
    assert len(keys) == len(set(keys)) == 5  # the budget, each point once (a repeated draw is not handed out)
    assert all(c.spec.model.layer_1_size in SIZES and c.spec.model.dropout in (0.0, 0.2) for c in claims)
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(t.user_attrs[KT_ATTR] for t in finished) == sorted({t.user_attrs[KT_ATTR] for t in finished})
    files = [json.loads(p.read_text()) for p in (tmp_path / "keras_tuner" / "kt").glob("trial_*/trial.json")]
    completed = [f for f in files if f["status"] == "COMPLETED"]
    assert len(completed) == 5 and {f["trial_id"] for f in completed} == {t.user_attrs[KT_ATTR] for t in finished}
    assert all(f["status"] == "FAILED" for f in files if f["status"] != "COMPLETED")  # repeated draws, ended
    best = max(completed, key=lambda f: f["score"])
    assert best["score"] == max(t.value for t in finished)  # the oracle heard each metric
    again = KerasTunerSearch(sweep, study, "fingerprint", tmp_path, max_retries=0)
    again.prepare()
    assert again.next_trial() is None  # a second run (another process) finds the oracle done


def test_cmaes_samples_the_ranges_and_successive_halving_is_asked_at_each_epoch(tmp_path: Path):
    sweep = sweep_from_mapping({
        "name": "cma", "data": {"root": str(SEALS)}, "training": {"epochs": 2, "learning_rates": [1e-3]},
        "search": {"strategy": "optuna", "trials": 4, "sampler": "cmaes", "pruner": "successive_halving"},
        "space": [{"architecture": ["image_mlp_frozen"], "backbone": ["mobilenet_v2"], "weights": ["none"],
                   "frame_size": ["32x32"], "layer_1_size": {"low": 4, "high": 32},
                   "dropout": {"low": 0.0, "high": 0.5}}]}, None)
    study = open_study("cma", open_storage(f"sqlite:///{tmp_path / 'o.db'}"), "maximize",
                       sampler=make_sampler(sweep), pruner=make_pruner(sweep))
    search = OptunaSearch(sweep, study, "fingerprint", tmp_path, max_retries=0)
    search.prepare()
    answered = []
    while (claim := search.next_trial()) is not None:
        size, dropout = claim.spec.model.layer_1_size, claim.spec.model.dropout
        for epoch in range(2):  # what the worker does after each epoch
            claim.trial.report(size / 32 - dropout + epoch / 10, epoch)
            if claim.trial.should_prune():
                study.tell(claim.trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(claim.trial, size / 32 - dropout + 0.1)
        answered.append((size, dropout))
    assert len(answered) == len(set(answered)) == 4  # the budget, each point once
    assert all(4 <= size <= 32 and isinstance(size, int) and 0.0 <= dropout <= 0.5 for size, dropout in answered)
    trained = [t for t in study.trials if "duplicate_of" not in t.user_attrs]
    assert any(key.startswith("cma:") for t in trained for key in t.system_attrs)  # CMA-ES took over after one
    assert all("completed_rung_0" in t.system_attrs for t in trained)  # the pruner was asked at its rung
