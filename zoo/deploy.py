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


def frames_to_features(spec: ModelSpec) -> keras.Model:
    """The part a frozen-feature head is fed by: raw frames (a window of them for windowed architectures) in,
    backbone features out, with the weights (file or seeded init) the features came from."""
    import keras

    from zoo.backbones import build_backbone

    model_spec = zoo.validated_spec(spec)
    backbone = build_backbone(model_spec)
    height, width = model_spec.input_shape_hw
    if is_windowed(model_spec):
        inputs = keras.Input((model_spec.sequence_length, height, width, 3), name="frames")
        features = keras.layers.TimeDistributed(backbone, name="frame_features")(inputs)
    else:
        inputs = keras.Input((height, width, 3), name="frames")
        features = backbone(inputs)
    return keras.Model(inputs, features, name="frames_to_features")


def head_of(trained: keras.Model) -> keras.Model:
    import keras

    return keras.Model(trained.inputs[0], trained.outputs[0], name="head")  # one tensor in, one out


def join_backbone(spec: ModelSpec, trained: keras.Model, front: keras.Model | None = None) -> keras.Model:
    """The trained model if it already takes frames; else backbone (+TimeDistributed) joined to the head.
    `front` is an already built `frames_to_features(spec)` to reuse."""
    import keras

    arch = zoo.get_architecture(spec.architecture)
    if arch.inputs == "frames":
        return trained
    front = front if front is not None else frames_to_features(spec)
    return keras.Model(front.inputs[0], head_of(trained)(front.outputs[0]), name=f"{arch.name}_on_frames")
