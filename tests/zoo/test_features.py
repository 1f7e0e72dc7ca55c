"""Batched, frozen feature extraction gives the features of the Keras backbone, frame for frame."""

from __future__ import annotations

import numpy as np
import pytest

from zoo import canonical_spec, load_dataset
from zoo.spec import ModelSpec


def perturbed_batchnorm_weights(path, frame_size: int) -> str:
    """MobileNetV2 weights whose batch-norms do something (random init leaves them at mean 0, variance 1, so
    folding them into the convolutions would go untested)."""
    import keras

    model = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(frame_size, frame_size, 3),
                                           pooling="avg")
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 2.0, variance.shape)])
    file = path / "mobilenet_v2_bn.weights.h5"
    model.save_weights(file)
    return str(file)


@pytest.mark.parametrize("freeze", [pytest.param(True, marks=pytest.mark.slow), False])
def test_extracted_features_equal_the_backbone_applied_frame_by_frame(seals, tmp_path, freeze):
    from zoo import registry
    from zoo.backbones import build_backbone
    from zoo.features import compiled_inference, extract_features
    from zoo.frames import read_frames

    assert registry.get_backbone("mobilenet_v2").freeze_for_extraction  # what extraction uses by default
    spec = canonical_spec(ModelSpec(architecture="image_mlp_frozen", backbone="mobilenet_v2", frame_size=64,
                                    weights=perturbed_batchnorm_weights(tmp_path, 64)))
    paths = load_dataset(seals).frame_paths[:45]  # one full batch of 32 and a padded one
    model = build_backbone(spec)
    expected = np.concatenate([model.predict(frame[None].astype("float32"), verbose=0)
                               for frame in read_frames(paths, spec.frame_size)])
    assert expected.std() > 1e-3  # the features vary: a comparison of zeros would prove nothing

    got = compiled_inference(model, 32, freeze=freeze)(read_frames(paths, spec.frame_size))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    if freeze:  # and through the whole pipeline, with decoding in threads (45 frames of 64x64: traced, not frozen)
        np.testing.assert_allclose(extract_features(paths, spec), expected, rtol=1e-4,
                                   atol=1e-5 * np.abs(expected).max())


def test_only_an_extraction_large_enough_to_repay_it_is_frozen():
    from zoo.features import FREEZE_FROM_FRAME_PIXELS, worth_freezing

    def spec(backbone: str, size: int) -> ModelSpec:
        return ModelSpec(architecture="image_mlp_frozen", backbone=backbone, frame_size=size, weights="none")

    assert not worth_freezing(spec("mobilenet_v2", 64), 725)  # the seals demo: 3 M frame-pixels, traced
    assert worth_freezing(spec("mobilenet_v2", 224), 725)  # 36 M
    assert worth_freezing(spec("mobilenet_v2", 100), FREEZE_FROM_FRAME_PIXELS // 100**2 + 1)
    assert not worth_freezing(spec("mobilenet_v2", 100), FREEZE_FROM_FRAME_PIXELS // 100**2 - 1)
    assert not worth_freezing(spec("vgg16", 224), 10_000)  # no batch-norm to fold: never worth it
