"""`videosweep weights ...`: the ImageNet weights files a sweep loads: list them, fetch them ahead (or into a folder
to carry to an air-gapped machine), verify the cached copies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from zoo.errors import UserError

weights_app = typer.Typer(help="ImageNet weights: list, fetch (ahead, or --to a folder), verify.",
                          no_args_is_help=True)
console = Console(soft_wrap=True)


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:,.1f} MiB" if path.is_file() else "-"


@weights_app.command("list")
def list_weights() -> None:
    """Every backbone's ImageNet weights files: frame sizes, file name, cached or not, size, how it is checked."""
    from zoo.backbones import keras_models_dir
    from zoo.registry import get_backbone
    from zoo.weights import WEIGHTS_SOURCES, all_files, check_kind

    table = Table(title=f"ImageNet weights in {keras_models_dir()}")
    for column in ("backbone", "frame sizes", "file", "cached", "size", "hash"):
        table.add_column(column, overflow="fold")  # a file name is copied from here: never cut with "..."
    for file in all_files():
        source, backbone = WEIGHTS_SOURCES[file.backbone], get_backbone(file.backbone)
        rows = next((r for r in source.rows if f"_{r}_" in file.name), None)
        sizes = f"at least {backbone.min_size}x{backbone.min_size}" if rows is None else f"{rows}x{rows}" + (
            " and sizes not listed" if rows == max(source.rows) else "")
        path = file.path()
        table.add_row(file.backbone, sizes, file.name, "yes" if path.is_file() else "no", _size(path),
                      check_kind(file))
    console.print(table)


@weights_app.command()
def fetch(
    sweep_file: Annotated[Optional[Path], typer.Argument(help="Fetch what this sweep's trials load.")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="Fetch this backbone's file instead.")] = None,
    frame_size: Annotated[Optional[str], typer.Option(metavar="WxH", help="Frame size with --backbone "
                                                      "(default: the backbone's native size).")] = None,
    to: Annotated[Optional[Path], typer.Option(metavar="DIR", help="Put the files in this folder (to carry to "
                                               "an air-gapped machine) instead of Keras's cache.")] = None,
) -> None:
    """Download ImageNet weights now (a sweep fetches what it lacks itself, before its workers start)."""
    from runner.search.expand import imagenet_weights_needed
    from runner.spec.sweep import load_sweep
    from videosweep.progress import DownloadProgress
    from zoo.spec import parse_frame_size
    from zoo.weights import fetch as fetch_files
    from zoo.weights import weights_file

    if (sweep_file is None) == (backbone is None):
        raise UserError("give either SWEEP_FILE or --backbone NAME, not both")
    if frame_size is not None and backbone is None:
        raise UserError("--frame-size goes with --backbone (a sweep file says its own sizes)")
    if backbone is not None:
        try:
            size = parse_frame_size(frame_size)
        except ValueError as err:
            raise UserError(str(err)) from None
        files = [weights_file(backbone, size)]
    else:
        assert sweep_file is not None
        files = imagenet_weights_needed(load_sweep(sweep_file))
    if not files:
        console.print("nothing to fetch: no trial loads ImageNet weights")
        return
    paths = fetch_files(files, DownloadProgress(console), to)
    for path in paths:
        console.print(f"{path} ({_size(path)})", highlight=False)
    if to is not None:
        from zoo.backbones import keras_models_dir

        console.print(f"on the machine without network, copy these files into {keras_models_dir()} "
                      "(or $KERAS_HOME/models)", highlight=False)


@weights_app.command()
def verify() -> None:
    """Check every cached weights file against Keras's published hash or the sha256 recorded at its download."""
    from zoo.weights import all_files, check_kind
    from zoo.weights import verify as verify_file

    failed = []
    checked = 0
    for file in all_files():
        if not file.path().is_file():
            continue
        checked += 1
        problem = verify_file(file)
        if problem:
            failed.append(f"{file.path()}: {problem}")
        kind = check_kind(file)
        console.print(f"{file.name}: {'FAILED: ' + problem if problem else 'ok' if 'unverified' not in kind else kind}",
                      highlight=False)
    if failed:
        raise UserError(f"{len(failed)} cached weights file(s) fail their check ({'; '.join(failed)}): delete them "
                        "and `videosweep weights fetch` again")
    console.print(f"{checked} cached weights file(s) checked")
