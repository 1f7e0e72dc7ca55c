"""A trial's confusion matrices (counts and row-normalised) as CSV and PNG; reports reuse the figure (Agg backend)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from zoo import atomic  # noqa: E402


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)


def save_figure(figure: plt.Figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    with atomic.atomic_file(path) as handle:
        handle.write(buffer.getvalue())


def confusion_figure(matrix: np.ndarray, classes: list[str], title: str) -> plt.Figure:
    normalized = matrix.dtype.kind == "f"
    size = max(3.5, 0.6 * len(classes) + 2)
    figure, axes = plt.subplots(figsize=(size, size * 0.85))
    # Every cell prints its value, so no colorbar (it doubled the cost of a trial's plots).
    axes.imshow(matrix, interpolation="nearest", cmap="Blues", vmin=0, vmax=1 if normalized else None)
    axes.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes, yticklabels=classes,
             xlabel="Predicted label", ylabel="True label", title=title)
    plt.setp(axes.get_xticklabels(), rotation=45, ha="right")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), value in np.ndenumerate(matrix):
        text = f"{value:.2f}" if normalized else str(value)
        axes.text(col, row, text, ha="center", va="center", color="white" if value > threshold else "black")
    return figure


def plot_confusion_matrix(matrix: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    save_figure(confusion_figure(matrix, classes, title), path)


def write_confusion_matrices(matrix: np.ndarray, classes: list[str], folder: Path, split: str = "test") -> None:
    """confusion_matrix.png/.csv and confusion_matrix_normalized.png/.csv, rows true, columns predicted."""
    for suffix, values in (("", matrix), ("_normalized", normalize_rows(matrix))):
        frame = pd.DataFrame(values, index=pd.Index(classes, name="true"), columns=classes)
        atomic.write_text(folder / f"confusion_matrix{suffix}.csv", frame.to_csv())
        title = f"Confusion matrix ({split}{', normalized' if suffix else ''})"
        plot_confusion_matrix(values, classes, folder / f"confusion_matrix{suffix}.png", title)
