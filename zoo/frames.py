"""Reading frames: one decode-and-resize function used by training, extraction, export and prediction alike.

Frames are RGB uint8 at (width, height) = `frame_size`. OpenCV releases the GIL while decoding, so a thread
pool reads several frames at once; JPEGs much larger than the target are decoded at a reduced scale (the
DCT does the first downsampling for free), then resized with area interpolation.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from zoo.errors import DataError

cv2.setNumThreads(1)  # parallelism comes from our decode threads; OpenCV's own pool would oversubscribe
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))
_JPEG = (".jpg", ".jpeg")


def decode_threads() -> int:
    """Decoding threads: the process's CPU share (a worker slot's VIDEOSWEEP_CPU_THREADS) or the machine's
    cores, 2 to 8, so that slots side by side do not oversubscribe the cores."""
    share = os.environ.get("VIDEOSWEEP_CPU_THREADS", "")
    return max(2, min(8, int(share) if share.isdigit() else os.cpu_count() or 2))


def resize_rgb(image_bgr: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """A decoded BGR image (any size) -> RGB uint8 at (width, height)."""
    if (image_bgr.shape[1], image_bgr.shape[0]) != frame_size:
        image_bgr = cv2.resize(image_bgr, frame_size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file header only (no decode); None when the header is unreadable."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError):
        return None


def _decode_flag(path: Path, frame_size: tuple[int, int]) -> int:
    if path.suffix.lower() not in _JPEG:
        return cv2.IMREAD_COLOR
    source = image_size(path)
    if source is None:
        return cv2.IMREAD_COLOR
    for factor, reduced in _REDUCED:  # the DCT-domain downscale must still cover the target before the resize
        if source[0] >= factor * frame_size[0] and source[1] >= factor * frame_size[1]:
            return reduced
    return cv2.IMREAD_COLOR


def read_frame(path: Path, frame_size: tuple[int, int]) -> np.ndarray:
    """Decode one image file to RGB uint8 at `frame_size`; DataError naming the file if unreadable."""
    path = Path(path)
    image = cv2.imread(str(path), _decode_flag(path, frame_size))
    if image is None or image.size == 0:
        raise DataError(f"cannot read image {path}")
    return resize_rgb(image, frame_size)


def iter_frame_batches(
    paths: Sequence[Path], frame_size: tuple[int, int], batch_size: int, prefetch: int = 2
) -> Iterator[np.ndarray]:
    """Yield (B, H, W, 3) uint8 batches in order, decoding the next batches in threads meanwhile."""
    batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(decode_threads()) as pool:

        def submit(chunk: Iterable[Path]) -> list:
            return [pool.submit(read_frame, p, frame_size) for p in chunk]

        pending = [submit(chunk) for chunk in batches[:prefetch]]
        for index in range(len(batches)):
            futures = pending.pop(0)
            if index + prefetch < len(batches):
                pending.append(submit(batches[index + prefetch]))
            yield np.stack([f.result() for f in futures])


def read_frames(paths: Sequence[Path], frame_size: tuple[int, int]) -> np.ndarray:
    """Every frame, (N, H, W, 3) uint8, read in parallel into one preallocated array."""
    out = np.empty((len(paths), frame_size[1], frame_size[0], 3), dtype=np.uint8)
    row = 0
    for batch in iter_frame_batches(paths, frame_size, batch_size=64):
        out[row : row + len(batch)] = batch
        row += len(batch)
    return out
