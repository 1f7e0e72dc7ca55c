"""On-disk caches of resized frames and backbone features, shared safely by trials and processes.

One `.npy` per (dataset frames, what changes them) holds every frame of the dataset in `Dataset.labels`
order, so windows index into it without copies and readers can memory-map it. A file lock makes sure two
processes never compute the same entry at once; the entry is written atomically, so a reader sees all of
it or nothing. `CacheStats` counts hits and misses (trials record them; tests assert on them).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from filelock import FileLock

from zoo import atomic
from zoo.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from zoo.data import Dataset
    from zoo.spec import ModelSpec

DEFAULT_CACHE_DIR = Path("~/.cache/videosweep")


def cache_root(override: str | Path | None = None) -> Path:
    """`override`, else $VIDEOSWEEP_CACHE, else ~/.cache/videosweep."""
    chosen = override or os.environ.get("VIDEOSWEEP_CACHE") or DEFAULT_CACHE_DIR
    return Path(chosen).expanduser()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


STATS = CacheStats()


def cached_array(path: Path, compute: Callable[[], np.ndarray], mmap: bool = True) -> tuple[np.ndarray, bool]:
    """Load `path`, or compute and store it under a lock. Returns (array, was it a hit)."""
    mode = "r" if mmap else None
    if path.is_file():
        STATS.hits += 1
        return np.load(path, mmap_mode=mode), True
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock")
        lock.acquire()
    except OSError as err:
        raise UserError(f"cache folder {path.parent} is not writable ({err.strerror or err})") from None
    try:
        if path.is_file():  # another process computed it while we waited
            STATS.hits += 1
            return np.load(path, mmap_mode=mode), True
        STATS.misses += 1
        try:
            atomic.save_npy(path, compute())
        except OSError as err:
            raise atomic.write_error("cache entry", path, err) from None
        return np.load(path, mmap_mode=mode), False
    finally:
        lock.release()


def entry_state(path: Path) -> str:
    """'cached', 'computing' (another process holds its lock) or 'missing'; never blocks."""
    if path.is_file():
        return "cached"
    lock_path = Path(str(path) + ".lock")
    if not lock_path.exists():
        return "missing"
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Exception:  # Timeout: someone is computing it right now
        return "computing"
    lock.release()
    return "missing"


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    stat = path.stat()
    memo = (str(path), stat.st_size, stat.st_mtime_ns)  # weights files are large: hash each version once
    if memo in _DIGESTS:
        return _DIGESTS[memo]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    _DIGESTS[memo] = digest.hexdigest()[:12]
    return _DIGESTS[memo]


def weights_id(spec: ModelSpec) -> str:
    """What identifies the backbone weights in a cache key."""
    from zoo.backbones import RANDOM_INIT_SEED, resolve_weights

    if spec.weights == "none":
        return f"none{RANDOM_INIT_SEED}"
    path = resolve_weights(spec)
    assert path is not None
    return ("imagenet-" if spec.weights == "imagenet" else "file-") + file_digest(path)


def frames_path(dataset: Dataset, frame_size: tuple[int, int], root: Path) -> Path:
    return root / "frames" / dataset.frames_fingerprint / f"{frame_size[0]}x{frame_size[1]}.npy"


def features_path(dataset: Dataset, spec: ModelSpec, root: Path) -> Path:
    assert spec.frame_size is not None
    size = f"{spec.frame_size[0]}x{spec.frame_size[1]}"
    name = f"{spec.backbone}-{spec.pooling}-{size}-{weights_id(spec)}.npy"
    return root / "features" / dataset.frames_fingerprint / name


def load_frames(dataset: Dataset, frame_size: tuple[int, int], root: Path | None = None) -> tuple[np.ndarray, bool]:
    """All frames resized to (width, height), uint8 RGB, shape (N, H, W, 3); cached."""
    from zoo.frames import read_frames

    path = frames_path(dataset, frame_size, cache_root(root))
    return cached_array(path, lambda: read_frames(dataset.frame_paths, frame_size))


def load_features(dataset: Dataset, spec: ModelSpec, root: Path | None = None) -> tuple[np.ndarray, bool]:
    """Pooled backbone features of every frame, float32 (N, F); computed batched once per backbone setting."""
    from zoo.features import extract_features

    path = features_path(dataset, spec, cache_root(root))
    return cached_array(path, lambda: extract_features(dataset.frame_paths, spec))
