"""Real training on the real seals frames: every architecture, the cache, determinism and the artefacts."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from runner.spec.trial_spec import TrialSpec
from runner.trial.training import run_trial
from zoo import cache, load_dataset

FAST = {"weights": "none", "epochs": 2, "learning_rates": [1e-3, 1e-4], "patience": 1, "batch_size": 16}
ARTEFACTS = {"params.json", "results.json", "fit_history.csv", "confusion_matrix.png", "confusion_matrix.csv",
             "confusion_matrix_normalized.png", "confusion_matrix_normalized.csv", "model_summary.txt",
             "test_predictions.npy", "model_best.keras", "test_windows.csv", ".videosweep-trial"}

CASES = {
    "image_mlp_frozen": ("seals", {"backbone": "mobilenet_v2", "frame_size": 32, "layer_1_size": 16, "dropout": 0.2}),
    "video_mlp_concat": ("seals", {"backbone": "mobilenet_v2", "frame_size": 32, "sequence_length": 3,
                                   "layer_1_size": 8}),
    "video_lrcnn_frozen": ("seals", {"backbone": "mobilenet_v2", "frame_size": 32, "sequence_length": 4,
                                     "sequence_model": "GRU", "sequence_model_layers": 2, "layer_1_size": 8,
                                     "layer_2_size": 4}),
    "image_mlp_trainable": ("tiny", {"backbone": "mobilenet_v2", "frame_size": 32, "layer_1_size": 8}),
    "video_lrcnn_trainable": ("tiny", {"backbone": "mobilenet_v2", "frame_size": 32, "sequence_length": 3,
                                       "sequence_model": "Conv1D", "convolution_kernel_size": 2, "layer_1_size": 4}),
    "c3d": ("tiny", {"frame_size": 16, "sequence_length": 16}),
    "c3dsmall": ("tiny", {"frame_size": 56, "sequence_length": 11}),
}


@pytest.fixture(scope="module")
def datasets(seals, tiny_seals, cache_dir):
    return {"seals": load_dataset(seals), "tiny": load_dataset(tiny_seals)}


# The fast tier trains the two quickest architectures; the slow tier every one.
QUICK = ("image_mlp_frozen", "video_mlp_concat")


@pytest.mark.parametrize("architecture", [a if a in QUICK else pytest.param(a, marks=pytest.mark.slow)
                                          for a in sorted(CASES)])
def test_every_architecture_trains_on_real_frames(architecture, datasets, tmp_path, cache_dir):
    data, params = CASES[architecture]
    dataset = datasets[data]
    spec = TrialSpec.from_flat({"architecture": architecture, **FAST, **params})
    results = run_trial(spec, dataset, tmp_path / "trial", cache_dir=cache_dir)
    out = tmp_path / "trial"
    assert {p.name for p in out.iterdir()} == ARTEFACTS
    saved = json.loads((out / "results.json").read_text())
    assert saved["architecture"] == architecture
    for key in ("data_total_rows_train", "data_total_rows_valid", "data_total_rows_test", "fit_best_round",
                "fit_dt_train_start", "fit_dt_train_end", "fit_dt_train_duration_seconds", "fit_dt_test_start",
                "fit_num_epochs", "fit_stopped_epoch1", "fit_stopped_epoch2", "fit_train_acc", "fit_train_loss",
                "fit_val_acc", "fit_val_loss", "fit_test_acc", "fit_test_loss", "model_param_count"):
        assert key in saved, key
    # deployment figures of the end-to-end model on raw frames (never a value: CI machines vary)
    for key in ("model_latency_ms", "model_throughput_fps", "model_e2e_param_count", "model_size_mb"):
        assert saved[key] > 0, key
    assert saved["model_e2e_param_count"] >= saved["model_param_count"] and saved["model_latency_device"]
    history = pd.read_csv(out / "fit_history.csv")
    splits = dataset.labels.split.value_counts()
    for split in ("train", "valid", "test"):  # one row per window: at most one per frame, at least one per video
        rows = saved[f"data_total_rows_{split}"]
        videos = dataset.labels[dataset.labels.split == split].video.nunique()
        assert videos <= rows <= splits[split], (split, rows)
        if params.get("sequence_length", 1) == 1 and architecture.startswith("image"):
            assert rows == splits[split]
    assert saved["data_total_rows_test"] == len(pd.read_csv(out / "test_windows.csv"))
    assert saved["fit_best_round"] == int(history.loc[history.val_accuracy.idxmax(), "round"])
    assert saved["fit_val_acc"] == pytest.approx(history.val_accuracy.max())
    best = history[history["round"] == saved["fit_best_round"]]
    assert saved["fit_train_acc"] == pytest.approx(best.loc[best.val_accuracy.idxmax(), "accuracy"])
    for round_ in (1, 2):
        assert saved[f"fit_stopped_epoch{round_}"] == (history["round"] == round_).sum()
    for key in ("fit_train_acc", "fit_val_acc", "fit_test_acc"):
        assert 0 <= saved[key] <= 1, key
    for key in ("fit_train_loss", "fit_val_loss", "fit_test_loss"):
        assert 0 < saved[key] < 100, key
    started, ended = (pd.Timestamp(saved[f"fit_dt_train_{x}"]) for x in ("start", "end"))
    assert started <= ended <= pd.Timestamp(saved["fit_dt_test_start"])
    assert 0 < saved["fit_dt_train_duration_seconds"] <= (ended - started).total_seconds() + 1
    summary = (out / "model_summary.txt").read_text()  # Keras's own count; "Total" there adds optimizer state
    counts = [int(m.replace(",", "")) for m in re.findall(r"(?m)^ ?(?:Trainable|Non-trainable) params: ([\d,]+)",
                                                            summary)]
    assert len(counts) == 2 and saved["model_param_count"] == sum(counts) > 0, summary[-400:]
    assert list(history["round"].unique()) == [1, 2]
    assert list(history.step) == list(range(len(history))) and len(history) == saved["fit_num_epochs"]
    predictions = np.load(out / "test_predictions.npy")
    assert predictions.shape == (saved["data_total_rows_test"], 2)
    np.testing.assert_allclose(predictions.sum(axis=1), 1, atol=1e-5)
    matrix = pd.read_csv(out / "confusion_matrix.csv", index_col=0)
    assert list(matrix.columns) == ["noseal", "seal"] and matrix.to_numpy().sum() == len(predictions)
    assert (predictions.argmax(axis=1) == np.array(
        [dataset.classes.index(x) for x in pd.read_csv(out / "test_windows.csv").label])).mean() == \
        pytest.approx(results["fit_test_acc"], abs=1e-6)


@pytest.mark.slow  # trains two rounds
def test_best_round_is_kept_and_the_saved_model_reproduces_test_predictions(datasets, tmp_path, cache_dir):
    import keras

    from zoo.windows import gather_windows, window_ends

    dataset = datasets["seals"]
    spec = TrialSpec.from_flat({"architecture": "video_lrcnn_frozen", **FAST, **CASES["video_lrcnn_frozen"][1]})
    results = run_trial(spec, dataset, tmp_path / "t", cache_dir=cache_dir)
    history = pd.read_csv(tmp_path / "t" / "fit_history.csv")
    assert results["fit_val_acc"] == pytest.approx(history.val_accuracy.max())
    best_round = int(history.loc[history.val_accuracy.idxmax(), "round"])
    assert results["fit_best_round"] == best_round
    model = keras.models.load_model(tmp_path / "t" / "model_best.keras")
    features, hit = cache.load_features(dataset, spec.model, cache_dir)
    assert hit
    x = gather_windows(features, window_ends(dataset, "test", 4), 4, True)
    np.testing.assert_allclose(model.predict(x, verbose=0), np.load(tmp_path / "t" / "test_predictions.npy"),
                               atol=1e-5)


@pytest.mark.slow  # extracts features twice
def test_features_are_computed_once_and_reused(datasets, tmp_path):
    dataset = datasets["seals"]
    spec = TrialSpec.from_flat({"architecture": "image_mlp_frozen", **FAST, "epochs": 1,
                                "backbone": "vgg16", "frame_size": 32, "pooling": "max"})
    before = (cache.STATS.hits, cache.STATS.misses)
    first = run_trial(spec, dataset, tmp_path / "a", cache_dir=tmp_path / "cache")
    second = run_trial(spec, dataset, tmp_path / "b", cache_dir=tmp_path / "cache")
    assert (first["cache_hit"], second["cache_hit"]) == (False, True)
    assert (cache.STATS.hits - before[0], cache.STATS.misses - before[1]) == (1, 1)
    entries = list((tmp_path / "cache" / "features").rglob("*.npy"))
    assert len(entries) == 1 and np.load(entries[0]).shape == (725, 512)


def test_same_seed_same_training(datasets, tmp_path, cache_dir):
    spec = TrialSpec.from_flat({"architecture": "video_mlp_concat", **FAST, **CASES["video_mlp_concat"][1]})
    run_trial(spec, datasets["seals"], tmp_path / "a", cache_dir=cache_dir)
    run_trial(spec, datasets["seals"], tmp_path / "b", cache_dir=cache_dir)
    a, b = (pd.read_csv(tmp_path / x / "fit_history.csv").drop(columns="seconds") for x in ("a", "b"))
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow  # trains
def test_local_weights_file(datasets, tmp_path, cache_dir):
    import keras

    weights = tmp_path / "mobilenet.weights.h5"
    backbone = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3),
                                              pooling="avg")
    # All-zero weights give all-zero features, which no other weights (random `none` ones included) give.
    backbone.set_weights([np.zeros_like(w) for w in backbone.get_weights()])
    backbone.save_weights(weights)
    spec = TrialSpec.from_flat({"architecture": "image_mlp_frozen", **FAST, "epochs": 1, "backbone": "mobilenet_v2",
                                "frame_size": 32, "weights": str(weights)})
    results = run_trial(spec, datasets["seals"], tmp_path / "t", cache_dir=cache_dir)
    assert results["weights"] == str(weights)
    features, hit = cache.load_features(datasets["seals"], spec.model, cache_dir)
    assert hit and features.shape == (725, 1280)
    assert not np.any(features), "the features were not computed with the weights file"
    entries = [p for p in (cache_dir / "features").rglob("*.npy") if "file-" in p.name]
    assert len(entries) == 1 and not np.any(np.load(entries[0]))


def test_trial_keys_are_stable_and_canonical():
    a = TrialSpec.from_flat({"architecture": "image_MLP_frozen", "pretrained_model_name": "vgg16",
                             "sequence_length": 9, "weights": "none"})
    b = TrialSpec.from_flat({"architecture": "image_mlp_frozen", "backbone": "VGG16", "weights": "none"})
    assert a.key("fp") == b.key("fp") and len(a.key("fp")) == 12
    assert a.key("fp") != a.key("other-data")
    c = TrialSpec.from_flat({"architecture": "image_mlp_frozen", "backbone": "vgg16", "weights": "none", "seed": 1})
    assert c.key("fp") != a.key("fp")
