"""A first sweep on a fresh machine: `weights: imagenet` with an empty Keras cache fetches each file once, from a
local mirror on 127.0.0.1, before its workers start; offline it refuses with the recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli
from tests.zoo.test_weights import MOBILENET, WeightsServer, backbone_h5  # noqa: F401 - a fixture
from zoo import weights


def imagenet_sweep(folder: Path, data: Path) -> Path:
    path = folder / "first.yaml"
    path.write_text(yaml.safe_dump({
        "name": "first", "data": {"root": str(data)},
        "training": {"epochs": 1, "patience": 1, "learning_rates": [1e-3], "batch_size": 64},
        "space": [{"architecture": ["image_mlp_frozen"], "backbone": ["mobilenet_v2"], "weights": ["imagenet"],
                   "frame_size": ["32x32"], "layer_1_size": [0, 8]}]}))
    return path


@pytest.fixture
def mirror(tmp_path: Path, backbone_h5: bytes):  # noqa: F811 - the fixture imported above
    served = WeightsServer()
    served.serve("mobilenet_v2", MOBILENET, backbone_h5)
    yield served, {"KERAS_HOME": str(tmp_path / "keras"), weights.MIRROR_ENV: served.url,
                   weights.OFFLINE_ENV: "0"}
    served.httpd.shutdown()


def test_offline_a_sweep_refuses_before_anything_is_written(tmp_path, tiny_seals, mirror):
    served, env = mirror
    sweep = imagenet_sweep(tmp_path, tiny_seals)
    refused = run_cli("--offline", "run", str(sweep), "--workdir", str(tmp_path / "work"), env=env)
    assert refused.returncode == 2, refused.stderr
    assert "weights fetch SWEEP_FILE --to DIR" in refused.stderr and MOBILENET in refused.stderr
    assert served.count("mobilenet_v2", MOBILENET) == 0 and not (tmp_path / "work").exists()


@pytest.mark.slow
def test_a_first_sweep_fetches_its_weights_once_before_two_workers_start_and_trains(tmp_path, tiny_seals, mirror,
                                                                                     cache_dir, backbone_h5):  # noqa: F811
    served, env = mirror
    sweep, workdir = imagenet_sweep(tmp_path, tiny_seals), tmp_path / "work"
    planned = run_cli("plan", str(sweep), "--workdir", str(workdir), env=env)
    assert planned.returncode == 0, planned.stderr
    assert f"weights to fetch before the workers start: {MOBILENET} (" in planned.stdout
    as_json = json.loads(run_cli("plan", str(sweep), "--workdir", str(workdir), "--json", env=env).stdout)
    assert as_json["weights"][0]["bytes"] == len(backbone_h5)
    ran = run_cli("run", str(sweep), "--workdir", str(workdir), "--workers", "2", env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert served.count("mobilenet_v2", MOBILENET) == 1
    assert f"fetched {MOBILENET}" in ran.stdout and "sha256 recorded" in ran.stdout
    assert (tmp_path / "keras" / "models" / MOBILENET).read_bytes() == backbone_h5
    assert "finished 2, failed 0" in ran.stdout
    again = run_cli("run", str(sweep), "--workdir", str(workdir), env=env)
    assert again.returncode == 0 and served.count("mobilenet_v2", MOBILENET) == 1


def test_train_fetches_through_the_same_code_and_offline_refuses_with_the_recipe(tmp_path, tiny_seals, mirror):
    served, env = mirror
    args = ["train", "--data", str(tiny_seals), "--out", str(tmp_path / "out"), "--set", "architecture=image_mlp_frozen",
            "--set", "backbone=mobilenet_v2", "--set", "frame_size=32x32", "--set", "weights=imagenet"]
    refused = run_cli("--offline", *args, env=env)
    assert refused.returncode == 2 and "weights fetch SWEEP_FILE --to DIR" in refused.stderr
    assert served.count("mobilenet_v2", MOBILENET) == 0 and not (tmp_path / "out").exists()
