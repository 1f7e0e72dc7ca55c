"""`videosweep data`: real videos made with OpenCV from the seals frames, through every step to training."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, SEALS, copy_tree, run_cli, tree_snapshot

VIDEO_FPS = 8.0


def seals_video(video: str, folder: Path, fps: float = VIDEO_FPS) -> Path:
    """One seals video's frames as an MP4 at `fps` (frame i shows at i / fps seconds)."""
    path = folder / f"{video}.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (176, 144))
    frames = pd.read_csv(SEALS / "labels.csv", dtype=str)
    for frame in frames[frames.video == video].frame:
        writer.write(cv2.resize(cv2.imread(str(SEALS / video / frame)), (176, 144)))
    writer.release()
    return path


def seals_annotations(path: Path) -> Path:
    """The seals labels as time intervals: each run of one label becomes [first / fps, (last + 1) / fps)."""
    labels = pd.read_csv(SEALS / "labels.csv", dtype=str)
    rows = []
    for video, frames in labels.groupby("video", sort=True):
        values = frames.label.tolist()
        start = 0
        for index in range(1, len(values) + 1):
            if index == len(values) or values[index] != values[start]:
                rows.append({"video": video, "label": values[start], "time_start": f"{start / VIDEO_FPS:.3f}",
                             "time_end": f"{index / VIDEO_FPS:.3f}"})
                start = index
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    for video in sorted(pd.read_csv(SEALS / "labels.csv", dtype=str).video.unique()):
        seals_video(video, folder)
    return folder


@pytest.mark.slow
def test_videos_to_a_checked_split_dataset_that_trains(videos, tmp_path, cache_dir):
    data = tmp_path / "data"
    first = run_cli("data", "extract-frames", str(videos), "--out", str(data), "--fps", "2")
    assert first.returncode == 0, first.stderr
    meta = json.loads((data / "s26-8164" / "extraction.json").read_text())
    times = [f["time"] for f in meta["frames"]]
    assert times[:4] == pytest.approx([0.0, 0.5, 1.0, 1.5]) and len(times) == pytest.approx(meta["duration"] * 2, abs=1)
    before = tree_snapshot(data)
    again = run_cli("data", "extract-frames", str(videos), "--out", str(data), "--fps", "2")
    assert again.returncode == 0 and "skipped" in again.stdout and tree_snapshot(data) == before
    labels = data / "labels.csv"
    made = run_cli("data", "labels-from-timestamps", str(seals_annotations(tmp_path / "a.csv")), "--frames",
                   str(data), "--out", str(labels))
    assert made.returncode == 0, made.stderr
    table = pd.read_csv(labels, dtype=str, keep_default_na=False)
    original = pd.read_csv(SEALS / "labels.csv", dtype=str)
    for _, row in table.sample(20, random_state=0).iterrows():  # frame n at 2 fps is source frame 4(n-1)
        number = int(row.frame.split("-")[-1].split(".")[0])
        source = original[original.video == row.video].iloc[4 * (number - 1)]
        assert row.label == source.label
    split = run_cli("data", "split", str(labels), "--valid", "0.3", "--test", "0.3", "--seed", "0")
    assert split.returncode == 0, split.stderr
    table = pd.read_csv(labels, dtype=str)
    assert table.groupby("video").split.nunique().max() == 1 and set(table.split) == {"train", "valid", "test"}
    checked = run_cli("data", "check", str(data))
    assert checked.returncode == 0 and "clean" in checked.stdout, checked.stdout + checked.stderr
    trained = run_cli("train", "--data", str(data), "--out", str(tmp_path / "trial"), "--set",
                      "architecture=image_mlp_frozen", "--set", "backbone=mobilenet_v2", "--set", "weights=none",
                      "--set", "frame_size=32x32", "--set", "epochs=1", "--set", "learning_rates=[0.001]")
    assert trained.returncode == 0, trained.stderr
    assert json.loads((tmp_path / "trial" / "results.json").read_text())["data_total_rows_test"] > 0
    explored = run_cli("data", "explore", str(data), "--out", str(tmp_path / "explore"))
    assert explored.returncode == 0, explored.stderr
    assert {p.name for p in (tmp_path / "explore").iterdir()} == {"balance.png", "timeline.png", "examples.png",
                                                                    "explore.html", ".videosweep-explore"}


def test_extraction_reports_bad_videos_by_name_and_re_extracts_on_new_settings(videos, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "good.mp4").write_bytes((videos / "s28-20.mp4").read_bytes())
    (inputs / "broken.mp4").write_bytes(b"this is not a video")
    data = tmp_path / "data"
    result = run_cli("data", "extract-frames", str(inputs), "--out", str(data), "--fps", "1")
    assert result.returncode == 2 and "broken" in result.stderr and "1 of 2 video(s) failed" in result.stderr
    assert not (data / "broken").exists() and not list(data.glob(".*partial"))
    at_one = len(list((data / "good").glob("*.jpg")))
    (inputs / "broken.mp4").unlink()
    result = run_cli("data", "extract-frames", str(inputs), "--out", str(data), "--fps", "2", "--size", "88x72")
    assert result.returncode == 0 and "extracted" in result.stdout
    frames = sorted((data / "good").glob("*.jpg"))
    assert len(frames) == pytest.approx(2 * at_one, abs=1)
    assert cv2.imread(str(frames[0])).shape == (72, 88, 3)


@pytest.mark.slow
def test_extraction_never_replaces_a_folder_it_did_not_write(videos, tmp_path):
    data = tmp_path / "data"
    (data / "s28-20").mkdir(parents=True)
    (data / "s28-20" / "notes.txt").write_text("precious")
    result = run_cli("data", "extract-frames", str(videos / "s28-20.mp4"), "--out", str(data), "--fps", "1")
    assert result.returncode == 2 and "not written by this command" in result.stdout + result.stderr
    assert [p.name for p in (data / "s28-20").iterdir()] == ["notes.txt"]


def extracted(videos: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    assert run_cli("data", "extract-frames", str(videos), "--out", str(data), "--fps", "1").returncode == 0
    return data


def test_bad_annotations_name_the_row_and_write_nothing(videos, tmp_path):
    data = extracted(videos, tmp_path)
    out = tmp_path / "labels.csv"
    header = "video,label,time_start,time_end\n"
    cases = {
        "overlap": (header + "s26-8164,seal,0,00:10\ns26-8164,noseal,00:00:09.5,20\n", "rows 2 and 3"),
        "adjacent is fine": (header + "s26-8164,seal,0,10\ns26-8164,noseal,10,999\n", "past the end"),
        "unknown video": (header + "nosuch,seal,0,1\n", "row 2: video nosuch has no extracted frames"),
        "bad time": (header + "s26-8164,seal,0:75,1:00\n", "past 59"),
        "end before start": (header + "s26-8164,seal,5,4\n", "row 2: needs"),
        "uncovered": (header + "s26-8164,seal,0,1\n", "give --default-label"),
    }
    for name, (text, message) in cases.items():
        annotations = tmp_path / f"{name}.csv"
        annotations.write_text(text)
        result = run_cli("data", "labels-from-timestamps", str(annotations), "--frames", str(data), "--out", str(out))
        assert result.returncode == 2 and message in result.stderr, (name, result.stderr)
        assert not out.exists() and "Traceback" not in result.stderr


def test_split_is_by_video_reproducible_and_stratified(tmp_path):
    rows = [{"video": f"v{v:02d}", "frame": f"f{i}.jpg", "label": "a" if v < 6 else "b"}
            for v in range(20) for i in range(5)]
    labels = tmp_path / "labels.csv"
    pd.DataFrame(rows).to_csv(labels, index=False)
    splits = []
    for _ in range(2):
        assert run_cli("data", "split", str(labels), "--seed", "3", "--stratify", "--valid", "0.2",
                       "--test", "0.2").returncode == 0
        splits.append(pd.read_csv(labels).groupby("video").split.first())
    assert splits[0].equals(splits[1])
    table = pd.read_csv(labels)
    assert table.groupby("video").split.nunique().max() == 1
    per_split = table.drop_duplicates("video").groupby("split").label.agg(set)
    assert all(classes == {"a", "b"} for classes in per_split)  # stratified: both kinds of video everywhere
    other = run_cli("data", "split", str(labels), "--seed", "4", "--out", str(tmp_path / "other.csv"))
    assert other.returncode == 0 and not pd.read_csv(tmp_path / "other.csv").split.equals(table.split)
    few = tmp_path / "few.csv"
    pd.DataFrame(rows[:10]).to_csv(few, index=False)  # two videos
    result = run_cli("data", "split", str(few))
    assert result.returncode == 2 and "more videos are needed" in result.stderr


def test_check_lists_every_problem_and_fix_drops_unlabelled_rows(tmp_path):
    data = copy_tree(SEALS, tmp_path / "data")
    assert run_cli("data", "check", str(data)).returncode == 0
    labels = pd.read_csv(data / "labels.csv", dtype=str, keep_default_na=False)
    first = labels.iloc[0]
    (data / first.video / first.frame).unlink()  # missing on disk
    (data / first.video / "extra.jpeg").write_bytes((data / first.video / labels.frame.iat[1]).read_bytes())
    (data / first.video / labels.frame.iat[2]).write_bytes(b"broken")  # unreadable
    small = cv2.resize(cv2.imread(str(data / first.video / labels.frame.iat[3])), (50, 40))
    cv2.imwrite(str(data / first.video / labels.frame.iat[3]), small)  # other size
    labels.loc[4, "label"] = ""  # unlabelled row
    labels.loc[labels.index[-1], "split"] = "train" if labels.split.iat[-1] != "train" else "valid"
    labels.to_csv(data / "labels.csv", index=False)
    result = run_cli("data", "check", str(data))
    assert result.returncode == 2
    for message in ("missing on disk", "without a row", "unreadable images", "not of the usual size",
                    "empty cell", "more than one split"):
        assert message in result.stdout, (message, result.stdout)
    fixed = run_cli("data", "check", str(data), "--fix", "--yes")
    assert "dropped 1 unlabelled row" in fixed.stdout
    assert len(pd.read_csv(data / "labels.csv")) == len(labels) - 1


def test_demo_is_deterministic_and_labels_motion_by_direction(tmp_path):
    for name in ("a", "b"):
        assert run_cli("data", "demo", "--out", str(tmp_path / name), "--videos", "4", "--frames", "12",
                       "--seed", "7").returncode == 0
    assert tree_snapshot(tmp_path / "a").keys() == tree_snapshot(tmp_path / "b").keys()
    for path in (tmp_path / "a").rglob("*.jpg"):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()
    labels = pd.read_csv(tmp_path / "a" / "labels.csv")
    assert set(labels.label) == {"left", "right"} and labels.groupby("video").split.nunique().max() == 1
    static = run_cli("data", "demo", "--out", str(tmp_path / "s"), "--kind", "static", "--videos", "4")
    assert static.returncode == 0 and set(pd.read_csv(tmp_path / "s" / "labels.csv").label) == {"circle", "square"}
    assert run_cli("data", "demo", "--out", str(tmp_path / "s")).returncode == 2  # exists: nothing overwritten
    again = run_cli("data", "demo", "--out", str(tmp_path / "s"), "--videos", "3", "--overwrite")
    assert again.returncode == 0 and pd.read_csv(tmp_path / "s" / "labels.csv").video.nunique() == 3


@pytest.mark.slow  # three explores of the seals videos (~30 s)
def test_explore_replaces_its_own_folder_with_overwrite_only(tmp_path):
    out = tmp_path / "explore"
    assert run_cli("data", "explore", str(SEALS), "--out", str(out)).returncode == 0
    refused = run_cli("data", "explore", str(SEALS), "--out", str(out))
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    assert run_cli("data", "explore", str(SEALS), "--out", str(out), "--overwrite").returncode == 0
    (out / ".videosweep-explore").unlink()  # as written before markers: explore.html proves it
    assert run_cli("data", "explore", str(SEALS), "--out", str(out), "--overwrite").returncode == 0


@pytest.mark.slow
def test_the_motion_demo_tells_its_story(tmp_path, cache_dir):
    """`make demo`'s first sweep, as it runs there: C3D-small sees the motion (test accuracy >= 0.8, and its
    validation interval clears the majority baseline: `best` says it beats it, `export` needs no flag), the
    single-frame model cannot (near chance); the report draws the accuracy/latency front."""
    data = tmp_path / "data" / "motion"
    assert run_cli("data", "demo", "--out", str(data), "--kind", "motion").returncode == 0
    sweep = yaml.safe_load((ROOT / "sweeps" / "motion-demo.yaml").read_text())
    sweep["data"]["root"] = str(data)
    path = tmp_path / "motion-demo.yaml"
    path.write_text(yaml.safe_dump(sweep))
    workdir = tmp_path / "work"
    result = run_cli("run", str(path), "--workdir", str(workdir))
    assert result.returncode == 0, result.stderr
    report = run_cli("report", str(path), "--workdir", str(workdir), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    board = pd.read_csv(tmp_path / "report" / "leaderboard.csv").set_index("architecture")
    assert board.loc["c3dsmall", "test_accuracy"] >= 0.8, board.test_accuracy
    assert abs(board.loc["image_mlp_frozen", "test_accuracy"] - 0.5) <= 0.15, board.test_accuracy
    assert "Pareto front" in (tmp_path / "report" / "report.html").read_text()
    best = run_cli("best", str(path), "--workdir", str(workdir), "--json")
    assert best.returncode == 0, best.stderr
    chosen = json.loads(best.stdout)
    assert chosen["params"]["architecture"] == "c3dsmall" and chosen["beats_baseline"] is True, chosen
    assert chosen["val_interval"][0] > chosen["baselines"]["val"]["majority_accuracy"], chosen
    assert "No trial beats always answering the majority class" not in (tmp_path / "report" / "report.html").read_text()
    # Parameters a model does not use are blank everywhere: MLflow's run parameters and Optuna's columns too.
    import optuna
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("motion-demo").experiment_id],
                              "tags.`videosweep.role` = 'trial'")
    params = {run.data.params["architecture"]: run.data.params for run in runs}
    assert params["image_mlp_frozen"]["weights"] == "none" and params["image_mlp_frozen"]["layer_1_size"] == "32"
    assert not {"weights", "backbone", "layer_1_size", "dropout"} & set(params["c3dsmall"])
    study = optuna.load_study(study_name="motion-demo", storage=f"sqlite:///{workdir / 'optuna.db'}")
    columns = {t.params["architecture"]: t.params for t in study.trials}
    assert "weights" in columns["image_mlp_frozen"] and "weights" not in columns["c3dsmall"]
