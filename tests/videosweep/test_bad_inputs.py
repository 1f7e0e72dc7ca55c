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
from tests.runner.execution.test_run import FEATURES

GOOD_SPACE = [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0]}]


@dataclass
class Case:
    name: str
    make: Callable[[Path], list[str]]  # builds its inputs under the folder, returns the CLI arguments
    message: str  # what the one error line must say: specific to this mistake
    detail: str = ""  # and what else the output must say (e.g. the listing an error line points to)


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
    Case("malformed YAML", lambda f: ["plan", str(sweep(f, "name: [unclosed\nspace: {"))],
         "malformed YAML at line 2, column 6"),
    Case("unknown key", lambda f: plan(f, nmae="x"), "nmae: unknown key"),
    Case("wrong type", lambda f: plan(f, training={"epochs": "many"}),
         "training.epochs: Input should be a valid integer"),
    Case("range under grid", lambda f: plan(f, space=[{"architecture": ["image_mlp_frozen"], **FEATURES,
                                                       "layer_1_size": {"low": 1, "high": 9}}]),
         "space.0.layer_1_size: a range cannot be used by the grid strategy"),
    Case("empty space", lambda f: plan(f, space=[]), "space: List should have at least 1 item"),
    Case("no repeats", lambda f: run(f, training={"epochs": 1, "repeats": 0}),
         "training.repeats: Input should be greater than or equal to 1"),
    Case("too many repeats", lambda f: run(f, training={"epochs": 1, "repeats": 101}),
         "training.repeats: Input should be less than or equal to 100"),
    Case("unknown architecture", lambda f: plan(f, space=[{"architecture": ["transformer9000"]}]),
         "unknown architecture 'transformer9000'; choose one of: c3d"),
    Case("unknown backbone", lambda f: plan(f, space=[{"architecture": ["image_mlp_frozen"], "backbone": ["alexnet"]}]),
         "unknown backbone 'alexnet'; choose one of: inception_resnet_v2"),
    Case("invalid combination only", lambda f: run(f, space=[{"architecture": ["video_lrcnn_frozen"], **FEATURES,
                                                               "sequence_length": [1]}]),
         "every combination was dropped: video_lrcnn_frozen needs sequence_length > 1"),
    Case("negative size", lambda f: plan(f, space=[{"architecture": ["image_mlp_frozen"], **FEATURES,
                                                    "layer_1_size": [-4]}]),
         "layer_1_size: Input should be greater than or equal to 0"),
    Case("zero frame size", lambda f: plan(f, space=[{"architecture": ["c3dsmall"], "frame_size": ["0x0"]}]),
         "frame_size '0x0' must be positive"),
    Case("constraint calls a function", lambda f: plan(f, constraints=["__import__('os').system('true') == 0"]),
         "function calls are not allowed"),
    Case("constraint reads an attribute", lambda f: plan(f, constraints=["layer_1_size.real > 0"]),
         "'layer_1_size.real > 0': attribute access"),
    Case("sweep name with a path separator", lambda f: plan(f, name="../escape"),
         "name: use letters, digits, '.', '_' and '-' only (no path separators"),
    Case("missing data root", lambda f: plan(f, data={"root": str(f / "nowhere")}), "/case/nowhere does not exist"),
    Case("labels with a missing frame", lambda f: plan(f, data={"root": str(broken_data(f, missing_frame))}),
         "1 labelled frame(s) missing on disk: s26-8164/s26-8164-00001.jpeg"),
    Case("a video in two splits", lambda f: plan(f, data={"root": str(broken_data(f, two_splits))}),
         "video(s) in more than one split: s26-8164"),
    Case("one class only", lambda f: plan(f, data={"root": str(broken_data(f, one_class))}),
         "only one class (seal); a classifier needs at least two"),
    Case("an unreadable image", lambda f: ["data", "check", str(broken_data(f, unreadable_image))],
         "data: 1 kind(s) of problem, listed above", "unreadable images: 1 (s26-8164/s26-8164-00001.jpeg)"),
    Case("weights path that does not exist", lambda f: run(f, space=[{"architecture": ["image_mlp_frozen"],
         "backbone": ["mobilenet_v2"], "weights": [str(f / "nope.h5")], "frame_size": ["32x32"]}]),
         "/case/nope.h5 does not exist"),
    Case("imagenet weights not cached", lambda f: run(f, space=[{"architecture": ["image_mlp_frozen"],
         "backbone": ["xception"], "weights": ["imagenet"]}]), "ImageNet weights for xception are not cached"),
    Case("non-writable workdir", lambda f: ["run", str(sweep(f)), "--workdir", str(_file(f) / "work")],
         "/a-file/work is not writable (Not a directory)"),
    Case("storage URL with a bad scheme", lambda f: run(f, "--storage", "redis://localhost/0"),
         "storage URL redis://localhost/0: unsupported scheme 'redis'"),
    Case("unreachable tracking server", lambda f: run(f, "--tracking-uri", "http://127.0.0.1:9"),
         "cannot reach the MLflow tracking store http://127.0.0.1:9"),
    Case("--gpus naming a missing GPU", lambda f: run(f, "--gpus", "7"), "--gpus names GPU 7 which is not there"),
    Case("model folder without its labels", lambda f: ["predict", str(export_folder(f)), "--data", str(SEALS),
                                                        "--out", str(f / "p.csv")],
         "is not a videosweep export: it has no labels.json"),
    Case("a video that cannot be decoded", lambda f: ["data", "extract-frames", str(_junk_video(f)), "--out",
                                                       str(f / "frames")], "1 of 1 video(s) failed: junk"),
    Case("timestamps with overlapping labels", overlapping,
         "intervals overlap with different labels (seal until 5 s, noseal from 4 s)"),
    Case("unknown export format", lambda f: ["export", str(sweep(f)), "--out", str(f / "e"), "--format", "onnx"],
         "unknown export format(s) onnx; choose from keras, savedmodel, tflite"),
    Case("export of a sweep never run", lambda f: ["export", str(sweep(f)), "--workdir", str(f / "work"), "--out",
                                                   str(f / "e")], "sweep bad has not been run yet (no MLflow store at"),
    Case("sweep name ending in a newline", lambda f: plan(f, name="bad\n"), "name"),
    Case("constraint dividing by zero", lambda f: plan(f, constraints=["layer_1_size // 0 > 1"]), "division"),
    Case("constraint formatting a string", lambda f: plan(f, constraints=["'%999999999d' % 1 == ''"]),
         "string formatting"),
    Case("constraint repeating a string", lambda f: plan(f, constraints=["backbone * 1000000000 == ''"]),
         "numbers only"),
    Case("constraint comparing text with a number", lambda f: plan(f, constraints=["frame_size > 3"]),
         "cannot be evaluated"),
    Case("constraint with a huge product", lambda f: plan(f, constraints=["layer_1_size + 999999999 * 999999999 * "
                                                                           "999999999 > 0"]), "beyond"),
    Case("constraint nested too deep", lambda f: plan(f, constraints=["layer_1_size" + " + 1" * 40 + " > 0"]),
         "deeper"),
    Case("constraint too long", lambda f: plan(f, constraints=["layer_1_size >= 0 and " * 30 + "True"]),
         "longer than"),
    Case("constraint raising to a power", lambda f: plan(f, constraints=["9 ** 9 ** 9 > layer_1_size"]), "powers"),
    Case("a grid of a billion points", lambda f: plan(f, space=[{"architecture": ["image_mlp_frozen"], **FEATURES,
         "layer_1_size": list(range(1000)), "layer_2_size": list(range(1000)), "layer_3_size": list(range(1000))}]),
         "1,000,000,000 combinations"),
    Case("frame size beyond the maximum", lambda f: plan(f, space=[{"architecture": ["c3dsmall"],
                                                                    "frame_size": ["100000x100000"]}]), "at most"),
    Case("train on frames beyond the maximum", lambda f: ["train", "--data", str(SEALS), "--out", str(f / "t"), "--set",
         "architecture=c3dsmall", "--set", "frame_size=100000x100000"], "at most 2048x2048"),
    Case("a space key in two spellings", lambda f: plan(f, space=[{**GOOD_SPACE[0],
                                                                   "pretrained_model_name": ["mobilenet_v2"]}]),
         "name the same parameter"),
    Case("a video named ..mp4", lambda f: ["data", "extract-frames", str(_junk_video(f, "..mp4")), "--out",
                                           str(f / "frames")], "cannot name a frame folder"),
    Case("a hidden video name", lambda f: ["data", "extract-frames", str(_junk_video(f, ".clip.mp4")), "--out",
                                           str(f / "frames")], "cannot name a frame folder"),
    Case("labels naming a video outside the dataset", lambda f: plan(f, data={"root": str(broken_data(f,
         _video_escapes))}), "video name '../"),
    Case("labels naming a video by a path", lambda f: plan(f, data={"root": str(broken_data(f, _video_path))}),
         "path separator"),
    Case("train --out a non-empty folder", lambda f: ["train", "--data", str(SEALS), "--out", str(_user_folder(f)),
         "--set", "architecture=c3dsmall"], "use --overwrite"),
    Case("train --overwrite a folder train did not write", lambda f: ["train", "--data", str(SEALS), "--out",
         str(_user_folder(f)), "--set", "architecture=c3dsmall", "--overwrite"], "not written by this command"),
    Case("explore --out a non-empty folder", lambda f: ["data", "explore", str(SEALS), "--out", str(_user_folder(f))],
         "use --overwrite"),
    Case("explore --overwrite a folder explore did not write", lambda f: ["data", "explore", str(SEALS), "--out",
         str(_user_folder(f)), "--overwrite"], ".videosweep-explore"),
    Case("demo --overwrite a folder demo did not write", lambda f: ["data", "demo", "--out", str(_user_folder(f)),
                                                                    "--overwrite"], "not written by this command"),
    # overnight operation (#18): notifications, stop rules, warm start, reuse
    Case("notify URL that is not HTTP", lambda f: run(f, notify={"url": "ftp://example.org/hook"}), "not an http"),
    Case("unreachable notify URL", lambda f: run(f, "--notify", "http://bot:s3cret@127.0.0.1:9/hook"),
         "notify URL http://127.0.0.1:9/*** is unreachable"),
    Case("stop rule on a metric the sweep does not record",
         lambda f: plan(f, search={"stop": {"target": 0.9, "metric": "f1_score"}}), "does not record 'f1_score'"),
    # results a user can trust (#25): the held-out test split chooses nothing
    Case("search metric on the test split", lambda f: plan(f, search={"metric": "test_accuracy"}),
         "test_accuracy is measured on the held-out test split"),
    Case("stop rule on the test split", lambda f: plan(f, search={"stop": {"target": 0.1, "metric": "test_loss"}}),
         "test_loss is measured on the held-out test split"),
    Case("warm start from an unknown sweep", lambda f: run(f, search={"strategy": "optuna", "trials": 1,
                                                                       "warm_start": ["nosuch-sweep"]}),
         "no sweep 'nosuch-sweep'"),
    Case("reuse source whose artefacts are gone", lambda f: _gone_reuse_source(f), "artefacts are gone"),
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
# Issue #19, credentials: a password in the tracking URI is masked in the error line.
CASES += [
    Case("tracking URI with a password, unreachable",
         lambda f: run(f, "--tracking-uri", "http://me:hunter2@127.0.0.1:9"), "http://me:***@127.0.0.1:9"),
    # backends (#16)
    Case("unknown --backend", lambda f: run(f, "--backend", "theano"), "--backend: unknown backend 'theano'"),
    Case("unknown resources.backend", lambda f: run(f, resources={"backend": "mxnet"}),
         "resources.backend: unknown backend 'mxnet'"),
    Case("--backend not installed", lambda f: run(f, "--backend", "torch"), "backend torch is not installed"),
    Case("train --backend not installed", lambda f: ["train", "--data", str(SEALS), "--out", str(f / "out"),
                                                     "--set", "architecture=image_mlp_frozen", "--backend", "torch"],
         "backend torch is not installed (installed: tensorflow"),
    Case("KERAS_BACKEND unknown", lambda f: ["env-KERAS_BACKEND=cntk", *run(f)], "KERAS_BACKEND: unknown backend"),
    Case("--gpus naming a GPU that is not there (none found)", lambda f: run(f, "--gpus", "99", "--backend", "jax"),
         "(GPUs found: none)"),
    # deployment-aware selection (#20): objectives, multi-objective search, budgets
    Case("objective naming a metric trials never record",
         lambda f: plan(f, search={"objectives": [{"metric": "f1_score", "direction": "maximize"}]}),
         "'f1_score' is not a metric trials record"),
    Case("objective direction other than maximize/minimize",
         lambda f: plan(f, search={"objectives": [{"metric": "latency_ms", "direction": "lower"}]}),
         "objectives.0.direction: input should be 'maximize' or 'minimize'"),
    Case("pruner on a multi-objective search",
         lambda f: plan(f, search={"strategy": "optuna", "trials": 2, "pruner": "median", "objectives": [
             {"metric": "val_accuracy", "direction": "maximize"}, {"metric": "latency_ms", "direction": "minimize"}]}),
         "cannot prune a multi-objective search"),
    Case("negative latency budget for export",
         lambda f: ["export", str(sweep(f)), "--workdir", str(f / "work"), "--out", str(f / "x"),
                    "--max-latency-ms", "-5"], "--max-latency-ms must be a positive number"),
    # the resident worker pool (#29)
    Case("pool start with an unknown backend",
         lambda f: [f"env-VIDEOSWEEP_POOL_DIR={f / 'pool'}", "pool", "start", "--backend", "nope"],
         "--backend: unknown backend 'nope'"),
    Case("pool start with no CPU slot", lambda f: [f"env-VIDEOSWEEP_POOL_DIR={f / 'pool'}", "pool", "start",
                                                   "--workers", "0"], "--workers: input should be greater"),
    Case("pool folder others can write", lambda f: [f"env-VIDEOSWEEP_POOL_DIR={_open_folder(f / 'pool')}", "pool",
                                                    "status"], "is writable by others (mode 777)"),
]


def _open_folder(path: Path) -> Path:
    path.mkdir()
    path.chmod(0o777)
    return path


def _video_escapes(labels: pd.DataFrame, data: Path) -> pd.DataFrame:
    return labels.assign(video=labels.video.replace(labels.video.iat[0], "../" + labels.video.iat[0]))


def _video_path(labels: pd.DataFrame, data: Path) -> pd.DataFrame:
    return labels.assign(video=labels.video.replace(labels.video.iat[0], "a\\" + labels.video.iat[0]))


def _user_folder(folder: Path) -> Path:
    """A folder of the user's own, which no command may replace."""
    target = folder / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("precious")
    return target


def _gone_reuse_source(folder: Path) -> list[str]:
    """A tracking store holding a finished run of the sweep's only trial key whose artefacts were deleted."""
    from mlflow import MlflowClient

    from runner.search.expand import expand_grid
    from runner.sqlite import sqlite_wal_on_connect
    from runner.spec.sweep import load_sweep
    from zoo import load_dataset

    store = folder / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    path = sweep(folder, tracking={"uri": uri})
    key = expand_grid(load_sweep(path), load_dataset(SEALS).fingerprint).keys[0]
    sqlite_wal_on_connect()  # as videosweep opens it, so that reading it later changes no file
    client = MlflowClient(uri)
    experiment = client.create_experiment("earlier", artifact_location=(store / "gone").as_uri())
    run_id = client.create_run(experiment, tags={"videosweep.role": "trial", "videosweep.trial_key": key,
                                                 "videosweep.sweep": "earlier"}).info.run_id
    client.log_metric(run_id, "val_accuracy_best", 0.5)
    client.set_terminated(run_id, "FINISHED")
    return ["run", str(path), "--workdir", str(folder / "work")]


def _file(folder: Path) -> Path:
    blocker = folder / "a-file"
    blocker.write_text("x")
    return blocker


def _junk_video(folder: Path, name: str = "junk.mp4") -> Path:
    path = folder / name
    path.write_bytes(b"\x00" * 100)
    return path


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")
            if not p.name.endswith(("-wal", "-shm", "-journal"))}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, cache_dir):
    folder = tmp_path / "case"
    folder.mkdir()
    args = case.make(folder)
    env = dict(arg.removeprefix("env-").split("=", 1) for arg in args if arg.startswith("env-"))
    args = [arg for arg in args if not arg.startswith("env-")]
    before = snapshot(folder)
    result = run_cli(*args, timeout=180, env=env)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(("[", "WARNING"))]
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr[-1500:])
    assert "Traceback" not in result.stderr
    assert lines and lines[-1].startswith("error:") and case.message.lower() in lines[-1].lower(), result.stderr
    assert len([line for line in lines if line.startswith("error:")]) == 1
    assert case.detail in result.stdout + result.stderr
    assert snapshot(folder) == before, "a bad input changed files"
    assert not (folder / "work").exists() or not any((folder / "work").iterdir())


@pytest.mark.slow  # needs a trained sweep
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
