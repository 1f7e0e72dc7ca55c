"""`videosweep data ...`: from raw videos and timestamp annotations to a checked, split dataset.

Each command works alone and composes with the others; bad input is one line and exit 2, and every file is
written atomically, so an interrupted command leaves what was there before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from zoo.errors import UserError

data_app = typer.Typer(help="Prepare datasets: extract frames, label, split, check, explore, demo.",
                       no_args_is_help=True)
console = Console(soft_wrap=True)


def _print_frame(frame, title: str) -> None:  # noqa: ANN001 - a pandas DataFrame
    table = Table(title=title)
    columns = [frame.index.name or "", *map(str, frame.columns)]
    for column in columns:
        table.add_column(column)
    for index, row in frame.iterrows():
        table.add_row(str(index), *(str(v) for v in row))
    console.print(table)


@data_app.command("extract-frames")
def extract_frames(
    videos: Annotated[list[Path], typer.Argument(help="Video files or folders of videos.")],
    out: Annotated[Path, typer.Option(help="Dataset folder: frames go to OUT/<video>/<video>-00001.jpg.")],
    fps: Annotated[float, typer.Option(help="Frames per second to keep (chosen by timestamp).")] = 2.0,
    size: Annotated[Optional[str], typer.Option(help="Resize frames to WxH (default: keep).")] = None,
    workers: Annotated[int, typer.Option(help="Videos decoded in parallel.")] = 2,
) -> None:
    """Decode videos with OpenCV into frame folders; already-extracted videos with the same settings are skipped."""
    from rich.progress import Progress

    from zoo.extract import extract_all, find_videos
    from zoo.spec import parse_frame_size

    try:
        frame_size = parse_frame_size(size) if size else None
    except ValueError as err:
        raise UserError(str(err)) from None
    found = find_videos(videos)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("extracting", total=len(found))
        outcomes = extract_all(found, out, fps, frame_size, workers, lambda _: progress.advance(task))
    for outcome in outcomes:
        style = {"extracted": "green", "skipped": "dim", "failed": "red"}[outcome.status]
        detail = outcome.message or f"{outcome.frames} frames"
        console.print(f"[{style}]{outcome.status:>9}[/] {outcome.video}: {detail}")
    failed = [o.video for o in outcomes if o.status == "failed"]
    if failed:
        raise UserError(f"{len(failed)} of {len(outcomes)} video(s) failed: {', '.join(failed)}")


@data_app.command("labels-from-timestamps")
def labels_from_timestamps(
    annotations: Annotated[Path, typer.Argument(help="CSV: video,label,time_start,time_end[,split].")],
    frames: Annotated[Path, typer.Option(help="Dataset folder written by extract-frames.")],
    out: Annotated[Path, typer.Option(help="labels.csv to write.")],
    default_label: Annotated[Optional[str], typer.Option(help="Label of frames in no interval.")] = None,
) -> None:
    """Per-frame labels from annotated time intervals (half-open [start, end))."""
    from zoo import atomic
    from zoo.annotations import labels_from_timestamps as build

    table = build(annotations, frames, default_label)
    atomic.write_text(out, table.to_csv(index=False))
    counts = table.label.value_counts().to_dict()
    console.print(f"wrote {out}: {len(table)} frames of {table.video.nunique()} videos, "
                  + ", ".join(f"{k} {v}" for k, v in counts.items()))


@data_app.command()
def split(
    labels: Annotated[Path, typer.Argument(help="labels.csv whose split column is (re)assigned.")],
    valid: Annotated[float, typer.Option(help="Share of videos for validation.")] = 0.15,
    test: Annotated[float, typer.Option(help="Share of videos for testing.")] = 0.15,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same split).")] = 0,
    stratify: Annotated[bool, typer.Option(help="Balance splits by each video's majority label.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Write here instead of replacing LABELS.")] = None,
) -> None:
    """Assign train/valid/test by video, reproducibly, and print the counts."""
    from zoo import atomic
    from zoo.data import read_csv_table
    from zoo.splits import assign_splits, split_counts

    table = read_csv_table(labels, "labels file", ("video", "frame", "label"))
    assigned = assign_splits(table, valid, test, seed, stratify)
    atomic.write_text(out or labels, assigned.to_csv(index=False))
    _print_frame(split_counts(assigned), f"{out or labels} (seed {seed})")


@data_app.command()
def check(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder with labels.csv.")],
    labels: Annotated[Optional[Path], typer.Option(help="labels.csv if not inside DATASET.")] = None,
    fix: Annotated[bool, typer.Option(help="Drop the rows of unlabelled frames (after confirmation).")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Confirm --fix without asking.")] = False,
) -> None:
    """Frames against labels both ways, images, splits and classes; exit 0 only when clean."""
    from zoo import atomic
    from zoo.check import check_dataset
    from zoo.errors import DataError

    if not dataset.is_dir():
        raise DataError(f"data folder {dataset} does not exist")
    labels_path = labels or dataset / "labels.csv"
    table, problems = check_dataset(dataset, labels_path)
    if not problems:
        console.print(f"[green]clean[/]: {len(table)} frames, {table.video.nunique()} videos, "
                      f"classes {', '.join(sorted(set(table.label)))}")
        return
    for problem in problems:
        console.print(f"[red]•[/] {problem.line()}")
    unlabelled = (table.label == "")
    if fix and unlabelled.any():
        if not yes and not typer.confirm(f"drop {int(unlabelled.sum())} row(s) with no label from {labels_path}?"):
            raise UserError("nothing changed")
        atomic.write_text(labels_path, table[~unlabelled].to_csv(index=False))
        console.print(f"dropped {int(unlabelled.sum())} unlabelled row(s); run check again")
    raise UserError(f"{labels_path.parent.name}: {len(problems)} kind(s) of problem, listed above")


@data_app.command()
def explore(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder with labels.csv.")],
    out: Annotated[Optional[Path], typer.Option(help="Folder for the PNGs and explore.html.")] = None,
    sequence_length: Annotated[int, typer.Option(help="Window length for the windows count.")] = 5,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out written by explore.")] = False,
) -> None:
    """Class balance, frames and windows per video, label timelines and example frames."""
    from reports.explore import explore as build
    from zoo import load_dataset

    loaded = load_dataset(dataset)
    target = out or Path(f"explore-{loaded.name}")
    tables = build(loaded, target, sequence_length, overwrite)
    _print_frame(tables["balance"], f"{loaded.name}: frames per split and class")
    console.print(f"{len(loaded.videos)} videos; plots and explore.html in {target}")


@data_app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Dataset folder to create.")],
    kind: Annotated[str, typer.Option(help="motion (class = direction, needs time) or static (class = shape).")
                    ] = "motion",
    videos: Annotated[int, typer.Option(help="Number of videos (80: 16 validation videos, enough for an "
                                             "accuracy interval that can clear the majority baseline).")] = 80,
    frames: Annotated[int, typer.Option(help="Frames per video.")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same dataset).")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out written by demo.")] = False,
) -> None:
    """A synthetic dataset of moving shapes, deterministic by seed."""
    from zoo.synthetic import make_demo

    table = make_demo(out, kind, videos, frames, seed, overwrite)
    console.print(f"wrote {out}: {videos} {kind} videos, {len(table)} frames, classes "
                  f"{', '.join(sorted(table.label.unique()))}")
