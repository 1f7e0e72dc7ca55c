"""Every architecture builds for several parameter sets with the shapes and layer stacks of the research code."""

from __future__ import annotations

import pytest

import zoo

LRCNN = {"architecture": "video_lrcnn_frozen", "backbone": "mobilenet_v2", "weights": "none", "frame_size": 32,
         "sequence_length": 6, "layer_1_size": 8}


def build(**values):
    return zoo.create_model(values, num_classes=3)


def layer_types(model):
    return [type(layer).__name__ for layer in model.layers]


@pytest.mark.parametrize("sequence_model", ["LSTM", "GRU", "SimpleRNN", "Conv1D"])
@pytest.mark.parametrize("stack, sizes", [(1, (8, 0, 0)), (2, (8, 6, 0)), (3, (8, 6, 4)), (1, (8, 6, 4))])
def test_lrcnn_head_stacks_like_the_research_code(sequence_model, stack, sizes):
    model = build(**{**LRCNN, "layer_1_size": sizes[0]}, sequence_model=sequence_model,
                  sequence_model_layers=stack, layer_2_size=sizes[1], layer_3_size=sizes[2], convolution_kernel_size=2)
    assert model.input_shape == (None, 6, 1280)
    assert model.output_shape == (None, 3)
    kinds = layer_types(model)
    recurrent = sum(k in ("LSTM", "GRU", "SimpleRNN", "Conv1D") for k in kinds)
    dense = sum(k == "Dense" for k in kinds) - 1  # minus the classifier
    nonzero = sum(1 for s in sizes if s)
    assert recurrent == min(stack, nonzero)
    assert dense == nonzero - recurrent


@pytest.mark.parametrize("sizes, dense_layers", [((0, 0, 0), 1), ((16, 0, 0), 2), ((16, 8, 4), 4)])
def test_mlp_heads(sizes, dense_layers):
    for architecture, shape in (("image_mlp_frozen", (None, 1280)), ("video_mlp_concat", (None, 4, 1280))):
        model = build(architecture=architecture, backbone="mobilenet_v2", weights="none", sequence_length=4,
                      layer_1_size=sizes[0], layer_2_size=sizes[1], layer_3_size=sizes[2], dropout=0.2)
        assert model.input_shape == shape
        assert layer_types(model).count("Dense") == dense_layers
        assert layer_types(model).count("Dropout") == dense_layers - 1


def test_trainable_architectures_fine_tune_the_last_three_backbone_layers():
    model = build(architecture="video_lrcnn_trainable", backbone="mobilenet_v2", weights="none", frame_size=32,
                  sequence_length=3, layer_1_size=4)
    assert model.input_shape == (None, 3, 32, 32, 3)
    backbone = model.get_layer("frame_features").layer
    base = backbone.layers[-1]
    assert [layer.trainable for layer in base.layers[-3:]] == [True] * 3
    assert not any(layer.trainable for layer in base.layers[:-3] if layer.weights)
    image = build(architecture="image_mlp_trainable", backbone="resnet50", weights="none", frame_size=32)
    assert image.input_shape == (None, 32, 32, 3)


def test_c3d_is_the_paper_network():
    model = build(architecture="C3D")
    assert model.input_shape == (None, 16, 112, 112, 3)
    names = [layer.name for layer in model.layers]
    for name in ("conv1", "conv2", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b", "fc6", "fc7"):
        assert name in names
    assert model.get_layer("fc6").units == model.get_layer("fc7").units == 4096
    small = build(architecture="c3dsmall")
    assert layer_types(small).count("Conv3D") == 6 and small.output_shape == (None, 3)


def test_caffe_preprocessing_matches_keras(seals):
    import keras
    import numpy as np

    from zoo.backbones import get_backbone, preprocessing_layer

    frames = np.random.default_rng(0).uniform(0, 255, size=(2, 8, 8, 3)).astype("float32")
    for name, reference in (("vgg16", keras.applications.vgg16.preprocess_input),
                            ("mobilenet_v2", keras.applications.mobilenet_v2.preprocess_input)):
        ours = np.asarray(preprocessing_layer(get_backbone(name))(frames))
        np.testing.assert_allclose(ours, reference(frames.copy()), atol=1e-4)


def test_invalid_specs_raise_with_the_reason():
    with pytest.raises(zoo.InvalidSpec, match="needs layer_1_size > 0"):
        build(architecture="video_lrcnn_frozen", backbone="vgg16", weights="none", sequence_length=3)


def test_imagenet_weights_are_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(zoo.UserError) as raised:
        build(architecture="image_mlp_frozen", backbone="resnet50")
    message = str(raised.value)
    assert str(tmp_path / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5") in message
    assert "weights: none" in message and "/path/to/weights.h5" in message
    with pytest.raises(zoo.UserError, match="weights file /no/such.h5 does not exist"):
        build(architecture="image_mlp_frozen", backbone="resnet50", weights="/no/such.h5")
