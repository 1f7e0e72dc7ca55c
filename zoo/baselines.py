"""What a model must beat: per split, the accuracy of always answering the majority class, and chance.

Counted over exactly the windows a trial is evaluated on (a window takes its last frame's label, and a video
shorter than the window gives none), so a trial's accuracy and its baseline share one denominator. The majority
class is each split's own: the best any constant answer can score there, the strictest constant baseline.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - zoo.data (pandas) only where a dataset is read
    from zoo.data import Dataset

# The dataset's split names -> the names metrics use (val_accuracy, test_accuracy).
SPLIT_NAMES = {"train": "train", "valid": "val", "test": "test"}


@dataclass(frozen=True)
class Baseline:
    """One split's constant-answer baseline."""

    windows: int
    majority_class: str
    majority_accuracy: float
    chance: float  # 1 / number of classes: a uniform random guess
    # Windows of one video are correlated (they share frames, and labels come in runs): counting each video as
    # one unit, of weight its number of windows, leaves Kish's effective sample size (sum m)^2 / sum m^2 -- the
    # conservative count an accuracy's interval may rest on (intra-video correlation taken as 1).
    effective_units: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def label_baseline(labels: np.ndarray, videos: np.ndarray, classes: list[str]) -> Baseline | None:
    """The baseline of these class indices (one per window, with the video each comes from); None without
    windows. Ties: the first class."""
    if len(labels) == 0:
        return None
    counts = np.bincount(labels, minlength=len(classes))
    top = int(counts.argmax())
    return Baseline(int(len(labels)), classes[top], float(counts[top] / len(labels)), 1.0 / len(classes),
                    effective_units(videos))


def effective_units(videos: np.ndarray) -> float:
    """Kish's effective sample size of windows clustered by video: (sum m)^2 / sum m^2 over videos' counts m."""
    sizes = np.unique(videos, return_counts=True)[1].astype(float)
    return float(sizes.sum() ** 2 / (sizes**2).sum())


def split_baselines(dataset: Dataset, ends: dict[str, np.ndarray]) -> dict[str, Baseline]:
    """Per split (named train/val/test) with windows: the baseline of the windows ending at `ends[split]`."""
    found = {}
    for split, name in SPLIT_NAMES.items():
        rows = ends.get(split)
        baseline = None if rows is None else label_baseline(
            dataset.label_indices[rows], dataset.labels.video.to_numpy()[rows], dataset.classes)
        if baseline is not None:
            found[name] = baseline
    return found


def window_baselines(dataset: Dataset, sequence_length: int) -> dict[str, Baseline]:
    """Per split with windows of `sequence_length` frames: its baseline."""
    from zoo.data import window_ends

    return split_baselines(dataset, {split: window_ends(dataset, split, sequence_length) for split in SPLIT_NAMES})


def from_entries(entries: Any) -> dict[str, dict[str, Any]]:
    """The inverse of result_entries, from results.json or a trial's row of the reports (any mapping): per split
    with a recorded baseline, {majority_accuracy, majority_class (None if not recorded), chance}."""
    found = {}
    for split in SPLIT_NAMES.values():
        accuracy = entries.get(f"baseline_{split}_majority_accuracy")
        if isinstance(accuracy, (int, float)) and math.isfinite(accuracy):
            label = entries.get(f"baseline_{split}_majority_class")
            units = entries.get(f"baseline_{split}_effective_units")
            found[split] = {"majority_accuracy": float(accuracy),
                            "majority_class": label if isinstance(label, str) else None,
                            "chance": float(entries.get("baseline_chance", math.nan)),
                            "effective_units": float(units) if isinstance(units, (int, float)) and
                            math.isfinite(units) else None}
    return found


def result_entries(baselines: dict[str, Baseline]) -> dict[str, object]:
    """A trial's baselines as flat results.json entries: baseline_<split>_majority_accuracy and _majority_class,
    and baseline_chance."""
    entries: dict[str, object] = {}
    for split, baseline in baselines.items():
        entries[f"baseline_{split}_majority_accuracy"] = baseline.majority_accuracy
        entries[f"baseline_{split}_majority_class"] = baseline.majority_class
        entries[f"baseline_{split}_effective_units"] = baseline.effective_units
        entries["baseline_chance"] = baseline.chance
    return entries
