"""Synthetic datasets of small moving shapes, deterministic by seed, in the frame-folder layout.

`motion`: a bright square drifts left or right and turns round at random moments; a frame's label is the
direction it moved to get there, so one frame cannot tell the class and temporal models must win.
`static`: a circle or a square wanders about; the class is the shape, visible in every frame.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from zoo import atomic
from zoo.errors import UserError

KINDS = ("motion", "static")
FRAME_SIZE = 64
SHAPE = 12
SPEED = 2  # pixels per frame: plain to see, and a turn (at a wall, or by chance) comes every ~20 frames
TURN_CHANCE = 0.02  # per frame: most 11-frame windows show one direction all through


def _background(rng: np.random.Generator) -> np.ndarray:
    base = rng.integers(20, 60)
    noise = rng.normal(0, 6, (FRAME_SIZE, FRAME_SIZE, 1))
    return np.clip(base + noise, 0, 255).repeat(3, axis=2).astype(np.uint8)


def _motion_video(rng: np.random.Generator, frames: int) -> tuple[list[np.ndarray], list[str]]:
    x, y = float(rng.uniform(SHAPE, FRAME_SIZE - 2 * SHAPE)), float(rng.uniform(SHAPE, FRAME_SIZE - 2 * SHAPE))
    direction = int(rng.choice([-1, 1]))
    color = tuple(int(c) for c in rng.integers(170, 256, 3))
    images, labels = [], []
    for _ in range(frames):
        if rng.random() < TURN_CHANCE or not (2 <= x + direction * SPEED <= FRAME_SIZE - SHAPE - 2):
            direction = -direction
        x += direction * SPEED
        y = float(np.clip(y + rng.normal(0, 0.7), 2, FRAME_SIZE - SHAPE - 2))
        image = _background(rng)
        cv2.rectangle(image, (int(x), int(y)), (int(x) + SHAPE, int(y) + SHAPE), color, -1)
        images.append(image)
        labels.append("right" if direction > 0 else "left")
    return images, labels


def _static_video(rng: np.random.Generator, frames: int, shape: str) -> tuple[list[np.ndarray], list[str]]:
    x, y = rng.uniform(SHAPE, FRAME_SIZE - SHAPE, 2)
    color = tuple(int(c) for c in rng.integers(170, 256, 3))
    images = []
    for _ in range(frames):
        x, y = np.clip([x + rng.normal(0, 2), y + rng.normal(0, 2)], SHAPE, FRAME_SIZE - SHAPE)
        image = _background(rng)
        if shape == "circle":
            cv2.circle(image, (int(x), int(y)), SHAPE // 2 + 1, color, -1)
        else:
            half = SHAPE // 2
            cv2.rectangle(image, (int(x) - half, int(y) - half), (int(x) + half, int(y) + half), color, -1)
        images.append(image)
    return images, [shape] * frames


def make_demo(out: Path, kind: str = "motion", videos: int = 80, frames: int = 20, seed: int = 0,
              overwrite: bool = False) -> pd.DataFrame:
    """Write `videos` videos of `frames` JPEG frames and labels.csv (60/20/20 split by video) into `out`."""
    if kind not in KINDS:
        raise UserError(f"unknown demo kind {kind!r}; choose {' or '.join(KINDS)}")
    if videos < 3 or frames < 2:
        raise UserError("a demo needs at least 3 videos (train, valid, test) of at least 2 frames")
    rng = np.random.default_rng(seed)
    n_test = n_valid = max(1, round(videos * 0.2))
    rows = []
    with atomic.atomic_dir(out, overwrite=overwrite, marker=atomic.DEMO_MARKER) as staging:
        for index in range(videos):
            name = f"{kind}-{index:03d}"
            shape = ("circle", "square")[index % 2]
            images, labels = _motion_video(rng, frames) if kind == "motion" else _static_video(rng, frames, shape)
            split = "test" if index < n_test else "valid" if index < n_test + n_valid else "train"
            (staging / name).mkdir()
            for number, (image, label) in enumerate(zip(images, labels), start=1):
                frame = f"{name}-{number:05d}.jpg"
                cv2.imwrite(str(staging / name / frame), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
                rows.append({"video": name, "frame": frame, "label": label, "split": split})
        table = pd.DataFrame(rows)
        atomic.write_text(staging / "labels.csv", table.to_csv(index=False))
    return table
