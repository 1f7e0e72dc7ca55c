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


def did_you_mean(name: object, choices: list[str], canonical: dict[str, str] | None = None) -> str:
    """"; did you mean X?" for the choice closest to a mistyped name ("" when none is close); an alias found
    is named by its canonical name (`canonical`)."""
    import difflib

    close = difflib.get_close_matches(str(name).strip().lower(), [c.lower() for c in choices], n=1, cutoff=0.6)
    if not close:
        return ""
    found = next(c for c in choices if c.lower() == close[0])
    return f"; did you mean {(canonical or {}).get(found, found)}?"


def one_line(text: str) -> str:
    """Collapse a message onto one line so the CLI's error contract holds whatever the source."""
    return " ".join(str(text).split())
