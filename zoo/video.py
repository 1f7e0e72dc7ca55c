"""Reading video files with OpenCV: frames sampled at a requested rate by their timestamps.

A container's nominal frame rate is often not exact (variable frame rate phones, dropped frames), so frames
are picked by their presentation time: the first frame at or after each multiple of 1/fps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from zoo.errors import DataError
from zoo.stdio import quiet_stderr

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".webm", ".wmv")


def _frame_time(capture: cv2.VideoCapture, decoded: int, nominal_fps: float, last: float) -> float:
    """The decoded frame's time in seconds; from the frame count when the container gives no timestamps."""
    seconds = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
    if decoded > 1 and seconds <= last:  # no (or stuck) timestamps
        seconds = (decoded - 1) / nominal_fps if nominal_fps > 0 else last + 1e-3
    return seconds


def sample_video(path: Path, fps: float) -> Iterator[tuple[float, np.ndarray]]:
    """(time in seconds, BGR image) of the frames at 1/fps spacing; DataError if nothing decodes."""
    if fps <= 0:
        raise DataError(f"--fps must be positive, not {fps}")
    with quiet_stderr():  # FFmpeg prints its own complaint about a broken file; ours names the file
        capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DataError(f"cannot open video {path} (missing, or not a video OpenCV can decode)")
    nominal = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    step, next_time, decoded, last = 1.0 / fps, 0.0, 0, -1.0
    try:
        while True:
            ok, image = capture.read()
            if not ok or image is None:
                break
            decoded += 1
            seconds = _frame_time(capture, decoded, nominal, last)
            last = seconds
            if seconds + 1e-6 >= next_time:
                yield seconds, image
                while next_time <= seconds + 1e-6:
                    next_time += step
    finally:
        capture.release()
    if decoded == 0:
        raise DataError(f"cannot decode any frame of video {path}")


def video_duration(path: Path) -> float | None:
    """The container's duration in seconds (frames / nominal fps), None when it does not say."""
    capture = cv2.VideoCapture(str(path))
    try:
        frames, fps = capture.get(cv2.CAP_PROP_FRAME_COUNT), capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()
    return frames / fps if frames > 0 and fps > 0 else None
