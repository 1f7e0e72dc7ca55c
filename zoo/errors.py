"""Errors a user can act on: each carries one line that names the problem and, where useful, the choices."""

from __future__ import annotations

# EX_TEMPFAIL of sysexits.h, "a temporary failure; the user is invited to retry": what schedulers and shell loops
# that retry a job on their own (SLURM's --requeue wrappers, systemd's Restart=, `until ...; do`) look for.
TEMPORARY_FAILURE_EXIT = 75


class UserError(Exception):
    """An error the user acts on, printed by the CLI as one line: bad input (a file, a parameter, a path) exits 2;
    subclasses that are not bad input carry their own exit code."""

    exit_code = 2


class StoreUnreachable(UserError):
    """A shared store (the study database, the tracking server) stayed unreachable past its retry budget. Not
    bad input: nothing was lost and `videosweep resume` carries on once it answers again (exit 75)."""

    exit_code = TEMPORARY_FAILURE_EXIT


class InvalidSpec(UserError):
    """A model spec that the zoo cannot build, with the zoo's reason."""


class DataError(UserError):
    """A dataset whose frames and labels do not agree, or that cannot be read."""


def one_line(text: str) -> str:
    """Collapse a message onto one line so the CLI's error contract holds whatever the source."""
    return " ".join(str(text).split())
