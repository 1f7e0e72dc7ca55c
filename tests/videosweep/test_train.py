"""`videosweep train` through the real entry point: success prints results, bad input is one line + exit 2."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli, tree_snapshot

TINY = ["--set", "architecture=image_mlp_frozen", "--set", "backbone=mobilenet_v2", "--set", "weights=none",
        "--set", "frame_size=32x32", "--set", "epochs=1", "--set", "learning_rates=[0.001]"]


@pytest.mark.slow  # trains on the seals frames
def test_train_writes_the_trial_folder(seals, tmp_path, cache_dir):
    config = tmp_path / "trial.yaml"
    config.write_text("layer_1_size: 8\ndropout: 0.1\n")
    result = run_cli("train", "--data", str(seals), "--out", str(tmp_path / "out"), "--config", str(config), *TINY)
    assert result.returncode == 0, result.stderr
    params = json.loads((tmp_path / "out" / "params.json").read_text())
    assert params["layer_1_size"] == 8 and params["frame_size"] == "32x32" and params["dropout"] == 0.1
    assert params["learning_rates"] == [0.001] and params["epochs"] == 1 and params["weights"] == "none"
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["architecture"] == "image_mlp_frozen" and saved["fit_num_epochs"] == 1
    # what it prints is what it saved
    assert f"val_acc {saved['fit_val_acc']:.3f}, test_acc {saved['fit_test_acc']:.3f}" in result.stdout
    assert f"artefacts in {tmp_path / 'out'}" in " ".join(result.stdout.split())
    epochs = [line for line in result.stdout.splitlines() if line.startswith("round 1 epoch")]
    assert len(epochs) == 1 and f"val_acc {saved['fit_val_acc']:.3f}" in epochs[0]
    again = run_cli("train", "--data", str(seals), "--out", str(tmp_path / "out"), *TINY, "--overwrite")
    assert again.returncode == 0, again.stderr  # its own folder: --overwrite replaces it
    assert json.loads((tmp_path / "out" / "params.json").read_text())["layer_1_size"] == 0


@pytest.mark.parametrize("args, message", [
    (["--set", "architecture=resnet_lstm"], "unknown architecture 'resnet_lstm'; choose one of: c3d"),
    (["--set", "architecture=image_mlp_frozen", "--set", "backbone=alexnet"], "unknown backbone 'alexnet'"),
    (["--set", "architecture=image_mlp_frozen", "--set", "colour=red"], "unknown parameter 'colour'"),
    (["--set", "architecture=image_mlp_frozen", "--set", "backbone=vgg16", "--set", "pretrained_model_name=vgg19"],
     "pretrained_model_name and backbone name the same parameter"),
    (["--set", "architecture=image_mlp_frozen", "--set", "layer_1_size=big"], "layer_1_size"),
    (["--set", "architecture=video_lrcnn_frozen", "--set", "backbone=vgg16", "--set", "weights=none",
      "--set", "sequence_length=3"], "invalid combination: video_lrcnn_frozen needs layer_1_size > 0"),
    (["--set", "architecture=c3d", "--set", "frame_size=0x0"], "frame_size"),
    (["--set", "architecture=image_mlp_frozen", "--set", "backbone=vgg16", "--set", "weights=/nope.h5"],
     "weights file /nope.h5 does not exist"),
    (["--set", "architecture=image_mlp_frozen", "--set", "backbone=vgg16"], "ImageNet weights for vgg16 are not cached"),
    (["--set", "epochs"], "expected key=value"),
])
def test_bad_parameters_exit_2_with_one_line_and_write_nothing(seals, tmp_path, args, message):
    out = tmp_path / "out"
    result = run_cli("train", "--data", str(seals), "--out", str(out), *args,
                     env={"KERAS_HOME": str(tmp_path / "keras")})
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and tree_snapshot(tmp_path) == {}


def test_bad_data_exits_2(tmp_path, dataset_copy):
    result = run_cli("train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "out"), *TINY)
    assert result.returncode == 2 and "data folder" in result.stderr and "does not exist" in result.stderr
    root = dataset_copy()
    (root / "s26-8164" / "s26-8164-00005.jpeg").unlink()
    result = run_cli("train", "--data", str(root), "--out", str(tmp_path / "out"), *TINY)
    assert result.returncode == 2 and "missing on disk: s26-8164/s26-8164-00005.jpeg" in result.stderr
    assert not (tmp_path / "out").exists()


def test_existing_output_is_not_clobbered(seals, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_cli("train", "--data", str(seals), "--out", str(out), *TINY)
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_unwritable_output_folder(seals, tmp_path):
    blocker = tmp_path / "file"  # a path under a regular file is unwritable even for root
    blocker.write_text("x")
    result = run_cli("train", "--data", str(seals), "--out", str(blocker / "out"), *TINY,
                     env={"VIDEOSWEEP_CACHE": str(tmp_path / "c")})
    assert result.returncode == 2 and "not writable" in result.stderr, result.stderr
    assert blocker.read_text() == "x"
