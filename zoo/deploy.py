"""The end-to-end model on raw frames: what `export` ships and what a trial's latency is measured on.

Frozen-feature architectures are trained on cached backbone features; joining the backbone (with its
preprocessing layers and the weights the features came from) to the trained head gives one model that takes
raw frames (RGB, 0-255). Architectures that already take frames are returned as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import zoo
from zoo.spec import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import keras


def is_windowed(spec: ModelSpec) -> bool:
    return "sequence_length" in zoo.get_architecture(spec.architecture).uses


def join_backbone(spec: ModelSpec, trained: keras.Model) -> keras.Model:
    """The trained model if it already takes frames; else backbone (+TimeDistributed) joined to the head."""
    import keras

    from zoo.backbones import build_backbone

    arch = zoo.get_architecture(spec.architecture)
    if arch.inputs == "frames":
        return trained
    model_spec = zoo.validated_spec(spec)
    backbone = build_backbone(model_spec)  # the same weights (file or seeded init) the features came from
    head = keras.Model(trained.inputs[0], trained.outputs[0], name="head")  # one tensor in, one out
    height, width = model_spec.input_shape_hw
    if is_windowed(model_spec):
        inputs = keras.Input((model_spec.sequence_length, height, width, 3), name="frames")
        features = keras.layers.TimeDistributed(backbone, name="frame_features")(inputs)
    else:
        inputs = keras.Input((height, width, 3), name="frames")
        features = backbone(inputs)
    return keras.Model(inputs, head(features), name=f"{arch.name}_on_frames")
