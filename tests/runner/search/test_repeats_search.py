"""training.repeats in what chooses: successive halving promotes points by their repeats' mean, stop rules judge
a point once all its repeats finished, enqueued repeats carry their point (a real in-memory Optuna study)."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from runner.search import stop
from runner.search.grid import GridSearch
from runner.search.halving import BUDGET_ATTR, PAUSED_ATTR, RUNG_ATTR, promote
from runner.spec.sweep import ScheduleConfig, sweep_from_mapping
from runner.study.claims import KEY_ATTR, POINT_ATTR, claim_from_queue, point_of_trial

SYNC_3 = ScheduleConfig(kind="successive_halving", min_epochs=1, reduction_factor=3)
PARAMS = {"epochs": 3, "learning_rates": [1e-3]}
# three points, two seed repeats each: keys p<point>r<repeat> as 12 hex digits
KEYS = {(point, repeat): f"{point:06x}{repeat:06x}" for point in range(3) for repeat in range(2)}


def finish(study: optuna.Study, point: int, repeat: int, value: float) -> None:
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=value, user_attrs={
        KEY_ATTR: KEYS[point, repeat], POINT_ATTR: KEYS[point, 0], "params": PARAMS, RUNG_ATTR: 0,
        PAUSED_ATTR: True, BUDGET_ATTR: 1}))


def test_halving_promotes_the_point_with_the_best_mean_and_all_of_its_repeats():
    study = optuna.create_study(direction="maximize")
    # point 0 has the single best repeat (0.9) but the worst mean (0.5); point 2 is steadily best (0.7)
    for point, values in ((0, (0.9, 0.1)), (1, (0.6, 0.6)), (2, (0.7, 0.7))):
        for repeat, value in enumerate(values):
            finish(study, point, repeat, value)
    assert promote(study, SYNC_3, "maximize", synchronous=True) == 2  # 3 points // 3 = 1 point, both repeats
    promoted = sorted(t.user_attrs[KEY_ATTR] for t in study.get_trials(states=(TrialState.WAITING,)))
    assert promoted == [KEYS[2, 0], KEYS[2, 1]]
    assert all(t.user_attrs[RUNG_ATTR] == 1 for t in study.get_trials(states=(TrialState.WAITING,)))


def test_a_trial_without_a_recorded_point_is_its_own_point():
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={KEY_ATTR: "abcdefabcdef"}))
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={KEY_ATTR: "abcdefabcdef",
                                                                     POINT_ATTR: "../../etc"}))  # not a key
    assert [point_of_trial(t) for t in study.get_trials()] == ["abcdefabcdef", "abcdefabcdef"]


def sweep_with(repeats: int, **rules) -> object:
    return sweep_from_mapping({"name": "u", "data": {"root": "."}, "training": {"repeats": repeats},
                               "search": {"stop": rules},
                               "space": [{"architecture": ["image_mlp_frozen"], "backbone": ["mobilenet_v2"]}]}, "t")


def finished_in_order(values: list[tuple[int, float]]) -> list:
    study = optuna.create_study(direction="maximize")
    for number, (point, value) in enumerate(values):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={
            KEY_ATTR: f"{number:012x}", POINT_ATTR: KEYS[point, 0]}))
    return study.get_trials()


def test_stop_rules_judge_a_point_by_its_mean_once_all_its_repeats_finished():
    target = sweep_with(2, target=0.8)
    assert stop.decide(target, finished_in_order([(0, 0.95)])) is None  # one lucky repeat of two
    assert stop.decide(target, finished_in_order([(0, 0.95), (0, 0.5)])) is None  # mean 0.725
    reason = stop.decide(target, finished_in_order([(0, 0.95), (1, 0.8), (0, 0.5), (1, 0.9)]))
    assert reason == f"target val_accuracy >= 0.8 reached by point {KEYS[1, 0]} (mean of 2 seed repeats, 0.8500)"
    patience = sweep_with(2, patience_trials=1)
    assert stop.decide(patience, finished_in_order([(0, 0.6), (0, 0.6), (1, 0.9), (1, 0.2)])) is not None
    assert stop.decide(patience, finished_in_order([(0, 0.6), (0, 0.6), (1, 0.9), (1, 0.4)])) is None
    # without repeats every finished trial is judged on its own, as before
    assert "trial #0" in stop.decide(sweep_with(1, target=0.8), finished_in_order([(0, 0.95)]))


def test_the_grid_enqueues_each_repeat_with_its_point_and_a_claim_knows_it(tmp_path: Path):
    sweep = sweep_from_mapping({
        "name": "u", "data": {"root": "."}, "training": {"repeats": 2},
        "space": [{"architecture": ["image_mlp_frozen"], "backbone": ["mobilenet_v2"], "weights": ["none"],
                   "layer_1_size": [0, 8]}]}, "t")
    study = optuna.create_study(direction="maximize", storage=f"sqlite:///{tmp_path / 'a.db'}")
    grid = GridSearch(sweep, study, "fp", tmp_path, max_retries=1)
    assert grid.prepare() == 4 and grid.prepare() == 0  # enqueued once
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs[POINT_ATTR] for t in waiting] == grid.expansion.point_keys
    claims = [claim_from_queue(study, fingerprint="fp") for _ in range(4)]
    assert [c.point for c in claims] == grid.expansion.point_keys
    assert [c.key for c in claims] == grid.expansion.keys and all(c.grouped for c in claims)
    assert [c.spec.repeat for c in claims] == [0, 1, 0, 1]
    once = sweep.model_copy(update={"training": sweep.training.model_copy(update={"repeats": 1})})
    plain = optuna.create_study(direction="maximize", storage=f"sqlite:///{tmp_path / 'b.db'}")
    GridSearch(once, plain, "fp", tmp_path, max_retries=1).prepare()
    assert all(POINT_ATTR not in t.user_attrs for t in plain.trials)  # no repeats: the study reads as before
    assert not claim_from_queue(plain, fingerprint="fp").grouped


def test_an_optuna_search_queues_each_sampled_points_repeats_and_counts_its_budget_in_points(tmp_path: Path):
    """The sampler asks once per point; the point's other repeats are queued with the sampled Optuna parameters (so
    the sampler sees each as an observation of the point), claimed next, and the trial budget counts points."""
    from runner.search.optuna_search import OptunaSearch

    sweep = sweep_from_mapping({
        "name": "o", "data": {"root": "."}, "training": {"repeats": 3},
        "search": {"strategy": "optuna", "trials": 2, "sampler": "tpe"},
        "space": [{"architecture": ["image_mlp_frozen"], "backbone": ["mobilenet_v2"], "weights": ["none"],
                   "layer_1_size": {"low": 4, "high": 64, "log": True}}]}, "t")
    study = optuna.create_study(direction="maximize", storage=f"sqlite:///{tmp_path / 'o.db'}")
    search = OptunaSearch(sweep, study, "fp", tmp_path, max_retries=1)
    claimed = []
    while (claim := search.next_trial()) is not None:
        claimed.append(claim)
        study.tell(claim.trial, 0.5)
    assert len(claimed) == 6 and search.used_budget() == 2  # 2 points x 3 repeats
    by_point: dict[str, list] = {}
    for claim in claimed:
        by_point.setdefault(claim.point, []).append(claim)
    assert len(by_point) == 2
    for point, group in by_point.items():
        assert sorted(c.spec.repeat for c in group) == [0, 1, 2] and group[0].key == point
        assert len({c.key for c in group}) == 3  # each repeat is a trial key of its own
        assert len({c.spec.model.layer_1_size for c in group}) == 1  # ... of one sampled point
        sizes = {t.params["layer_1_size"] for t in study.trials if point_of_trial(t) == point}
        assert len(sizes) == 1  # every repeat carries the sampled Optuna parameter
