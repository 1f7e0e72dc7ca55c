"""A dataset's health check: every problem at once (loading stops at the first), each named with examples.

Checks frames against labels both ways, unreadable and differently sized images, empty label cells,
classes missing from a split, videos in several splits and unknown split names.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import pandas as pd

from zoo.data import IMAGE_SUFFIXES, SPLITS, read_labels
from zoo.frames import decode_threads, image_size


@dataclass
class Problem:
    kind: str
    count: int
    examples: list[str] = field(default_factory=list)

    def line(self) -> str:
        shown = ", ".join(self.examples[:3]) + (" ..." if len(self.examples) > 3 else "")
        return f"{self.kind}: {self.count}" + (f" ({shown})" if shown else "")


def _problem(kind: str, items: list[str]) -> list[Problem]:
    return [Problem(kind, len(items), items)] if items else []


def _decodes(path: Path) -> bool:
    return cv2.imread(str(path), cv2.IMREAD_REDUCED_COLOR_8) is not None


def check_dataset(root: Path, labels_path: Path | None = None) -> tuple[pd.DataFrame, list[Problem]]:
    """The labels table and the list of problems (empty when the dataset is clean)."""
    labels_path = labels_path or root / "labels.csv"
    table = read_labels(labels_path)
    problems: list[Problem] = []
    problems += _problem("rows with an empty cell (unlabelled frames)",
                         [f"row {i + 2}" for i in table.index[(table == "").any(axis=1)]])
    problems += _problem("rows with an unknown split", [f"row {i + 2}: {s!r}" for i, s in
                                                        table.split[~table.split.isin(SPLITS + ("",))].items()])
    problems += _problem("frames listed twice", list(table[table.duplicated(["video", "frame"])].frame))
    on_disk = {(p.parent.name, p.name): p for p in root.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES}
    listed = set(zip(table.video, table.frame))
    problems += _problem("labelled frames missing on disk", sorted(f"{v}/{f}" for v, f in listed - on_disk.keys()))
    problems += _problem("frame files without a row in labels.csv",
                         sorted(f"{v}/{f}" for v, f in on_disk.keys() - listed))
    present = [on_disk[key] for key in sorted(listed & on_disk.keys())]
    with ThreadPoolExecutor(decode_threads()) as pool:
        sizes = list(pool.map(image_size, present))
        decodes = list(pool.map(_decodes, present))
    problems += _problem("unreadable images", [f"{p.parent.name}/{p.name}" for p, ok in zip(present, decodes)
                                               if not ok])
    counted = Counter(s for s in sizes if s is not None)
    if len(counted) > 1:
        usual = counted.most_common(1)[0][0]
        problems += _problem(f"images not of the usual size {usual[0]}x{usual[1]}",
                             [f"{p.parent.name}/{p.name} {s[0]}x{s[1]}" for p, s in zip(present, sizes)
                              if s is not None and s != usual])
    splits = table[table.split != ""].groupby("video").split.unique()
    problems += _problem("videos in more than one split", [f"{v}: {', '.join(s)}" for v, s in splits.items()
                                                           if len(s) > 1])
    classes = set(table.label) - {""}
    for split in SPLITS:
        here = set(table.label[table.split == split]) - {""}
        if not here:
            problems.append(Problem(f"no frames in the {split} split", 1))
        elif classes - here:
            problems.append(Problem(f"classes absent from the {split} split", len(classes - here),
                                    sorted(classes - here)))
    if len(classes) < 2:
        problems.append(Problem("fewer than two classes", len(classes), sorted(classes)))
    return table, problems
