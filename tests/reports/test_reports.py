"""Reports, best, export and predict on a real small sweep: built from MLflow, checked against MLflow."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.browser import ARTIFACTS, chromium, needs_chromium
from tests.conftest import SEALS, run_cli
from tests.runner.execution.test_run import FEATURES, write_sweep

pytestmark = pytest.mark.slow
SPACE = [
    {"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0, 8, 16]},
    {"architecture": ["video_lrcnn_frozen"], **FEATURES, "sequence_length": [3], "sequence_model": ["GRU"],
     "layer_1_size": [8]},
    {"architecture": ["image_mlp_trainable"], **FEATURES, "layer_1_size": [0]},
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, cache_dir):
    """A finished sweep of 5 trials (one fails by injection) tracked in its own SQLite MLflow store."""
    folder = tmp_path_factory.mktemp("reports")
    path = write_sweep(folder, SPACE, name="rep")
    workdir = folder / "work"
    result = run_cli("run", str(path), "--workdir", str(workdir), "--max-retries", "0",
                     env={"VIDEOSWEEP_FAULT": "raise:layer_1_size=16"})
    assert result.returncode == 1, result.stderr  # a trial failed for good
    return path, workdir


def mlflow_trials(workdir: Path) -> tuple[MlflowClient, list]:
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("rep").experiment_id
    runs = client.search_runs([experiment], "tags.`videosweep.role` = 'trial'")
    return client, runs


def majority_share(split: str, length: int) -> tuple[str, float]:
    """(class, share) of the majority class among the labels of `split`'s windows of `length` frames, counted
    from labels.csv: each video's frames from the length-th on (a window takes its last frame's label)."""
    labels = pd.read_csv(SEALS / "labels.csv", dtype=str)
    counts = (labels[labels.split == split].groupby("video", sort=False).label
              .apply(lambda v: v.iloc[length - 1:]).value_counts())
    return counts.idxmax(), counts.max() / counts.sum()


def without_timestamps(text: str) -> str:
    return re.sub(r"generated \d{4}-\d\d-\d\d \d\d:\d\d", "generated -", text)


def test_report_ranks_like_mlflow_embeds_its_images_and_is_stable(sweep, tmp_path):
    path, workdir = sweep
    out = tmp_path / "report"
    result = run_cli("report", str(path), "--workdir", str(workdir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    client, runs = mlflow_trials(workdir)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    # The expectation comes from the trials' own results.json files (not MLflow, not the report's code): best
    # validation accuracy first, ties by validation loss, then latency, fewer parameters, the key (never the test
    # split).
    saved = pd.DataFrame([json.loads(p.read_text()) for p in (workdir / "trials").glob("*/results.json")])
    expected = saved.sort_values(["fit_val_acc", "fit_val_loss", "model_latency_ms", "model_param_count",
                                  "trial_key"], ascending=[False, True, True, True, True])
    board = pd.read_csv(out / "leaderboard.csv", dtype={"trial_key": str})
    assert len(finished) == len(expected) == 4
    assert list(board.trial_key) == list(expected.trial_key)
    assert list(board["rank"]) == [1, 2, 3, 4]
    assert board.val_accuracy.tolist() == pytest.approx(expected.fit_val_acc.tolist())
    # each trial's margin is over the majority baseline of its own windows (image models: 1 frame; LRCNN: 3)
    lengths = [3 if arch == "video_lrcnn_frozen" else 1 for arch in board.architecture]
    assert set(lengths) == {1, 3}
    for split, column in (("valid", "val"), ("test", "test")):
        shares = [majority_share(split, length)[1] for length in lengths]
        assert board[f"{column}_majority_accuracy"].tolist() == pytest.approx(shares)
        assert board[f"{column}_margin"].tolist() == pytest.approx((board[f"{column}_accuracy"] - shares).tolist())
    markdown = (out / "leaderboard.md").read_text()
    assert markdown.count("\n| ") == len(finished) + 1 and board.trial_key[0] in markdown
    assert "val_margin" in markdown and "always answering the majority class scores" in markdown
    page = (out / "report.html").read_text()
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) >= 5 and all(src.startswith("data:image/png;base64,") for src in images)
    markup = re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.S)  # plotly.js inlined: its strings aside
    assert not re.search(r'(src|href)="(?!data:|http://127.0.0.1:5000/#)', markup)  # nothing to fetch
    assert not re.search(r"<script[^>]*\ssrc=", page)
    assert "Confusion matrix of the best trial" in page and "injected failure" in page
    parent = client.search_runs([runs[0].info.experiment_id], "tags.`videosweep.role` = 'sweep'")[0]
    for length in (1, 3):  # the parent run holds the baselines of every window length the sweep uses
        majority, share = majority_share("valid", length)
        assert parent.data.params[f"baseline.L{length}.val.majority_class"] == majority
        assert float(parent.data.params[f"baseline.L{length}.val.majority_accuracy"]) == pytest.approx(share)
    assert parent.data.params["baseline.chance"] == "0.5"
    header = re.search(r'<div class="cards">(.*?)</div><h2>', page, flags=re.S).group(1)
    assert "val majority baseline" in header and "test majority baseline (held out)" in header
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert logged == {"report/leaderboard.csv", "report/leaderboard.md", "report/report.html"}
    before = {f.name: f.read_text() for f in out.iterdir()}
    refused = run_cli("report", str(path), "--workdir", str(workdir), "--out", str(out))
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    again = run_cli("report", str(path), "--workdir", str(workdir), "--out", str(out), "--overwrite")
    assert again.returncode == 0
    after = {f.name: f.read_text() for f in out.iterdir()}
    assert {k: without_timestamps(v) for k, v in before.items()} == {k: without_timestamps(v) for k, v in after.items()}


@needs_chromium
def test_report_renders_in_chromium(sweep, tmp_path):
    path, workdir = sweep
    out = tmp_path / "report"
    assert run_cli("report", str(path), "--workdir", str(workdir), "--out", str(out)).returncode == 0
    url = (out / "report.html").as_uri()
    dom = chromium("--dump-dom", url, profile=tmp_path / "p1")
    assert dom.returncode == 0 and "Leaderboard" in dom.stdout and "Learning curves of the top" in dom.stdout
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    assert chromium(f"--screenshot={shot}", url, profile=tmp_path / "p2").returncode == 0
    image = cv2.imread(str(shot))
    assert image is not None and image.std() > 10  # a rendered page, not a blank one


def test_best_names_the_leaderboards_first_trial(sweep):
    path, workdir = sweep
    result = run_cli("best", str(path), "--workdir", str(workdir), "--json")
    assert result.returncode == 0, result.stderr
    best = json.loads(result.stdout)
    _, runs = mlflow_trials(workdir)
    top = max((r for r in runs if r.info.status == "FINISHED"),
              key=lambda r: (r.data.metrics["val_accuracy_best"], -r.data.metrics["val_loss_best"],
                             -r.data.metrics["latency_ms"], -r.data.metrics["param_count"]))
    assert best["run_id"] == top.info.run_id and best["value"] == pytest.approx(top.data.metrics["val_accuracy_best"])
    assert best["trial_key"] == top.data.tags["videosweep.trial_key"]
    length = 3 if top.data.params["architecture"] == "video_lrcnn_frozen" else 1
    majority, share = majority_share("valid", length)
    assert best["baselines"]["val"] == {"majority_accuracy": pytest.approx(share), "majority_class": majority,
                                        "chance": 0.5, "effective_units": 1.0}  # one validation video
    assert best["beats_baseline"] is False and best["val_interval"][0] < share < best["val_interval"][1]
    assert best["baselines"]["test"]["majority_accuracy"] == pytest.approx(majority_share("test", length)[1])
    assert best["val_margin"] == pytest.approx(best["value"] - share)
    # The parameters shown are the trial's own (params.json), less those its architecture ignores.
    saved = json.loads((workdir / "trials" / best["trial_key"] / "params.json").read_text())
    assert best["params"] and all(str(value) == str(saved[key]) for key, value in best["params"].items())
    ignored = {"image_mlp_frozen": {"convolution_kernel_size", "sequence_length", "sequence_model"},
               "image_mlp_trainable": {"convolution_kernel_size", "sequence_length", "sequence_model"},
               "video_lrcnn_frozen": {"convolution_kernel_size"}}[saved["architecture"]]
    assert not ignored & set(best["params"]), best["params"]
    assert {"architecture", "backbone", "frame_size", "layer_1_size"} <= set(best["params"])
    if saved["architecture"] == "video_lrcnn_frozen":
        assert best["params"]["sequence_model"] == "GRU" and best["params"]["sequence_length"] == 3


def trial_key(workdir: Path, architecture: str) -> str:
    _, runs = mlflow_trials(workdir)
    return next(r.data.tags["videosweep.trial_key"] for r in runs
                if r.data.params["architecture"] == architecture and r.info.status == "FINISHED")


@pytest.mark.parametrize("architecture", ["video_lrcnn_frozen", "image_mlp_trainable"])
def test_export_then_predict_reproduces_the_trials_test_predictions(sweep, tmp_path, architecture):
    path, workdir = sweep
    key = trial_key(workdir, architecture)
    out = tmp_path / "export"
    result = run_cli("export", str(path), "--workdir", str(workdir), "--trial", key, "--out", str(out))
    assert result.returncode == 0, result.stderr
    meta = json.loads((out / "export.json").read_text())
    assert json.loads((out / "labels.json").read_text()) == ["noseal", "seal"]
    assert meta["input"]["frame_size"] == "32x32" and meta["input"]["channel_order"] == "RGB"
    card = (out / "model_card.md").read_text()
    assert "Confusion matrix" in card and "convolution_kernel_size" not in card  # only Conv1D models have one
    length = 3 if architecture == "video_lrcnn_frozen" else 1
    majority, share = majority_share("test", length)
    assert f"| test (held out) | {majority} | {share:.4f} |" in card and "Chance (1 / 2 classes): 0.5000" in card
    predictions = tmp_path / "frame_predictions.csv"
    result = run_cli("predict", str(out), "--data", str(SEALS), "--out", str(predictions))
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(predictions, dtype={"error": str, "prediction": str}, keep_default_na=False)
    assert list(table.columns) == ["noseal", "seal", "prediction", "video", "frame", "label", "split", "error"]
    client, runs = mlflow_trials(workdir)
    run_id = next(r.info.run_id for r in runs if r.data.tags["videosweep.trial_key"] == key)
    expected = np.load(client.download_artifacts(run_id, "trial/test_predictions.npy", str(tmp_path)))
    windows = pd.read_csv(client.download_artifacts(run_id, "trial/test_windows.csv", str(tmp_path)))
    got = windows[["video", "frame"]].merge(table, on=["video", "frame"], how="left")[["noseal", "seal"]]
    np.testing.assert_allclose(got.to_numpy(dtype=float), expected, atol=1e-5)
    first_frames = table.groupby("video").head(meta["input"]["sequence_length"] - 1)
    assert (first_frames.prediction == "").all() and (first_frames.error == "").all()
    version = client.get_model_version_by_alias("rep", "champion")
    assert version.run_id == run_id
    registered = tmp_path / "registered.csv"
    assert run_cli("predict", "models:/rep@champion", "--sweep", str(path), "--workdir", str(workdir),
                   "--data", str(SEALS), "--out", str(registered)).returncode == 0
    assert registered.read_text() == predictions.read_text()


def write_video(path: Path, frames: list[Path], fps: float) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (176, 144))
    for frame in frames:
        writer.write(cv2.resize(cv2.imread(str(frame)), (176, 144)))
    writer.release()


def exported(sweep, tmp_path: Path, architecture: str) -> Path:
    """An unregistered export of the sweep's finished trial of `architecture`."""
    path, workdir = sweep
    out = tmp_path / "export"
    key = trial_key(workdir, architecture)
    assert run_cli("export", str(path), "--workdir", str(workdir), "--trial", key, "--out", str(out),
                   "--no-register").returncode == 0
    return out


def test_predict_reads_video_files_at_the_requested_rate(sweep, tmp_path):
    out = exported(sweep, tmp_path, "video_lrcnn_frozen")
    video = tmp_path / "clip.mp4"
    write_video(video, sorted((SEALS / "s26-8164").glob("*.jpeg"))[:48], fps=8.0)  # 6 s of video
    predictions = tmp_path / "video.csv"
    result = run_cli("predict", str(out), "--video", str(video), "--fps", "2", "--out", str(predictions))
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(predictions, dtype=str, keep_default_na=False)
    assert len(table) == 12 and table.time_seconds.astype(float).tolist() == pytest.approx(np.arange(12) / 2)
    assert (table.prediction.iloc[:2] == "").all() and (table.prediction.iloc[2:] != "").all()
    assert (table.label == "").all() and (table.error == "").all()
    probabilities = table[["noseal", "seal"]].iloc[2:].astype(float).sum(axis=1)
    assert probabilities.to_numpy() == pytest.approx(1.0, abs=1e-5)


def test_bad_models_and_mismatched_exports_are_one_line_errors(sweep, tmp_path):
    path, workdir = sweep
    out = exported(sweep, tmp_path, "image_mlp_frozen")
    cases = []
    broken = shutil.copytree(out, tmp_path / "no-labels")
    (broken / "labels.json").unlink()
    cases.append(([str(broken)], "has no labels.json"))
    resized = shutil.copytree(out, tmp_path / "resized")
    meta = json.loads((resized / "export.json").read_text())
    meta["input"].update(width=64, height=64, frame_size="64x64")
    (resized / "export.json").write_text(json.dumps(meta))
    cases.append(([str(resized)], "export.json says 64x64 frames but model.keras takes 32x32"))
    cases.append(([str(tmp_path / "missing")], "neither an export folder"))
    cases.append(([str(out), "--video", str(tmp_path / "nothing.mp4")], "cannot open video"))
    for args, message in cases:
        model, *rest = args
        result = run_cli("predict", model, *(rest or ["--data", str(SEALS)]), "--out", str(tmp_path / "p.csv"))
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr and not (tmp_path / "p.csv").exists()
    unknown = run_cli("export", str(path), "--workdir", str(workdir), "--trial", "nosuchkey", "--out",
                      str(tmp_path / "e2"))
    assert unknown.returncode == 2 and "has no trial 'nosuchkey'" in unknown.stderr
    assert not (tmp_path / "e2").exists()


def test_leaderboard_leaves_parameters_a_model_does_not_use_blank(sweep, tmp_path):
    import zoo
    from reports.records import MODEL_PARAMS

    path, workdir = sweep
    assert run_cli("report", str(path), "--workdir", str(workdir), "--out", str(tmp_path / "r")).returncode == 0
    board = pd.read_csv(tmp_path / "r" / "leaderboard.csv")
    for _, row in board.iterrows():
        unused = [p for p in MODEL_PARAMS if p not in zoo.get_architecture(row.architecture).uses]
        assert row[unused].isna().all(), (row.architecture, row[unused].dropna().to_dict())
    assert board.convolution_kernel_size.isna().all()  # no Conv1D trial: no kernel size to show
    best = json.loads(run_cli("best", str(path), "--workdir", str(workdir), "--json").stdout)
    assert "convolution_kernel_size" not in best["params"]


def test_report_and_export_replace_only_folders_they_wrote(sweep, tmp_path):
    path, workdir = sweep
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    common = [str(path), "--workdir", str(workdir), "--out", str(mine), "--overwrite"]
    for command in (["report", *common], ["export", *common, "--no-register"]):
        result = run_cli(*command)
        assert result.returncode == 2 and "not written by this command" in result.stderr, result.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    out = exported(sweep, tmp_path, "image_mlp_frozen")
    assert run_cli("export", str(path), "--workdir", str(workdir), "--out", str(out), "--no-register").returncode == 2
    again = run_cli("export", str(path), "--workdir", str(workdir), "--out", str(out), "--no-register", "--overwrite")
    assert again.returncode == 0, again.stderr


def test_predict_by_trial_key_leaves_no_temporary_export(sweep, tmp_path):
    path, workdir = sweep
    temp = tmp_path / "temp"
    temp.mkdir()
    for key, code in ((trial_key(workdir, "image_mlp_frozen"), 0), ("feedfacecafe", 2)):
        result = run_cli("predict", key, "--sweep", str(path), "--workdir", str(workdir), "--data", str(SEALS),
                         "--out", str(tmp_path / "p.csv"), env={"TMPDIR": str(temp)})
        assert result.returncode == code, result.stderr
        assert not list(temp.glob("videosweep-export-*"))


def test_export_savedmodel_and_tflite_give_the_keras_models_predictions(sweep, tmp_path):
    """`--format keras,savedmodel,tflite`: three files of one model (backbone + head, on raw frames), each run by
    its own runtime on real frames. (A GRU model's .tflite needs TensorFlow's Flex ops, which the TFLite
    interpreter of the tensorflow-cpu wheel cannot run, so the frame model is the one checked here.)"""
    import keras
    import tensorflow as tf

    path, workdir = sweep
    out = tmp_path / "export"
    result = run_cli("export", str(path), "--workdir", str(workdir), "--trial",
                     trial_key(workdir, "image_mlp_frozen"), "--out", str(out), "--format", "keras,savedmodel,tflite",
                     "--no-register")
    assert result.returncode == 0, result.stderr
    meta = json.loads((out / "export.json").read_text())
    assert meta["files"] == {"keras": "model.keras", "savedmodel": "savedmodel", "tflite": "model.tflite"}
    frames = sorted((SEALS / "s26-8164").glob("*.jpeg"))[:8]
    images = np.stack([cv2.resize(cv2.imread(str(f))[:, :, ::-1], (32, 32), interpolation=cv2.INTER_AREA)
                       for f in frames]).astype("float32")
    shape = meta["input"]["shape"]
    assert shape == [None, 32, 32, 3]
    batch = images[:2]
    expected = keras.models.load_model(out / "model.keras").predict(batch, verbose=0)
    assert expected.shape == (2, 2) and np.allclose(expected.sum(axis=1), 1, atol=1e-5)
    loaded = tf.saved_model.load(str(out / "savedmodel"))  # kept: its functions need the object alive
    served = loaded.serve(tf.constant(batch)).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    interpreter = tf.lite.Interpreter(model_path=str(out / "model.tflite"))
    runner = interpreter.get_signature_runner()
    [name] = runner.get_input_details()
    lite = np.concatenate([next(iter(runner(**{name: batch[i:i + 1]}).values())) for i in range(len(batch))])
    np.testing.assert_allclose(lite, expected, atol=1e-4)


@needs_chromium
def test_report_is_small_inlines_the_partial_plotly_once_and_its_plots_run_without_js_errors(sweep, tmp_path):
    from reports.interactive import PLOTLY_JS

    path, workdir = sweep
    out = tmp_path / "report"
    assert run_cli("report", str(path), "--workdir", str(workdir), "--out", str(out)).returncode == 0
    report = out / "report.html"
    page = report.read_text()
    assert report.stat().st_size <= 1_500_000, report.stat().st_size  # the full plotly.js alone was 4.8 MB
    assert page.count("partial build for videosweep") == 1 and page.count("plotly.js v") == 1
    assert PLOTLY_JS.read_text()[:5000] in page
    assert "Parallel coordinates of the swept parameters" in page and "best so far" in page
    assert "Not shown: 4 finished trials, fewer than the 20" in page  # importances hidden, with the reason
    # WebGL (parcoords) through SwiftShader: headless Chromium no longer falls back to it on its own
    dom = chromium("--enable-unsafe-swiftshader", "--enable-logging=stderr", "--v=0", "--dump-dom", report.as_uri(),
                   profile=tmp_path / "p1")
    assert dom.returncode == 0
    errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    assert not errors, errors
    markup = re.sub(r"<script[^>]*>.*?</script>", "", dom.stdout, flags=re.S)
    assert markup.count('class="main-svg"') >= 3 and 'class="parcoords"' in markup
    assert "gl-canvas-focus" in markup and "WebGL is not supported" not in markup
