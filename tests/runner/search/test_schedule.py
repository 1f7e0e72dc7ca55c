"""The promotion rules of successive halving (synchronous) and ASHA (asynchronous), on a real in-memory Optuna
study: which keys go on to the next rung, with which epoch budget, and whose checkpoints go."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from runner.search import stop
from runner.study.claims import KEY_ATTR
from runner.execution.run import work_left
from runner.search.halving import BUDGET_ATTR, PAUSED_ATTR, RUNG_ATTR, promote, remove_stopped_checkpoints
from runner.search.grid import GridSearch
from runner.spec.sweep import ScheduleConfig, sweep_from_mapping

ETA_2 = ScheduleConfig(kind="asha", min_epochs=1, reduction_factor=2)  # rungs of 4 epochs: 1, 2, 4
PARAMS = {"epochs": 4, "learning_rates": [1e-3]}


NAMES = ("a", "b", "c", "d", "early", "first", "second", "last", "paused", "promoted", "continuing")
KEYS = {name: f"{index:012x}" for index, name in enumerate(NAMES)}  # real trial keys (12 hex digits) by name
NAME_OF = {key: name for name, key in KEYS.items()}


def checkpoints(workdir: Path) -> list[str]:
    return sorted(NAME_OF[p.parent.name] for p in workdir.glob("trials/*/checkpoint"))


def new_study() -> optuna.Study:
    return optuna.create_study(direction="maximize")


def finish(study: optuna.Study, key: str, value: float, rung: int = 0, paused: bool = True) -> None:
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=value, user_attrs={
        KEY_ATTR: KEYS[key], "params": PARAMS, RUNG_ATTR: rung, PAUSED_ATTR: paused, BUDGET_ATTR: 2 ** rung}))


def queued(study: optuna.Study) -> list[tuple[str, int, int]]:
    return [(NAME_OF[t.user_attrs[KEY_ATTR]], t.user_attrs[RUNG_ATTR], t.user_attrs[BUDGET_ATTR])
            for t in study.get_trials(states=(TrialState.WAITING,))]


def test_asha_promotes_a_key_as_soon_as_it_is_in_the_top_of_its_rung_so_far():
    study = new_study()
    finish(study, "a", 0.5)
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.5, user_attrs={
        KEY_ATTR: KEYS["a"], "duplicate_of": 0}))  # the sampler drew it again: answered from it, counted once
    assert promote(study, ETA_2, "maximize", synchronous=False) == 0  # 1 finished: the top 1 // 2 is nobody
    finish(study, "b", 0.7)
    assert promote(study, ETA_2, "maximize", synchronous=False) == 1
    assert queued(study) == [("b", 1, 2)]  # the next rung's budget: 2 epochs
    finish(study, "c", 0.6)
    assert promote(study, ETA_2, "maximize", synchronous=False) == 0  # top 1 of 3 is b, already promoted
    finish(study, "d", 0.9)
    assert promote(study, ETA_2, "maximize", synchronous=False) == 1  # top 2 of 4: d joins b
    assert queued(study) == [("b", 1, 2), ("d", 1, 2)]
    assert promote(study, ETA_2, "maximize", synchronous=False) == 0  # never twice


def test_a_key_that_stopped_early_is_not_promoted_and_ties_go_to_the_first_queued():
    study = new_study()
    finish(study, "early", 0.9, paused=False)  # early stopping ended its training before the rung's budget
    finish(study, "first", 0.6)
    finish(study, "second", 0.6)
    finish(study, "last", 0.1)
    assert promote(study, ETA_2, "maximize", synchronous=False) == 1
    assert queued(study) == [("first", 1, 2)]


def test_successive_halving_waits_for_the_rung_and_removes_the_checkpoints_of_the_rest(tmp_path: Path):
    study = new_study()
    for key, value in (("a", 0.5), ("b", 0.7), ("c", 0.6)):
        finish(study, key, value)
        (tmp_path / "trials" / KEYS[key] / "checkpoint").mkdir(parents=True)
    running = study.ask()  # the rung's last trial, still training
    halving = ScheduleConfig(kind="successive_halving", min_epochs=1, reduction_factor=2)
    assert promote(study, halving, "maximize", synchronous=True, workdir=tmp_path) == 0
    assert len(list(tmp_path.glob("trials/*/checkpoint"))) == 3
    study.tell(running, state=TrialState.FAIL)
    assert promote(study, halving, "maximize", synchronous=True, workdir=tmp_path) == 1
    assert queued(study) == [("b", 1, 2)]  # max(1, 3 // 2) of the 3 that finished the rung
    assert checkpoints(tmp_path) == ["b"]


def test_when_the_search_is_over_paused_keys_keep_no_checkpoint(tmp_path: Path):
    study = new_study()
    finish(study, "paused", 0.5)
    finish(study, "promoted", 0.7)
    finish(study, "promoted", 0.8, rung=1, paused=False)
    finish(study, "continuing", 0.6)
    study.enqueue_trial(params={}, user_attrs={KEY_ATTR: KEYS["continuing"], "params": PARAMS, RUNG_ATTR: 1})
    for key in ("paused", "promoted", "continuing"):
        (tmp_path / "trials" / KEYS[key] / "checkpoint").mkdir(parents=True)
    remove_stopped_checkpoints(study, tmp_path)
    assert checkpoints(tmp_path) == ["continuing", "promoted"]


def test_a_planted_key_in_the_study_names_no_folder_to_remove(tmp_path: Path):
    """The study is shared, not trusted: a paused trial whose key is a path never leads to a removal outside the
    trials folder (only real trial keys stand for keys)."""
    outside = tmp_path / "precious" / "checkpoint"
    outside.mkdir(parents=True)
    study = new_study()
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.5, user_attrs={
        KEY_ATTR: "../../../precious", "params": PARAMS, RUNG_ATTR: 0, PAUSED_ATTR: True, BUDGET_ATTR: 1}))
    workdir = tmp_path / "a" / "work"
    (workdir / "trials").mkdir(parents=True)
    remove_stopped_checkpoints(study, workdir)
    assert outside.is_dir()


def test_trials_left_waiting_by_a_cut_off_claim_are_work_left_unless_the_sweep_is_stopped(tmp_path: Path):
    """When every worker has left, the scheduler starts them again only if work is left. A promoted trial whose
    claim a lost database connection cut off stays WAITING with nothing RUNNING: that is work left, not the end
    of the sweep (a CI run under a database restarting four times a second ended with one left unrun)."""
    sweep = sweep_from_mapping({
        "name": "sh", "data": {"root": "."},
        "search": {"strategy": "grid", "timeout": 60,
                   "schedule": {"kind": "successive_halving", "min_epochs": 1}},
        "training": {"epochs": 2},
        "space": [{"architecture": ["image_mlp_frozen"], "backbone": ["mobilenet_v2"],
                   "layer_1_size": [8, 16]}]}, "t")
    study = new_study()
    search = GridSearch(sweep, study, "f" * 16, tmp_path, max_retries=0)
    assert search.prepare() == 2 and search.prepare() == 0  # queued once: a second prepare adds nothing
    assert work_left(study, sweep, search, deadline=None, ignore_stop=False) == (2, 0)  # ... yet both still wait
    assert work_left(study, sweep, search, deadline=time.time() - 1, ignore_stop=True) == (0, 0)  # out of time
    assert "time budget" in stop.stop_reason(study)
    stop.clear(study)
    assert work_left(study, sweep, search, deadline=None, ignore_stop=True) == (2, 0)
    study.ask()  # claimed in another machine's worker: still work to wait for (it may die and come back)
    assert work_left(study, sweep, search, deadline=None, ignore_stop=False) == (1, 1)
