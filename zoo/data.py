"""Datasets on disk: `<root>/<video>/<frame files>` plus `labels.csv` (video,frame,label,split), validated on load.

A `Dataset` holds the label table in a fixed order (video, then natural frame order), the class list and a
fingerprint that caches and trial keys are keyed on. The fingerprint covers the labels table (every row, in
that order) and each labelled frame's name and content (sha256), nothing else: not times, not the folder's
location, not files that no row names. Byte-identical copies on other machines share it; changing one pixel
of one frame changes it. Content digests are memoised in the cache folder (see zoo/digests.py).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from zoo.atomic import folder_name_problem
from zoo.digests import file_digests
from zoo.errors import DataError

SPLITS = ("train", "valid", "test")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
REQUIRED_COLUMNS = ("video", "frame", "label", "split")
_SHOWN = 3  # offending rows named in one error line
_DIGITS = re.compile(r"\d+")


def natural_key(name: str) -> list[object]:
    """Sort frame-00010 after frame-0009 whatever the zero padding."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _examples(items: list[str] | pd.Series) -> str:
    items = list(items)
    shown = ", ".join(str(item) for item in items[:_SHOWN])
    return shown + (f" (and {len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")


@dataclass
class Dataset:
    """A validated dataset. `labels` rows are ordered by video then natural frame order."""

    root: Path
    labels: pd.DataFrame
    classes: list[str]
    fingerprint: str  # labels and frames: keys trials
    frames_fingerprint: str  # frame files only: keys caches (re-labelling keeps the features)
    labels_path: Path
    _video_slices: dict[str, slice] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @cached_property
    def frame_paths(self) -> list[Path]:
        return [self.root / video / frame for video, frame in zip(self.labels.video, self.labels.frame)]

    @cached_property
    def label_indices(self) -> np.ndarray:
        lookup = {name: index for index, name in enumerate(self.classes)}
        return self.labels.label.map(lookup).to_numpy(dtype="int64")

    @cached_property
    def videos(self) -> list[str]:
        return list(dict.fromkeys(self.labels.video))

    def video_rows(self, video: str) -> slice:
        """Rows of one video in `labels` (contiguous by construction)."""
        if not self._video_slices:
            starts = self.labels.groupby("video", sort=False).indices
            self._video_slices.update({v: slice(int(i[0]), int(i[-1]) + 1) for v, i in starts.items()})
        return self._video_slices[video]

    def split_videos(self, split: str) -> list[str]:
        return [v for v in self.videos if self.labels.split.iat[self.video_rows(v).start] == split]

    def class_counts(self) -> dict[str, dict[str, int]]:
        counts = self.labels.groupby(["split", "label"]).size()
        return {s: {c: int(counts.get((s, c), 0)) for c in self.classes} for s in SPLITS}

    def summary(self) -> dict[str, object]:
        return {
            "name": self.name,
            "root": str(self.root),
            "fingerprint": self.fingerprint,
            "classes": self.classes,
            "frames": len(self.labels),
            "videos": len(self.videos),
            "class_counts": self.class_counts(),
        }


def window_ends(dataset: Dataset, split: str, sequence_length: int) -> np.ndarray:
    """Row indices (into `dataset.labels`) of the last frame of every window in `split`, in order."""
    ends: list[np.ndarray] = []
    for video in dataset.split_videos(split):
        rows = dataset.video_rows(video)
        first_end = rows.start + sequence_length - 1
        if first_end < rows.stop:
            ends.append(np.arange(first_end, rows.stop, dtype=np.int64))
    return np.concatenate(ends) if ends else np.empty(0, dtype=np.int64)


def read_csv_table(path: Path, what: str, required: tuple[str, ...]) -> pd.DataFrame:
    """A CSV of text cells, stripped (CRLF and a missing final newline are fine), with `required` columns first."""
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read as CSV ({str(err).strip()})") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(required)}")
    return table.apply(lambda column: column.str.strip())


def read_labels(path: Path) -> pd.DataFrame:
    """Read labels.csv; refuse a malformed table."""
    table = read_csv_table(path, "labels file", REQUIRED_COLUMNS)[list(REQUIRED_COLUMNS)]
    if table.empty:
        raise DataError(f"{path}: no rows")
    return table


def _validate_rows(table: pd.DataFrame, path: Path) -> None:
    empty = table[(table == "").any(axis=1)]
    if len(empty):
        raise DataError(f"{path}: empty cells in row(s) {_examples([i + 2 for i in empty.index])}")
    for video in table.video.unique():  # a folder directly inside the dataset, never a path out of it
        problem = folder_name_problem(video)
        if problem:
            raise DataError(f"{path}: video name {video!r} {problem}; it must name one folder inside the dataset")
    bad_split = table[~table.split.isin(SPLITS)]
    if len(bad_split):
        raise DataError(
            f"{path}: unknown split {bad_split.split.iat[0]!r} in row {bad_split.index[0] + 2}; "
            f"use one of {', '.join(SPLITS)}"
        )
    duplicated = table[table.duplicated(["video", "frame"], keep=False)]
    if len(duplicated):
        raise DataError(f"{path}: frame listed twice: {_examples(duplicated.frame.unique())}")
    splits_per_video = table.groupby("video").split.nunique()
    mixed = splits_per_video[splits_per_video > 1]
    if len(mixed):
        raise DataError(f"{path}: video(s) in more than one split: {_examples(mixed.index)}")
    if table.label.nunique() < 2:
        raise DataError(f"{path}: only one class ({table.label.iat[0]}); a classifier needs at least two")
    for split in SPLITS:
        if not (table.split == split).any():
            raise DataError(f"{path}: no frames in the {split} split")


def _frames_on_disk(root: Path, videos: list[str]) -> list[str]:
    """`video/frame` of every image file in the videos' folders, in video then name order."""
    found: list[str] = []
    for video in videos:
        folder = root / video
        if folder.is_dir():
            found.extend(sorted(f"{video}/{p.name}" for p in folder.iterdir()
                                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
    return found


def _match_frames(root: Path, table: pd.DataFrame, path: Path) -> list[str]:
    """Check labels against the files both ways; return the relative path of every labelled frame."""
    listed = (table.video + "/" + table.frame).to_numpy(dtype=object)
    on_disk = np.array(_frames_on_disk(root, list(pd.unique(table.video.to_numpy(dtype=object)))), dtype=object)
    missing = listed[~pd.Series(listed).isin(on_disk).to_numpy()].tolist()
    unlabelled = on_disk[~pd.Series(on_disk).isin(listed).to_numpy()].tolist()
    if missing:
        raise DataError(f"{path}: {len(missing)} labelled frame(s) missing on disk: {_examples(missing)}")
    if unlabelled:
        raise DataError(
            f"{root}: {len(unlabelled)} frame file(s) have no row in {path.name}: {_examples(unlabelled)}"
        )
    return listed.tolist()


@lru_cache(maxsize=1 << 16)  # frame numbers repeat across videos
def _number_text(run: str) -> str:
    # NUL sorts before any text (as a shorter text part does in natural_key), then the digit count, then digits
    digits = str(int(run))
    return f"\0{chr(0x100 + min(len(digits), 0xFFFF))}{digits}"


def natural_order(table: pd.DataFrame) -> np.ndarray:
    """Row order by video, then natural frame order (ties keep row order), sorted as plain strings that order
    as natural_key does: a million rows take seconds, not minutes."""
    names = pd.unique(table.frame.to_numpy(dtype=object))
    sortable = pd.Series([_DIGITS.sub(lambda run: _number_text(run.group()), name) for name in names])
    ranks = pd.factorize(sortable, sort=True)[0]  # frame1 and frame01 share a rank
    frame_rank = ranks[pd.Index(names).get_indexer(table.frame)]
    video_code = pd.factorize(table.video, sort=True)[0]
    return np.lexsort((frame_rank, video_code))


def fingerprints(root: Path, table: pd.DataFrame, files: list[str], cache_dir: str | Path | None) -> tuple[str, str]:
    """(dataset, frames) fingerprints: frame names and contents, then the labels table on top."""
    frames_digest = hashlib.sha256()
    for name, content in zip(files, file_digests(root, files, cache_dir)):
        frames_digest.update(f"{name}\0{content}\n".encode())
    digest = frames_digest.copy()
    digest.update(table.to_csv(index=False).encode())
    return digest.hexdigest()[:16], frames_digest.hexdigest()[:16]


def load_dataset(root: str | Path, labels: str | Path | None = None,
                 cache_dir: str | Path | None = None) -> Dataset:
    """Load and validate a dataset; raise DataError with one line naming the offending rows."""
    root = Path(root).expanduser()
    if not root.is_dir():
        demo = "; `videosweep data demo --out FOLDER` makes a small one to try" if not root.exists() else ""
        raise DataError(f"data folder {root.absolute()} {'is not a folder' if root.exists() else 'does not exist'}"
                        f"{demo}")
    labels_path = Path(labels).expanduser() if labels else root / "labels.csv"
    table = read_labels(labels_path)
    _validate_rows(table, labels_path)
    table = table.iloc[natural_order(table)].reset_index(drop=True)
    files = _match_frames(root, table, labels_path)
    fingerprint, frames_fingerprint = fingerprints(root, table, files, cache_dir)
    return Dataset(
        root=root.resolve(),
        labels=table,
        classes=sorted(table.label.unique()),
        fingerprint=fingerprint,
        frames_fingerprint=frames_fingerprint,
        labels_path=labels_path.resolve(),
    )
