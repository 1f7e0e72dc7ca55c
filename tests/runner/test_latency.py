"""Latency of the end-to-end model: a frozen backbone is timed once per process and setting, each head per trial."""

from __future__ import annotations

import keras
import pytest

from runner import latency
from runner.spec import TrialSpec

SPEC = {"architecture": "image_mlp_frozen", "backbone": "mobilenet_v2", "weights": "none", "frame_size": 32,
        "layer_1_size": 8, "epochs": 1}


def head(width: int) -> keras.Model:
    inputs = keras.Input((1280,))
    hidden = keras.layers.Dense(width, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))


def test_the_backbone_is_timed_once_and_every_head_on_top_of_it():
    spec = TrialSpec.from_flat(SPEC).model
    latency._FRONTS.clear()
    small = latency.measure(spec, head(4))
    (front,) = latency._FRONTS.values()
    timings = front.timings
    assert timings is not None and timings.single > 0 and timings.batch > 0
    large = latency.measure(spec, head(4096))
    assert front.timings is timings  # the frozen backbone was not timed again
    for result in (small, large):  # the backbone's time is part of every trial's end-to-end latency
        assert result["model_latency_ms"] > 1000 * timings.single
        assert result["model_throughput_fps"] < latency.THROUGHPUT_BATCH / timings.batch
    assert large["model_e2e_param_count"] - small["model_e2e_param_count"] == \
        head(4096).count_params() - head(4).count_params()
    assert small["model_e2e_param_count"] == front.model.count_params() + head(4).count_params()
    assert small["model_size_mb"] == pytest.approx(small["model_e2e_param_count"] * 4 / 1e6)
