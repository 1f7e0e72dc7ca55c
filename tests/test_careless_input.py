"""Careless (not hostile) input through the real CLI: research spellings, cache estimates, big grids' examples,
and a dataset fingerprint that follows the frames' content, not their times."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import derive_dataset, run_cli
from tests.runner.execution.test_run import FEATURES, write_sweep


def plan_json(path: Path, *extra: str, env: dict[str, str] | None = None) -> dict:
    result = run_cli("plan", str(path), "--workdir", str(path.parent / "work"), "--json", *extra, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_research_spellings_in_space_keys_values_and_constraints(tmp_path):
    space = [{"architecture": ["image_MLP_frozen"], "pretrained_model_name": ["mobilenetv2_1.00_224"],
              "weights": ["none"], "frame_size": ["32x32"], "layer_1_size": [0, 8, 16]}]
    constraints = ["pretrained_model_name in ['MobileNetV2'] and layer_1_size >= 8",
                   "architecture == 'image_MLP_frozen'"]
    report = plan_json(write_sweep(tmp_path, space, constraints=constraints))
    assert report["trials"] == 2 and report["dropped"] == {f"constraint: {constraints[0]}": 1}
    assert report["feature_extractions"] == {"mobilenet_v2/avg/32x32/none": 2}


def test_plan_estimates_cache_sizes_and_keeps_a_bounded_list_of_dropped_examples(tmp_path):
    space = [{"architecture": ["image_mlp_frozen"], **FEATURES, "layer_1_size": [0],
              "layer_2_size": list(range(301))},
             {"architecture": ["c3dsmall"]}]
    report = plan_json(write_sweep(tmp_path, space), "--verbose")
    frames = report["data"]["frames"]
    assert report["trials"] == 2 and sum(report["dropped"].values()) == 300
    assert len(report["dropped_combinations"]) == 200
    assert report["cache_bytes"] == {"features mobilenet_v2/avg/32x32/none": frames * 1280 * 4,
                                     "frames 112x112": frames * 112 * 112 * 3}


def test_fingerprint_follows_frame_content_not_times_or_location(tmp_path):
    cache = tmp_path / "cache"
    env = {"VIDEOSWEEP_CACHE": str(cache)}
    linked = derive_dataset(tmp_path / "linked", frames_per_video=40)
    copied = shutil.copytree(linked, tmp_path / "copied", symlinks=False)

    def fingerprint(data: Path) -> str:
        sweep = write_sweep(tmp_path, [{"architecture": ["c3dsmall"]}], data={"root": str(data)})
        return plan_json(sweep, env=env)["data"]["fingerprint"]

    first = fingerprint(linked)
    assert list((cache / "digests").glob("*.json")), "no digest memo in the cache folder"
    assert fingerprint(copied) == first  # byte-identical copy elsewhere
    frame = next(copied.glob("*/*.jpeg"))
    os.utime(frame, ns=(1, 1))
    assert fingerprint(copied) == first  # times are not content
    data = bytearray(frame.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    frame.write_bytes(bytes(data))  # a new mtime tells the memo to read it again
    assert fingerprint(copied) != first


@pytest.mark.slow  # a million-row labels file
def test_plan_names_missing_frames_of_a_million_row_labels_file(tmp_path):
    """A labels.csv of 1,000,000 rows whose frames are mostly missing: `plan` names the missing ones in one line
    (the per-row sort that took minutes is vectorised; its time is measured in benchmarks, not here)."""
    import pandas as pd

    data = derive_dataset(tmp_path / "data", frames_per_video=5)
    rows = 1_000_000
    videos = sorted(p.name for p in data.iterdir() if p.is_dir())
    table = pd.DataFrame({"video": [videos[i % len(videos)] for i in range(rows)],
                          "frame": [f"frame{i:07d}.jpeg" for i in range(rows)],
                          "label": ["seal", "noseal"] * (rows // 2),
                          "split": [("train", "valid", "test")[i % 3] for i in range(rows)]})
    pd.concat([pd.read_csv(data / "labels.csv", dtype=str), table]).to_csv(data / "labels.csv", index=False)
    result = run_cli("plan", str(write_sweep(tmp_path, [{"architecture": ["c3dsmall"]}], data={"root": str(data)})))
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    assert "missing" in line and "frame0000000.jpeg" in line, line
