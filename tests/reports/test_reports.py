"""Reports, best, export and predict on a real small sweep: built from MLflow, checked against MLflow."""

from __future__ import annotations

import io
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
    assert not re.search(r'(src|href)="(?!data:)', markup)  # nothing to fetch, no dead link to a server
    hint = f"`videosweep ui {path} --workdir {workdir}` opens them"  # a local store: how to open its runs
    assert hint in page and hint in markdown and not board.run_link.notna().any()
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


def test_a_sweep_at_chance_gets_intervals_ties_and_the_banner_everywhere(sweep, tmp_path):
    """The shared sweep trains 1-epoch models on one validation video: one effective unit, so no interval can clear
    the majority baseline and every trial is tied with the leader. The CSV, the Markdown, the page, the CLI and
    best --json must all say so, from the same numbers."""
    path, workdir = sweep
    out = tmp_path / "report"
    result = run_cli("report", str(path), "--workdir", str(workdir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    best = json.loads(run_cli("best", str(path), "--workdir", str(workdir), "--json").stdout)
    assert best["beats_baseline"] is False  # verified first: this sweep is at chance
    board = pd.read_csv(out / "leaderboard.csv", dtype={"trial_key": str})
    assert len(board) == 4 and (board.val_effective_units == 1.0).all()
    for split in ("val", "test"):
        low, high = board[f"{split}_accuracy_low"], board[f"{split}_accuracy_high"]
        accuracy = board[f"{split}_accuracy"]
        assert ((low <= accuracy) & (accuracy <= high) & (low >= 0) & (high <= 1)).all(), split
        assert ((high - low) > 0.5).all(), split  # one video's worth of evidence: wide intervals
    assert [board.val_accuracy_low[0], board.val_accuracy_high[0]] == pytest.approx(best["val_interval"])
    assert [board.test_accuracy_low[0], board.test_accuracy_high[0]] == pytest.approx(best["test_interval"])
    assert board.trial_key[0] == best["trial_key"] and not board.val_beats_baseline.any()
    assert board.tied_with_leader.all() and best["tied_with"] == board.trial_key[1:].tolist()
    banner = "No trial beats always answering the majority class: none of the 4 finished trial(s)"
    assert banner in result.stdout
    markdown = (out / "leaderboard.md").read_text().splitlines()
    assert markdown[2].startswith(f"**{banner}") and "counts 1 effective video(s)" in markdown[2]
    rows = [line for line in markdown if line.startswith("| ")]
    assert rows[0].startswith("| rank | tie | trial_key |") and "val 95% interval" in rows[0]
    assert rows[1].startswith("| 1 | leader |") and all(row.split(" | ")[1] == "≈ tied" for row in rows[2:])
    page = (out / "report.html").read_text()
    assert re.search(r'<body><div class="banner" role="alert"[^>]*><b>' + re.escape(banner), page)
    assert page.count("<td>≈ tied</td>") == 3 and "test 95% interval (held out)" in page


def test_a_report_on_a_sweep_whose_trials_all_failed_says_exactly_that(tmp_path):
    path = write_sweep(tmp_path, [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0, 8]}],
                       name="allfail")
    workdir = tmp_path / "work"
    ran = run_cli("run", str(path), "--workdir", str(workdir), "--max-retries", "0",
                  env={"VIDEOSWEEP_FAULT": "raise:architecture=image_mlp_frozen"})
    assert ran.returncode == 1, ran.stderr
    out = tmp_path / "report"
    result = run_cli("report", str(path), "--workdir", str(workdir), "--out", str(out))
    said = ("No trial finished: none of the 2 trial(s) of this sweep has a result (2 failed), so there is nothing "
            "to rank, compare or export.")
    assert result.returncode == 0 and said in result.stdout, result.stderr
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        ["leaderboard.csv", "leaderboard.md", "report.html"])
    assert pd.read_csv(out / "leaderboard.csv").empty
    markdown = (out / "leaderboard.md").read_text().splitlines()
    assert markdown[2:4] == [f"**{said}**", ""] and markdown[-1] == "No finished trial to rank."
    assert "videosweep ui" in markdown[4]  # the runs, failures included, are still there to look at
    page = (out / "report.html").read_text()
    assert re.search(r'<body><div class="banner" role="alert"[^>]*><b>' + re.escape(said), page)
    assert "<p>No finished trial to rank.</p>" in page and "injected failure" in page and "<tr></tr>" not in page
    for args in ([], ["--json"]):
        refused = run_cli("best", str(path), "--workdir", str(workdir), *args)
        assert refused.returncode == 2 and refused.stderr.strip().endswith("sweep allfail has no finished trial yet")
        assert len(refused.stderr.strip().splitlines()) == 1 and not refused.stdout.strip()


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
    assert best["run_link"] is None  # a local store: no server to link to
    shown = run_cli("best", str(path), "--workdir", str(workdir))
    assert shown.returncode == 0 and f"`videosweep ui {path} --workdir {workdir}`" in shown.stdout
    assert "does not clear it" in shown.stdout
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
    result = run_cli("export", str(path), "--workdir", str(workdir), "--trial", key, "--out", str(out),
                     "--allow-baseline")  # every trial here is at chance
    assert result.returncode == 0, result.stderr
    assert "--allow-baseline: exported although it does not beat the majority baseline" in result.stdout
    meta = json.loads((out / "export.json").read_text())
    assert meta["baseline"]["beats_baseline"] is False and meta["baseline"]["exported_below_baseline"] is True
    assert json.loads((out / "labels.json").read_text()) == ["noseal", "seal"]
    assert meta["input"]["frame_size"] == "32x32" and meta["input"]["channel_order"] == "RGB"
    card = (out / "model_card.md").read_text()
    assert "Confusion matrix" in card and "convolution_kernel_size" not in card  # only Conv1D models have one
    length = 3 if architecture == "video_lrcnn_frozen" else 1
    majority, share = majority_share("test", length)
    assert f"| test (held out) | {majority} | {share:.4f} |" in card and "Chance (1 / 2 classes): 0.5000" in card
    check_card(card, out, meta, workdir, key)
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
    check_snippet(card, table, tmp_path)


def check_card(card: str, out: Path, meta: dict, workdir: Path, key: str) -> None:
    """The model card of a chance model exported with --allow-baseline: says so first; the shipped model's own size;
    one epoch count that matches the trial's history; no placeholder."""
    import keras

    lines = card.splitlines()
    assert lines[0].startswith("**This model does not beat the majority-class baseline** (exported with "
                               "--allow-baseline): its val accuracy ") and lines[2].startswith("# ")
    model = keras.models.load_model(out / "model.keras")
    assert model.count_params() == meta["param_count"]
    assert f"| parameters (the exported model, backbone included) | {model.count_params():,} |" in card
    size = (out / "model.keras").stat().st_size
    assert f"| model.keras size | {f'{size / 1e6:.1f} MB' if size >= 1e5 else f'{size / 1e3:.1f} kB'} |" in card
    history = pd.read_csv(workdir / "trials" / key / "fit_history.csv")
    assert f"Trained {len(history)} epochs in all (learning rate 0.001: {len(history)}; each round at most 1" in card
    assert len(re.findall(r"epochs", card)) == 2  # that line and the parameter: "epochs (at most, per round)"
    assert "THIS_FOLDER" not in card and f"videosweep predict {out.resolve()} --video" in card


def check_snippet(card: str, predicted: pd.DataFrame, tmp_path: Path) -> None:
    """The card's Python snippet, run as a user would on one video's frames, gives `videosweep predict`'s answers."""
    import subprocess
    import sys

    [code] = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    script = tmp_path / "snippet.py"
    script.write_text(code)
    video = "s28-20"
    result = subprocess.run([sys.executable, str(script), str(SEALS / video)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    got = pd.read_csv(io.StringIO(result.stdout))
    expected = predicted[(predicted.video == video) & (predicted.prediction != "")]
    assert list(got.frame) == list(expected.frame) and len(got) > 200
    np.testing.assert_allclose(got[["noseal", "seal"]].to_numpy(), expected[["noseal", "seal"]].to_numpy(dtype=float),
                               atol=1e-4)
    assert (got.prediction.to_numpy() == expected.prediction.to_numpy()).all()


def test_export_refuses_a_model_at_chance_and_writes_nothing(sweep, tmp_path):
    """No trial here clears the val majority baseline (one validation video): export says so in one line, exit 2,
    no folder, nothing registered; `best --json` reaches the same verdict."""
    path, workdir = sweep
    client, _ = mlflow_trials(workdir)
    versions = len(client.search_model_versions("name = 'rep'"))
    for args in ([], ["--trial", trial_key(workdir, "image_mlp_trainable")]):
        out = tmp_path / "refused"
        result = run_cli("export", str(path), "--workdir", str(workdir), "--out", str(out), *args)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "does not beat the majority-class baseline: its val accuracy" in result.stderr
        assert "nothing exported (--allow-baseline exports it anyway" in result.stderr
        assert not out.exists() and "Traceback" not in result.stderr
    assert len(client.search_model_versions("name = 'rep'")) == versions
    assert json.loads(run_cli("best", str(path), "--workdir", str(workdir), "--json").stdout)["beats_baseline"] is False


def test_allow_baseline_is_a_no_op_on_a_model_that_beats_the_baseline(sweep, tmp_path):
    """A copy of the store in which the trial's recorded val baseline is low and rests on many videos, so that its
    interval clears it: export needs no flag, and with the flag writes the same folder; best agrees."""
    import sqlite3

    path, workdir = sweep
    copy = tmp_path / "work"
    copy.mkdir()
    with sqlite3.connect(workdir / "mlflow.db") as source, sqlite3.connect(copy / "mlflow.db") as target:
        source.backup(target)  # the artefacts stay where the original store keeps them: only read here
    client, runs = mlflow_trials(copy)
    key = trial_key(copy, "image_mlp_trainable")
    run = next(r for r in runs if r.data.tags["videosweep.trial_key"] == key)
    client.log_metric(run.info.run_id, "baseline_val_majority_accuracy", 0.05, step=1)
    client.log_metric(run.info.run_id, "baseline_val_effective_units", 10_000, step=1)
    cards = []
    for name, flag in (("plain", []), ("flagged", ["--allow-baseline"])):
        out = tmp_path / name
        result = run_cli("export", str(path), "--workdir", str(copy), "--trial", key, "--out", str(out),
                         "--no-register", *flag)
        assert result.returncode == 0, result.stderr
        assert "--allow-baseline:" not in result.stdout
        meta = json.loads((out / "export.json").read_text())
        assert meta["baseline"]["beats_baseline"] is True and meta["baseline"]["exported_below_baseline"] is False
        cards.append((out / "model_card.md").read_text().replace(str(out.resolve()), "OUT"))
    assert cards[0] == cards[1] and cards[0].startswith("# image_mlp_trainable from sweep rep")
    from reports.best import baseline_check
    from reports.records import read_sweep_runs
    from runner.tracking.mlflow_runs import Tracker

    runs = read_sweep_runs(Tracker(f"sqlite:///{copy / 'mlflow.db'}", copy, "rep", create=False))
    assert baseline_check(runs.trials.set_index("trial_key").loc[key])[1] is True  # best's decision too


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
                   "--no-register", "--allow-baseline").returncode == 0
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
    for command in (["report", *common], ["export", *common, "--no-register", "--allow-baseline"]):
        result = run_cli(*command)
        assert result.returncode == 2 and "not written by this command" in result.stderr, result.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    out = exported(sweep, tmp_path, "image_mlp_frozen")
    assert run_cli("export", str(path), "--workdir", str(workdir), "--out", str(out), "--no-register",
                   "--allow-baseline").returncode == 2
    again = run_cli("export", str(path), "--workdir", str(workdir), "--out", str(out), "--no-register", "--overwrite",
                    "--allow-baseline")
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
                     "--no-register", "--allow-baseline")
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
