"""Atomic writes: a file or a folder either appears complete or not at all (readers never see half of it)."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from zoo.errors import UserError


def describe_write_error(err: OSError, folder: Path) -> str:
    """Why a write failed, in words: a full disk is named as such even when the writer gave no errno."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    detail = err.strerror or str(err)
    if err.errno == errno.ENOSPC or (free is not None and free < 1 << 20):
        free_text = "" if free is None else f", {free // 1024} KiB free"
        return f"no space left on device ({detail}{free_text})"
    return detail


def write_error(what: str, path: Path, err: OSError) -> UserError:
    """The one line for a failed write (a full disk reads the same for a cache entry and a trial folder)."""
    return UserError(f"cannot write {what} {path}: {describe_write_error(err, Path(path).parent)}")


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# Every command that writes a whole folder leaves one of these in it: --overwrite replaces only such a folder.
TRIAL_MARKER = ".videosweep-trial"
REPORT_MARKER = ".videosweep-report"
EXPORT_MARKER = ".videosweep-export"
EXPLORE_MARKER = ".videosweep-explore"
DEMO_MARKER = ".videosweep-demo"
# Folders written before markers existed are recognised by the file their command always wrote.
_LEGACY_PROOF = {TRIAL_MARKER: "results.json", REPORT_MARKER: "report.html", EXPORT_MARKER: "export.json",
                 EXPLORE_MARKER: "explore.html"}

UMASK = _umask()  # read once: os.umask can only be read by setting it, which is not thread-safe


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[BinaryIO]:
    """Write `path` through a temporary sibling renamed into place on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~UMASK)  # mkstemp's 0600 would make reports and exports private by accident
        with os.fdopen(fd, mode) as handle:
            yield handle  # type: ignore[misc]
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    with atomic_file(path, "w") as handle:
        handle.write(text)  # type: ignore[arg-type]


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_file(path) as handle:
        np.save(handle, array, allow_pickle=False)


def writable_dir(folder: Path, what: str) -> Path:
    """Create `folder` if needed and prove it is writable, or raise a one-line UserError."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".write-probe-", delete=True)
        probe.close()
    except OSError as err:
        raise UserError(f"{what} {folder} is not writable ({describe_write_error(err, folder.parent)})") from None
    return folder


def private_dir(folder: Path, what: str) -> Path:
    """`folder` created private (0700) if missing; an existing one must be ours and writable by nobody else
    (what it holds is run as code), else a one-line UserError."""
    folder = Path(folder).expanduser()
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
        found = folder.lstat()
    except OSError as err:
        raise UserError(f"{what} {folder} cannot be created ({describe_write_error(err, folder.parent)})") from None
    if not stat.S_ISDIR(found.st_mode):
        raise UserError(f"{what} {folder} is not a folder (a link or a file): remove it")
    if found.st_uid != os.getuid():
        raise UserError(f"{what} {folder} belongs to another user (uid {found.st_uid}): whoever writes it runs "
                        "code here; remove it or use another --cache-dir")
    if found.st_mode & 0o022:
        raise UserError(f"{what} {folder} is writable by others (mode {stat.S_IMODE(found.st_mode):o}): whoever "
                        f"writes it runs code here; chmod 700 {folder}")
    return folder


_HOST = re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname())
# `.<name>.<pid>-<host>.<random>.partial`: the owner in the name says when a staging folder is abandoned.
_STAGING = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)-(?P<host>[A-Za-z0-9_-]+)\.[A-Za-z0-9_]+\.partial")
_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def remove_abandoned_staging(folder: Path) -> list[str]:
    """Remove staging folders in `folder` left by a process of this host that is gone (killed mid-write);
    the names of those removed. Other hosts' folders (a shared workdir) are left to them."""
    import psutil

    removed = []
    for path in Path(folder).glob(".*.partial") if Path(folder).is_dir() else []:
        owner = _STAGING.fullmatch(path.name)
        if owner is None or owner["host"] != _HOST or not path.is_dir():
            continue
        try:
            alive = psutil.Process(int(owner["pid"])).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            alive = False
        except psutil.Error:
            alive = True  # cannot tell: leave it
        if not alive:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def check_replaceable(target: Path, overwrite: bool, marker: str | None, what: str = "output folder") -> None:
    """Refuse to replace a user's folder: a non-empty `target` needs `overwrite`, and then (when `marker` is
    given) must carry the marker file that the same command leaves in every folder it writes."""
    target = Path(target).expanduser()
    if not target.exists() and not target.is_symlink():
        return
    if target.is_symlink():
        raise UserError(f"{what} {target} is a symbolic link; give the folder it points to")
    if not target.is_dir():
        raise UserError(f"{what} {target} exists and is not a folder")
    if not any(target.iterdir()):
        return
    if not overwrite:
        raise UserError(f"{what} {target} already exists and is not empty (use --overwrite to replace it)")
    if marker is None:
        return
    if not any((target / proof).is_file() for proof in (marker, _LEGACY_PROOF.get(marker, marker))):
        raise UserError(f"{what} {target} was not written by this command (it has no {marker}); "
                        "--overwrite only replaces such a folder: choose another or empty it yourself")


def is_inside(folder: Path, path: Path) -> bool:
    """Whether `path` resolves to somewhere inside `folder` (not the folder itself)."""
    base, resolved = Path(folder).resolve(), Path(path).resolve()
    return resolved != base and resolved.is_relative_to(base)


def folder_name_problem(name: str) -> str | None:
    """Why `name` cannot be one folder directly inside another (empty, hidden, `.`/`..`, separators), or None."""
    if not name or not name.strip():
        return "is empty"
    if name.startswith("."):
        return "starts with '.' (hidden, or . and .. which name no folder of its own)"
    if any(char in name for char in "/\\\0"):
        return "contains a path separator"
    return None


@contextmanager
def atomic_dir(target: Path, overwrite: bool = False, marker: str | None = None,
               what: str = "output folder") -> Iterator[Path]:
    """Build a folder in a temporary sibling and rename it to `target` only when the block succeeds.

    An existing non-empty `target` is replaced only with `overwrite` and, when `marker` is given, only if it
    carries that marker file; the new folder gets the marker (unless the block wrote it). A full disk while the
    block writes is one line (UserError), as for a cache entry."""
    target = Path(target).expanduser()
    writable_dir(target.parent, what)
    check_replaceable(target, overwrite, marker, what)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}-{_HOST}.", suffix=".partial",
                                    dir=target.parent))
    os.chmod(staging, 0o777 & ~UMASK)
    try:
        yield staging
        if marker is not None and not (staging / marker).exists():
            write_text(staging / marker, "written by videosweep; --overwrite may replace this folder\n")
        if target.exists():
            trash = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, trash)
            os.replace(staging, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, target)
        _fsync_dir(target.parent)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        if err.errno in _FULL_DISK:
            raise write_error("folder", target, err) from None
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
