"""The bad-input battery: each bad input through the real CLI gives exit 2, one clear line on stderr naming
the problem (no traceback), and writes or changes nothing (files, study, MLflow)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import SEALS, derive_dataset, run_cli
from tests.runner.test_run import FEATURES

GOOD_SPACE = [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0]}]


@dataclass
class Case:
    name: str
    make: Callable[[Path], list[str]]  # builds its inputs under the folder, returns the CLI arguments
    message: str


def sweep(folder: Path, text: str | None = None, name: str = "bad", **overrides) -> Path:
    """A sweep file: `text` verbatim, or a good sweep with top-level keys replaced."""
    path = folder / "sweep.yaml"
    if text is None:
        body = {"name": name, "data": {"root": str(SEALS)}, "space": GOOD_SPACE,
                "training": {"epochs": 1, "learning_rates": [1e-3]}, **overrides}
        text = yaml.safe_dump(body)
    path.write_text(text)
    return path


def plan(folder: Path, **overrides) -> list[str]:
    return ["plan", str(sweep(folder, **overrides)), "--workdir", str(folder / "work")]


def run(folder: Path, *extra: str, **overrides) -> list[str]:
    return ["run", str(sweep(folder, **overrides)), "--workdir", str(folder / "work"), *extra]


def broken_data(folder: Path, change: Callable[[pd.DataFrame, Path], pd.DataFrame]) -> Path:
    data = derive_dataset(folder / "data", frames_per_video=40)
    labels = pd.read_csv(data / "labels.csv", dtype=str)
    change(labels, data).to_csv(data / "labels.csv", index=False)
    return data


def missing_frame(labels: pd.DataFrame, data: Path) -> pd.DataFrame:
    (data / labels.video.iat[0] / labels.frame.iat[0]).unlink()
    return labels


def two_splits(labels: pd.DataFrame, data: Path) -> pd.DataFrame:
    labels.loc[labels.index[0], "split"] = "test" if labels.split.iat[0] != "test" else "train"
    return labels


def one_class(labels: pd.DataFrame, data: Path) -> pd.DataFrame:
    return labels.assign(label="seal")


def unreadable_image(labels: pd.DataFrame, data: Path) -> pd.DataFrame:
    frame = data / labels.video.iat[0] / labels.frame.iat[0]
    frame.unlink()
    frame.write_bytes(b"not a jpeg")
    return labels


def export_folder(folder: Path) -> Path:
    target = folder / "model"
    target.mkdir()
    (target / "export.json").write_text(json.dumps({"input": {"width": 32, "height": 32}}))
    (target / "model.keras").write_bytes(b"")
    return target


def overlapping(folder: Path) -> list[str]:
    frames = folder / "frames" / "clip"
    frames.mkdir(parents=True)
    (frames / "extraction.json").write_text(json.dumps({"duration": 10, "frames": [{"frame": "a.jpg", "time": 0}]}))
    annotations = folder / "a.csv"
    annotations.write_text("video,label,time_start,time_end\nclip,seal,0,5\nclip,noseal,4,10\n")
    return ["data", "labels-from-timestamps", str(annotations), "--frames", str(folder / "frames"), "--out",
            str(folder / "labels.csv")]


CASES = [
    Case("malformed YAML", lambda f: ["plan", str(sweep(f, "name: [unclosed\nspace: {"))], "YAML"),
    Case("unknown key", lambda f: plan(f, nmae="x"), "nmae"),
    Case("wrong type", lambda f: plan(f, training={"epochs": "many"}), "epochs"),
    Case("range under grid", lambda f: plan(f, space=[{"architecture": ["image_mlp_frozen"], **FEATURES,
                                                       "layer_1_size": {"low": 1, "high": 9}}]), "grid"),
    Case("empty space", lambda f: plan(f, space=[]), "space"),
    Case("unknown architecture", lambda f: plan(f, space=[{"architecture": ["transformer9000"]}]), "transformer9000"),
    Case("unknown backbone", lambda f: plan(f, space=[{"architecture": ["image_mlp_frozen"], "backbone": ["alexnet"]}]),
         "alexnet"),
    Case("invalid combination only", lambda f: run(f, space=[{"architecture": ["video_lrcnn_frozen"], **FEATURES,
                                                               "sequence_length": [1]}]), "sequence_length"),
    Case("negative size", lambda f: plan(f, space=[{"architecture": ["image_mlp_frozen"], **FEATURES,
                                                    "layer_1_size": [-4]}]), "layer_1_size"),
    Case("zero frame size", lambda f: plan(f, space=[{"architecture": ["c3dsmall"], "frame_size": ["0x0"]}]),
         "frame_size"),
    Case("constraint calls a function", lambda f: plan(f, constraints=["__import__('os').system('true') == 0"]),
         "constraint"),
    Case("constraint reads an attribute", lambda f: plan(f, constraints=["layer_1_size.real > 0"]), "constraint"),
    Case("sweep name with a path separator", lambda f: plan(f, name="../escape"), "name"),
    Case("missing data root", lambda f: plan(f, data={"root": str(f / "nowhere")}), "does not exist"),
    Case("labels with a missing frame", lambda f: plan(f, data={"root": str(broken_data(f, missing_frame))}),
         "missing on disk"),
    Case("a video in two splits", lambda f: plan(f, data={"root": str(broken_data(f, two_splits))}),
         "more than one split"),
    Case("one class only", lambda f: plan(f, data={"root": str(broken_data(f, one_class))}), "only one class"),
    Case("an unreadable image", lambda f: ["data", "check", str(broken_data(f, unreadable_image))],
         "problem"),
    Case("weights path that does not exist", lambda f: run(f, space=[{"architecture": ["image_mlp_frozen"],
         "backbone": ["mobilenet_v2"], "weights": [str(f / "nope.h5")], "frame_size": ["32x32"]}]), "nope.h5"),
    Case("imagenet weights not cached", lambda f: run(f, space=[{"architecture": ["image_mlp_frozen"],
         "backbone": ["xception"], "weights": ["imagenet"]}]), "not cached"),
    Case("non-writable workdir", lambda f: ["run", str(sweep(f)), "--workdir", str(_file(f) / "work")],
         "not writable"),
    Case("storage URL with a bad scheme", lambda f: run(f, "--storage", "redis://localhost/0"), "redis"),
    Case("unreachable tracking server", lambda f: run(f, "--tracking-uri", "http://127.0.0.1:9"),
         "cannot reach the MLflow tracking store"),
    Case("--gpus naming a missing GPU", lambda f: run(f, "--gpus", "7"), "GPU"),
    Case("model folder without its labels", lambda f: ["predict", str(export_folder(f)), "--data", str(SEALS),
                                                        "--out", str(f / "p.csv")], "labels.json"),
    Case("a video that cannot be decoded", lambda f: ["data", "extract-frames", str(_junk_video(f)), "--out",
                                                       str(f / "frames")], "junk"),
    Case("timestamps with overlapping labels", overlapping, "overlap"),
    Case("unknown export format", lambda f: ["export", str(sweep(f)), "--out", str(f / "e"), "--format", "onnx"],
         "onnx"),
    Case("export of a sweep never run", lambda f: ["export", str(sweep(f)), "--workdir", str(f / "work"), "--out",
                                                   str(f / "e")], "not been run"),
    # successive halving (issue #17)
    Case("reduction factor below 2", lambda f: plan(f, search={"strategy": "grid", "schedule": {
        "kind": "successive_halving", "reduction_factor": 1}}), "reduction_factor"),
    Case("min_epochs above training.epochs", lambda f: run(f, search={"strategy": "grid", "schedule": {
        "kind": "successive_halving", "min_epochs": 5}}), "min_epochs"),
    Case("synchronous halving with a sampler", lambda f: plan(f, search={"strategy": "random", "trials": 2,
         "schedule": {"kind": "successive_halving"}}), "cannot be used by the random strategy"),
    Case("asha with a grid", lambda f: plan(f, search={"strategy": "grid", "schedule": {"kind": "asha"}}),
         "cannot be used by the grid strategy"),
    Case("a schedule with keras tuner", lambda f: plan(f, search={"strategy": "keras_tuner", "trials": 2,
         "schedule": {"kind": "asha"}}), "keras_tuner"),
    Case("a schedule and a pruner", lambda f: plan(f, search={"strategy": "optuna", "trials": 2, "pruner": "median",
         "schedule": {"kind": "asha"}}), "choose one"),
    Case("negative checkpoint interval", lambda f: plan(f, training={"epochs": 1, "checkpoint_seconds": -1}),
         "checkpoint_seconds"),
]


def _file(folder: Path) -> Path:
    blocker = folder / "a-file"
    blocker.write_text("x")
    return blocker


def _junk_video(folder: Path) -> Path:
    path = folder / "junk.mp4"
    path.write_bytes(b"\x00" * 100)
    return path


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")
            if not p.name.endswith(("-wal", "-shm", "-journal"))}


def test_the_battery_has_at_least_25_distinct_cases():
    assert len({case.name for case in CASES}) == len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, cache_dir):
    folder = tmp_path / "case"
    folder.mkdir()
    args = case.make(folder)
    before = snapshot(folder)
    result = run_cli(*args, timeout=180)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(("[", "WARNING"))]
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr[-1500:])
    assert "Traceback" not in result.stderr
    assert lines and lines[-1].startswith("error:") and case.message.lower() in lines[-1].lower(), result.stderr
    assert len([line for line in lines if line.startswith("error:")]) == 1
    assert snapshot(folder) == before, "a bad input changed files"
    assert not (folder / "work").exists() or not any((folder / "work").iterdir())


def test_a_trial_key_that_does_not_exist_for_export(tmp_path, cache_dir):
    path = sweep(tmp_path, name="battery")
    workdir = tmp_path / "work"
    assert run_cli("run", str(path), "--workdir", str(workdir)).returncode == 0
    before = snapshot(workdir)
    result = run_cli("export", str(path), "--workdir", str(workdir), "--trial", "feedfacecafe", "--out",
                     str(tmp_path / "export"))
    assert result.returncode == 2 and "has no trial 'feedfacecafe'" in result.stderr
    assert snapshot(workdir) == before and not (tmp_path / "export").exists()
    shutil.rmtree(workdir)
