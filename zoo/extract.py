"""Frames from video files: `DATASET/<video>/<video>-00001.jpg ...` at a requested rate, one folder per video.

Each video folder also holds `extraction.json`: the settings, the source file's size and mtime, the duration
and every frame's timestamp (what labels-from-timestamps needs). A video already extracted with the same
settings is skipped; changed settings re-extract it. A folder appears complete or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from zoo import atomic
from zoo.errors import DataError, UserError, one_line
from zoo.video import VIDEO_SUFFIXES, sample_video, video_duration

METADATA = "extraction.json"
JPEG_QUALITY = 95


@dataclass(frozen=True)
class Outcome:
    video: str
    status: str  # extracted | skipped | failed
    frames: int = 0
    message: str = ""


def find_videos(inputs: Iterable[Path]) -> list[Path]:
    """Video files named directly or found (not recursively) in folders; names must be unique."""
    videos: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            videos.extend(sorted(p for p in item.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES))
        elif item.exists():
            videos.append(item)
        else:
            raise UserError(f"video {item} does not exist")
    if not videos:
        raise UserError("no video files found (looked for " + ", ".join(VIDEO_SUFFIXES) + ")")
    stems: dict[str, Path] = {}
    for video in videos:
        problem = atomic.folder_name_problem(video.stem)
        if problem:
            raise UserError(f"video {video}: its name {video.stem!r} {problem}, so it cannot name a frame folder")
        if video.stem in stems:
            raise UserError(f"two videos would share the frame folder {video.stem}: {stems[video.stem]} and {video}")
        stems[video.stem] = video
    return videos


def settings_of(video: Path, fps: float, size: tuple[int, int] | None) -> dict[str, Any]:
    stat = video.stat()
    return {"source": str(video.resolve()), "source_bytes": stat.st_size, "source_mtime_ns": stat.st_mtime_ns,
            "fps": fps, "size": None if size is None else f"{size[0]}x{size[1]}", "quality": JPEG_QUALITY}


def read_metadata(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / METADATA).read_text())
    except (OSError, ValueError):
        return None


def extract_video(video: Path, out: Path, fps: float, size: tuple[int, int] | None) -> Outcome:
    """Extract one video into `out/<stem>/` unless done already with the same settings."""
    name, folder = video.stem, out / video.stem
    if not atomic.is_inside(out, folder):  # find_videos refuses such names; never write outside --out
        return Outcome(name, "failed", message=f"frame folder {folder} is not inside {out}")
    settings = settings_of(video, fps, size)
    previous = read_metadata(folder)
    if previous is not None and previous.get("settings") == settings:
        return Outcome(name, "skipped", len(previous.get("frames", [])))
    try:
        # a folder of the same name is replaced only when an earlier extraction wrote it
        with atomic.atomic_dir(folder, overwrite=True, marker=METADATA, what="frame folder") as staging:
            frames = []
            for index, (seconds, image) in enumerate(sample_video(video, fps), start=1):
                if size is not None:
                    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
                frame = f"{name}-{index:05d}.jpg"
                ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if not ok:
                    raise DataError(f"cannot encode frame {index} of {video}")
                with atomic.atomic_file(staging / frame) as handle:
                    handle.write(encoded.tobytes())
                frames.append({"frame": frame, "time": round(seconds, 4)})
            if not frames:
                raise DataError(f"video {video} has no frames")
            duration = video_duration(video) or frames[-1]["time"] + 1.0 / fps
            atomic.write_json(staging / METADATA, {"settings": settings, "duration": round(duration, 4),
                                                   "frames": frames})
    except (DataError, UserError, OSError) as err:
        return Outcome(name, "failed", message=one_line(str(err)))
    return Outcome(name, "extracted", len(frames))


def extract_all(videos: list[Path], out: Path, fps: float, size: tuple[int, int] | None, workers: int,
                progress: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Extract every video in parallel processes (joblib); failures are collected, the rest continue."""
    from joblib import Parallel, delayed

    if fps <= 0:
        raise UserError(f"--fps must be positive, not {fps}")
    existed = out.exists()
    atomic.writable_dir(out, "dataset folder")
    jobs = (delayed(extract_video)(video, out, fps, size) for video in videos)
    outcomes = []
    for outcome in Parallel(n_jobs=max(1, workers), return_as="generator_unordered")(jobs):
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome)
    if not existed and not any(out.iterdir()):
        out.rmdir()  # every video failed: leave no empty dataset folder behind
    return sorted(outcomes, key=lambda o: o.video)
