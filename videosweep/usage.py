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
    err.show()
    sys.exit(getattr(err, "exit_code", 2))
