"""Windows of consecutive frames, lazily: index arrays into one per-dataset array, never materialised copies.

A window of `sequence_length` frames never crosses a video boundary and takes its last frame's label. Only
the batch being fed to the model is gathered, so memory stays at the size of the frame/feature array however
long the windows are (the research code multiplied it by `sequence_length`).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from zoo.data import window_ends as window_ends  # lives beside Dataset: keras-free callers


def gather_windows(source: np.ndarray, ends: np.ndarray, sequence_length: int, windowed: bool) -> np.ndarray:
    """(B, L, ...) windows ending at `ends` (or (B, ...) single frames when not windowed), as float32."""
    if not windowed:
        return np.asarray(source[ends], dtype=np.float32)
    offsets = np.arange(-(sequence_length - 1), 1, dtype=np.int64)
    # Fancy indexing reads only these rows, from RAM or from a memory-mapped cache file alike.
    return np.asarray(source[ends[:, None] + offsets[None, :]], dtype=np.float32)


class WindowSequence(keras.utils.PyDataset):
    """Batches of (windows, one-hot labels) for Keras, reshuffled each epoch from a seeded generator."""

    def __init__(
        self,
        source: np.ndarray,
        ends: np.ndarray,
        labels: np.ndarray,
        num_classes: int,
        sequence_length: int,
        windowed: bool,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.source, self.ends, self.labels = source, ends, labels
        self.num_classes, self.sequence_length, self.windowed = num_classes, sequence_length, windowed
        self.batch_size, self.shuffle = batch_size, shuffle
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(ends)) if shuffle else np.arange(len(ends))

    def __len__(self) -> int:
        return math.ceil(len(self.ends) / self.batch_size)

    def batch_ends(self, index: int) -> np.ndarray:
        return self.ends[self._order[index * self.batch_size : (index + 1) * self.batch_size]]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        ends = self.batch_ends(index)
        x = gather_windows(self.source, ends, self.sequence_length, self.windowed)
        y = np.eye(self.num_classes, dtype=np.float32)[self.labels[ends]]
        return x, y

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._order = self._rng.permutation(len(self.ends))


class RestOfEpoch(keras.utils.PyDataset):
    """The batches of a sequence's current epoch after its first `start` (training continued inside an epoch);
    its epoch's end is the sequence's own, which draws the next epoch's order."""

    def __init__(self, sequence: WindowSequence, start: int) -> None:
        super().__init__()
        self.sequence, self.start = sequence, start

    def __len__(self) -> int:
        return len(self.sequence) - self.start

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.sequence[self.start + index]

    def on_epoch_end(self) -> None:
        self.sequence.on_epoch_end()
