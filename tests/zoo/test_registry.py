"""The registry, spec parsing, canonicalisation and the zoo's validity verdicts (no TensorFlow needed)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

import zoo
from zoo import registry
from zoo.spec import ModelSpec, canonical_spec, invalid_reason


def spec(**values) -> ModelSpec:
    values.setdefault("weights", "none")
    return canonical_spec(ModelSpec.model_validate(values))


def test_lists_the_research_architectures_and_backbones():
    assert zoo.list_architectures() == [
        "c3d", "c3dsmall", "image_mlp_frozen", "image_mlp_trainable",
        "video_lrcnn_frozen", "video_lrcnn_trainable", "video_mlp_concat",
    ]
    assert zoo.list_backbones() == [
        "inception_resnet_v2", "inception_v3", "mobilenet_v2", "resnet50", "vgg16", "xception",
    ]


@pytest.mark.parametrize("research, canonical", [
    ({"architecture": "image_MLP_frozen", "pretrained_model_name": "mobilenetv2_1.00_224"},
     {"architecture": "image_mlp_frozen", "backbone": "mobilenet_v2"}),
    ({"architecture": "C3Dsmall"}, {"architecture": "c3dsmall"}),
    ({"architecture": "video_LRCNN_trainable", "backbone": "InceptionV3", "sequence_model": "Convolution1D",
      "sequence_length": 5, "layer_1_size": 4}, {"backbone": "inception_v3", "sequence_model": "Conv1D"}),
])
def test_research_spellings_are_accepted_case_insensitively(research, canonical):
    parsed = ModelSpec.model_validate(research)
    for key, value in canonical.items():
        assert getattr(parsed, key) == value


def test_unknown_names_list_the_choices():
    with pytest.raises(ValidationError, match="choose one of: c3d, c3dsmall"):
        ModelSpec(architecture="resnet_lstm")
    with pytest.raises(ValidationError, match="unknown backbone 'alexnet'"):
        ModelSpec(architecture="image_mlp_frozen", backbone="alexnet")
    with pytest.raises(ValidationError, match="extra"):
        ModelSpec.model_validate({"architecture": "c3d", "layers": 3})


@pytest.mark.parametrize("bad, message", [
    ({"frame_size": "0x96"}, r"frame_size\n.*frame_size '0x96' must be positive"),
    ({"frame_size": "-3x4"}, r"frame_size\n.*frame_size '-3x4' must look like 96x96"),
    ({"layer_1_size": -1}, r"layer_1_size\n.*greater than or equal to 0"),
    ({"sequence_length": 0}, r"sequence_length\n.*greater than or equal to 1"),
    ({"dropout": 1.5}, r"dropout\n.*less than 1"),
    ({"frame_size": "big"}, r"frame_size\n.*frame_size 'big' must look like 96x96"),
])
def test_negative_or_zero_sizes_are_refused(bad, message):
    with pytest.raises(ValidationError, match=message) as caught:
        ModelSpec.model_validate({"architecture": "video_lrcnn_frozen", **bad})
    assert caught.value.error_count() == 1  # only the bad field is blamed


def test_canonicalisation_resets_ignored_parameters_and_fills_defaults():
    a = spec(architecture="image_mlp_frozen", backbone="mobilenet_v2", sequence_length=10, sequence_model="GRU",
             layer_1_size=32)
    b = spec(architecture="image_mlp_frozen", backbone="mobilenet_v2", sequence_length=5, layer_1_size=32,
             convolution_kernel_size=7)
    assert a == b
    assert a.sequence_length == 1 and a.sequence_model is None
    assert a.frame_size == (224, 224) and a.pooling == "avg"
    c3d = spec(architecture="C3D", backbone="vgg16", layer_1_size=64)
    assert (c3d.frame_size, c3d.sequence_length, c3d.backbone, c3d.layer_1_size) == ((112, 112), 16, None, 0)
    lstm = spec(architecture="video_lrcnn_frozen", backbone="xception", sequence_length=4, layer_1_size=8,
                convolution_kernel_size=2)
    assert lstm.convolution_kernel_size == 3  # only Conv1D uses it
    assert lstm.frame_size == (299, 299)


@pytest.mark.parametrize("values, reason", [
    ({"architecture": "c3d", "sequence_length": 8}, "cannot pool a window of 8 frames"),
    ({"architecture": "c3dsmall", "frame_size": "53x53"}, "cannot pool"),
    ({"architecture": "c3dsmall", "sequence_length": 10}, "cannot pool a window of 10 frames"),
    ({"architecture": "video_lrcnn_frozen", "backbone": "vgg16", "sequence_length": 3, "layer_1_size": 8,
      "sequence_model": "Conv1D", "convolution_kernel_size": 3}, "must be less than sequence_length"),
    ({"architecture": "video_lrcnn_frozen", "backbone": "vgg16", "sequence_length": 4, "layer_1_size": 8,
      "layer_2_size": 8, "sequence_model_layers": 2, "sequence_model": "Conv1D", "convolution_kernel_size": 3},
     "need sequence_length >= 5"),
    ({"architecture": "video_lrcnn_frozen", "backbone": "vgg16", "sequence_length": 5, "layer_1_size": 0},
     "needs layer_1_size > 0"),
    ({"architecture": "image_mlp_frozen", "backbone": "vgg16", "layer_1_size": 0, "layer_2_size": 8},
     "layer_1_size is 0 but a later layer size is not"),
    ({"architecture": "video_lrcnn_trainable", "sequence_length": 5, "layer_1_size": 8}, "needs a backbone"),
    ({"architecture": "video_mlp_concat", "backbone": "vgg16"}, "needs sequence_length > 1"),
    ({"architecture": "image_mlp_frozen", "backbone": "inception_v3", "frame_size": 64}, "at least 75x75"),
])
def test_invalid_combinations_get_the_zoos_reason(values, reason):
    assert reason in (invalid_reason(spec(**values)) or "")


@pytest.mark.parametrize("values", [
    {"architecture": "c3d"},
    {"architecture": "c3d", "frame_size": 16, "sequence_length": 16},
    {"architecture": "c3dsmall", "frame_size": 54, "sequence_length": 11},
    {"architecture": "video_lrcnn_frozen", "backbone": "vgg16", "sequence_length": 5, "layer_1_size": 8,
     "layer_2_size": 8, "sequence_model_layers": 2, "sequence_model": "Conv1D", "convolution_kernel_size": 2},
])
def test_valid_combinations_pass(values):
    assert invalid_reason(spec(**values)) is None


def test_a_new_architecture_is_one_decorator():
    @zoo.register_architecture("tiny_test_arch", inputs="features", uses=("backbone", "pooling"),
                               aliases=("TinyTest",))
    def tiny(spec, num_classes):
        """A test architecture."""
        raise NotImplementedError

    try:
        assert "tiny_test_arch" in zoo.list_architectures()
        assert ModelSpec(architecture="TINYTEST").architecture == "tiny_test_arch"
        assert zoo.get_architecture("tiny_test_arch").description == "A test architecture."
        with pytest.raises(ValueError, match="registered twice"):
            zoo.register_architecture("tiny_test_arch", inputs="features", uses=())(tiny)
    finally:
        registry._ARCHITECTURES.pop("tiny_test_arch")
        registry._ALIASES["architecture"].pop("tiny_test_arch")
        registry._ALIASES["architecture"].pop("tinytest")
