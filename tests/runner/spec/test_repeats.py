"""training.repeats: the schema, seed derivation, repeat keys and grid expansion (pure functions)."""

from __future__ import annotations

import hashlib
import json

import pytest

from runner.search.expand import expand_grid
from runner.spec.sweep import sweep_from_mapping
from runner.spec.trial_spec import MAX_REPEATS, TrialSpec, repeat_seed
from zoo.errors import UserError

BASE = {"name": "s", "data": {"root": "examples/seals"}}
POINT = {"architecture": "image_mlp_frozen", "backbone": "mobilenet_v2", "weights": "none", "frame_size": "32x32"}
SPACE = [{"architecture": ["image_mlp_frozen"], "backbone": ["mobilenet_v2"], "weights": ["none"],
          "frame_size": ["32x32"], "layer_1_size": [0, 8, 16]}]


def sweep(training: dict | None = None, **extra):
    return sweep_from_mapping({**BASE, "space": SPACE, "training": training or {}, **extra}, "s.yaml")


def test_repeats_default_to_one_and_bad_counts_are_one_line_errors():
    assert sweep().training.repeats == 1
    assert sweep({"repeats": MAX_REPEATS}).training.repeats == 100
    for bad, why in ((0, "greater than or equal to 1"), (101, "less than or equal to 100"), ("two", "integer")):
        with pytest.raises(UserError) as err:
            sweep({"repeats": bad})
        assert str(err.value).startswith("s.yaml: training.repeats: ") and why in str(err.value)
        assert "\n" not in str(err.value)


def test_keras_tuner_refuses_repeats_the_other_strategies_take_them():
    with pytest.raises(UserError, match=r"^s.yaml: .*training.repeats: Keras Tuner's oracle scores each trial"):
        sweep({"repeats": 2}, search={"strategy": "keras_tuner", "trials": 4})
    assert sweep({"repeats": 1}, search={"strategy": "keras_tuner", "trials": 4}).training.repeats == 1
    for strategy in ("optuna", "random"):
        assert sweep({"repeats": 2}, search={"strategy": strategy, "trials": 4}).training.repeats == 2


def test_repeats_is_not_a_parameter_a_space_may_sweep():
    with pytest.raises(UserError, match="unknown parameter 'repeats'"):
        sweep_from_mapping({**BASE, "space": [{**SPACE[0], "repeats": [1, 2]}]}, "s.yaml")


def test_repeat_zero_keeps_the_seed_and_the_others_get_distinct_stable_seeds():
    assert repeat_seed(7, 0) == 7
    seeds = [repeat_seed(7, r) for r in range(1, MAX_REPEATS)]
    assert len(set(seeds)) == len(seeds) and 7 not in seeds
    assert all(0 <= s < 2 ** 31 for s in seeds)  # what every backend's seeding accepts
    assert seeds == [repeat_seed(7, r) for r in range(1, MAX_REPEATS)]  # deterministic
    assert repeat_seed(8, 1) != repeat_seed(7, 1)  # derived from training.seed
    spec = TrialSpec.from_flat({**POINT, "seed": 7})
    assert spec.run_seed == 7 and spec.with_repeat(3).run_seed == repeat_seed(7, 3)


def test_repeat_zero_keeps_the_key_of_a_sweep_without_repeats_and_the_others_get_their_own():
    spec = TrialSpec.from_flat(POINT)
    before = {k: v for k, v in spec.flat().items() if k != "precision"}  # the parameters before repeats existed
    old_key = hashlib.sha256(json.dumps({"params": before, "data": "fp"}, sort_keys=True).encode()).hexdigest()[:12]
    assert spec.key("fp") == spec.with_repeat(0).key("fp") == old_key and "repeat" not in spec.flat()
    second = spec.with_repeat(1)
    assert second.flat()["repeat"] == 1 and second.key("fp") not in (old_key, spec.with_repeat(2).key("fp"))
    assert second.point().key("fp") == old_key
    back = TrialSpec.from_flat(second.flat())  # as a claim reads it back from the study
    assert back == second and back.key("fp") == second.key("fp")
    assert second.with_batch_size(8).repeat == 1  # an out-of-memory retry is still the same repeat


@pytest.mark.parametrize("bad", [-1, MAX_REPEATS, "x"])
def test_a_bad_repeat_index_is_refused(bad):
    with pytest.raises(UserError, match="repeat"):
        TrialSpec.from_flat({**POINT, "repeat": bad})


def test_the_grid_expands_every_point_into_its_repeats_grouped_by_point_key():
    once, thrice = expand_grid(sweep(), "fp"), expand_grid(sweep({"repeats": 3}), "fp")
    assert len(once.trials) == 3 and len(thrice.trials) == 9
    assert thrice.combinations == once.combinations == 3 and thrice.per_subspace == [9]
    assert thrice.point_keys[::3] == once.keys == thrice.keys[::3]  # repeat 0 of each point: the old key
    assert [spec.repeat for spec in thrice.trials] == [0, 1, 2] * 3
    assert len(set(thrice.keys)) == 9
    for key, point, spec in zip(thrice.keys, thrice.point_keys, thrice.trials):
        assert spec.key("fp") == key and spec.point().key("fp") == point
    assert [s.model.layer_1_size for s in thrice.trials] == [0, 0, 0, 8, 8, 8, 16, 16, 16]
