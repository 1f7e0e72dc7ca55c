"""Search strategies, samplers, pruners and the search budget in time, and how slots share work: real sweeps of
tiny frame models on the seals frames (features of a 32x32 MobileNetV2 without ImageNet weights)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli
from tests.runner.execution.test_run import FEATURES, load_study, trainings, write_sweep

pytestmark = pytest.mark.slow
RANGES = {"layer_1_size": {"low": 4, "high": 32}, "dropout": {"low": 0.0, "high": 0.5}}


def trained(study) -> list:
    """Study trials that trained (duplicates answered from the study and invalid draws left out)."""
    return [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED") and "duplicate_of" not in t.user_attrs
            and "invalid_reason" not in t.user_attrs]


def in_ranges(params: dict) -> bool:
    return 4 <= params["layer_1_size"] <= 32 and 0.0 <= params["dropout"] <= 0.5


def test_random_strategy_samples_the_ranges_within_its_budget(tmp_path, cache_dir):
    sweep = write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES, **RANGES}],
                        search={"strategy": "random", "trials": 3, "seed": 7})
    workdir, counter = tmp_path / "work", tmp_path / "count.txt"
    result = run_cli("run", str(sweep), "--workdir", str(workdir), "--workers", "1",
                     env={"VIDEOSWEEP_FAULT": f"count:@{counter}"})
    assert result.returncode == 0, result.stderr
    trials = trained(load_study(workdir))
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3 and len(trainings(counter)) == 3
    params = [t.user_attrs["params"] for t in trials]
    assert all(in_ranges(p) for p in params)
    assert len({(p["layer_1_size"], p["dropout"]) for p in params}) == 3  # drawn, not one point repeated
    assert all(isinstance(p["layer_1_size"], int) for p in params)  # an integer range gives integers
    again = run_cli("run", str(sweep), "--workdir", str(workdir), "--workers", "1",
                    env={"VIDEOSWEEP_FAULT": f"count:@{counter}"})
    assert again.returncode == 0 and len(trainings(counter)) == 3  # the budget is spent: nothing more trains


def has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


# (CMA-ES with successive halving is driven without training in tests/runner/search/test_strategies.py)
@pytest.mark.parametrize("sampler, pruner", [("qmc", "hyperband"), ("gp", "none")])
def test_optuna_samplers_and_pruners_drive_the_sweep(tmp_path, cache_dir, sampler, pruner):
    sweep = write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES, **RANGES}],
                        search={"strategy": "optuna", "trials": 3, "sampler": sampler, "pruner": pruner})
    data = yaml.safe_load(sweep.read_text())
    data["training"].update(epochs=2, patience=2)
    sweep.write_text(yaml.safe_dump(data))
    workdir = tmp_path / "work"
    result = run_cli("run", str(sweep), "--workdir", str(workdir), "--workers", "1", timeout=900)
    if sampler == "gp" and not has_torch():  # GP needs torch (README), not in the test extras: refused up front
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert "error: search.sampler gp needs an extra package: No module named 'torch'" in result.stderr
        assert not (workdir / "trials").exists()
        return
    assert result.returncode == 0, result.stderr
    study = load_study(workdir)
    trials = trained(study)
    assert len(trials) == 3 and len({t.user_attrs["trial_key"] for t in trials}) == 3
    assert all(in_ranges(t.user_attrs["params"]) for t in trials)
    assert not [t for t in study.trials if t.state.name in ("RUNNING", "WAITING", "FAIL")]
    # The sampler left its own trace in the study: it was the one asked.
    if sampler == "qmc":
        assert any("qmc" in key for key in study._storage.get_study_system_attrs(study._study_id))
    # (GP fits its model after 10 start-up trials, too many for a test: here it only has to run the sweep.)
    if pruner != "none":  # the pruner was consulted at every epoch it has a rung for
        assert all("completed_rung_0" in t.system_attrs for t in trials), [t.system_attrs for t in trials]
        assert all(len(t.intermediate_values) >= 1 for t in trials)


def test_search_timeout_stops_handing_out_trials(tmp_path, cache_dir):
    """`search.timeout: 15` with trials that take over 10 s each: the trials that started within the 15 s
    finish, no other starts; without the timeout all five would run (50 s and more)."""
    timeout = 15
    space = [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0, 4, 8, 12, 16]}]
    sweep = write_sweep(tmp_path, space, search={"strategy": "grid", "timeout": timeout})
    workdir, counter = tmp_path / "work", tmp_path / "count.txt"
    result = run_cli("run", str(sweep), "--workdir", str(workdir), "--workers", "1",
                     env={"VIDEOSWEEP_FAULT": f"count:@{counter},sleep:@10"})
    assert result.returncode == 0, result.stderr
    study = load_study(workdir)
    started = [t for t in study.trials if t.state.name != "WAITING"]
    # (on a slow machine the workers may still be starting when the time is up: then no trial starts at all)
    assert len(trainings(counter)) < 5 and len(started) == len(trainings(counter))
    assert all(t.state.name == "COMPLETE" for t in started)  # the running one was let finish
    starts = sorted(t.datetime_start for t in started)
    assert not starts or (starts[-1] - starts[0]).total_seconds() <= timeout
    assert len([t for t in study.trials if t.state.name == "WAITING"]) == 5 - len(started)  # left for a resume


def test_two_slots_on_an_empty_cache_extract_once_and_workers_are_recycled(tmp_path, cache_dir):
    """Two slots start together on an empty cache: one extracts the backbone's features, the other waits and
    reads them. With --trials-per-process 1 every trial gets a fresh worker process (3 trials on 2 slots: one
    slot's worker is replaced)."""
    sweep = write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0, 4, 8]}])
    workdir, cache = tmp_path / "work", tmp_path / "empty-cache"
    result = run_cli("run", str(sweep), "--workdir", str(workdir), "--workers", "2", "--trials-per-process", "1",
                     "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr
    trials = load_study(workdir).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert {t.user_attrs["slot"] for t in trials} == {"cpu0", "cpu1"}, [t.user_attrs["slot"] for t in trials]
    assert len({t.user_attrs["pid"] for t in trials}) == 3  # one process per trial
    hits = [json.loads((workdir / "trials" / t.user_attrs["trial_key"] / "results.json").read_text())["cache_hit"]
            for t in trials]
    assert sorted(hits) == [False, True, True]  # extracted by one trial only
    entries = list((cache / "features").rglob("*.npy"))
    assert len(entries) == 1


def test_a_worker_waiting_for_a_rung_leaves_at_the_first_ctrl_c(tmp_path):
    """Successive halving: a worker with nothing to claim waits for the rung's last trials; the scheduler's first
    Ctrl-C (its stop file, `.stop.<pid>`) must end that wait, not only a trial's end (then it would promote and
    start a new trial after the user asked it to stop)."""
    import threading

    from runner.search.base import make_search
    from runner.study.storage import open_storage, open_study
    from runner.spec.sweep import load_sweep
    from runner.execution.worker import WorkerConfig, stop_requested

    sweep = load_sweep(write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES,
                                               "layer_1_size": [0, 8]}], name="wait",
                                   training={"epochs": 2, "patience": 2, "learning_rates": [1e-3]},
                                   search={"strategy": "grid", "schedule": {"kind": "successive_halving",
                                                                            "min_epochs": 1, "reduction_factor": 2}}))
    study = open_study("wait", open_storage(f"sqlite:///{tmp_path / 'optuna.db'}"), "maximize")
    config = WorkerConfig(sweep_yaml="", sweep_source="", workdir=str(tmp_path), storage_url="",
                          stop_file=str(tmp_path / ".stop.4242"))
    search = make_search(sweep, study, "data", tmp_path, 0, stopping=lambda: stop_requested(config))
    search.prepare()
    held = [search.next_trial(), search.next_trial()]  # both points of rung 0 running (on "other" workers)
    assert all(held)
    answer: list = []
    waiter = threading.Thread(target=lambda: answer.append(search.next_trial()), daemon=True)
    waiter.start()
    waiter.join(3)
    assert waiter.is_alive(), "with the rung still running, the worker waits"
    Path(config.stop_file).touch()  # the scheduler's first Ctrl-C
    waiter.join(10)
    assert not waiter.is_alive() and answer == [None]
