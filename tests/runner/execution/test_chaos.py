"""The chaos harness (benchmarks/chaos.py) in a short seeded version: random faults, resumes, the same outcome."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import ROOT


def _harness():
    spec = importlib.util.spec_from_file_location("chaos_harness", ROOT / "benchmarks" / "chaos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_seeded_faults_leave_a_sweep_that_resumes_to_the_uninterrupted_outcome(tmp_path, cache_dir, monkeypatch):
    """A preemption of the scheduler, a kill -9 of the whole sweep, then of one worker (the sweep goes on), at
    seeded moments, all on one halving sweep of 3 keys with 2 workers, each followed by `resume`: every key
    finishes once per rung it reaches, each history equals the uninterrupted run's, MLflow has each step once,
    nothing is left behind."""
    monkeypatch.delenv("VIDEOSWEEP_POOL_DIR", raising=False)  # the harness finds a worker among `run`'s children
    kinds = ("term-sweep", "kill-sweep", "kill-worker")
    figures, problems = _harness().chaos(faults=3, seed=0, keys=3, folder=tmp_path, kinds=kinds, wait=(4, 8))
    assert problems == [], problems
    assert figures["by_kind"] == dict.fromkeys(kinds, 1), figures
    assert figures["exits"].get("term-sweep -> 143") == 1, figures  # what SLURM and Kubernetes are told
    assert figures["batches_trained"] >= figures["batches_uninterrupted"] > 0, figures
