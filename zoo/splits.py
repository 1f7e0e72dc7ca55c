"""Train/valid/test splits by video (never one video's frames in two splits), reproducible by seed.

With `stratify`, videos are grouped by their majority label, shuffled within each group and interleaved
round-robin before the test and valid shares are taken, so each split gets every kind of video it can.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from zoo.errors import UserError


def majority_labels(labels: pd.DataFrame) -> pd.Series:
    """Each video's most frequent label (ties broken alphabetically)."""
    counts = labels.groupby(["video", "label"]).size().reset_index(name="n")
    counts = counts.sort_values(["video", "n", "label"], ascending=[True, False, True])
    return counts.drop_duplicates("video").set_index("video").label


def _share(videos: int, fraction: float) -> int:
    return 0 if fraction <= 0 else max(1, int(round(videos * fraction)))


def assign_splits(labels: pd.DataFrame, valid: float, test: float, seed: int, stratify: bool) -> pd.DataFrame:
    """labels with its split column (re)assigned by video."""
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise UserError(f"--valid {valid} and --test {test} must be fractions whose sum is below 1")
    videos = sorted(labels.video.unique())
    n_test, n_valid = _share(len(videos), test), _share(len(videos), valid)
    if n_test + n_valid >= len(videos):
        raise UserError(f"{len(videos)} video(s) cannot make a train split plus {n_valid} valid and {n_test} test "
                        "video(s); splits are by video, so more videos are needed")
    rng = np.random.default_rng(seed)
    if stratify:
        groups = majority_labels(labels)
        queues = [list(rng.permutation(sorted(groups[groups == label].index))) for label in sorted(groups.unique())]
        order: list[str] = []
        while any(queues):
            for queue in queues:
                if queue:
                    order.append(queue.pop(0))
    else:
        order = list(rng.permutation(videos))
    split_of = {video: "test" for video in order[:n_test]}
    split_of.update({video: "valid" for video in order[n_test : n_test + n_valid]})
    return labels.assign(split=[split_of.get(v, "train") for v in labels.video])


def split_counts(labels: pd.DataFrame) -> pd.DataFrame:
    """Videos and frames per split and class, for the terminal."""
    frames = labels.pivot_table(index="split", columns="label", values="frame", aggfunc="count", fill_value=0)
    frames.insert(0, "videos", labels.groupby("split").video.nunique())
    return frames.reindex([s for s in ("train", "valid", "test") if s in frames.index])
