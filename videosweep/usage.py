"""Command-line conventions shared by every command: usage errors as click prints them, `--version`."""

from __future__ import annotations

import sys
from importlib import metadata
from typing import Any, NoReturn

import typer


def versions() -> dict[str, str]:
    """videosweep and what its results depend on, without importing any of them (fast, and no TF start-up)."""
    import os

    names = {"videosweep": "videosweep", "keras": "keras", "optuna": "optuna", "mlflow": "mlflow"}
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    names[f"backend {backend}"] = {"torch": "torch", "jax": "jax"}.get(backend, "tensorflow")
    found = {}
    for label, package in names.items():
        try:
            found[label] = metadata.version(package)
        except metadata.PackageNotFoundError:
            alternative = {"tensorflow": "tensorflow-cpu"}.get(package)
            try:
                found[label] = metadata.version(alternative) if alternative else "not installed"
            except metadata.PackageNotFoundError:
                found[label] = "not installed"
    return found


def print_version(value: bool) -> None:
    """The eager `--version` option: one line, then exit 0."""
    if not value:
        return
    found = versions()
    main = found.pop("videosweep")
    typer.echo(f"videosweep {main} (" + ", ".join(f"{name} {version}" for name, version in found.items()) + ")")
    raise typer.Exit(0)


def usage_error_exit(err: Any) -> NoReturn:
    """Print a click usage error the way click does (usage line, "Try 'videosweep COMMAND --help'", the error)
    and exit with its code (2 for usage mistakes)."""
    err.show()  # Typer already adds "Did you mean" for commands, click for options
    sys.exit(getattr(err, "exit_code", 2))


_CLICK_TYPE_NAMES = {"int": "INTEGER", "str": "TEXT", "float": "FLOAT", "path": "PATH", "bool": None}


def click_style_help() -> None:
    """Metavars as click writes them (SWEEP_FILE, --workers INTEGER, flags bare): Typer 0.29 shows `{sweep_file}`
    and `<bool>` instead, which surprises everyone used to click tools. Typer offers no setting for it, so its
    parameter classes' display methods are replaced here, once, before any help is drawn."""
    from typer.core import TyperArgument, TyperOption

    def argument_name(self: Any) -> str:
        return self.metavar if self.metavar is not None else str(self.name).upper()

    def argument_usage(self: Any) -> str:
        name = argument_name(self)
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    def option_type(self: Any, ctx: Any) -> str | None:
        if self.metavar is not None:
            return self.metavar
        if getattr(self, "is_flag", False) or getattr(self, "count", False):
            return None
        label = TyperOption.display_type(self, ctx).strip("<>")  # Typer's own tag: <int>, <path>, <list[str]>
        label = label.removeprefix("list[").removesuffix("]")
        return _CLICK_TYPE_NAMES.get(label, label.upper())

    TyperArgument.display_name_raw = property(argument_name)  # type: ignore[assignment,method-assign]
    TyperArgument._usage_display_name = argument_usage  # type: ignore[method-assign]
    TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]
    TyperOption.display_type_rich = option_type  # type: ignore[method-assign]

