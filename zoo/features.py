"""Batched backbone feature extraction: frames are decoded in threads while the network runs on the last batch.

The research code called `predict` once per frame; here one compiled call handles a whole batch and the
next batches are already being decoded, so the backbone is the only thing the CPU or GPU waits on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zoo.frames import iter_frame_batches

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from zoo.spec import ModelSpec

EXTRACTION_BATCH = 32


def compiled_inference(model: keras.Model, batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """A traced forward pass at a fixed batch size (the last batch is padded, so it traces once)."""
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def run(batch: np.ndarray) -> np.ndarray:
        rows = len(batch)
        if rows < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - rows, *batch.shape[1:]), batch.dtype)])
        return np.asarray(forward(tf.convert_to_tensor(batch, dtype=tf.float32)))[:rows]

    return run


def extract_features(
    paths: Sequence[Path],
    spec: ModelSpec,
    batch_size: int = EXTRACTION_BATCH,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Pooled features (N, F) float32 of the frames at `paths`, in order."""
    from zoo.backbones import build_backbone

    assert spec.frame_size is not None
    model = build_backbone(spec)
    infer = compiled_inference(model, batch_size)
    out = np.empty((len(paths), int(model.output_shape[-1])), dtype=np.float32)
    row = 0
    for batch in iter_frame_batches(paths, spec.frame_size, batch_size):
        out[row : row + len(batch)] = infer(batch)
        row += len(batch)
        if progress is not None:
            progress(len(batch))
    return out
