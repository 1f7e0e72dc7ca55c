"""Sweep files and expansion: pure functions, checked against hand-counted grids."""

from __future__ import annotations

import pytest
import yaml

from runner.spec.constraints import ConstraintError, parse_constraint
from runner.search.expand import expand_grid, shared_extractions
from runner.spec.trial_spec import PARAMETERS
from runner.spec.sweep import load_sweep, sweep_from_mapping
from zoo.errors import UserError

BASE = {"name": "s", "data": {"root": "examples/seals"}}
FEATURES = {"backbone": ["mobilenet_v2"], "weights": ["none"], "frame_size": ["32x32"]}


def sweep(space, **extra):
    return sweep_from_mapping({**BASE, "space": space, **extra}, "s.yaml")


def test_the_issue_example_expands_to_the_hand_counted_grid(tmp_path):
    text = """
name: seals-lrcnn
data: {root: examples/seals}
training: {epochs: 20, patience: 3, learning_rates: [1.0e-3, 1.0e-4, 1.0e-5], batch_size: 32, seed: 0}
search: {strategy: grid, metric: val_accuracy, direction: maximize}
space:
  - architecture: [video_lrcnn_frozen]
    backbone: [mobilenet_v2, resnet50]
    weights: [none]
    pooling: [max, avg]
    frame_size: [96x96]
    sequence_length: [5, 10]
    sequence_model: [LSTM, GRU, Conv1D]
    sequence_model_layers: [1, 2]
    layer_1_size: [64, 128]
    layer_2_size: [0, 64]
    dropout: [0.2]
constraints: ["layer_2_size <= layer_1_size"]
"""
    (tmp_path / "s.yaml").write_text(text)
    result = expand_grid(load_sweep(tmp_path / "s.yaml"), "fp")
    # 2 backbones x 2 pools x 2 lengths x 3 models x 2 stacks x 2 l1 x 2 l2 = 192 combinations, none invalid,
    # and sequence_model_layers=2 with layer_2_size=0 builds the same model as 1 layer: 2*2*2*3*2 = 48 collapse.
    assert result.combinations == 192
    assert result.duplicates == 48 and len(result.trials) == 144 and not result.dropped
    assert len(set(result.keys)) == 144
    assert shared_extractions(result.trials) == {"mobilenet_v2/max/96x96/none": 36, "mobilenet_v2/avg/96x96/none": 36,
                                                 "resnet50/max/96x96/none": 36, "resnet50/avg/96x96/none": 36}


def test_research_style_nested_grid_per_architecture():
    result = expand_grid(sweep([
        {"architecture": ["image_MLP_frozen"], **FEATURES, "layer_1_size": [0, 64], "layer_2_size": [0, 32],
         "sequence_length": [1, 5]},
        {"architecture": ["C3D", "c3dsmall"], "sequence_length": [8, 16]},
        {"architecture": ["video_lrcnn_frozen"], **FEATURES, "sequence_length": [3], "sequence_model": ["Conv1D"],
         "convolution_kernel_size": [2, 3], "layer_1_size": [8]},
    ]), "fp")
    # image: 2x2x2 = 8 combinations, sequence_length collapses (4 duplicates), l1=0/l2=32 invalid (2 of them)
    # c3d family: neither can pool 8 frames, both work with 16; lrcnn: kernel 3 >= length 3 is dropped
    assert result.per_subspace == [3, 2, 1]
    assert result.duplicates == 3
    assert sum(result.dropped.values()) == 2 + 2 + 1
    assert result.trials[0].model.architecture == "image_mlp_frozen"


def test_order_is_deterministic_and_last_key_varies_fastest():
    space = [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [8, 16], "dropout": [0.1, 0.2]}]
    first = expand_grid(sweep(space), "fp")
    assert [(t.model.layer_1_size, t.model.dropout) for t in first.trials] == [(8, .1), (8, .2), (16, .1), (16, .2)]
    assert expand_grid(sweep(space), "fp").keys == first.keys


@pytest.mark.parametrize("change, message", [
    ({"colour": "red"}, "colour: unknown key"),
    ({"search": {"strategy": "annealing"}}, "search.strategy: Input should be 'grid'"),
    ({"training": {"epochs": "many"}}, "training.epochs"),
    ({"space": []}, "space: List should have at least 1 item"),
    ({"space": [{}]}, "sub-space 0 is empty"),
    ({"space": [{"architecture": ["c3d"], "layers": [1]}]}, "unknown parameter 'layers'"),
    ({"space": [{"architecture": ["c3d"], "sequence_length": []}]}, "sequence_length has no values"),
    ({"space": [{"architecture": ["image_mlp_frozen"], "layer_1_size": {"low": 8, "high": 64}}]},
     "space.0.layer_1_size: a range cannot be used by the grid strategy"),
    ({"search": {"strategy": "optuna"}}, "search.trials: the optuna strategy needs a trial budget"),
    ({"name": "../escape"}, "name: use letters, digits"),
    ({"constraints": ["__import__('os').system('true')"]}, "function calls are not allowed"),
    ({"constraints": ["layer_1_size.real > 1"]}, "attribute access are not allowed"),
    ({"constraints": ["colour > 1"]}, "unknown parameter 'colour'"),
])
def test_schema_errors_are_one_line_with_file_and_key_path(change, message):
    data = {**BASE, "space": [{"architecture": ["c3d"]}], **change}
    with pytest.raises(UserError) as raised:
        sweep_from_mapping(data, "bad.yaml")
    text = str(raised.value)
    assert text.startswith("bad.yaml: ") and message in text and "\n" not in text


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nspace: [\n  - a: b\n")
    with pytest.raises(UserError, match=r"broken.yaml: malformed YAML at line \d+"):
        load_sweep(path)


def test_bad_values_inside_the_space_name_the_sub_space():
    with pytest.raises(UserError, match="space.0: architecture: .*unknown architecture 'lenet'"):
        expand_grid(sweep([{"architecture": ["lenet"]}]), "fp")
    with pytest.raises(UserError, match="space.0: frame_size"):
        expand_grid(sweep([{"architecture": ["c3d"], "frame_size": ["-1x4"]}]), "fp")


@pytest.mark.parametrize("expression, params, holds", [
    ("layer_2_size <= layer_1_size", {"layer_1_size": 64, "layer_2_size": 32}, True),
    ("layer_2_size <= layer_1_size", {"layer_1_size": 16, "layer_2_size": 32}, False),
    ("not (sequence_model == 'Conv1D' and sequence_length < 5)", {"sequence_model": "Conv1D",
                                                                  "sequence_length": 3}, False),
    ("backbone in ['vgg16', 'resnet50'] or layer_1_size * 2 >= 64", {"backbone": "xception", "layer_1_size": 32}, True),
    ("1 < sequence_length <= 10", {"sequence_length": 11}, False),
    ("layer_2_size <= layer_1_size", {"layer_1_size": None, "layer_2_size": 3}, True),
])
def test_constraint_language(expression, params, holds):
    assert parse_constraint(expression, set(PARAMETERS)).holds(params) is holds


@pytest.mark.parametrize("expression", ["open('x')", "().__class__", "[x for x in y]", "lambda: 1", "a[0]",
                                        "layer_1_size if 1 else 2", "(x := 1)", "f'{layer_1_size}'"])
def test_constraint_language_refuses_code(expression):
    with pytest.raises(ConstraintError):
        parse_constraint(expression, set(PARAMETERS) | {"a", "x", "y"})


def test_example_sweeps_validate():
    from tests.conftest import ROOT

    paths = sorted((ROOT / "sweeps").glob("*.yaml"))
    assert paths, "no example sweep found under sweeps/"
    for path in paths:
        sweep_ = load_sweep(path)
        assert sweep_.name and yaml.safe_load(sweep_.to_yaml())["name"] == sweep_.name


def test_the_tracking_uri_is_the_flag_then_the_environment_then_the_sweep_file_then_the_workdir(tmp_path,
                                                                                               monkeypatch):
    from runner.execution.context import resolve_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    plain, named = sweep([{"architecture": ["image_mlp"]}]), sweep([{"architecture": ["image_mlp"]}],
                                                                   tracking={"uri": "http://file:5000"})
    assert resolve_tracking_uri(plain, tmp_path, None) == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    assert resolve_tracking_uri(named, tmp_path, None) == "http://file:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(named, tmp_path, None) == "http://env:5000"
    assert resolve_tracking_uri(named, tmp_path, "http://flag:5000") == "http://flag:5000"
