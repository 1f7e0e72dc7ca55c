"""A first look at a dataset: class balance per split, frames and windows per video, label timelines and
example frames per class, as PNGs plus one self-contained explore.html."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from reports.html import Figure, figure_html, page, png, table_html
from zoo import atomic
from zoo.data import SPLITS, Dataset
from zoo.frames import read_frame
from zoo.windows import window_ends

EXAMPLES_PER_CLASS = 6
THUMBNAIL = (128, 96)


def balance_table(dataset: Dataset) -> pd.DataFrame:
    counts = dataset.labels.pivot_table(index="split", columns="label", values="frame", aggfunc="count",
                                        fill_value=0)
    return counts.reindex([s for s in SPLITS if s in counts.index])


def video_table(dataset: Dataset, sequence_length: int) -> pd.DataFrame:
    rows = []
    for video in dataset.videos:
        frames = dataset.labels.iloc[dataset.video_rows(video)]
        rows.append({"video": video, "split": frames.split.iat[0], "frames": len(frames),
                     f"windows of {sequence_length}": max(0, len(frames) - sequence_length + 1),
                     **frames.label.value_counts().to_dict()})
    return pd.DataFrame(rows).fillna(0)


def balance_figure(balance: pd.DataFrame) -> Figure:
    figure, axes = plt.subplots(figsize=(6, 3.4))
    balance.plot.bar(ax=axes, rot=0)
    axes.set(ylabel="frames", xlabel="split")
    return Figure("Class balance per split", png(figure))


def timeline_figure(dataset: Dataset) -> Figure:
    """Each video as a row of coloured runs of its labels over frame index."""
    colours = dict(zip(dataset.classes, plt.get_cmap("tab10").colors))
    figure, axes = plt.subplots(figsize=(10, 0.45 * len(dataset.videos) + 1.2))
    for row, video in enumerate(dataset.videos):
        labels = dataset.labels.label.iloc[dataset.video_rows(video)].to_numpy()
        starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
        lengths = np.diff(np.r_[starts, len(labels)])
        for start, length in zip(starts, lengths):
            axes.broken_barh([(start, length)], (row - 0.4, 0.8), color=colours[labels[start]])
    axes.set_yticks(range(len(dataset.videos)), dataset.videos)
    axes.set(xlabel="frame", ylim=(-0.6, len(dataset.videos) - 0.4))
    axes.invert_yaxis()
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    axes.legend(handles, list(colours), loc="upper right", fontsize=8)
    return Figure("Labels over time per video", png(figure))


def examples_figure(dataset: Dataset, seed: int = 0) -> Figure:
    rng = np.random.default_rng(seed)
    figure, grid = plt.subplots(len(dataset.classes), EXAMPLES_PER_CLASS, squeeze=False,
                                figsize=(1.8 * EXAMPLES_PER_CLASS, 1.5 * len(dataset.classes)))
    for row, label in enumerate(dataset.classes):
        indices = np.flatnonzero(dataset.labels.label.to_numpy() == label)
        picked = np.sort(rng.choice(indices, min(EXAMPLES_PER_CLASS, len(indices)), replace=False))
        for axes in grid[row]:
            axes.axis("off")
        for axes, index in zip(grid[row], picked):
            axes.imshow(read_frame(dataset.frame_paths[index], THUMBNAIL))
            axes.set_title(f"{label}\n{dataset.labels.frame.iat[index]}", fontsize=7)
    return Figure("Example frames per class", png(figure))


def explore(dataset: Dataset, out: Path, sequence_length: int = 5, overwrite: bool = False) -> dict[str, pd.DataFrame]:
    """Write the PNGs and explore.html into `out`; return the tables for the terminal."""
    balance, videos = balance_table(dataset), video_table(dataset, sequence_length)
    windows = {split: len(window_ends(dataset, split, sequence_length)) for split in SPLITS}
    figures = [balance_figure(balance), timeline_figure(dataset), examples_figure(dataset)]
    with atomic.atomic_dir(out, overwrite=overwrite, marker=atomic.EXPLORE_MARKER) as staging:
        for figure, name in zip(figures, ("balance.png", "timeline.png", "examples.png")):
            with atomic.atomic_file(staging / name) as handle:
                handle.write(figure.png)
        body = (f"<h2>Frames per split and class</h2>{table_html(balance.reset_index())}"
                f"<p>windows of {sequence_length} frames: "
                + ", ".join(f"{s} {n}" for s, n in windows.items()) + "</p>"
                + "".join(figure_html(f) for f in figures)
                + f"<h2>Videos</h2>{table_html(videos)}")
        summary = f"{len(dataset.labels)} frames, {len(dataset.videos)} videos, classes {', '.join(dataset.classes)}"
        atomic.write_text(staging / "explore.html", page(f"Dataset {dataset.name}", summary, body))
    return {"balance": balance, "videos": videos}
