"""The `videosweep` command line: side effects live here; every user error becomes one line and exit 2."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from zoo.errors import UserError, one_line

app = typer.Typer(
    name="videosweep",
    help="Experiment sweeps over a zoo of video-classification models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=False, soft_wrap=True)
err_console = Console(stderr=True)
DEBUG = {"on": False}


@app.callback()
def _global(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    DEBUG["on"] = debug or os.environ.get("VIDEOSWEEP_DEBUG") == "1"


def quiet_tensorflow() -> None:
    """TensorFlow's C++ start-up chatter hides the lines users need; keep warnings and errors."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@app.command("zoo")
def zoo_command() -> None:
    """List the architectures and backbones the zoo can build."""
    import zoo

    table = Table(title="Architectures", show_lines=False)
    for column in ("name", "input", "parameters", "description"):
        table.add_column(column)
    for name in zoo.list_architectures():
        arch = zoo.get_architecture(name)
        params = ", ".join(sorted(arch.uses - {"architecture"}))
        table.add_row(name, arch.inputs, params, arch.description)
    console.print(table)
    backbones = Table(title="Backbones")
    for column in ("name", "native size", "min size", "features", "aliases"):
        backbones.add_column(column)
    for name in zoo.list_backbones():
        b = zoo.get_backbone(name)
        backbones.add_row(name, str(b.native_size), str(b.min_size), str(b.num_features), ", ".join(b.aliases))
    console.print(backbones)


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Dataset folder: <video>/<frames> plus labels.csv.")],
    out: Annotated[Path, typer.Option(help="Folder for the trial's artefacts (written atomically).")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Parameter as key=value; repeatable.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML file of parameters (--set wins).")] = None,
    labels: Annotated[Optional[Path], typer.Option(help="labels.csv if not inside --data.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Frame/feature cache (default ~/.cache/videosweep).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
) -> None:
    """Train one model on a dataset and write params, results, history, confusion matrices and the model."""
    from runner.spec import TrialSpec, parse_assignments, read_yaml_mapping
    from zoo import load_dataset, validated_spec

    params: dict[str, Any] = read_yaml_mapping(config, "config file") if config else {}
    params.update(parse_assignments(set_ or []))
    spec = TrialSpec.from_flat(params)
    validated_spec(spec.model)  # invalid combinations and missing weights fail before any data is read
    dataset = load_dataset(data, labels)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"output folder {out} already exists and is not empty (use --overwrite to replace it)")

    quiet_tensorflow()
    from runner.trial import run_trial

    def show_epoch(step: int, row: dict[str, Any]) -> None:
        console.print(
            f"round {row['round']} epoch {row['epoch']:>3}  lr {row['learning_rate']:.0e}  "
            f"loss {row['loss']:.4f}  acc {row['accuracy']:.3f}  "
            f"val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.3f}  ({row['seconds']:.1f}s)"
        )

    console.print(f"[bold]training[/] {spec.model.architecture} on {dataset.name} "
                  f"({len(dataset.labels)} frames, classes: {', '.join(dataset.classes)})")
    results = run_trial(spec, dataset, out, cache_dir=cache_dir, on_epoch=show_epoch, overwrite=overwrite)
    console.print(
        f"[green]done[/]: best round {results['fit_best_round']}, val_acc {results['fit_val_acc']:.3f}, "
        f"test_acc {results['fit_test_acc']:.3f}; artefacts in {out}"
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; user errors -> one line on stderr, exit 2 (traceback only with --debug)."""
    quiet_tensorflow()
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("VIDEOSWEEP_DEBUG") == "1"
    try:
        app(args=args, standalone_mode=False)
    except UserError as err:
        if debug:
            traceback.print_exc()
        err_console.print(f"[red]error:[/] {one_line(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as err:  # click's usage errors carry their own exit code
        import click

        if isinstance(err, click.exceptions.Exit):
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(130)
        if debug:
            raise
        err_console.print(f"[red]internal error:[/] {one_line(f'{type(err).__name__}: {err}')} (rerun with --debug)",
                          highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
