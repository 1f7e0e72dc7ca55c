"""Errors a user can act on: each carries one line that names the problem and, where useful, the choices."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (a file, a parameter, a path). The CLI prints its message and exits 2."""

    exit_code = 2


class InvalidSpec(UserError):
    """A model spec that the zoo cannot build, with the zoo's reason."""


class DataError(UserError):
    """A dataset whose frames and labels do not agree, or that cannot be read."""


def one_line(text: str) -> str:
    """Collapse a message onto one line so the CLI's error contract holds whatever the source."""
    return " ".join(str(text).split())
