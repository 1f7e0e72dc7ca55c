"""Per-frame labels from timestamp annotations (`video,label,time_start,time_end[,split]`).

Intervals are half-open [start, end): one ending where the next begins is the normal case. A frame's time
comes from the extraction metadata. Overlaps with different labels, intervals past a video's end and videos
with no frames are errors naming the annotation row (rows counted as in a spreadsheet, header = 1).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from zoo.data import read_csv_table
from zoo.errors import DataError
from zoo.extract import METADATA, read_metadata

TIME = re.compile(r"(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)")
END_TOLERANCE_SECONDS = 0.5  # annotators round the end of a video up


def parse_time(text: str, where: str) -> float:
    """'HH:MM:SS(.s)', 'MM:SS(.s)' or seconds -> seconds."""
    value = str(text).strip()
    match = TIME.fullmatch(value)
    if match:
        hours, minutes, seconds = match.groups()
        if (hours is not None and int(minutes) >= 60) or float(seconds) >= 60:
            raise DataError(f"{where}: time {value!r} has minutes or seconds past 59")
        return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    try:
        seconds = float(value)
    except ValueError:
        raise DataError(f"{where}: time {value!r} is not HH:MM:SS, MM:SS or seconds") from None
    if seconds < 0 or seconds != seconds:
        raise DataError(f"{where}: time {value!r} must be a non-negative number of seconds")
    return seconds


def read_annotations(path: Path) -> pd.DataFrame:
    table = read_csv_table(path, "annotations file", ("video", "label", "time_start", "time_end"))
    table["row"] = table.index + 2
    table["start"] = [parse_time(v, f"{path} row {r}") for v, r in zip(table.time_start, table.row)]
    table["end"] = [parse_time(v, f"{path} row {r}") for v, r in zip(table.time_end, table.row)]
    bad = table[(table.end <= table.start) | (table.label == "") | (table.video == "")]
    if len(bad):
        row = bad.iloc[0]
        raise DataError(f"{path} row {row.row}: needs a video, a label and time_end after time_start")
    return table


def _check_overlaps(intervals: pd.DataFrame, path: Path) -> None:
    ordered = intervals.sort_values(["start", "end"]).reset_index(drop=True)
    for index in range(1, len(ordered)):
        later = ordered.iloc[index]
        for earlier_index in range(index):
            earlier = ordered.iloc[earlier_index]
            if later.start < earlier.end and later.label != earlier.label:
                raise DataError(f"{path} rows {earlier.row} and {later.row}: {later.video} intervals overlap with "
                                f"different labels ({earlier.label} until {earlier.end:g} s, {later.label} from "
                                f"{later.start:g} s)")


def labels_from_timestamps(annotations: Path, frames_root: Path, default_label: str | None) -> pd.DataFrame:
    """labels.csv rows (video, frame, label, split) for every extracted frame of the annotated videos."""
    table = read_annotations(annotations)
    if not frames_root.is_dir():
        raise DataError(f"frames folder {frames_root} does not exist")
    extracted = {p.parent.name for p in frames_root.glob(f"*/{METADATA}")}
    annotated = sorted(set(table.video))
    empty = table.iloc[:0]
    rows = []
    for video in annotated + sorted(extracted - set(annotated)):  # row errors first, then unannotated videos
        intervals = table[table.video == video] if video in annotated else empty
        meta = read_metadata(frames_root / video)
        if meta is None:
            raise DataError(f"{annotations} row {intervals.row.iat[0]}: video {video} has no extracted frames in "
                            f"{frames_root} (no {video}/{METADATA}; run `videosweep data extract-frames` first)")
        duration = float(meta["duration"])
        past = intervals[intervals.end > duration + END_TOLERANCE_SECONDS]
        if len(past):
            row = past.iloc[0]
            raise DataError(f"{annotations} row {row.row}: interval ends at {row.end:g} s, past the end of {video} "
                            f"({duration:g} s)")
        _check_overlaps(intervals, annotations)
        splits = set(intervals.get("split", pd.Series(dtype=str))) - {""}
        if len(splits) > 1:
            raise DataError(f"{annotations}: video {video} is given several splits ({', '.join(sorted(splits))})")
        split = splits.pop() if splits else ""
        uncovered = []
        for frame in meta["frames"]:
            hit = intervals[(intervals.start <= frame["time"]) & (frame["time"] < intervals.end)]
            label = hit.label.iat[0] if len(hit) else default_label
            if label is None:
                uncovered.append(frame["frame"])
                continue
            rows.append({"video": video, "frame": frame["frame"], "label": label, "split": split})
        if uncovered:
            what = "fall in no interval" if len(intervals) else "have no annotation at all"
            raise DataError(f"{len(uncovered)} frame(s) of {video} {what} (first {uncovered[0]}); "
                            "annotate them or give --default-label")
    return pd.DataFrame(rows, columns=["video", "frame", "label", "split"])
