"""ImageNet backbones: registration, weights resolution (offline only) and the feature-extractor model.

Every backbone model built here takes RGB frames in [0, 255] and carries its own preprocessing as
built-in Keras layers, so a saved model needs no custom objects and no caller has to remember which
`preprocess_input` goes with which network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.errors import UserError
from zoo.registry import Backbone, get_backbone, register_backbone

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from zoo.spec import ModelSpec

# Keras names its cached "no top" files after the application; mobilenet_v2 also after alpha and rows.
register_backbone(Backbone("vgg16", "VGG16", "caffe", 224, 32,
                           "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", 512, ("vgg",)))
register_backbone(Backbone("resnet50", "ResNet50", "caffe", 224, 32,
                           "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", 2048, ("resnet",),
                           freeze_for_extraction=True))
register_backbone(Backbone("inception_v3", "InceptionV3", "tf", 299, 75,
                           "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", 2048, ("inceptionv3",)))
register_backbone(Backbone("xception", "Xception", "tf", 299, 71,
                           "xception_weights_tf_dim_ordering_tf_kernels_notop.h5", 2048, (),
                           freeze_for_extraction=True))
register_backbone(Backbone("inception_resnet_v2", "InceptionResNetV2", "tf", 299, 75,
                           "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5", 1536,
                           ("inceptionresnetv2",)))
register_backbone(Backbone("mobilenet_v2", "MobileNetV2", "tf", 224, 32,
                           "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5", 1280,
                           ("mobilenetv2", "mobilenetv2_1.00_224"), freeze_for_extraction=True))

CAFFE_MEANS_BGR = (103.939, 116.779, 123.68)
RANDOM_INIT_SEED = 1234  # weights: none must give the same network in every process (features are cached)


def keras_models_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "models"


def imagenet_weights_file(backbone: Backbone, frame_size: tuple[int, int]) -> Path:
    rows = frame_size[1]
    if backbone.name == "mobilenet_v2":  # Keras picks the 224 file unless the frames are square and listed
        rows = rows if frame_size[0] == frame_size[1] and rows in (96, 128, 160, 192, 224) else 224
    return keras_models_dir() / backbone.imagenet_file.format(rows=rows)


def resolve_weights(spec: ModelSpec) -> Path | None:
    """The weights file to load into the backbone, None for random init; never downloads."""
    assert spec.backbone is not None and spec.frame_size is not None
    if spec.weights == "none":
        return None
    if spec.weights == "imagenet":
        path = imagenet_weights_file(get_backbone(spec.backbone), spec.frame_size)
        if not path.is_file():
            raise UserError(
                f"ImageNet weights for {spec.backbone} are not cached (looked for {path}); `videosweep weights "
                f"fetch --backbone {spec.backbone} --frame-size {spec.frame_size[0]}x{spec.frame_size[1]}` downloads them (a sweep's preflight does it for you), or use "
                "weights: none, or weights: /path/to/weights.h5"
            )
        return path
    path = Path(spec.weights).expanduser()
    if not path.is_file():
        raise UserError(f"weights file {spec.weights} does not exist")
    return path


def preprocessing_layer(backbone: Backbone) -> keras.layers.Layer:
    """The backbone's own input preprocessing from built-in layers (saved models stay self-contained)."""
    import keras
    import numpy as np

    if backbone.preprocessing == "tf":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=f"{backbone.name}_preprocess")
    # caffe: RGB -> BGR then subtract the ImageNet means, as a frozen 1x1 convolution.
    kernel = np.zeros((1, 1, 3, 3), dtype="float32")
    for out_channel in range(3):
        kernel[0, 0, 2 - out_channel, out_channel] = 1.0
    layer = keras.layers.Conv2D(3, 1, name=f"{backbone.name}_preprocess", trainable=False)
    layer.build((None, None, None, 3))
    layer.set_weights([kernel, -np.asarray(CAFFE_MEANS_BGR, dtype="float32")])
    return layer


def build_backbone(spec: ModelSpec, trainable_last_layers: int = 0) -> keras.Model:
    """frames (H, W, 3) in [0, 255] -> pooled features, with all but the last N backbone layers frozen."""
    import keras

    assert spec.backbone is not None and spec.frame_size is not None and spec.pooling is not None
    backbone = get_backbone(spec.backbone)
    weights = resolve_weights(spec)
    height, width = spec.input_shape_hw
    if weights is None:
        keras.utils.set_random_seed(RANDOM_INIT_SEED)
    base = getattr(keras.applications, backbone.application)(
        include_top=False, weights=None, input_shape=(height, width, 3), pooling=spec.pooling
    )
    if weights is not None:
        try:
            base.load_weights(str(weights))
        except Exception as err:  # a wrong file is user input, not a crash
            raise UserError(f"cannot load weights {weights} into {backbone.name}: {err}") from None
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= len(base.layers) - trainable_last_layers
    inputs = keras.Input((height, width, 3), name="frames")
    features = base(preprocessing_layer(backbone)(inputs))
    return keras.Model(inputs, features, name=f"{backbone.name}_{spec.pooling}")
