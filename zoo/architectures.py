"""The seven architectures of the research code, each registered next to its builder.

Behaviour follows "Deep Neural Networks for Video Classification" with two deliberate fixes: the loss is
categorical cross-entropy (the runner's job), and the research code's activation-less Dense/Conv1D layers
(two stacked linear maps collapse into one) use ReLU. Builders take a canonical spec and the class count and
return an uncompiled Keras model; `check` functions give the zoo's reason when a combination cannot be built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zoo.registry import get_backbone, register_architecture

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from zoo.spec import ModelSpec

BACKBONE_PARAMS = ("backbone", "weights", "pooling", "frame_size")
HEAD_PARAMS = ("layer_1_size", "layer_2_size", "layer_3_size", "dropout")
SEQUENCE_PARAMS = ("sequence_length", "sequence_model", "sequence_model_layers", "convolution_kernel_size")
BACKBONE_DEFAULTS = {"pooling": "avg"}
SEQUENCE_DEFAULTS = {**BACKBONE_DEFAULTS, "sequence_model": "LSTM", "sequence_model_layers": 1}
TRAINABLE_BACKBONE_LAYERS = 3  # as the research code: the last three backbone layers are fine-tuned


# ---------------------------------------------------------------- shared pieces


def _dense_head(x: Any, spec: ModelSpec, num_classes: int) -> Any:
    """0-3 Dense(relu)+Dropout layers, then softmax (layer sizes of 0 end the stack)."""
    from keras import layers

    for size in (spec.layer_1_size, spec.layer_2_size, spec.layer_3_size):
        if size == 0:
            break
        x = layers.Dense(size, activation="relu")(x)
        if spec.dropout > 0:
            x = layers.Dropout(spec.dropout)(x)
    return layers.Dense(num_classes, activation="softmax", name="predictions")(x)


def _sequence_layer(spec: ModelSpec, units: int, return_sequences: bool) -> Any:
    from keras import layers

    if spec.sequence_model == "Conv1D":
        return layers.Conv1D(units, spec.convolution_kernel_size, padding="valid", activation="relu")
    recurrent = {"LSTM": layers.LSTM, "GRU": layers.GRU, "SimpleRNN": layers.SimpleRNN}[spec.sequence_model]
    return recurrent(units, return_sequences=return_sequences, dropout=spec.dropout)


def _sequence_plan(spec: ModelSpec) -> tuple[bool, bool, bool]:
    """The research code's stacking rules: (layer 1 returns sequences, layer 2 does, layer 3 is recurrent).

    Layer 2 is a sequence layer only when layer 1 returns sequences; otherwise sizes past the stack are Dense.
    """
    stacked = spec.sequence_model_layers or 1
    first_returns = stacked > 1 and spec.layer_2_size > 0
    second_returns = stacked >= 2 and spec.layer_2_size > 0 and spec.layer_3_size > 0
    third_is_sequence = stacked == 3 and spec.layer_3_size > 0 and first_returns
    return first_returns, second_returns, third_is_sequence


def _sequence_head(x: Any, spec: ModelSpec, num_classes: int) -> Any:
    """1-3 stacked LSTM | GRU | SimpleRNN | Conv1D layers; sizes past the stack become Dense layers."""
    from keras import layers

    first_returns, second_returns, third_is_sequence = _sequence_plan(spec)
    x = _sequence_layer(spec, spec.layer_1_size, return_sequences=first_returns)(x)
    for size, is_sequence, returns_sequences in (
        (spec.layer_2_size, first_returns, second_returns),
        (spec.layer_3_size, third_is_sequence, False),
    ):
        if size == 0:
            break
        if is_sequence:
            x = _sequence_layer(spec, size, return_sequences=returns_sequences)(x)
            continue
        if len(x.shape) > 2:
            x = layers.Flatten()(x)
        x = layers.Dense(size, activation="relu")(x)
        if spec.dropout > 0:
            x = layers.Dropout(spec.dropout)(x)
    if len(x.shape) > 2:
        x = layers.Flatten()(x)
    if spec.dropout > 0:
        x = layers.Dropout(spec.dropout)(x)
    return layers.Dense(num_classes, activation="softmax", name="predictions")(x)


def _features_input(spec: ModelSpec, windowed: bool) -> Any:
    import keras

    assert spec.backbone is not None
    num_features = get_backbone(spec.backbone).num_features
    shape = (spec.sequence_length, num_features) if windowed else (num_features,)
    return keras.Input(shape, name="features")


def _frames_input(spec: ModelSpec, windowed: bool) -> Any:
    import keras

    height, width = spec.input_shape_hw
    shape = (spec.sequence_length, height, width, 3) if windowed else (height, width, 3)
    return keras.Input(shape, name="frames")


def _trainable_backbone(spec: ModelSpec) -> keras.Model:
    from zoo.backbones import build_backbone

    return build_backbone(spec, trainable_last_layers=TRAINABLE_BACKBONE_LAYERS)


def _model(inputs: Any, outputs: Any, spec: ModelSpec) -> keras.Model:
    import keras

    return keras.Model(inputs, outputs, name=spec.architecture)


# ---------------------------------------------------------------- validity checks


def _needs_window(spec: ModelSpec) -> str | None:
    if spec.sequence_length < 2:
        return f"{spec.architecture} needs sequence_length > 1"
    return None


def _check_sequence(spec: ModelSpec) -> str | None:
    reason = _needs_window(spec)
    if reason:
        return reason
    if spec.layer_1_size == 0:
        return f"{spec.architecture} needs layer_1_size > 0 (the first sequence layer)"
    if spec.sequence_model == "Conv1D":
        kernel = spec.convolution_kernel_size
        if kernel >= spec.sequence_length:
            return f"convolution_kernel_size {kernel} must be less than sequence_length {spec.sequence_length}"
        first_returns, _, third_is_sequence = _sequence_plan(spec)
        conv_layers = 1 + first_returns + third_is_sequence
        remaining = spec.sequence_length - conv_layers * (kernel - 1)
        if remaining < 1:
            return (
                f"{conv_layers} stacked Conv1D layers of kernel {kernel} need sequence_length >= "
                f"{conv_layers * (kernel - 1) + 1}"
            )
    return None


def _shrink(spec: ModelSpec, ops: tuple[tuple[str, int, int], ...]) -> str | None:
    """Walk a 3-D conv stack's (time, space) sizes; say why a window or frame is too small for it."""
    time, space = spec.sequence_length, min(spec.frame_size or (0, 0))
    for op, along_time, along_space in ops:
        if op == "conv":  # valid 3-D convolution
            time, space = time - along_time + 1, space - along_space + 1
        elif op == "pad":
            time, space = time + 2 * along_time, space + 2 * along_space
        else:  # pool
            if time < along_time or space < along_space:
                break
            time, space = time // along_time, space // along_space
        if time < 1 or space < 1:
            break
    else:
        return None
    return (
        f"{spec.architecture} cannot pool a window of {spec.sequence_length} frames of "
        f"{min(spec.frame_size or (0, 0))} px down to its classifier; use longer windows or larger frames"
    )


_C3D_OPS = (("pool", 1, 2), ("pool", 2, 2), ("pool", 2, 2), ("pool", 2, 2), ("pad", 0, 1), ("pool", 2, 2))
_C3D_SMALL_OPS = (
    ("conv", 3, 3), ("pool", 1, 2), ("conv", 3, 3), ("pool", 1, 2), ("conv", 3, 3), ("conv", 3, 3),
    ("pool", 1, 2), ("conv", 2, 2), ("conv", 2, 2), ("pool", 1, 2),
)


# ---------------------------------------------------------------- architectures


@register_architecture(
    "image_mlp_frozen", inputs="features", uses=BACKBONE_PARAMS + HEAD_PARAMS, defaults=BACKBONE_DEFAULTS
)
def image_mlp_frozen(spec: ModelSpec, num_classes: int) -> keras.Model:
    """One frame's precomputed backbone features -> 0-3 Dense(relu)+Dropout -> softmax."""
    inputs = _features_input(spec, windowed=False)
    return _model(inputs, _dense_head(inputs, spec, num_classes), spec)


@register_architecture(
    "image_mlp_trainable", inputs="frames", uses=BACKBONE_PARAMS + HEAD_PARAMS, defaults=BACKBONE_DEFAULTS
)
def image_mlp_trainable(spec: ModelSpec, num_classes: int) -> keras.Model:
    """One frame -> backbone (last 3 layers fine-tuned) -> Dense head -> softmax."""
    inputs = _frames_input(spec, windowed=False)
    return _model(inputs, _dense_head(_trainable_backbone(spec)(inputs), spec, num_classes), spec)


@register_architecture(
    "video_mlp_concat",
    inputs="features",
    uses=BACKBONE_PARAMS + HEAD_PARAMS + ("sequence_length",),
    defaults=BACKBONE_DEFAULTS,
    check=_needs_window,
)
def video_mlp_concat(spec: ModelSpec, num_classes: int) -> keras.Model:
    """A window of precomputed features, flattened -> Dense head -> softmax."""
    from keras import layers

    inputs = _features_input(spec, windowed=True)
    return _model(inputs, _dense_head(layers.Flatten()(inputs), spec, num_classes), spec)


@register_architecture(
    "video_lrcnn_frozen",
    inputs="features",
    uses=BACKBONE_PARAMS + HEAD_PARAMS + SEQUENCE_PARAMS,
    defaults=SEQUENCE_DEFAULTS,
    check=_check_sequence,
)
def video_lrcnn_frozen(spec: ModelSpec, num_classes: int) -> keras.Model:
    """A window of precomputed features -> 1-3 stacked sequence layers -> softmax (LRCNN, frozen CNN)."""
    inputs = _features_input(spec, windowed=True)
    return _model(inputs, _sequence_head(inputs, spec, num_classes), spec)


@register_architecture(
    "video_lrcnn_trainable",
    inputs="frames",
    uses=BACKBONE_PARAMS + HEAD_PARAMS + SEQUENCE_PARAMS + ("model_weights_path",),
    defaults=SEQUENCE_DEFAULTS,
    check=_check_sequence,
)
def video_lrcnn_trainable(spec: ModelSpec, num_classes: int) -> keras.Model:
    """TimeDistributed(backbone, last 3 layers trainable) -> the LRCNN sequence head, end to end on frames."""
    from keras import layers

    backbone = _trainable_backbone(spec)
    if spec.model_weights_path:
        backbone.load_weights(spec.model_weights_path)
    inputs = _frames_input(spec, windowed=True)
    features = layers.TimeDistributed(backbone, name="frame_features")(inputs)
    return _model(inputs, _sequence_head(features, spec, num_classes), spec)


def _c3d_conv(filters: int, name: str) -> Any:
    from keras import layers

    return layers.Conv3D(filters, 3, activation="relu", padding="same", name=name)


@register_architecture(
    "c3d",
    inputs="frames",
    uses=("frame_size", "sequence_length"),
    defaults={"frame_size": (112, 112), "sequence_length": 16},
    check=lambda spec: _shrink(spec, _C3D_OPS),
)
def c3d(spec: ModelSpec, num_classes: int) -> keras.Model:
    """C3D (Tran et al. 2015): conv1..conv5b, fc6/fc7 of 4096, trained from scratch on frame windows."""
    from keras import layers

    inputs = _frames_input(spec, windowed=True)
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = _c3d_conv(64, "conv1")(x)
    x = layers.MaxPooling3D((1, 2, 2), name="pool1")(x)
    x = _c3d_conv(128, "conv2")(x)
    x = layers.MaxPooling3D(2, name="pool2")(x)
    for block, filters in ((3, 256), (4, 512), (5, 512)):
        x = _c3d_conv(filters, f"conv{block}a")(x)
        x = _c3d_conv(filters, f"conv{block}b")(x)
        if block == 5:
            x = layers.ZeroPadding3D((0, 1, 1))(x)
        x = layers.MaxPooling3D(2, name=f"pool{block}")(x)
    x = layers.Flatten()(x)
    for name in ("fc6", "fc7"):
        x = layers.Dense(4096, activation="relu", name=name)(x)
        x = layers.Dropout(0.5)(x)
    return _model(inputs, layers.Dense(num_classes, activation="softmax", name="predictions")(x), spec)


@register_architecture(
    "c3dsmall",
    inputs="frames",
    uses=("frame_size", "sequence_length"),
    defaults={"frame_size": (112, 112), "sequence_length": 16},
    check=lambda spec: _shrink(spec, _C3D_SMALL_OPS),
    aliases=("c3d_small",),
)
def c3d_small(spec: ModelSpec, num_classes: int) -> keras.Model:
    """A small C3D: four Conv3D blocks (32-256 filters), Dense 256/128, from scratch on frame windows."""
    from keras import layers

    inputs = _frames_input(spec, windowed=True)
    x = layers.Rescaling(1.0 / 255)(inputs)
    for filters, kernel, repeats in ((32, 3, 1), (64, 3, 1), (128, 3, 2), (256, 2, 2)):
        for _ in range(repeats):
            x = layers.Conv3D(filters, kernel, activation="relu")(x)
        x = layers.MaxPooling3D((1, 2, 2))(x)
    x = layers.Flatten()(x)
    for units in (256, 128):
        x = layers.Dense(units, activation="relu")(x)
        x = layers.Dropout(0.5)(x)
    return _model(inputs, layers.Dense(num_classes, activation="softmax", name="predictions")(x), spec)
