"""Latency of the end-to-end model: a frozen backbone is measured once per machine and setting (kept in the
cache folder's table), each head per trial."""

from __future__ import annotations

import json

import keras
import pytest

from runner import backends
from runner.trial import latency
from runner.tracking import provenance
from runner.spec.trial_spec import TrialSpec
from zoo.deploy import frames_to_features

SPEC = {"architecture": "image_mlp_frozen", "backbone": "mobilenet_v2", "weights": "none", "frame_size": 32,
        "layer_1_size": 8, "epochs": 1}


def head(width: int) -> keras.Model:
    inputs = keras.Input((1280,))
    hidden = keras.layers.Dense(width, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))


def table_entries(cache) -> list:
    return sorted((cache / "latency").glob("*.json"))


def test_the_backbone_is_measured_once_per_machine_and_every_head_on_top_of_it(tmp_path):
    spec = TrialSpec.from_flat(SPEC).model
    cache = tmp_path / "cache"
    latency._FRONTS.clear()
    small = latency.measure(spec, head(4), cache)
    (front,) = latency._FRONTS.values()
    timings = front.timings
    assert timings.single > 0 and timings.batch > 0
    large = latency.measure(spec, head(4096), cache)
    (still,) = latency._FRONTS.values()
    assert still is front  # the frozen backbone was not timed again
    for result in (small, large):  # the backbone's time is part of every trial's end-to-end latency
        assert result["model_latency_ms"] > 1000 * timings.single
        assert result["model_throughput_fps"] < latency.THROUGHPUT_BATCH / timings.batch
    assert large["model_e2e_param_count"] - small["model_e2e_param_count"] == \
        head(4096).count_params() - head(4).count_params()
    backbone = frames_to_features(spec).count_params()
    assert front.param_count == backbone
    assert small["model_e2e_param_count"] == backbone + head(4).count_params()
    assert small["model_size_mb"] == pytest.approx(small["model_e2e_param_count"] * 4 / 1e6)

    # Another process on this machine (the memo emptied) reads the table instead of timing the backbone again.
    (entry,) = table_entries(cache)
    assert json.loads(entry.read_text())["key"] == latency.front_key(spec)
    latency._FRONTS.clear()
    assert latency.front_figures(spec, cache) == front  # the same floats: read, not timed again


@pytest.mark.parametrize("damage", ["not json", '{"key": null, "single": 1, "batch": 1, "param_count": 1}',
                                    "negative", "another key"])
def test_a_damaged_or_foreign_table_entry_is_measured_again(tmp_path, damage):
    spec = TrialSpec.from_flat(SPEC).model
    cache = tmp_path / "cache"
    latency._FRONTS.clear()
    measured = latency.front_figures(spec, cache)
    (entry,) = table_entries(cache)
    stored = json.loads(entry.read_text())
    if damage == "negative":
        entry.write_text(json.dumps({**stored, "single": -1.0}))
    elif damage == "another key":  # e.g. another host's entry copied in with the cache folder
        entry.write_text(json.dumps({**stored, "key": {**stored["key"], "host": "elsewhere"}, "single": 1e-9}))
    else:
        entry.write_text(damage)
    latency._FRONTS.clear()
    again = latency.front_figures(spec, cache)
    assert again.param_count == measured.param_count and again.timings.single > 1e-9
    assert json.loads(entry.read_text())["key"] == latency.front_key(spec)  # the entry was measured and rewritten


def test_the_table_key_names_the_setting_and_where_it_runs():
    spec = TrialSpec.from_flat(SPEC).model
    key = latency.front_key(spec)
    assert key["backbone"] == "mobilenet_v2" and key["frame_size"] == [32, 32] and key["frames"] == 1
    assert key["device"] == backends.device(backends.active()) and key["host"]
    assert key["backend"] == keras.backend.backend()
    windowed = TrialSpec.from_flat({**SPEC, "architecture": "video_lrcnn_frozen", "sequence_length": 4,
                                    "sequence_model": "GRU"}).model
    assert latency.front_key(windowed)["frames"] == 4


def test_the_device_has_one_name_wherever_it_is_written():
    """The latency table's key, the trial run's tag and results.json name the device the same way."""
    named = backends.device(keras.backend.backend())
    assert named.startswith(("CPU ", "GPU ")) and named.endswith("cores)") == named.startswith("CPU ")
    assert provenance.trial_tags(None, keras.backend.backend())["device"] == named
    assert backends.describe()["device"] == named == latency.front_key(TrialSpec.from_flat(SPEC).model)["device"]
