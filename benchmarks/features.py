"""Feature extraction throughput and windowing memory (issue: foundation). Prints figures; asserts nothing.

    python benchmarks/features.py [--frames 256] [--size 224]

(a) the research code's way: decode, resize, `predict` one frame at a time;
(b) the limit: the same backbone (traced, and frozen where extraction freezes it) on an in-memory loop of
    already-decoded batches;
ours: JPEG files -> cached features, batched, decoding overlapped with inference.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from zoo import canonical_spec, load_dataset  # noqa: E402
from zoo.backbones import build_backbone  # noqa: E402
from zoo.features import EXTRACTION_BATCH, compiled_inference, extract_features, worth_freezing  # noqa: E402
from zoo.frames import read_frame, read_frames  # noqa: E402
from zoo.spec import ModelSpec  # noqa: E402
from zoo.windows import WindowSequence, window_ends  # noqa: E402

SEALS = Path(__file__).resolve().parents[1] / "examples" / "seals"


def rate(count: int, seconds: float) -> float:
    return count / seconds


def median_rate(count: int, loop: Callable[[], None], repeats: int) -> float:
    """Items per second over `repeats` timed runs of `loop`, the median one (a shared machine has bad moments)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        loop()
        times.append(time.perf_counter() - started)
    return rate(count, float(np.median(times)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=725)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each loop; the median is reported")
    args = parser.parse_args()
    dataset = load_dataset(SEALS)
    paths = dataset.frame_paths[: args.frames]
    spec = canonical_spec(ModelSpec(architecture="image_mlp_frozen", backbone="mobilenet_v2", weights="none",
                                    frame_size=args.size))
    size = spec.frame_size
    model = build_backbone(spec)
    model.predict(np.zeros((1, size[1], size[0], 3), "float32"), verbose=0)

    per_frame_paths = paths[: min(128, len(paths))]

    def per_frame_loop() -> None:
        for path in per_frame_paths:
            model.predict(read_frame(path, size)[None].astype("float32"), verbose=0)

    per_frame = median_rate(len(per_frame_paths), per_frame_loop, args.repeats)

    decoded = read_frames(paths, size)
    freeze = worth_freezing(spec, len(paths))  # as extraction does
    infer = compiled_inference(model, EXTRACTION_BATCH, freeze)
    infer(decoded[:EXTRACTION_BATCH])

    def in_memory_loop() -> None:
        for i in range(0, len(decoded), EXTRACTION_BATCH):
            infer(decoded[i : i + EXTRACTION_BATCH])

    in_memory = median_rate(len(decoded), in_memory_loop, args.repeats)

    steady, totals = [], []
    for _ in range(args.repeats):
        done: list[tuple[float, int]] = []  # (time, frames so far) after each batch
        started = time.perf_counter()
        extract_features(paths, spec, progress=lambda n: done.append((time.perf_counter(),
                                                                       n + (done[-1][1] if done else 0))))
        totals.append(time.perf_counter() - started)
        # after the first batch (which pays for building, tracing and freezing) to the last
        steady.append(rate(done[-1][1] - done[0][1], done[-1][0] - done[0][0]))
    ours = float(np.median(steady))
    total = float(np.median(totals))
    setup = total - len(paths) / ours

    print(f"feature extraction, mobilenet_v2 at {size[0]}x{size[1]}, {len(paths)} seals JPEGs, {os.cpu_count()} cores, "
          f"median of {args.repeats} runs")
    print(f"  (a) per-frame predict       {per_frame:8.1f} frames/s  (over {len(per_frame_paths)} frames)")
    print(f"  (b) in-memory batched loop  {in_memory:8.1f} frames/s")
    print(f"  videosweep (JPEG -> feats)  {ours:8.1f} frames/s  = {ours / per_frame:.1f}x (a), {ours / in_memory:.2f}x (b)"
          f"  (after the first batch; it and the set-up before it take {setup:.1f} s: {len(paths) / total:.1f} frames/s with them)")

    for repeat in (1, 10):  # the seals features, then ten times as many frames: the batch stays one batch
        windowing_memory(dataset, repeat)


def windowing_memory(dataset, repeat: int) -> None:
    frames = len(dataset.labels)
    features = np.random.default_rng(0).normal(size=(frames * repeat, 1280)).astype("float32")
    ends = np.concatenate([window_ends(dataset, "train", 20) + frames * r for r in range(repeat)])
    labels = np.tile(dataset.label_indices, repeat)
    tracemalloc.start()
    sequence = WindowSequence(features, ends, labels, 2, 20, True, 32, shuffle=True)
    for index in range(len(sequence)):
        sequence[index]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    held = sequence.ends.nbytes + sequence._order.nbytes
    print(f"windowing sequence_length=20 over {features.nbytes / 2**20:.1f} MiB of features ({frames * repeat} "
          f"frames): held {1 + held / features.nbytes:.3f}x features, peak {1 + peak / features.nbytes:.2f}x "
          f"(features + one batch of 32 windows); materialised windows: "
          f"{len(ends) * 20 * 1280 * 4 / features.nbytes:.1f}x")


if __name__ == "__main__":
    main()
