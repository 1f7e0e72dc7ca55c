"""Standby workers (started while `run` checks the sweep): adopted by the scheduler in a real sweep (test_run's
sweeps all go through them), sent away when nobody adopts them, and gone by themselves when `run` is."""

from __future__ import annotations

import time

from runner.execution.scheduler import HeadStart, dismiss, plan_slots, start_standby
from runner.execution.worker import ProcessSetup


def test_standby_workers_nobody_adopts_are_sent_away_and_none_outlives_its_scheduler(cache_dir):
    slots = plan_slots("", 1, 2)
    setup = ProcessSetup("jax", cache_dir=str(cache_dir))  # the quicker import: the test is about the processes
    standby = start_standby(slots, setup)
    processes = [waiting.process for waiting in standby.values()]
    assert sorted(standby) == [slot.name for slot in slots] and all(p.is_alive() for p in processes)
    head = HeadStart(standby)
    dismiss(head)
    assert head.standby == {} and not any(p.is_alive() for p in processes)

    orphaned = start_standby(slots[:1], setup)["cpu0"]
    orphaned.orders.close()  # the scheduler is gone without a word (kill -9 of `run`): EOF on its orders
    deadline = time.monotonic() + 120
    while orphaned.process.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not orphaned.process.is_alive() and orphaned.process.exitcode == 0


def test_a_worker_waiting_for_the_mlflow_run_extracts_the_features_its_first_claim_will_load(tmp_path, seals):
    """The prefetch takes the trial the claim would take first (nothing cached yet: the lowest number), computes its
    features into the cache and nothing else; once they are cached it does nothing."""
    from runner.execution.worker import feature_rank, prefetch_features
    from runner.search.base import make_search
    from runner.spec.sweep import load_sweep
    from runner.spec.trial_spec import TrialSpec
    from runner.study.storage import open_storage, open_study
    from tests.runner.execution.test_run import FEATURES, write_sweep
    from zoo import load_dataset
    from zoo.cache import entry_state, features_path

    sweep = load_sweep(write_sweep(tmp_path, [
        {"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [8, 16]},
        {"architecture": ["image_mlp_frozen"], "backbone": ["mobilenet_v2"], "weights": ["none"],
         "frame_size": ["48x48"], "layer_1_size": [8]}]))
    dataset = load_dataset(seals)
    cache = tmp_path / "cache"
    study = open_study("t", open_storage(f"sqlite:///{tmp_path / 'optuna.db'}"), "maximize")
    make_search(sweep, study, dataset.fingerprint, tmp_path, 0).prepare()
    specs = [TrialSpec.from_flat(dict(t.user_attrs["params"])).model for t in study.trials]
    paths = {spec.frame_size: features_path(dataset, spec, cache) for spec in specs}
    assert sorted(paths) == [(32, 32), (48, 48)] and all(entry_state(p) == "missing" for p in paths.values())

    rank = feature_rank(dataset, str(cache), sweep.named_files())
    prefetch_features(study, dataset, str(cache), sweep.named_files(), rank)
    first = specs[min(range(len(study.trials)), key=lambda i: study.trials[i].number)].frame_size
    assert {size: entry_state(path) for size, path in paths.items()} == {
        size: "cached" if size == first else "missing" for size in paths}  # the first claim's, only
    before = {path: path.stat().st_mtime_ns for path in paths.values() if path.exists()}
    prefetch_features(study, dataset, str(cache), sweep.named_files(),
                      feature_rank(dataset, str(cache), sweep.named_files()))
    assert {path: path.stat().st_mtime_ns for path in paths.values() if path.exists()} == before  # cached: nothing
